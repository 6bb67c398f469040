package simulation

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"lightspeed/gateway/fleet"
	"lightspeed/shared/testkit/netns"
)

// TestTheFleetFollowsViewersAcrossRegions runs the gateway in the center
// of three regions (ams 5 ms, sin 80 ms and syd 110 ms from it on the
// relay path), functions of capacity 4 that the fleet scales out at 50 %,
// and viewers in the regions:
//
//  1. the first viewer of ams waits for a function started in ams;
//  2. the first viewer of sin is served at once from ams, the only
//     function; ams, at half its capacity, starts a second function
//     before its first is full, and sin gets its own function;
//  3. the first viewer of syd is served at once from sin, the nearest
//     region with room, and syd gets its own function, where the next
//     viewer of syd lands;
//  4. that function, killed with SIGKILL, is replaced in syd, and its
//     viewer comes back on its own;
//  5. the gateway, killed with SIGKILL and started again with the same
//     data dir, adopts the functions that kept running (no new ones) and
//     the viewers keep playing;
//  6. once the viewers leave, every function stops when idle.
func TestTheFleetFollowsViewersAcrossRegions(t *testing.T) {
	s := start(t, options{})

	// 1.
	a1 := s.viewer("ams")
	ams1 := s.servedBy(a1, 0, 1)
	if !strings.HasPrefix(ams1, "ams (") {
		t.Fatalf("first viewer of ams served by %q", ams1)
	}

	// 2.
	s1 := s.viewer("sin")
	if got := s.servedBy(s1, 0, 1); got != ams1 {
		t.Fatalf("first viewer of sin served by %q, want at once by %q", got, ams1)
	}
	fs := s.waitFleet("a second function in ams and one in sin, ready", func(fs []fleet.Info) bool {
		return len(in(fs, "ams", fleet.StateReady)) == 2 && len(in(fs, "sin", fleet.StateReady)) == 1
	})
	for _, f := range in(fs, "ams", fleet.StateReady) {
		if f.Viewers >= f.Capacity {
			t.Fatalf("ams's function %s is full (%d of %d): the second should start before", f.ID, f.Viewers, f.Capacity)
		}
	}
	sin := in(fs, "sin", fleet.StateReady)[0]

	// 3.
	y1 := s.viewer("syd")
	if got, want := s.servedBy(y1, 0, 1), "sin ("+sin.ID+")"; got != want {
		t.Fatalf("first viewer of syd served by %q, want at once by the nearest region's %q", got, want)
	}
	fs = s.waitFleet("a function ready in syd", func(fs []fleet.Info) bool {
		return len(in(fs, "syd", fleet.StateReady)) == 1
	})
	syd := in(fs, "syd", fleet.StateReady)[0]
	y2 := s.viewer("syd")
	if got, want := s.servedBy(y2, 0, 1), "syd ("+syd.ID+")"; got != want {
		t.Fatalf("second viewer of syd served by %q, want its region's new function %q", got, want)
	}

	// 4.
	if err := syscall.Kill(pidOf(t, syd.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	back := s.servedBy(y2, 0, 2)
	t.Logf("the killed function's viewer plays again %v after the kill, served by %s", time.Since(killed).Round(time.Millisecond), back)
	fs = s.waitFleet("a replacement ready in syd", func(fs []fleet.Info) bool {
		r := in(fs, "syd", fleet.StateReady)
		return len(r) == 1 && r[0].ID != syd.ID && !slices.ContainsFunc(fs, func(f fleet.Info) bool { return f.ID == syd.ID })
	})
	t.Logf("syd's function replaced %v after the kill", time.Since(killed).Round(time.Millisecond))

	// 5.
	var running []string
	for _, f := range fs {
		if f.State == fleet.StateReady {
			running = append(running, f.ID)
		}
	}
	slices.Sort(running)
	viewers := []*netns.Process{a1, s1, y1, y2}
	if err := s.gateway.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.gateway.Wait()
	restarted := time.Now()
	if _, err := s.fleet.WaitLine(t.Context(), "DOWN 1"); err != nil {
		t.Fatal(err)
	}
	s.startGateway()
	s.waitFleet("the restarted gateway's fleet: the same functions, ready", func(fs []fleet.Info) bool {
		var ids []string
		for _, f := range fs {
			if f.State != fleet.StateReady {
				return false
			}
			ids = append(ids, f.ID)
		}
		slices.Sort(ids)
		return slices.Equal(ids, running)
	})
	t.Logf("%d functions adopted and ready %v after the gateway's restart began", len(running), time.Since(restarted).Round(time.Millisecond))
	var before [4]progress
	for i, v := range viewers {
		before[i] = received(v, 0)
	}
	for i, v := range viewers {
		s.waitFor(fmt.Sprintf("viewer %d playing after the restart", i), func() bool {
			p := received(v, 0)
			return p.session > before[i].session && p.packets >= 30 || p.session == before[i].session && p.packets >= before[i].packets+30
		})
	}

	// 6.
	for _, v := range viewers {
		v.Stop()
	}
	s.waitFleet("every function stopped when idle", func(fs []fleet.Info) bool {
		for _, f := range fs {
			if f.State != fleet.StateStopped {
				return false
			}
		}
		return len(fs) == len(running)
	})
}
