package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// faultPackages hold the fault suite: the cases with real processes and
// network namespaces, and the in-process ones.
var faultPackages = []string{"./gateway/simulation/", "./gateway/app/"}

// faultsFlags checks the flags of -faults; set holds the flags given.
func faultsFlags(cfg config, set map[string]bool) (config, error) {
	for name := range set {
		if name != "faults" && name != "soak" && name != "v" {
			return cfg, fmt.Errorf("-faults runs the fault suite: -%s does not go with it", name)
		}
	}
	if cfg.soak < 2*time.Minute {
		return cfg, errors.New("-soak must be at least 2m (its first minute is warm-up)")
	}
	return cfg, nil
}

// mainFaults runs the fault suite's long form: every TestFault case of
// the repository's tests, the soak for cfg.soak (LS_SOAK), and prints each
// case's figure line ("FAULT <case>: ...") as it comes, then whether every
// case held. The cases take the lock of the tests that load the whole
// machine themselves, so the bench does not hold it.
func mainFaults(ctx context.Context, cfg config, out io.Writer) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	args := append([]string{"test", "-race", "-count=1", "-timeout", (cfg.soak + 30*time.Minute).String(), "-run", "^TestFault", "-v"}, faultPackages...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "LS_SOAK="+cfg.soak.String())
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	fmt.Fprintf(out, "go %s (LS_SOAK=%v)\n", strings.Join(args, " "), cfg.soak)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("faults: %w", err)
	}
	failed := faultLines(pipe, out, cfg.verbose)
	err = cmd.Wait()
	if err != nil || len(failed) > 0 {
		return fmt.Errorf("faults: %d cases failed (%s): %v", len(failed), strings.Join(failed, ", "), err)
	}
	fmt.Fprintln(out, "every case held")
	return nil
}

// testLine is a line a test logged (t.Log, t.Error) from a _test.go file,
// as opposed to the output of the processes it runs.
var testLine = regexp.MustCompile(`^[a-z0-9_]+_test\.go:\d+: `)

// faultLines copies the figure lines of go test's output r to out (every
// line when all), and returns the cases that failed.
func faultLines(r io.Reader, out io.Writer, all bool) (failed []string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case all:
			fmt.Fprintln(out, line)
		case strings.Contains(line, "FAULT "):
			fmt.Fprintln(out, trimmed[strings.Index(trimmed, "FAULT "):])
		case strings.HasPrefix(trimmed, "--- FAIL"), strings.HasPrefix(trimmed, "FAIL"), strings.HasPrefix(trimmed, "panic:"),
			testLine.MatchString(trimmed) && !strings.Contains(trimmed, ": time="): // what a case says of itself, failures included, not the logs of what it runs
			fmt.Fprintln(out, trimmed)
		}
		if name, ok := strings.CutPrefix(trimmed, "--- FAIL: "); ok {
			failed = append(failed, strings.Fields(name)[0])
		}
	}
	return failed
}
