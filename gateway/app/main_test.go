package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

	functionapp "lightspeed/function/app"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
)

// functionRoleVar, set in a process's environment, makes the test binary a
// function (as "gateway function" is): the local fleet provider runs it.
const functionRoleVar = "LIGHTSPEED_TEST_FUNCTION"

// TestMain runs the tests, plays a function when the local provider ran
// the binary as one, or plays a stack role (stackRole, whipStackRole,
// privateStackRole, simulcastStackRole) when a test has re-executed the
// binary in a network namespace as it.
func TestMain(m *testing.M) {
	if os.Getenv(functionRoleVar) == "1" {
		if err := functionapp.Main(nil, io.Discard); err != nil {
			fmt.Fprintln(os.Stderr, "function:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	for _, r := range []struct {
		role stackrole.Role
		run  func(context.Context, *slog.Logger, stackrole.Params) error
	}{
		{whipStackRole, runWHIPStack},
		{privateStackRole, runPrivateStack},
		{simulcastStackRole, runSimulcastStack},
	} {
		if netns.Role() == r.role.Name {
			os.Exit(r.role.Serve(slog.LevelInfo, func(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
				if err := r.run(ctx, log, p); err != nil {
					return fmt.Errorf("%s: %w", r.role.Name, err)
				}
				return nil
			}))
		}
	}
	stackRole.Main(m, serveStack)
}
