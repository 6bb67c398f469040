package localprovider

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"lightspeed/function/app"
	"lightspeed/gateway/fleet"
)

// functionRole, set in a process's environment, makes the test binary
// play the function command: the tests run the real function (app.Main,
// as the function command and "gateway function" do) without building
// another binary.
const functionRole = "LOCALPROVIDER_TEST_FUNCTION"

// gatewayRole, set in a process's environment to a port, makes the test
// binary play a gateway that runs one function on that port and waits to
// be killed.
const gatewayRole = "LOCALPROVIDER_TEST_GATEWAY"

// stateDirRole, set in a gatewayRole process's environment to a
// directory, makes that gateway's provider keep its state there.
const stateDirRole = "LOCALPROVIDER_TEST_STATE_DIR"

func TestMain(m *testing.M) {
	// A gateway's function inherits gatewayRole: functionRole comes first.
	if os.Getenv(functionRole) != "" {
		if err := app.Main(os.Args[1:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "function:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if port := os.Getenv(gatewayRole); port != "" {
		if err := playGateway(port); err != nil {
			fmt.Fprintln(os.Stderr, "gateway:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// functionConfig is a provider's configuration that runs the function in
// the re-executed test binary.
func functionConfig() (Config, error) {
	self, err := os.Executable()
	if err != nil {
		return Config{}, err
	}
	return Config{
		Command: []string{self},
		Env: map[string]string{
			functionRole: "1",
			// A function built with -race would wait a second at exit.
			"GORACE": "atexit_sleep_ms=0",
		},
		Host: "127.0.0.1",
	}, nil
}

// playGateway plays gatewayRole: it runs a function on port, logging to
// stdout, until it is killed; with stateDirRole, in that state directory.
func playGateway(port string) error {
	cfg, err := functionConfig()
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stdout, nil))
	cfg.StateDir = os.Getenv(stateDirRole)
	p, err := New(context.Background(), cfg)
	if err != nil {
		return err
	}
	spec := fleet.Spec{Region: "ams", Env: functionEnv(os.TempDir())}
	spec.Env["LS_LOG_LEVEL"] = "error"
	if spec.Port, err = strconv.Atoi(port); err != nil {
		return err
	}
	if _, err := p.Create(context.Background(), spec); err != nil {
		return err
	}
	select {}
}

// waitTimeout bounds every wait of a test.
const waitTimeout = 30 * time.Second

// started is what a function logs once its WebRTC port is bound.
const started = `msg="function: starting"`

// setup returns a provider of the gateway context gateway, running the
// function (the re-executed test binary) on 127.0.0.1 unless cfg has a
// command, logging to the returned logs, closed when the test ends.
func setup(t *testing.T, gateway context.Context, cfg Config) (*Provider, *logs) {
	t.Helper()
	l := &logs{changed: make(chan struct{})}
	if cfg.Command == nil {
		fc, err := functionConfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Command, cfg.Env = fc.Command, fc.Env
	}
	cfg.Host = "127.0.0.1"
	cfg.Logger = slog.New(recorder{logs: l})
	p, err := New(gateway, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			for _, r := range l.all() {
				t.Logf("log: %s %v", r.msg, r.attrs)
			}
		}
	})
	return p, l
}

// waitCtx is the context of a test's waits.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// functionSpec is a spec in ams whose function starts and keeps
// retrying to reach a gateway that is not there.
func functionSpec(t *testing.T, port int) fleet.Spec {
	return fleet.Spec{Region: "ams", Port: port, Env: functionEnv(t.TempDir())}
}

// functionEnv is the environment of a function that starts and keeps
// retrying to reach a gateway that is not there.
func functionEnv(dataDir string) map[string]string {
	return map[string]string{
		"LS_RELAY_SECRET":      "secret",
		"LS_RELAY_FINGERPRINT": strings.Repeat("00", 32),
		"LS_GATEWAY_ADDR":      "127.0.0.1:9",
		"LS_DATA_DIR":          dataDir,
	}
}

// freePort returns a UDP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// portBound reports whether something else holds UDP port 127.0.0.1:port.
// On Linux it reads the kernel's socket table: a probe that binds the port
// itself could make a function that binds it at that moment fail.
func portBound(t *testing.T, port int) bool {
	t.Helper()
	if table, err := os.ReadFile("/proc/net/udp"); err == nil {
		if table6, err := os.ReadFile("/proc/net/udp6"); err == nil {
			table = append(table, table6...)
		}
		// Each line's local address is hex ip:port, "0100007F:1F90".
		suffix := fmt.Sprintf(":%04X", port)
		for line := range strings.Lines(string(table)) {
			if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[1], suffix) {
				return true
			}
		}
		return false
	}
	c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err == nil {
		c.Close()
		return false
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind port %d: %v", port, err)
	}
	return true
}

// waitState polls the provider's list until machine id is in state want.
func waitState(ctx context.Context, t *testing.T, p *Provider, id string, want fleet.State) fleet.Machine {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last fleet.Machine
	for {
		list, err := p.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if m.ID == id {
				last = m
			}
		}
		if last.State == want {
			return last
		}
		select {
		case <-ctx.Done():
			t.Fatalf("machine %s is %q, want %q: %v", id, last.State, want, ctx.Err())
		case <-tick.C:
		}
	}
}

