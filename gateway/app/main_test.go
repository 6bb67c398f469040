package app

import (
	"fmt"
	"os"
	"testing"

	"lightspeed/shared/netns"
)

// TestMain runs the tests, or plays a role when a test has re-executed the
// binary in a network namespace (netns.Pair.SelfCommand).
func TestMain(m *testing.M) {
	switch role := netns.Role(); role {
	case "":
		os.Exit(m.Run())
	case roleStack:
		os.Exit(serveStack())
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		os.Exit(2)
	}
}
