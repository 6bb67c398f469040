package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RoleEnv is the environment variable that tells a re-executed test binary
// which role to play. See Pair.SelfCommand and Role.
const RoleEnv = "LS_NETNS_ROLE"

// stopGrace is how long Stop waits after SIGTERM before it kills.
const stopGrace = 5 * time.Second

// outputGrace bounds how long Wait waits for output after the process
// exited, when a child of it still holds the output pipe.
const outputGrace = 2 * time.Second

// Role returns the role this process was started for by Pair.SelfCommand,
// or "" when it was started normally. A test binary dispatches on it in
// TestMain before running the tests:
//
//	func TestMain(m *testing.M) {
//		switch netns.Role() {
//		case "server":
//			os.Exit(serve())
//		}
//		os.Exit(m.Run())
//	}
func Role() string {
	return os.Getenv(RoleEnv)
}

// SelfCommand returns a command that re-executes the running test binary
// in namespace ns of the pair with RoleEnv set to role. The binary gets
// -test.run=^$, so a binary whose TestMain does not know the role runs no
// tests and exits. Add variables to cmd.Env to pass parameters.
func (p *Pair) SelfCommand(ctx context.Context, ns, role string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := p.Command(ctx, ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), RoleEnv+"="+role)
	return cmd
}

// Process runs a command, typically from Pair.Command or Pair.SelfCommand,
// and hands its output line by line to Logf. It remembers the lines, so a
// caller can wait for one that says the process is ready. Set the fields,
// then call Start; call Stop before the test ends.
type Process struct {
	// Cmd is the command to run. Process sets its Stdout and Stderr.
	Cmd *exec.Cmd
	// Name prefixes every logged line; empty means the program's base name.
	Name string
	// Logf receives every line of output, for example testing.T.Logf.
	// Nil drops them; WaitLine still sees them.
	Logf func(format string, args ...any)

	done chan struct{} // closed when the process exited and its output ended
	err  error         // the error of Cmd.Wait; set before done closes

	mu      sync.Mutex
	lines   []string
	partial []byte
	changed chan struct{} // closed and replaced on every new line
}

// Start starts the process. The kernel kills it with SIGKILL if this
// process dies first, so a crashed test leaves no server behind.
func (pr *Process) Start() error {
	if pr.Name == "" {
		pr.Name = filepath.Base(programName(pr.Cmd))
	}
	pr.done = make(chan struct{})
	pr.changed = make(chan struct{})
	pr.Cmd.Stdout = (*lineWriter)(pr)
	pr.Cmd.Stderr = pr.Cmd.Stdout
	// Children that inherit the output pipe must not hold up Wait.
	if pr.Cmd.WaitDelay == 0 {
		pr.Cmd.WaitDelay = outputGrace
	}
	if pr.Cmd.SysProcAttr == nil {
		pr.Cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	pr.Cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL

	// Pdeathsig fires when the thread that started the process exits, so
	// start and wait on one locked thread (https://go.dev/issue/27505).
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := pr.Cmd.Start(); err != nil {
			pr.err = err
			close(pr.done)
			started <- err
			return
		}
		started <- nil
		err := pr.Cmd.Wait()
		pr.flush()
		pr.err = err
		close(pr.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("netns: start %s: %w", pr.Name, err)
	}
	return nil
}

// Done is closed when the process has exited and all its output is logged.
func (pr *Process) Done() <-chan struct{} {
	return pr.done
}

// Wait waits for the process to exit and returns its error, as
// exec.Cmd.Wait does.
func (pr *Process) Wait() error {
	<-pr.done
	if pr.err != nil {
		return fmt.Errorf("netns: %s: %w", pr.Name, pr.err)
	}
	return nil
}

// Stop asks the process to end with SIGTERM, kills it if it has not ended
// after a grace period, and waits for it. It returns nil when the process
// ended on either signal, because its command's context ended, or by
// itself without error. Calling Stop again returns the same result.
func (pr *Process) Stop() error {
	select {
	case <-pr.done:
	default:
		pr.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(stopGrace):
			pr.Cmd.Process.Kill()
			<-pr.done
		}
	}
	if errors.Is(pr.err, context.Canceled) || errors.Is(pr.err, context.DeadlineExceeded) {
		// The command's context ended, which stops it too.
		return nil
	}
	var exit *exec.ExitError
	if errors.As(pr.err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
			(ws.Signal() == syscall.SIGTERM || ws.Signal() == syscall.SIGKILL) {
			return nil
		}
	}
	return pr.Wait()
}

// WaitLine waits until the process has printed a line containing substr,
// on stdout or stderr, and returns that line. It looks at every line since
// the start, so the line may already be there. It fails when ctx ends or
// the process exits first.
func (pr *Process) WaitLine(ctx context.Context, substr string) (string, error) {
	seen := 0
	for {
		pr.mu.Lock()
		lines, changed := pr.lines[seen:], pr.changed
		seen = len(pr.lines)
		pr.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, substr) {
				return l, nil
			}
		}
		select {
		case <-changed:
		case <-pr.done:
			pr.mu.Lock()
			rest := pr.lines[seen:]
			pr.mu.Unlock()
			for _, l := range rest {
				if strings.Contains(l, substr) {
					return l, nil
				}
			}
			return "", fmt.Errorf("netns: %s exited (%v) before printing %q", pr.Name, pr.err, substr)
		case <-ctx.Done():
			return "", fmt.Errorf("netns: %s: waiting for %q: %w", pr.Name, substr, ctx.Err())
		}
	}
}

// Lines returns a copy of the lines of output so far.
func (pr *Process) Lines() []string {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return append([]string(nil), pr.lines...)
}

// lineWriter is the Stdout and Stderr of a Process. os/exec calls Write
// from one goroutine at a time, because both are the same writer.
type lineWriter Process

// Write splits p into lines and records and logs each whole one.
func (w *lineWriter) Write(p []byte) (int, error) {
	pr := (*Process)(w)
	pr.mu.Lock()
	pr.partial = append(pr.partial, p...)
	var lines []string
	for {
		i := bytes.IndexByte(pr.partial, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, string(bytes.TrimRight(pr.partial[:i], "\r")))
		pr.partial = pr.partial[i+1:]
	}
	pr.addLocked(lines)
	pr.mu.Unlock()
	pr.log(lines)
	return len(p), nil
}

// flush records the last line when the output did not end with a newline.
func (pr *Process) flush() {
	pr.mu.Lock()
	var lines []string
	if len(pr.partial) > 0 {
		lines = []string{string(pr.partial)}
		pr.partial = nil
	}
	pr.addLocked(lines)
	pr.mu.Unlock()
	pr.log(lines)
}

func (pr *Process) addLocked(lines []string) {
	if len(lines) == 0 {
		return
	}
	pr.lines = append(pr.lines, lines...)
	close(pr.changed)
	pr.changed = make(chan struct{})
}

func (pr *Process) log(lines []string) {
	if pr.Logf == nil {
		return
	}
	for _, l := range lines {
		pr.Logf("%s: %s", pr.Name, l)
	}
}

// programName returns the program a command runs, looking through
// `ip netns exec <ns>`.
func programName(cmd *exec.Cmd) string {
	args := cmd.Args
	if len(args) >= 5 && args[1] == "netns" && args[2] == "exec" {
		return args[4]
	}
	return cmd.Path
}
