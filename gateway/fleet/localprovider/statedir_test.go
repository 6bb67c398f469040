//go:build linux

package localprovider

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lightspeed/gateway/fleet"
)

// crashedGateway runs a gateway (the re-executed test binary, see
// playGateway) whose provider keeps its state in dir and creates one
// function on port, then kills it with SIGKILL once the function runs, as
// a crash would. The function lives on; it is killed when the test ends
// if it still runs. It returns the function's machine id and pid.
func crashedGateway(ctx context.Context, t *testing.T, dir string, port int) (string, int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gateway := exec.CommandContext(ctx, self)
	gateway.Env = append(os.Environ(), gatewayRole+"="+strconv.Itoa(port), stateDirRole+"="+dir, "GORACE=atexit_sleep_ms=0")
	gateway.Stderr = os.Stderr
	out, err := gateway.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			gateway.Process.Kill()
			gateway.Wait()
		}
	}()
	// The gateway logs its function's id and pid once it has recorded it.
	lines := bufio.NewScanner(out)
	var attrs map[string]string
	for attrs == nil {
		if !lines.Scan() {
			t.Fatalf("the gateway ended before its function started: %v", lines.Err())
		}
		if strings.Contains(lines.Text(), `msg="local: function started"`) {
			attrs = make(map[string]string)
			for _, f := range strings.Fields(lines.Text()) {
				if k, v, ok := strings.Cut(f, "="); ok {
					attrs[k] = v
				}
			}
		}
	}
	id := attrs["function"]
	pid, err := strconv.Atoi(attrs["pid"])
	if err != nil || id == "" {
		t.Fatalf("no function id and pid in %q", lines.Text())
	}
	t.Cleanup(func() {
		if hasEnv(pid, "LS_MACHINE_ID="+id) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	waitPort(ctx, t, port, true)
	gateway.Process.Kill()
	gateway.Wait()
	killed = true
	return id, pid
}

// waitPort waits until UDP port 127.0.0.1:port is bound or free.
func waitPort(ctx context.Context, t *testing.T, port int, bound bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for portBound(t, port) != bound {
		select {
		case <-ctx.Done():
			t.Fatalf("port %d bound: %v, want %v: %v", port, !bound, bound, ctx.Err())
		case <-tick.C:
		}
	}
}

// stateSetup is setup with a state directory.
func stateSetup(t *testing.T, dir string) (*Provider, *logs) {
	t.Helper()
	return setup(t, context.Background(), Config{StateDir: dir, Grace: 5 * time.Second})
}

// runPID is the pid of machine id's process, 0 if none runs.
func runPID(p *Provider, id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.machines[id]; m != nil && m.run != nil {
		return m.run.pid
	}
	return 0
}

// readTestRecord reads machine id's record in dir.
func readTestRecord(t *testing.T, dir, id string) machineRecord {
	t.Helper()
	rec, err := readRecord(filepath.Join(dir, id+".json"), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// exitedPID returns the pid of a process that has exited and been
// reaped.
func exitedPID(t *testing.T) int {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh:", err)
	}
	cmd := exec.Command(sh, "-c", "exit 0")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestAKilledGatewaysFunctionIsAdoptedByTheNext(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	port := freePort(t)
	before := time.Now()
	id, pid := crashedGateway(ctx, t, dir, port)
	start := readTestRecord(t, dir, id).Start
	if !running(pid, start) || !portBound(t, port) {
		t.Fatalf("the function %d ended with its gateway", pid)
	}

	p, l := stateSetup(t, dir)
	list, _ := p.List(ctx)
	if len(list) != 1 {
		t.Fatalf("list %+v, want the function of the killed gateway", list)
	}
	m := list[0]
	if m.ID != id || m.Region != "ams" || m.Port != port || m.State != fleet.Started || m.Created.Before(before) || m.Created.After(time.Now()) {
		t.Errorf("listed %+v, want %s started in ams on port %d", m, id, port)
	}
	if got := runPID(p, id); got != pid {
		t.Errorf("adopted pid %d, want %d", got, pid)
	}
	l.wait(ctx, t, func(r record) bool {
		return r.msg == "local: function adopted" && r.attrs["function"] == id && r.attrs["pid"] == strconv.Itoa(pid)
	})

	// What the process writes from now on is logged as its own.
	f, err := os.OpenFile(filepath.Join(dir, id+".log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "written after the adoption")
	f.Close()
	l.wait(ctx, t, func(r record) bool {
		return r.msg == "written after the adoption" && r.attrs["function"] == id && r.attrs["region"] == "ams"
	})

	if err := p.Stop(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, p, id, fleet.Stopped)
	if running(pid, start) {
		t.Errorf("process %d runs after Stop", pid)
	}
	waitPort(ctx, t, port, false)
	l.wait(ctx, t, func(r record) bool { return r.msg == "local: function stopped" && r.attrs["function"] == id })
	if rec := readTestRecord(t, dir, id); rec.State != fleet.Stopped || rec.PID != 0 || rec.Port != port || rec.Region != "ams" {
		t.Errorf("record %+v after Stop, want stopped without a pid", rec)
	}
}

func TestAnAdoptedFunctionKilledBehindTheProvidersBackFails(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	id, pid := crashedGateway(ctx, t, dir, freePort(t))
	p, l := stateSetup(t, dir)
	waitState(ctx, t, p, id, fleet.Started)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, p, id, fleet.Failed)
	r := l.wait(ctx, t, func(r record) bool { return r.msg == "local: function failed" && r.attrs["function"] == id })
	if r.level != slog.LevelError {
		t.Errorf("logged at %v, want an error", r.level)
	}
	if rec := readTestRecord(t, dir, id); rec.State != fleet.Failed || rec.PID != 0 {
		t.Errorf("record %+v, want failed without a pid", rec)
	}
}

func TestARecordOfADeadProcessIsStoppedAndStartsAgain(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	port := freePort(t)
	created := time.Now().Add(-time.Hour).Round(0)
	rec := machineRecord{
		ID:      "local-ams-0123abcd",
		Region:  "ams",
		Port:    port,
		Env:     functionEnv(t.TempDir()),
		Image:   "/old/function",
		Created: created,
		State:   fleet.Started,
		PID:     exitedPID(t),
		Start:   1,
	}
	if err := writeRecord(dir, rec); err != nil {
		t.Fatal(err)
	}
	p, l := stateSetup(t, dir)
	list, _ := p.List(ctx)
	if len(list) != 1 || list[0].ID != rec.ID || list[0].State != fleet.Stopped || list[0].Port != port || list[0].Region != "ams" || !list[0].Created.Equal(created) {
		t.Fatalf("list %+v, want %s stopped in ams on port %d", list, rec.ID, port)
	}
	if got := readTestRecord(t, dir, rec.ID); got.State != fleet.Stopped || got.PID != 0 {
		t.Errorf("record %+v, want stopped without a pid", got)
	}

	// Start runs it with its recorded environment, and logs its output.
	if err := p.Start(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	m := waitState(ctx, t, p, rec.ID, fleet.Started)
	if m.Image != p.command[0] || !m.Created.Equal(created) {
		t.Errorf("started %+v, want it created at %v running %s", m, created, p.command[0])
	}
	r := l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == rec.ID && strings.Contains(r.msg, started) })
	if r.attrs["region"] != "ams" || !strings.Contains(r.msg, fmt.Sprintf("webrtc=127.0.0.1:%d", port)) {
		t.Errorf("function logged %q %v, want its region and its WebRTC address", r.msg, r.attrs)
	}
	if got := readTestRecord(t, dir, rec.ID); got.State != fleet.Started || got.PID != runPID(p, rec.ID) || !running(got.PID, got.Start) {
		t.Errorf("record %+v, want started with the running pid %d", got, runPID(p, rec.ID))
	}

	// Destroy removes its files.
	if err := p.Destroy(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{rec.ID + ".json", rec.ID + ".log"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s after Destroy: %v, want it gone", name, err)
		}
	}
}

func TestARecordOfAnotherProcessIsNotAdopted(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep:", err)
	}
	// Another process has the recorded pid: it does not have the
	// recorded start time, or not the machine's id in its environment.
	other := exec.Command(sleep, "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Wait()
	defer other.Process.Kill()
	_, start, err := procStat(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	recs := []machineRecord{
		{ID: "local-ams-00000001", Region: "ams", Port: freePort(t), Created: time.Now(), State: fleet.Started, PID: other.Process.Pid, Start: start + 1},
		{ID: "local-ams-00000002", Region: "ams", Port: freePort(t), Created: time.Now(), State: fleet.Started, PID: other.Process.Pid, Start: start},
	}
	for _, rec := range recs {
		if err := writeRecord(dir, rec); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := stateSetup(t, dir)
	for _, rec := range recs {
		if m := waitState(ctx, t, p, rec.ID, fleet.Stopped); runPID(p, m.ID) != 0 {
			t.Errorf("machine %s adopted process %d", m.ID, runPID(p, m.ID))
		}
	}
	p.Close()
	if !running(other.Process.Pid, start) {
		t.Error("the other process was stopped")
	}
}

func TestCloseWithAStateDirStopsEveryFunctionAndKeepsTheirRecords(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	adoptedPort, ownPort := freePort(t), freePort(t)
	adopted, pid := crashedGateway(ctx, t, dir, adoptedPort)
	start := readTestRecord(t, dir, adopted).Start

	p, l := stateSetup(t, dir)
	waitState(ctx, t, p, adopted, fleet.Started)
	own, err := p.Create(ctx, functionSpec(t, ownPort))
	if err != nil {
		t.Fatal(err)
	}
	l.wait(ctx, t, func(r record) bool { return r.attrs["function"] == own.ID && strings.Contains(r.msg, started) })
	p.Close()

	if running(pid, start) {
		t.Errorf("adopted process %d runs after Close", pid)
	}
	for _, port := range []int{adoptedPort, ownPort} {
		if portBound(t, port) {
			t.Errorf("port %d is still bound after Close", port)
		}
	}
	list, _ := p.List(ctx)
	if len(list) != 2 {
		t.Errorf("list %+v after Close, want both machines", list)
	}
	for _, m := range list {
		if m.State != fleet.Stopped {
			t.Errorf("machine %s is %q after Close, want stopped", m.ID, m.State)
		}
		if rec := readTestRecord(t, dir, m.ID); rec.State != fleet.Stopped || rec.PID != 0 {
			t.Errorf("record %+v after Close, want stopped without a pid", rec)
		}
	}

	// The next provider lists both, stopped.
	next, _ := stateSetup(t, dir)
	for _, id := range []string{adopted, own.ID} {
		waitState(ctx, t, next, id, fleet.Stopped)
	}
}

func TestAMalformedRecordIsRemovedAndLogged(t *testing.T) {
	ctx := waitCtx(t)
	dir := t.TempDir()
	bad := map[string]string{
		"local-ams-00000001.json": "{not json",
		"local-ams-00000002.json": `{"id": "local-ams-00000003", "region": "ams", "port": 8200, "created": "2026-01-02T03:04:05Z"}`,
		"local-ams-00000004.json": `{"id": "local-ams-00000004", "region": "ams", "port": 0, "created": "2026-01-02T03:04:05Z"}`,
	}
	for name, text := range bad {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p, l := stateSetup(t, dir)
	if list, _ := p.List(ctx); len(list) != 0 {
		t.Errorf("list %+v, want none", list)
	}
	for name := range bad {
		path := filepath.Join(dir, name)
		r := l.wait(ctx, t, func(r record) bool {
			return r.msg == "local: malformed machine record removed" && r.attrs["file"] == path
		})
		if r.level != slog.LevelError || r.attrs["err"] == "" {
			t.Errorf("logged %v %v, want an error with its cause", r.level, r.attrs)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: %v, want it removed", name, err)
		}
	}
}
