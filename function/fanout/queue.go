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
// gen names the offsets the packet is sent with (queue.offs): 0 for none,
// the packets of a video layer a viewer never switched away from, and of
// audio. It fits in what would be the struct's padding.
type entry struct {
	track relaywire.Track
	gen   uint8
	seq   uint16
}

// job is an entry taken from a queue to be sent, with the offsets of its
// gen: the viewer's sequence number and timestamp are the cached packet's
// plus these.
type job struct {
	entry
	dseq uint16
	dts  uint32
}

// offsets map a video layer's numbering onto a viewer's one stream.
type offsets struct {
	seq uint16
	ts  uint32
}

// gens is how many sets of offsets a queue holds: gen 0 (none) and three
// more, enough for the current layer's, the previous one's (which the
// viewer's NACKs may still name) and a third while entries of an older one
// are still queued.
const gens = 4

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
	// The offsets of each gen, and how many queued entries name it: a
	// gen's offsets change only while none does, so every entry is sent
	// with the offsets it was queued with. pop copies them into the job.
	offs [gens]offsets
	refs [gens]int
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
	if e.gen != 0 {
		q.refs[e.gen]++
	}
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

// newGen gives offs a gen that neither keep nor also names and no queued
// entry names, and reports false when there is none (entries of three
// layers are queued, which the next keyframe has gone past).
func (q *queue) newGen(keep, also uint8, offs offsets) (uint8, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for g := uint8(1); g < gens; g++ {
		if g != keep && g != also && q.refs[g] == 0 {
			q.offs[g] = offs
			return g, true
		}
	}
	return 0, false
}

// pop moves up to len(dst) entries, oldest first, into dst, each with the
// offsets of its gen.
func (q *queue) pop(dst []job) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < len(dst) && q.n > 0 {
		e := q.ring[q.head]
		dst[n] = job{entry: e}
		if e.gen != 0 {
			o := q.offs[e.gen]
			dst[n].dseq, dst[n].dts = o.seq, o.ts
			q.refs[e.gen]--
		}
		q.head++
		if q.head == len(q.ring) {
			q.head = 0
		}
		q.n--
		n++
	}
	return n
}
