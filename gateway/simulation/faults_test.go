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

// soakFor is how long TestFaultSoak runs: $LS_SOAK (a duration; the long
// form of the suite runs 30m), else 2 minutes.
func soakFor(t *testing.T) time.Duration {
	if v := os.Getenv("LS_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 2*time.Minute {
			t.Fatalf("LS_SOAK=%q: want a duration of at least 2m (its first minute is warm-up)", v)
		}
		return d
	}
	return 2 * time.Minute
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	if d := n*sxx - sx*sx; d != 0 {
		return (n*sxy - sx*sy) / d
	}
	return 0
}

// latestStats returns the observer's last "STATS <name>" figures.
func latestStats(obs *netns.Process, name string) (goroutines, heap int64, ok bool) {
	lines := obs.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		var n string
		if _, err := fmt.Sscanf(lines[i], "STATS %s %d %d", &n, &goroutines, &heap); err == nil && n == name {
			return goroutines, heap, true
		}
	}
	return 0, 0, false
}

// TestFaultSoak: one function, ten viewers watching throughout and ten
// more joining and leaving every 15 s, for soakFor. After a minute of
// warm-up, goroutines and RSS are sampled at the same load (20 viewers),
// just before each swap, and heap in use ten times a second (its
// least-squares slope sees through the collector's sawtooth). Must hold:
// the gateway's and the function's goroutines stay within 10 % + 5 of
// one another at every sample (nothing leaks per viewer), their heap in
// use drifts by less than a quarter of its mean over the run, and the ten
// steady viewers keep their sessions, their delay grows by less than
// 100 ms (delayMeter) and they lose under 5 % of their packets.
// (On a 2-core machine shared with other work, twenty viewers under the
// race detector lost 1–2 % over two minutes, where ten viewers for
// seconds lose none: the figure is printed to follow.) RSS slopes are
// reported, not asserted: over minutes they mostly show the race
// detector's and the runtime's warm-up.
func TestFaultSoak(t *testing.T) {
	d := soakFor(t)
	o := options{regions: regions[:1], env: []string{"LS_FUNCTION_MIN=1", "LS_FUNCTION_CAPACITY=40", "LS_FUNCTION_SCALE_AT=100"},
		fnEnv: []string{"LS_METRICS_ADDR=:9091"}, scrape: "gateway=127.0.0.1:" + httpPort + ",function={ams}:9091"}
	s := start(t, o)
	fn := s.readyIn("ams")["ams"]
	steady := s.viewers("ams", 10)
	s.servedAll(steady, 10, fn)
	gwPid, fnPid := s.gateway.Cmd.Process.Pid, pidOf(t, fn.ID)

	type sample struct {
		at             time.Duration
		gwRSS, fnRSS   int
		gwGo, fnGo     int64
		gwHeap, fnHeap int64
	}
	var samples []sample
	began := time.Now()
	var churn *netns.Process
	swaps := 0
	for time.Since(began) < d {
		next := s.viewers("ams", 10)
		s.waitFor("ten more viewers playing", func() bool {
			for i := range 10 {
				if received(next, i).packets < 30 {
					return false
				}
			}
			return true
		})
		if churn != nil {
			churn.Stop()
		}
		churn = next
		swaps++
		s.waitFor("15 s with them", func() bool { return time.Since(began) >= time.Duration(swaps)*15*time.Second })
		var sm sample
		sm.at = time.Since(began)
		sm.gwRSS, sm.fnRSS = rssKB(t, gwPid), rssKB(t, fnPid)
		var ok1, ok2 bool
		sm.gwGo, sm.gwHeap, ok1 = latestStats(s.fleet, "gateway")
		sm.fnGo, sm.fnHeap, ok2 = latestStats(s.fleet, "function")
		if !ok1 || !ok2 {
			t.Fatalf("no Go metrics from the gateway (%v) or the function (%v)", ok1, ok2)
		}
		samples = append(samples, sm)
	}
	lost, got, grown := 0, 0, 0
	for i := range 10 {
		p := received(steady, i)
		if p.session != 1 || p.lost*20 > p.packets {
			t.Errorf("steady viewer %d: %+v, want its first session and under 5 %% lost", i, p)
		}
		if p.delayGrown > 100 {
			t.Errorf("steady viewer %d: its delay grew by %d ms", i, p.delayGrown)
		}
		lost, got, grown = lost+p.lost, got+p.packets, max(grown, p.delayGrown)
	}

	var xs, gwR, fnR, gwG, fnG []float64
	for _, sm := range samples {
		if sm.at < time.Minute {
			continue
		}
		xs = append(xs, sm.at.Minutes())
		gwR, fnR = append(gwR, float64(sm.gwRSS)), append(fnR, float64(sm.fnRSS))
		gwG, fnG = append(gwG, float64(sm.gwGo)), append(fnG, float64(sm.fnGo))
	}
	if len(xs) < 3 {
		t.Fatalf("%d samples after the warm-up", len(xs))
	}
	heapOf := func(name string) (xs, heap []float64) {
		for _, l := range s.fleet.Lines() {
			var n string
			var g, h, ms int64
			if _, err := fmt.Sscanf(l, "STATS %s %d %d %d", &n, &g, &h, &ms); err == nil && n == name {
				if at := time.UnixMilli(ms).Sub(began); at >= time.Minute {
					xs, heap = append(xs, at.Minutes()), append(heap, float64(h))
				}
			}
		}
		return xs, heap
	}
	gwHx, gwH := heapOf("gateway")
	fnHx, fnH := heapOf("function")
	spread := func(v []float64) (lo, hi float64) { return slices.Min(v), slices.Max(v) }
	mean := func(v []float64) float64 {
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		return sum / float64(len(v))
	}
	for _, m := range []struct {
		name             string
		heapX, heap, gos []float64
	}{{"gateway", gwHx, gwH, gwG}, {"function", fnHx, fnH, fnG}} {
		if len(m.heap) < 10 {
			t.Fatalf("%d heap samples of the %s", len(m.heap), m.name)
		}
		span := m.heapX[len(m.heapX)-1] - m.heapX[0]
		if drift := slope(m.heapX, m.heap) * span; drift > 0.25*mean(m.heap) {
			t.Errorf("%s heap in use drifted %+.0f kB over %.1f min (mean %.0f kB)", m.name, drift/1024, span, mean(m.heap)/1024)
		}
		if lo, hi := spread(m.gos); hi-lo > 0.1*lo+5 {
			t.Errorf("%s goroutines between %.0f and %.0f at the same load", m.name, lo, hi)
		}
	}
	gl, gh := spread(gwG)
	fl, fh := spread(fnG)
	t.Logf("FAULT soak %v: %d swaps of 10 viewers beside 10 steady ones (%.2f %% of their packets lost, their delay grown by %d ms at most); from minute 1, heap slope gateway %+.0f kB/min (mean %.0f MB), function %+.0f kB/min (mean %.0f MB); RSS slope gateway %+.0f kB/min, function %+.0f kB/min; goroutines gateway %.0f–%.0f, function %.0f–%.0f",
		d, swaps, 100*float64(lost)/float64(max(got, 1)), grown, slope(gwHx, gwH)/1024, mean(gwH)/(1<<20), slope(fnHx, fnH)/1024, mean(fnH)/(1<<20), slope(xs, gwR), slope(xs, fnR), gl, gh, fl, fh)
}