func TestFunctionRunsOnItsPortAndLogsAsItself(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	port := freePort(t)
	before := time.Now()
	m, err := p.Create(ctx, functionSpec(t, port))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.ID, "local-ams-") || len(m.ID) != len("local-ams-")+8 {
		t.Errorf("id %q, want local-ams-<8 hex>", m.ID)
	}
	if m.State != fleet.Started || m.Region != "ams" || m.Port != port || m.Image != p.command[0] || m.Created.Before(before) {
		t.Errorf("created %+v, want started in ams on port %d running %s", m, port, p.command[0])
	}
	list, _ := p.List(ctx)
	if len(list) != 1 || list[0] != m {
		t.Errorf("list %+v, want [%+v]", list, m)
	}

	r := l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == m.ID && strings.Contains(r.msg, started) })
	if r.attrs["region"] != "ams" || !strings.Contains(r.msg, fmt.Sprintf("webrtc=127.0.0.1:%d", port)) {
		t.Errorf("function logged %q %v, want its region and its WebRTC address", r.msg, r.attrs)
	}
	if !portBound(t, port) {
		t.Errorf("port %d is free while the function runs", port)
	}
	if got := waitState(ctx, t, p, m.ID, fleet.Started); got != m {
		t.Errorf("listed %+v, want %+v", got, m)
	}
}

