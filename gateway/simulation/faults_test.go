package simulation

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lightspeed/gateway/fleet"
	"lightspeed/shared/testkit/netns"
)

// The fault cases print one line each, "FAULT <case>: <figures>", which
// the README's reliability table is made from.

// twoRegions are ams and sin, each with a function from the start.
var twoRegions = options{
	regions: regions[:2],
	env: []string{"LS_FUNCTION_MIN=1", "LS_FUNCTION_CAPACITY=20", "LS_FUNCTION_SCALE_AT=100",
		"LS_FUNCTION_IDLE_STOP=10m"},
}

// readyIn waits until every region of o has a ready function and returns
// them by region.
func (s *sim) readyIn(names ...string) map[string]fleet.Info {
	s.t.Helper()
	byRegion := map[string]fleet.Info{}
	s.waitFleet("a function ready in "+strings.Join(names, " and "), func(fs []fleet.Info) bool {
		for _, r := range names {
			ready := in(fs, r, fleet.StateReady)
			if len(ready) != 1 {
				return false
			}
			byRegion[r] = ready[0]
		}
		return true
	})
	return byRegion
}

// servedAll waits until the n viewers of v play their first session and
// checks that fn serves each.
func (s *sim) servedAll(v *netns.Process, n int, fn fleet.Info) {
	s.t.Helper()
	want := fn.Region + " (" + fn.ID + ")"
	for i := range n {
		if got := s.servedBy(v, i, 1); got != want {
			s.t.Fatalf("viewer %d of %s served by %q, want %q", i, v.Name, got, want)
		}
	}
}

