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

	t.Run("a larger bound tracks a whole burst of holes", func(t *testing.T) {
		tr := Tracker{Policy: Policy{Outstanding: MaxTracked}}
		tr.Received(100, at(0))
		tr.Received(301, at(0)) // 200 holes
		tr.Received(602, at(0)) // 300 more
		if tr.Outstanding() != 500 || tr.Evicted() != 0 {
			t.Fatalf("outstanding %d, evicted %d; want 500, 0", tr.Outstanding(), tr.Evicted())
		}
		got := tr.Due(at(0), nil)
		var want []uint16
		for s := uint16(101); s < 602; s++ {
			if s != 301 {
				want = append(want, s)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("due %d seqs (%v...), want the 500 holes 101..601 but 301", len(got), got[:min(len(got), 5)])
		}
		if rec, _ := tr.Received(101, at(5)); !rec || tr.Outstanding() != 499 {
			t.Fatalf("the oldest hole: recovered %v, outstanding %d", rec, tr.Outstanding())
		}
	})

	t.Run("beyond the larger bound the oldest are given up", func(t *testing.T) {
		tr := Tracker{Policy: Policy{Outstanding: 300}}
		tr.Received(0, at(0))
		tr.Received(201, at(0)) // 200 holes
		tr.Received(402, at(0)) // 200 more: 100 too many
		if tr.Outstanding() != 300 || tr.Evicted() != 100 {
			t.Fatalf("outstanding %d, evicted %d; want 300, 100", tr.Outstanding(), tr.Evicted())
		}
		if got := tr.Due(at(0), nil); len(got) != 300 || got[0] != 101 || got[299] != 401 {
			t.Fatalf("due %d seqs from %d; want 101..401 but 201", len(got), got[0])
		}
	})

	t.Run("bounds above MaxTracked are capped", func(t *testing.T) {
		tr := Tracker{Policy: Policy{Outstanding: 100 * MaxTracked}}
		tr.Received(0, at(0))
		for s := uint16(2); s <= 2*(MaxTracked+100); s += 2 { // a hole before each
			tr.Received(s, at(0))
		}
		if tr.Outstanding() != MaxTracked || tr.Evicted() != 100 {
			t.Fatalf("outstanding %d, evicted %d; want %d, 100", tr.Outstanding(), tr.Evicted(), MaxTracked)
		}
		if got := tr.Due(at(0), nil); len(got) != MaxTracked || got[0] != 2*100+1 {
			t.Fatalf("due %d seqs from %d; want the newest %d", len(got), got[0], MaxTracked)
		}
	})

	t.Run("a batch bounds one request, the rest come next", func(t *testing.T) {
		tr := Tracker{Policy: Policy{Outstanding: MaxTracked, Batch: 64}}
		tr.Received(0, at(0))
		tr.Received(151, at(0)) // 150 holes
		var all []uint16
		for tick := range 3 {
			got := tr.Due(at(tick), nil)
			if len(got) > 64 {
				t.Fatalf("tick %d: %d seqs in one request", tick, len(got))
			}
			all = append(all, got...)
		}
		if len(all) != 150 || all[0] != 1 || all[149] != 150 {
			t.Fatalf("asked for %d seqs; want each of 1..150 once", len(all))
		}
		if got := tr.Due(at(3), nil); len(got) != 0 {
			t.Fatalf("asked again before the retry interval: %d seqs", len(got))
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

func TestNACKTrackerDoesNotAllocatePerPacket(t *testing.T) {
	for _, p := range []Policy{{}, {Outstanding: MaxTracked}} {
		tr := Tracker{Policy: p}
		now := time.Unix(1000, 0)
		seq, hole, recovered := uint16(0), uint16(0), 0
		dst := make([]uint16, 0, MaxTracked)
		// step receives 100 packets with one hole among them and the
		// retransmission of the step before's hole, then asks for what is
		// due: the steady state of a lossy stream.
		step := func() {
			before := hole
			for i := range 100 {
				seq++
				if i == 50 {
					hole = seq
					seq++
				}
				tr.Received(seq, now)
			}
			if rec, _ := tr.Received(before, now); rec {
				recovered++
			}
			now = now.Add(10 * time.Millisecond)
			dst = tr.Due(now, dst[:0])
		}
		step() // the first hole allocates the storage
		recovered = 0
		if n := testing.AllocsPerRun(100, step); n != 0 {
			t.Errorf("policy %+v: %v allocations per step of 101 packets", p, n)
		}
		if recovered != 101 { // AllocsPerRun runs step once more to warm up
			t.Errorf("policy %+v: %d of 101 retransmissions filled their hole", p, recovered)
		}
	}
}
