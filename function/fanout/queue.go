package fanout

import (
	"sync"
	"sync/atomic"

	"lightspeed/shared/relaywire"
)

// defaultQueueSize is the number of slots of a viewer's queue: about 3 s
// of a 2.5 Mbit/s stream, far more than a healthy writer ever holds.
const defaultQueueSize = 1024

// entry names one packet in a channel's shared cache. Queues hold entries,
// not copies: the writer copies the payload out of the cache when it sends.
type entry struct {
	track relaywire.Track
	seq   uint16
}

// queue is a viewer's bounded queue of packets to send: a ring of fixed
// slots allocated once. push never waits; a full queue drops the entry and
// counts it (the viewer's NACK can still fetch the packet from the cache).
type queue struct {
	notify  chan struct{} // gets a token when the queue turns non-empty: its writer's wake
	dropped atomic.Uint64

	mu   sync.Mutex
	ring []entry
	head int
	n    int
}

func newQueue(size int, notify chan struct{}) *queue {
	return &queue{notify: notify, ring: make([]entry, size)}
}

// push queues e, or drops it when the queue is full, and wakes the
// writer when the queue turned non-empty.
func (q *queue) push(e entry) bool {
	ok, wake := q.add(e)
	if wake {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
	return ok
}

// add queues e, or drops it when the queue is full, without waking the
// writer: the caller does (the channel wakes writers once per frame). It
// reports whether e was queued and whether the queue turned non-empty.
func (q *queue) add(e entry) (queued, first bool) {
	q.mu.Lock()
	if q.n == len(q.ring) {
		q.mu.Unlock()
		q.dropped.Add(1)
		return false, false
	}
	i := q.head + q.n
	if i >= len(q.ring) {
		i -= len(q.ring)
	}
	q.ring[i] = e
	q.n++
	first = q.n == 1
	q.mu.Unlock()
	return true, first
}

// free is the number of entries the queue can take now.
func (q *queue) free() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ring) - q.n
}

// pop moves up to len(dst) entries, oldest first, into dst.
func (q *queue) pop(dst []entry) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(dst) && q.n > 0 {
		dst[n] = q.ring[q.head]
		q.head++
		if q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
		n++
	}
	return n
}