func TestStopFreesThePortAndStartRunsTheSameMachineAgain(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	port := freePort(t)
	m, err := p.Create(ctx, functionSpec(t, port))
	if err != nil {
		t.Fatal(err)
	}
	isStart := func(r record) bool { return r.attrs["function"] == m.ID && strings.Contains(r.msg, started) }
	l.wait(ctx, t, isStart)

	if err := p.Stop(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, p, m.ID, fleet.Stopped)
	if portBound(t, port) {
		t.Errorf("port %d is still bound after the function stopped", port)
	}
	r := l.wait(ctx, t, func(r record) bool { return r.msg == "local: function stopped" && r.attrs["function"] == m.ID })
	if r.attrs["exit"] != "exit status 0" {
		t.Errorf("stopped with %q, want a clean exit on SIGTERM", r.attrs["exit"])
	}
	if err := p.Stop(ctx, m.ID); err != nil {
		t.Errorf("stop of a stopped machine: %v", err)
	}

	if err := p.Start(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	again := waitState(ctx, t, p, m.ID, fleet.Started)
	if again.Port != port || again.Region != m.Region || !again.Created.Equal(m.Created) {
		t.Errorf("started again as %+v, want %+v", again, m)
	}
	l.waitCount(ctx, t, isStart, 2)
	if !portBound(t, port) {
		t.Errorf("port %d is free after the function started again", port)
	}
	if err := p.Start(ctx, m.ID); err != nil {
		t.Errorf("start of a running machine: %v", err)
	}
}

func TestStartRightAfterStopWaitsForTheOldProcess(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	m, err := p.Create(ctx, functionSpec(t, freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	isStart := func(r record) bool { return r.attrs["function"] == m.ID && strings.Contains(r.msg, started) }
	l.wait(ctx, t, isStart)
	if err := p.Stop(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	// The new process could bind the port: the old one had exited.
	l.waitCount(ctx, t, isStart, 2)
	waitState(ctx, t, p, m.ID, fleet.Started)
}

func TestDestroyForgetsTheMachineAndFreesItsPort(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	port := freePort(t)
	m, err := p.Create(ctx, functionSpec(t, port))
	if err != nil {
		t.Fatal(err)
	}
	l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == m.ID && strings.Contains(r.msg, started) })

	if err := p.Destroy(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := p.List(ctx); len(list) != 0 {
		t.Errorf("list %+v after destroy, want none", list)
	}
	if portBound(t, port) {
		t.Errorf("port %d is still bound after destroy returned", port)
	}
	for name, call := range map[string]func(context.Context, string) error{
		"start": p.Start, "stop": p.Stop, "destroy": p.Destroy,
	} {
		err := call(ctx, m.ID)
		if !errors.Is(err, fleet.ErrNotFound) || !strings.Contains(err.Error(), "local: machine "+m.ID+": "+name) {
			t.Errorf("%s after destroy: %v, want local: machine %s: %s: …%v", name, err, m.ID, name, fleet.ErrNotFound)
		}
	}
	// Its port can be used again.
	again, err := p.Create(ctx, functionSpec(t, port))
	if err != nil {
		t.Fatal(err)
	}
	l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == again.ID && strings.Contains(r.msg, started) })
}

func TestFunctionThatExitsWithAnErrorFails(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	spec := functionSpec(t, freePort(t))
	spec.Env["LS_CAPACITY"] = "0"
	m, err := p.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, p, m.ID, fleet.Failed)
	l.wait(ctx, t, func(r record) bool {
		return r.attrs["function"] == m.ID && r.attrs["region"] == "ams" && strings.Contains(r.msg, "LS_CAPACITY")
	})
	r := l.wait(ctx, t, func(r record) bool { return r.msg == "local: function failed" && r.attrs["function"] == m.ID })
	if r.level != slog.LevelError || r.attrs["exit"] != "exit status 1" {
		t.Errorf("logged %v %q, want an error with exit status 1", r.level, r.attrs["exit"])
	}
	// A failed machine can be tried again, and fails again.
	if err := p.Start(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	l.waitCount(ctx, t, func(r record) bool { return r.msg == "local: function failed" && r.attrs["function"] == m.ID }, 2)
	waitState(ctx, t, p, m.ID, fleet.Failed)
}

// shell returns a provider running sh -c script as its function, or
// skips the test where there is no sh.
func shell(t *testing.T, cfg Config, script string) (*Provider, *logs) {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	cfg.Command = []string{sh, "-c", script}
	return setup(t, context.Background(), cfg)
}

func TestFunctionGetsItsSettingsAndNotTheGateways(t *testing.T) {
	t.Setenv("LS_HTTP_ADDR", ":1") // a gateway setting
	t.Setenv("LOCALPROVIDER_TEST_INHERITED", "yes")
	ctx := waitCtx(t)
	p, l := shell(t, Config{Env: map[string]string{"LS_LOG_LEVEL": "debug", "LS_CAPACITY": "7"}}, "env")
	port := freePort(t)
	m, err := p.Create(ctx, fleet.Spec{Region: "fra", Port: port, Env: map[string]string{"LS_CAPACITY": "9", "LS_REGION": "spec"}})
	if err != nil {
		t.Fatal(err)
	}
	// env exits with status 0: the machine is stopped, not failed.
	waitState(ctx, t, p, m.ID, fleet.Stopped)
	l.wait(ctx, t, func(r record) bool { return r.msg == "local: function exited" && r.attrs["function"] == m.ID })
	var env []string
	for _, r := range l.all() {
		if r.attrs["function"] == m.ID && r.attrs["region"] == "fra" {
			env = append(env, r.msg)
		}
	}
	for _, want := range []string{
		"LS_MACHINE_ID=" + m.ID,
		"LS_REGION=fra",
		fmt.Sprintf("LS_WEBRTC_UDP_ADDR=127.0.0.1:%d", port),
		"LS_CAPACITY=9",
		"LS_LOG_LEVEL=debug",
		"LOCALPROVIDER_TEST_INHERITED=yes",
	} {
		if !slices.Contains(env, want) {
			t.Errorf("the function's environment lacks %s", want)
		}
	}
	for _, v := range env {
		if strings.HasPrefix(v, "LS_HTTP_ADDR=") {
			t.Errorf("the function got the gateway's %s", v)
		}
	}
}

func TestStopKillsAFunctionThatIgnoresSIGTERMAfterTheGrace(t *testing.T) {
	ctx := waitCtx(t)
	p, l := shell(t, Config{Grace: 200 * time.Millisecond}, "trap '' TERM; echo ready; exec sleep 600")
	m, err := p.Create(ctx, fleet.Spec{Region: "ams", Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	l.wait(ctx, t, func(r record) bool { return r.msg == "ready" && r.attrs["function"] == m.ID })
	if err := p.Stop(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, p, m.ID, fleet.Stopped)
	r := l.wait(ctx, t, func(r record) bool { return r.msg == "local: function stopped" && r.attrs["function"] == m.ID })
	if r.attrs["exit"] != "signal: killed" {
		t.Errorf("stopped with %q, want signal: killed", r.attrs["exit"])
	}
}

func TestCloseStopsEveryFunction(t *testing.T) {
	ctx := waitCtx(t)
	p, l := setup(t, context.Background(), Config{})
	ports := []int{freePort(t), freePort(t)}
	var ids []string
	for _, port := range ports {
		m, err := p.Create(ctx, functionSpec(t, port))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	for _, id := range ids {
		l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == id && strings.Contains(r.msg, started) })
	}
	p.Close()
	list, _ := p.List(ctx)
	for _, m := range list {
		if m.State != fleet.Stopped {
			t.Errorf("machine %s is %q after Close, want stopped", m.ID, m.State)
		}
	}
	for _, port := range ports {
		if portBound(t, port) {
			t.Errorf("port %d is still bound after Close", port)
		}
	}
	if _, err := p.Create(ctx, functionSpec(t, freePort(t))); err == nil {
		t.Error("create after Close succeeded")
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "localprovider.(*Provider)") || strings.Contains(stacks, "os/exec.") {
		t.Errorf("goroutines left after Close:\n%s", stacks)
	}
	if err := p.Start(ctx, ids[0]); err == nil || !strings.Contains(err.Error(), "local: machine "+ids[0]+": start: provider closed") {
		t.Errorf("start after Close: %v, want provider closed", err)
	}
}

func TestTheGatewaysContextStopsEveryFunction(t *testing.T) {
	ctx := waitCtx(t)
	gateway, stop := context.WithCancel(context.Background())
	p, l := setup(t, gateway, Config{})
	m, err := p.Create(ctx, functionSpec(t, freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == m.ID && strings.Contains(r.msg, started) })
	stop()
	waitState(ctx, t, p, m.ID, fleet.Stopped)
	l.wait(ctx, t, func(r record) bool { return r.msg == "local: function stopped" && r.attrs["function"] == m.ID })
}

func TestFunctionsEndWhenTheGatewayIsKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a function outlives a killed gateway on", runtime.GOOS)
	}
	ctx := waitCtx(t)
	port := freePort(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gateway := exec.CommandContext(ctx, self)
	gateway.Env = append(os.Environ(), gatewayRole+"="+strconv.Itoa(port), "GORACE=atexit_sleep_ms=0")
	gateway.Stderr = os.Stderr
	out, err := gateway.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Start(); err != nil {
		t.Fatal(err)
	}
	defer gateway.Wait()
	defer gateway.Process.Kill()
	// The gateway logs its function's pid, to kill it if the test fails.
	lines := bufio.NewScanner(out)
	pid := 0
	for pid == 0 {
		if !lines.Scan() {
			t.Fatalf("the gateway ended before its function started: %v", lines.Err())
		}
		if _, after, ok := strings.Cut(lines.Text(), "local: function started"); ok {
			_, after, _ = strings.Cut(after, " pid=")
			if pid, err = strconv.Atoi(after); err != nil {
				t.Fatalf("no pid in %q", lines.Text())
			}
		}
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	waitPort := func(bound bool) {
		t.Helper()
		for portBound(t, port) != bound {
			select {
			case <-ctx.Done():
				t.Fatalf("port %d bound: %v, want %v: %v", port, !bound, bound, ctx.Err())
			case <-tick.C:
			}
		}
	}
	waitPort(true)
	gateway.Process.Kill()
	// The function logs nothing (LS_LOG_LEVEL=error), so it does not die
	// of writing to its dead gateway's pipe: the kernel's SIGTERM ends it.
	waitPort(false)
}

func TestCreateOfAMissingBinaryLeavesNoMachine(t *testing.T) {
	ctx := waitCtx(t)
	p, _ := setup(t, context.Background(), Config{Command: []string{t.TempDir() + "/missing"}})
	_, err := p.Create(ctx, fleet.Spec{Region: "ams", Port: freePort(t)})
	if err == nil || !strings.Contains(err.Error(), ": start: ") || !strings.HasPrefix(err.Error(), "local: machine local-ams-") {
		t.Errorf("create: %v, want local: machine local-ams-…: start: …", err)
	}
	if list, _ := p.List(ctx); len(list) != 0 {
		t.Errorf("list %+v, want none", list)
	}
}

func TestCreateRefusesAPortOfAnotherMachine(t *testing.T) {
	ctx := waitCtx(t)
	p, _ := shell(t, Config{}, "exit 0")
	port := freePort(t)
	m, err := p.Create(ctx, fleet.Spec{Region: "ams", Port: port})
	if err != nil {
		t.Fatal(err)
	}
	// A stopped machine keeps its port, to start on it again.
	waitState(ctx, t, p, m.ID, fleet.Stopped)
	if _, err := p.Create(ctx, fleet.Spec{Region: "fra", Port: port}); err == nil || !strings.Contains(err.Error(), m.ID) {
		t.Errorf("create on %s's port: %v, want an error naming it", m.ID, err)
	}
	for _, bad := range []int{0, -1, 65536} {
		if _, err := p.Create(ctx, fleet.Spec{Region: "fra", Port: bad}); err == nil {
			t.Errorf("create on port %d succeeded", bad)
		}
	}
}

// logs holds what a provider logged.
type logs struct {
	mu      sync.Mutex
	records []record
	changed chan struct{} // closed and replaced at every record
}

// record is one log record, its attributes as text.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (l *logs) all() []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.records)
}

// wait returns the first record that matches, waiting for it within ctx.
func (l *logs) wait(ctx context.Context, t *testing.T, match func(record) bool) record {
	t.Helper()
	return l.waitCount(ctx, t, match, 1)
}

// waitCount waits within ctx for n records that match and returns the
// n-th.
func (l *logs) waitCount(ctx context.Context, t *testing.T, match func(record) bool, n int) record {
	t.Helper()
	for {
		l.mu.Lock()
		found := 0
		for _, r := range l.records {
			if match(r) {
				if found++; found == n {
					l.mu.Unlock()
					return r
				}
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("%d of %d log records expected: %v", found, n, ctx.Err())
		}
	}
}

// recorder is a slog.Handler adding records to logs.
type recorder struct {
	logs  *logs
	attrs []slog.Attr
}

func (h recorder) Enabled(context.Context, slog.Level) bool { return true }

func (h recorder) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: make(map[string]string)}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.logs.mu.Lock()
	h.logs.records = append(h.logs.records, rec)
	close(h.logs.changed)
	h.logs.changed = make(chan struct{})
	h.logs.mu.Unlock()
	return nil
}

func (h recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recorder{logs: h.logs, attrs: append(slices.Clip(h.attrs), attrs...)}
}

func (h recorder) WithGroup(string) slog.Handler { return h }

func TestDefaultsRunTheGatewayItselfOnEveryInterface(t *testing.T) {
	p, err := New(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if name := fleet.Provider(p).Name(); name != "local" {
		t.Errorf("name %q, want local", name)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{self, "function"}; !slices.Equal(p.command, want) {
		t.Errorf("command %q, want %q", p.command, want)
	}
	if p.grace != DefaultGrace {
		t.Errorf("grace %v, want %v", p.grace, DefaultGrace)
	}
	if env := p.environ(fleet.Spec{Region: "ams", Port: 8200}, "local-ams-1a2b3c4d"); !slices.Contains(env, "LS_WEBRTC_UDP_ADDR=:8200") {
		t.Errorf("environment %q, want LS_WEBRTC_UDP_ADDR=:8200", env)
	}
}