// TestFaultAFunctionKilledMidStream: ams and sin each have a function and
// ten viewers; the ams function is killed with SIGKILL. Must hold: every
// ams viewer plays again within 12 s of the kill (it notices after 5 s
// without video, as the page does, and starts a new session); the fleet
// replaces the killed function in ams; every sin viewer keeps its session
// and loses no packet.
func TestFaultAFunctionKilledMidStream(t *testing.T) {
	s := start(t, twoRegions)
	fns := s.readyIn("ams", "sin")
	ams, sin := s.viewers("ams", 10), s.viewers("sin", 10)
	s.servedAll(ams, 10, fns["ams"])
	s.servedAll(sin, 10, fns["sin"])

	if err := syscall.Kill(pidOf(t, fns["ams"].ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var back []time.Duration
	for i := range 10 {
		back = append(back, s.playingAt(ams, i, 2, 30*time.Second).Sub(killed))
	}
	slices.Sort(back)
	fs := s.waitFleet("a replacement ready in ams", func(fs []fleet.Info) bool {
		r := in(fs, "ams", fleet.StateReady)
		return len(r) == 1 && r[0].ID != fns["ams"].ID
	})
	replaced := time.Since(killed)
	if worst := back[len(back)-1]; worst > 12*time.Second {
		t.Errorf("the last ams viewer played again %v after the kill, want within 12 s", worst)
	}
	for i := range 10 {
		if p := received(sin, i); p.session != 1 || p.lost != 0 {
			t.Errorf("sin viewer %d disturbed: %+v", i, p)
		}
	}
	if n := lostSessions(sin); n != 0 {
		t.Errorf("sin viewers gave up %d sessions", n)
	}
	t.Logf("FAULT function killed: 10 of 10 viewers playing again after median %v, max %v (5 s of it the viewers' stall timeout); replacement %s ready by %v; the other region's 10 viewers lost 0 packets",
		back[len(back)/2].Round(time.Millisecond), back[len(back)-1].Round(time.Millisecond), in(fs, "ams", fleet.StateReady)[0].ID, replaced.Round(time.Millisecond))
}

// TestFaultAGatewayKilledAndRestarted: one region with a function and ten
// viewers; the gateway (holding the publisher) is killed with SIGKILL and
// started again on the same data dir. Must hold: the stream key, the
// relay secret and its certificate are unchanged; the fleet adopts the
// running function (no new one); every viewer plays on within 10 s of the
// restart.
func TestFaultAGatewayKilledAndRestarted(t *testing.T) {
	o := options{regions: regions[:1], env: []string{"LS_STREAM_KEY=", "LS_FUNCTION_MIN=1", "LS_FUNCTION_CAPACITY=20", "LS_FUNCTION_SCALE_AT=100"}}
	s := start(t, o)
	fn := s.readyIn("ams")["ams"]
	v := s.viewers("ams", 10)
	s.servedAll(v, 10, fn)
	data := filepath.Join(s.dir, "data")
	secrets := func() map[string][]byte {
		out := map[string][]byte{}
		files, _ := os.ReadDir(data)
		for _, f := range files {
			if f.Type().IsRegular() && !strings.HasPrefix(f.Name(), ".") {
				b, err := os.ReadFile(filepath.Join(data, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				out[f.Name()] = b
			}
		}
		return out
	}
	before := secrets()
	if len(before["keys.json"]) == 0 {
		t.Fatalf("no keys.json in the data dir: %v", slices.Collect(func(yield func(string) bool) {
			for k := range before {
				if !yield(k) {
					return
				}
			}
		}))
	}

	var was [10]progress
	for i := range was {
		was[i] = received(v, i)
	}
	if err := s.gateway.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.gateway.Wait()
	killed := time.Now()
	if _, err := s.fleet.WaitLine(t.Context(), "DOWN 1"); err != nil {
		t.Fatal(err)
	}
	s.startGateway()
	restarted := time.Since(killed)
	s.waitFleet("the same function adopted and ready", func(fs []fleet.Info) bool {
		return len(fs) == 1 && fs[0].ID == fn.ID && fs[0].State == fleet.StateReady
	})
	adopted := time.Since(killed)
	for i := range was {
		s.waitFor(fmt.Sprintf("viewer %d playing after the restart", i), func() bool {
			p := received(v, i)
			return p.session > was[i].session && p.packets >= 30 || p.session == was[i].session && p.packets >= was[i].packets+60
		})
	}
	playing := time.Since(killed)
	if playing-restarted > 10*time.Second {
		t.Errorf("viewers played on %v after the new gateway was up, want within 10 s", (playing - restarted).Round(time.Millisecond))
	}
	after := secrets()
	for name, b := range before {
		if name == "functions" {
			continue
		}
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed across the restart", name)
		}
	}
	sessions := 0
	for i := range was {
		sessions += received(v, i).session - was[i].session
	}
	t.Logf("FAULT gateway killed: back with its publisher in %v, function %s adopted by %v, 10 of 10 viewers playing on by %v (%d new sessions); stream key, relay secret and certificate unchanged",
		restarted.Round(time.Millisecond), fn.ID, adopted.Round(time.Millisecond), playing.Round(time.Millisecond), sessions)
}

// rssKB returns a process's resident memory in kB.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}

// TestFaultAStalledViewer: one function with ten viewers and one more in
// a process of its own, which is stopped (SIGSTOP) for 10 s. Must hold:
// the ten others keep their full rate (at least 90 % of their packets per
// second before the stall) and lose nothing; the function's memory grows
// by less than 16 MB meanwhile (the stalled viewer's queue is bounded).
func TestFaultAStalledViewer(t *testing.T) {
	s := start(t, options{regions: regions[:1], env: []string{"LS_FUNCTION_MIN=1", "LS_FUNCTION_CAPACITY=20", "LS_FUNCTION_SCALE_AT=100"}})
	fn := s.readyIn("ams")["ams"]
	others := s.viewers("ams", 10)
	s.servedAll(others, 10, fn)
	stalled := s.viewer("ams")
	s.servedAll(stalled, 1, fn)
	fnPid := pidOf(t, fn.ID)

	rate := func(d time.Duration) (perViewer float64, lost int) {
		var a [10]progress
		for i := range a {
			a[i] = received(others, i)
		}
		began := time.Now()
		s.waitFor("a measuring window", func() bool { return time.Since(began) >= d })
		total := 0
		for i := range a {
			p := received(others, i)
			if p.session != a[i].session {
				t.Fatalf("viewer %d started a new session", i)
			}
			total += p.packets - a[i].packets
			lost += p.lost
		}
		return float64(total) / 10 / time.Since(began).Seconds(), lost
	}
	normal, _ := rate(3 * time.Second)
	rssBefore := rssKB(t, fnPid)
	if err := stalled.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	during, lost := rate(10 * time.Second)
	rssDuring := rssKB(t, fnPid)
	if err := stalled.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if during < 0.9*normal {
		t.Errorf("the others' rate fell from %.0f to %.0f packets/s while a viewer was stalled", normal, during)
	}
	if lost != 0 {
		t.Errorf("the others lost %d packets", lost)
	}
	if grew := rssDuring - rssBefore; grew > 16<<10 {
		t.Errorf("the function grew by %d kB while a viewer was stalled", grew)
	}
	t.Logf("FAULT stalled viewer: the 10 others at %.0f packets/s each during a 10 s stall (%.0f before, %d lost); function RSS %+d kB",
		during, normal, lost, rssDuring-rssBefore)
}
