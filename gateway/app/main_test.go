package app

import (
	"fmt"
	"io"
	"os"
	"testing"

	functionapp "lightspeed/function/app"
	"lightspeed/shared/testkit/netns"
)

// functionRoleVar, set in a process's environment, makes the test binary a
// function (as "gateway function" is): the local fleet provider runs it.
const functionRoleVar = "LIGHTSPEED_TEST_FUNCTION"

// TestMain runs the tests, plays a function when the local provider ran
// the binary as one, or plays stackRole or whipStackRole when a test has
// re-executed the binary in a network namespace.
func TestMain(m *testing.M) {
	if os.Getenv(functionRoleVar) == "1" {
		if err := functionapp.Main(nil, io.Discard); err != nil {
			fmt.Fprintln(os.Stderr, "function:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if netns.Role() == whipStackRole.Name {
		os.Exit(serveWHIPStack())
	}
	playPrivateStack() // privateStackRole: plays it and exits when re-executed as it
	playSimulcastStack()
	stackRole.Main(m, serveStack)
}
