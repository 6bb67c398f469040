package flyprovider

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestPacerLetsThreeGoAtOnceThenOneASecond(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock)
	k := paceKey{subject: "3d8d413b29d089", action: "stop"}
	t0 := clock.Now()
	var at []time.Duration
	for range 6 {
		if err := p.wait(t.Context(), k); err != nil {
			t.Fatal(err)
		}
		at = append(at, clock.Now().Sub(t0))
	}
	want := []time.Duration{0, 0, 0, time.Second, 2 * time.Second, 3 * time.Second}
	for i := range want {
		if d := at[i] - want[i]; d < 0 || d > time.Millisecond {
			t.Errorf("request %d went at +%v, want +%v", i+1, at[i], want[i])
		}
	}
	// Another machine, another action: its own line.
	before := clock.Now()
	for _, other := range []paceKey{{subject: "3d8d413b29d090", action: "stop"}, {subject: k.subject, action: "start"}} {
		if err := p.wait(t.Context(), other); err != nil {
			t.Fatal(err)
		}
	}
	if clock.Now() != before {
		t.Errorf("other lines waited %v", clock.Now().Sub(before))
	}
	// Idle for a while: the burst is back, no more.
	clock.Advance(time.Minute)
	before = clock.Now()
	for range 3 {
		p.wait(t.Context(), k)
	}
	if clock.Now() != before {
		t.Errorf("a rested line waited %v for 3 requests", clock.Now().Sub(before))
	}
	p.wait(t.Context(), k)
	if w := clock.Now().Sub(before); w < time.Second-time.Millisecond {
		t.Errorf("the 4th request after rest waited %v, want 1s", w)
	}
}

func TestPacerHoldsALineUntilTheTimeGiven(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock)
	k := paceKey{action: "list"}
	p.hold(k, clock.Now().Add(7*time.Second))
	p.hold(k, clock.Now().Add(2*time.Second)) // an earlier time does not shorten it
	t0 := clock.Now()
	if err := p.wait(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	if w := clock.Now().Sub(t0); w != 7*time.Second {
		t.Errorf("waited %v, want 7s", w)
	}
}

func TestPacerWaitEndsWithItsContext(t *testing.T) {
	p := newPacer(realClock{})
	k := paceKey{action: "create"}
	for range 3 {
		p.wait(t.Context(), k)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.wait(ctx, k); err != context.DeadlineExceeded {
		t.Fatalf("wait: %v, want the context's deadline", err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("wait returned after %v", el)
	}
}

func TestPacerForgetsIdleLines(t *testing.T) {
	clock := newFakeClock()
	p := newPacer(clock)
	for i := range 10 * sweepAbove {
		p.wait(t.Context(), paceKey{subject: fmt.Sprint(i), action: "stop"})
		clock.Advance(time.Second)
	}
	if n := len(p.buckets); n > sweepAbove {
		t.Errorf("%d lines kept, want at most %d", n, sweepAbove)
	}
}
