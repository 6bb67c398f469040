package app

import "testing"

// TestMain runs the tests, or plays stackRole when a test has re-executed
// the binary in a network namespace.
func TestMain(m *testing.M) {
	stackRole.Main(m, serveStack)
}
