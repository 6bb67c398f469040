package fanout

import (
	"testing"

	"lightspeed/shared/relaywire"
)

func TestQueue(t *testing.T) {
	t.Run("entries come out in order across the ring's end", func(t *testing.T) {
		q := newQueue(3, make(chan struct{}, 1))
		var out [2]job
		for round := uint16(0); round < 5; round++ {
			q.push(entry{track: relaywire.Video, seq: round * 2})
			q.push(entry{track: relaywire.Audio, seq: round*2 + 1})
			if n := q.pop(out[:]); n != 2 || out[0].seq != round*2 || out[1].entry != (entry{track: relaywire.Audio, seq: round*2 + 1}) {
				t.Fatalf("round %d: popped %d %v", round, n, out)
			}
		}
	})
	t.Run("a full queue drops and counts, and never blocks", func(t *testing.T) {
		q := newQueue(2, make(chan struct{}, 1))
		for i := uint16(0); i < 5; i++ {
			q.push(entry{seq: i})
		}
		if q.dropped.Load() != 3 {
			t.Fatalf("dropped %d, want 3", q.dropped.Load())
		}
		var out [8]job
		if n := q.pop(out[:]); n != 2 || out[0].seq != 0 || out[1].seq != 1 {
			t.Fatalf("kept %v, want the two oldest", out[:n])
		}
	})
	t.Run("entries come out with their gen's offsets, and a gen is reused only once no entry names it", func(t *testing.T) {
		q := newQueue(8, make(chan struct{}, 1))
		g1, ok1 := q.newGen(0, 0, offsets{seq: 10, ts: 100})
		g2, ok2 := q.newGen(g1, 0, offsets{seq: 20, ts: 200})
		if !ok1 || !ok2 || g1 == 0 || g2 == 0 || g1 == g2 {
			t.Fatalf("gens %d (%v), %d (%v)", g1, ok1, g2, ok2)
		}
		q.push(entry{track: relaywire.Video, seq: 1})
		q.push(entry{track: relaywire.LayerTrack(1), gen: g1, seq: 2})
		q.push(entry{track: relaywire.LayerTrack(2), gen: g2, seq: 3})
		// The third gen is free; a fourth is not while g1's entry waits.
		g3, ok3 := q.newGen(g2, 0, offsets{seq: 30, ts: 300})
		if _, ok := q.newGen(g3, g2, offsets{}); !ok3 || ok {
			t.Fatalf("third gen %d (%v), then a fourth handed out (%v) over a queued entry", g3, ok3, ok)
		}
		var out [8]job
		n := q.pop(out[:])
		want := []job{
			{entry: entry{track: relaywire.Video, seq: 1}},
			{entry: entry{track: relaywire.LayerTrack(1), gen: g1, seq: 2}, dseq: 10, dts: 100},
			{entry: entry{track: relaywire.LayerTrack(2), gen: g2, seq: 3}, dseq: 20, dts: 200},
		}
		if n != len(want) || [3]job(out[:3]) != [3]job(want) {
			t.Fatalf("popped %v, want %v", out[:n], want)
		}
		if g, ok := q.newGen(g3, g2, offsets{seq: 40}); !ok || g != g1 {
			t.Fatalf("with the queue empty: gen %d (%v), want %d again", g, ok, g1)
		}
	})
	t.Run("the first entry into an empty queue leaves a wake-up token", func(t *testing.T) {
		q := newQueue(4, make(chan struct{}, 1))
		q.push(entry{})
		q.push(entry{})
		select {
		case <-q.notify:
		default:
			t.Fatal("no token")
		}
		select {
		case <-q.notify:
			t.Fatal("second token for a queue that never emptied")
		default:
		}
	})
}

// testWriter is a writer that is never run, for viewers without a Fanout.
func testWriter() *writer {
	return &writer{wake: make(chan struct{}, 1)}
}
