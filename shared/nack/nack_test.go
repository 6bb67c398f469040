package nack

import (
	"slices"
	"testing"
	"time"
)

func TestNACKTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	t.Run("a hole is requested at once, retried, then given up", func(t *testing.T) {
		var tr Tracker
		tr.Received(10, at(0))
		if _, opened := tr.Received(13, at(1)); opened != 2 {
			t.Fatalf("opened %d holes, want 2", opened)
		}
		if got := tr.Due(at(1), nil); !slices.Equal(got, []uint16{11, 12}) {
			t.Fatalf("first request %v", got)
		}
		if got := tr.Due(at(2), nil); len(got) != 0 {
			t.Fatalf("asked again before the retry interval: %v", got)
		}
		if got := tr.Due(at(1+15), nil); !slices.Equal(got, []uint16{11, 12}) {
			t.Fatalf("retry %v", got)
		}
		tr.Due(at(1+30), nil)
		if got := tr.Due(at(1+45), nil); len(got) != 0 || tr.Outstanding() != 0 {
			t.Fatalf("asked more than %d times: %v (outstanding %d)", 3, got, tr.Outstanding())
		}
	})

	t.Run("an arrival fills its hole and counts as recovered", func(t *testing.T) {
		var tr Tracker
		tr.Received(1, at(0))
		tr.Received(4, at(0))
		if rec, _ := tr.Received(2, at(5)); !rec {
			t.Fatal("retransmission not counted as recovered")
		}
		if rec, _ := tr.Received(2, at(6)); rec {
			t.Fatal("duplicate counted twice")
		}
		if got := tr.Due(at(6), nil); !slices.Equal(got, []uint16{3}) {
			t.Fatalf("due %v, want [3]", got)
		}
	})

	t.Run("wrap-around", func(t *testing.T) {
		var tr Tracker
		tr.Received(65534, at(0))
		if _, opened := tr.Received(2, at(0)); opened != 3 {
			t.Fatalf("opened %d, want 3 (65535, 0, 1)", opened)
		}
		if got := tr.Due(at(0), nil); !slices.Equal(got, []uint16{65535, 0, 1}) {
			t.Fatalf("due %v", got)
		}
		if rec, _ := tr.Received(65535, at(1)); !rec {
			t.Fatal("65535 after wrap not recognised as a retransmission")
		}
	})

	t.Run("old holes are given up after the timeout", func(t *testing.T) {
		var tr Tracker
		tr.Received(1, at(0))
		tr.Received(3, at(0))
		tr.Due(at(0), nil)
		if got := tr.Due(at(600), nil); len(got) != 0 || tr.Outstanding() != 0 {
			t.Fatalf("after the timeout: due %v, outstanding %d", got, tr.Outstanding())
		}
	})

	t.Run("at most 64 outstanding", func(t *testing.T) {
		var tr Tracker
		tr.Received(0, at(0))
		tr.Received(200, at(0)) // 199 holes
		if tr.Outstanding() != MaxOutstanding {
			t.Fatalf("outstanding %d, want %d", tr.Outstanding(), MaxOutstanding)
		}
		got := tr.Due(at(0), nil)
		if len(got) != MaxOutstanding || got[0] != 200-MaxOutstanding {
			t.Fatalf("due %d seqs from %d; want the newest %d", len(got), got[0], MaxOutstanding)
		}
	})

	t.Run("a large jump is a discontinuity, not loss", func(t *testing.T) {
		var tr Tracker
		tr.Received(0, at(0))
		if _, opened := tr.Received(5000, at(0)); opened != 0 || tr.Outstanding() != 0 {
			t.Fatalf("jump opened %d holes", opened)
		}
		if _, opened := tr.Received(5002, at(0)); opened != 1 {
			t.Fatalf("after the jump, holes are tracked again: opened %d", opened)
		}
	})
}
