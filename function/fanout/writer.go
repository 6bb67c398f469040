package fanout

import (
	"runtime"
	"sync"

	"lightspeed/function/udpbatch"
)

// Who owns what in the writers. A writer's f, batch and wake are fixed at
// newWriters; its mu guards the viewers it serves (added by their
// starters, removed by the writer goroutine), whether a round is being
// written (set as the round takes the viewers, cleared once its batch was
// sent) and whether it stopped. What
// one round works on (its copy of the viewers, the entries taken from a
// queue, where the next round starts) lives on the writer goroutine's
// stack. Fanout.mu guards how many viewers each writer was given
// (Fanout.assigned). A viewer's packets are sent only by its writer
// goroutine once the starter handed it over, so its send scratch needs no
// lock.

// writer is one of the pool's writer goroutines. It owns a share of the
// viewers: when woken it takes up to a batch of entries from each of its
// viewers' queues and writes them, all in one round of its send batch, so
// that what it wrote leaves in a few sendmmsg calls, each viewer's
// packets of a frame as one segmented send (see udpbatch.Conn).
// A viewer's packets are written by one writer only, in queue order. Nothing in the write
// path waits for a viewer (pion's SRTP write and the UDP socket never
// block on a peer), so sharing a writer costs a viewer nothing but its
// turn; a viewer whose queue overflows drops its own packets.
type writer struct {
	f     *Fanout
	batch *udpbatch.Batch // where its rounds' datagrams wait to be sent
	wake  chan struct{}   // a token when one of its viewers has work

	mu      sync.Mutex
	viewers []*viewer // viewers past their burst
	busy    bool      // a round is being written: it took the viewers, and is not over
	stopped bool
}

// newWriters starts one writer per CPU the process may use.
func (f *Fanout) newWriters() {
	n := runtime.GOMAXPROCS(0)
	f.writers = make([]*writer, n)
	f.assigned = make([]int, n)
	for i := range f.writers {
		w := &writer{f: f, batch: f.conn.NewBatch(), wake: make(chan struct{}, 1)}
		f.writers[i] = w
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			w.run()
		}()
	}
}

// pickWriter returns the writer that was given the fewest viewers.
// Called with Fanout.mu held.
func (f *Fanout) pickWriter() *writer {
	best := 0
	for i, n := range f.assigned {
		if n < f.assigned[best] {
			best = i
		}
	}
	f.assigned[best]++
	return f.writers[best]
}

// wakeWriters wakes every writer.
func (f *Fanout) wakeWriters() {
	for _, w := range f.writers {
		w.poke()
	}
}

// poke wakes the writer.
func (w *writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// add gives v to the writer, which from now on drains v's queue. It
// reports false when the writer stopped.
func (w *writer) add(v *viewer) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.viewers = append(w.viewers, v)
	w.mu.Unlock()
	w.poke()
	return true
}

// remove takes v from the writer.
func (w *writer) remove(v *viewer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.viewers = removeViewer(w.viewers, v)
}

// removeViewer removes v from vs, moving the last viewer into its place.
func removeViewer(vs []*viewer, v *viewer) []*viewer {
	for i, x := range vs {
		if x == v {
			last := len(vs) - 1
			vs[i] = vs[last]
			vs[last] = nil
			return vs[:last]
		}
	}
	return vs
}

// roundShare is how many queued entries a viewer gets per round: a whole
// keyframe of a few Mbit/s stream (~100 packets at 2.5 Mbit/s), so that
// each viewer's frame completes before the next viewer's starts, instead
// of every viewer's keyframe completing only at the end of the last round.
const roundShare = 256

// run is the writer goroutine.
func (w *writer) run() {
	var (
		entries [roundShare]job
		round   []*viewer // this round's copy of w.viewers
		turn    int       // where the next round starts in w.viewers
	)
	for {
		select {
		case <-w.wake:
		case <-w.f.quit:
			w.stop()
			return
		}
		// Each round starts one viewer further on, so that no viewer is
		// always the last served, a keyframe's whole round after the first
		// (docs/bench.md).
		w.mu.Lock()
		round = rotated(round[:0], w.viewers, turn)
		turn++
		w.busy = true
		w.mu.Unlock()

		more := false
		w.batch.BeginRound()
		for _, v := range round {
			select {
			case <-v.done:
				w.remove(v)
				v.exit()
				continue
			default:
			}
			n := v.queue.pop(entries[:])
			for i := range entries[:n] {
				if !v.send(&entries[i]) {
					break
				}
			}
			more = more || n == len(entries)
		}
		w.batch.EndRound()
		w.mu.Lock()
		w.busy = false
		w.mu.Unlock()
		clear(round)
		if more {
			w.poke()
		}
	}
}

// rotated appends vs to dst starting at vs[k mod len(vs)], wrapping
// around, and returns dst.
func rotated(dst, vs []*viewer, k int) []*viewer {
	if len(vs) == 0 {
		return dst
	}
	k %= len(vs)
	dst = append(dst, vs[k:]...)
	return append(dst, vs[:k]...)
}

// stop hands back the viewers the writer still has when the fan-out
// closes.
func (w *writer) stop() {
	w.mu.Lock()
	vs := w.viewers
	w.viewers = nil
	w.stopped = true
	w.mu.Unlock()
	for _, v := range vs {
		v.exit()
	}
}
