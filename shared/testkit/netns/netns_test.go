package netns

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Roles that the test binary plays when a test re-executes it in a
// namespace; parameters come in environment variables.
const (
	roleListen = "listen" // accept one TCP connection on $LISTEN and greet it
	roleDial   = "dial"   // dial $DIAL and print the greeting
	roleWait   = "wait"   // print "ready" and wait for SIGTERM
	roleFail   = "fail"   // print a partial line and exit 3
)

func TestMain(m *testing.M) {
	if role := Role(); role != "" {
		os.Exit(playRole(role))
	}
	os.Exit(m.Run())
}

func playRole(role string) int {
	switch role {
	case roleListen:
		ln, err := net.Listen("tcp", os.Getenv("LISTEN"))
		if err != nil {
			fmt.Println("listen:", err)
			return 1
		}
		fmt.Println("listening on", ln.Addr())
		c, err := ln.Accept()
		if err != nil {
			fmt.Println("accept:", err)
			return 1
		}
		fmt.Println("accepted from", c.RemoteAddr())
		fmt.Fprintf(c, "hello from %s\n", c.LocalAddr())
		c.Close()
		return 0
	case roleDial:
		c, err := net.Dial("tcp", os.Getenv("DIAL"))
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("read:", err)
			return 1
		}
		fmt.Printf("got: %s", line)
		return 0
	case roleWait:
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		return 0
	case roleFail:
		fmt.Fprint(os.Stderr, "no newline at the end")
		return 3
	}
	fmt.Println("unknown role", role)
	return 2
}

// newPair makes a Pair that the test's cleanup closes, and checks then
// that nothing of it is left.
func newPair(t *testing.T) *Pair {
	t.Helper()
	Require(t)
	p, err := New(t.Context())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, ns := range namespaces(t) {
			if ns == p.A || ns == p.B {
				t.Errorf("namespace %s still listed after Close", ns)
			}
		}
	})
	return p
}

// namespaces returns the names that `ip netns list` shows.
func namespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// ipOutput runs ip(8) with args and returns its output.
func ipOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// start starts pr and stops it when the test ends.
func start(t *testing.T, pr *Process) *Process {
	t.Helper()
	if pr.Logf == nil {
		pr.Logf = t.Logf
	}
	if err := pr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pr.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return pr
}

func TestNewMakesTwoConfiguredNamespacesAndCloseRemovesThem(t *testing.T) {
	p := newPair(t)

	listed := namespaces(t)
	for _, ns := range []string{p.A, p.B} {
		if !slices.Contains(listed, ns) {
			t.Errorf("namespace %s not in ip netns list %v", ns, listed)
		}
	}
	if p.A == p.B || p.AddrA == p.AddrB {
		t.Errorf("sides not distinct: %+v", p)
	}
	for _, side := range []struct{ ns, dev, addr, peer string }{
		{p.A, p.VethA, p.AddrA.String(), p.AddrB.String()},
		{p.B, p.VethB, p.AddrB.String(), p.AddrA.String()},
	} {
		if out := ipOutput(t, "-n", side.ns, "addr", "show", "dev", side.dev); !strings.Contains(out, "inet "+side.addr+"/24") || !strings.Contains(out, "UP") {
			t.Errorf("%s: veth %s not up with %s/24:\n%s", side.ns, side.dev, side.addr, out)
		} else if strings.Contains(out, "inet6") {
			t.Errorf("%s: veth %s has an IPv6 address (its coming valid is a network change to browsers):\n%s", side.ns, side.dev, out)
		}
		if out := ipOutput(t, "-n", side.ns, "link", "show", "dev", "lo"); !strings.Contains(out, "UP") {
			t.Errorf("%s: lo not up:\n%s", side.ns, out)
		}
		if out := ipOutput(t, "-n", side.ns, "route", "show", "default"); !strings.Contains(out, "via "+side.peer) {
			t.Errorf("%s: no default route via %s:\n%s", side.ns, side.peer, out)
		}
	}
	if out := ipOutput(t, "link", "show"); strings.Contains(out, p.VethA) || strings.Contains(out, p.VethB) {
		t.Errorf("veth visible in the root namespace:\n%s", out)
	}

	a, b := p.A, p.B
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	listed = namespaces(t)
	if slices.Contains(listed, a) || slices.Contains(listed, b) {
		t.Errorf("namespaces %s, %s still listed after Close: %v", a, b, listed)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPairsInOneProcessGetDistinctNames(t *testing.T) {
	p, q := newPair(t), newPair(t)
	names := []string{p.A, p.B, q.A, q.B}
	slices.Sort(names)
	if len(slices.Compact(names)) != 4 {
		t.Errorf("names collide: %s/%s and %s/%s", p.A, p.B, q.A, q.B)
	}
}

func TestSidesReachEachOtherOverTheVeth(t *testing.T) {
	p := newPair(t)
	ctx := t.Context()

	listen := p.SelfCommand(ctx, p.A, roleListen)
	listen.Env = append(listen.Env, "LISTEN="+p.AddrA.String()+":7000")
	server := start(t, &Process{Cmd: listen, Name: "listen"})
	if _, err := server.WaitLine(ctx, "listening on"); err != nil {
		t.Fatal(err)
	}

	dial := p.SelfCommand(ctx, p.B, roleDial)
	dial.Env = append(dial.Env, "DIAL="+p.AddrA.String()+":7000")
	client := start(t, &Process{Cmd: dial, Name: "dial"})
	got, err := client.WaitLine(ctx, "got: ")
	if err != nil {
		t.Fatal(err)
	}
	if want := "got: hello from " + p.AddrA.String() + ":7000"; got != want {
		t.Errorf("client printed %q, want %q", got, want)
	}
	if _, err := server.WaitLine(ctx, "accepted from "+p.AddrB.String()+":"); err != nil {
		t.Errorf("server did not see a connection from B's address: %v", err)
	}
	if err := client.Wait(); err != nil {
		t.Errorf("client: %v", err)
	}
}

func TestStopEndsARunningProcess(t *testing.T) {
	p := newPair(t)
	ctx := t.Context()
	pr := start(t, &Process{Cmd: p.SelfCommand(ctx, p.A, roleWait), Name: "wait"})
	if _, err := pr.WaitLine(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := pr.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case <-pr.Done():
	default:
		t.Error("Done not closed after Stop")
	}
}

func TestWaitLineReportsAnExitBeforeTheLine(t *testing.T) {
	p := newPair(t)
	ctx := t.Context()
	var logged []string
	pr := &Process{
		Cmd:  p.SelfCommand(ctx, p.B, roleFail),
		Name: "fail",
		Logf: func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) },
	}
	if err := pr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Stop() })
	if _, err := pr.WaitLine(ctx, "never printed"); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitLine = %v, want an error saying the process exited", err)
	}
	var exit *exec.ExitError
	if err := pr.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
	if want := []string{"fail: no newline at the end"}; !slices.Equal(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
	if got, err := pr.WaitLine(ctx, "no newline"); err != nil || got != "no newline at the end" {
		t.Errorf("WaitLine after exit = %q, %v; want the last line", got, err)
	}
}

