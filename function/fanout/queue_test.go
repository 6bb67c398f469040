package fanout

import (
	"testing"

	"lightspeed/shared/relaywire"
)

func TestQueue(t *testing.T) {
	t.Run("entries come out in order across the ring's end", func(t *testing.T) {
		q := newQueue(3, make(chan struct{}, 1))
		var out [2]entry
		for round := uint16(0); round < 5; round++ {
			q.push(entry{relaywire.Video, round * 2})
			q.push(entry{relaywire.Audio, round*2 + 1})
			if n := q.pop(out[:]); n != 2 || out[0].seq != round*2 || out[1] != (entry{relaywire.Audio, round*2 + 1}) {
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
		var out [8]entry
		if n := q.pop(out[:]); n != 2 || out[0].seq != 0 || out[1].seq != 1 {
			t.Fatalf("kept %v, want the two oldest", out[:n])
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