func TestCommandRefusesANamespaceOutsideThePair(t *testing.T) {
	p := &Pair{A: "lsxa", B: "lsxb", ip: "ip"}
	if err := p.Command(t.Context(), "elsewhere", "true").Run(); err == nil || !strings.Contains(err.Error(), "not a namespace of pair") {
		t.Errorf("Run = %v, want a refusal", err)
	}
}

func TestNetemRefusesBadArguments(t *testing.T) {
	p := &Pair{A: "lsxa", B: "lsxb", VethA: "lsvxa", VethB: "lsvxb", ip: "ip"}
	for _, tc := range []struct {
		name  string
		ns    string
		delay time.Duration
		loss  float64
	}{
		{"namespace outside the pair", "elsewhere", 0, 0},
		{"negative delay", "lsxa", -time.Millisecond, 0},
		{"negative loss", "lsxb", 0, -0.1},
		{"loss above one", "lsxb", 0, 1.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.Netem(tc.ns, tc.delay, tc.loss); err == nil {
				t.Error("Netem accepted it")
			}
		})
	}
}

func TestNetemSetsDelayAndLossOnThatSidesVeth(t *testing.T) {
	p := newPair(t)
	err := p.Netem(p.A, 25*time.Millisecond, 0.05)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skipf("netem unsupported here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tc", "-n", p.A, "qdisc", "show", "dev", p.VethA).CombinedOutput()
	if err != nil {
		t.Fatalf("tc qdisc show: %v: %s", err, out)
	}
	for _, want := range []string{"netem", "delay 25ms", "loss 5%"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("qdisc lacks %q:\n%s", want, out)
		}
	}
}

func TestExclusiveHoldsTheLockUntilTheTestEnds(t *testing.T) {
	lock := filepath.Join(os.TempDir(), "lightspeed-exclusive-tests.lock")
	t.Run("holder", func(t *testing.T) {
		Exclusive(t)
		f, err := os.Open(lock)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			t.Fatal("another open file took the lock while the test held it")
		}
	})
	// Had the first test kept the lock, this one would wait forever.
	t.Run("next", func(t *testing.T) { Exclusive(t) })
	// A test that takes it twice (two helpers) holds it once: the second
	// call does not wait for the first, and the lock is free after.
	t.Run("twice", func(t *testing.T) {
		Exclusive(t)
		Exclusive(t)
	})
	t.Run("after twice", func(t *testing.T) { Exclusive(t) })
}
