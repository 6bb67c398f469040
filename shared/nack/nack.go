// Package nack finds the holes in a stream of RTP sequence numbers and
// decides, within fixed bounds, which to request again with a NACK.
package nack

import "time"

// Bounds that make NACK storms impossible: at most Policy.Outstanding
// sequence numbers (MaxOutstanding by default, never more than MaxTracked)
// are ever tracked, each asked for a bounded number of times.
const (
	MaxOutstanding = 64   // default of Policy.Outstanding
	MaxTracked     = 1024 // upper limit of Policy.Outstanding
	MaxJump        = 512  // a larger forward jump is a discontinuity, not loss
)

// Policy says how often and how long a hole is requested again.
type Policy struct {
	Tries   int           // requests per missing packet; default 3
	Retry   time.Duration // between requests for the same packet; default 15 ms
	Timeout time.Duration // a missing packet is given up after this; default 500 ms

	// Outstanding bounds the sequence numbers tracked as missing at once;
	// beyond it the oldest are given up. Default MaxOutstanding, at most
	// MaxTracked (larger values are capped).
	Outstanding int
	// Batch bounds the sequence numbers one Due call returns; those left
	// over stay due for the next call. 0: no bound but Outstanding.
	Batch int
}

func (p Policy) withDefaults() Policy {
	if p.Tries == 0 {
		p.Tries = 3
	}
	if p.Retry == 0 {
		p.Retry = 15 * time.Millisecond
	}
	if p.Timeout == 0 {
		p.Timeout = 500 * time.Millisecond
	}
	if p.Outstanding <= 0 {
		p.Outstanding = MaxOutstanding
	}
	p.Outstanding = min(p.Outstanding, MaxTracked)
	return p
}

// missing is one sequence number the publisher has not delivered yet.
type missing struct {
	seq   uint16
	since time.Time // when the gap was seen
	next  time.Time // when to ask (again)
	tries int
}

// Tracker finds the holes in one track's sequence numbers and decides
// which to request again. The zero value uses the default Policy. Its
// storage is allocated at the first hole, for Policy.Outstanding as it is
// then; later changes of that bound have no effect. It is not safe for
// concurrent use.
type Tracker struct {
	Policy  Policy
	started bool
	highest uint16
	list    []missing // oldest first, list[:n] in use
	n       int
	evicted uint64
}

// Received records the arrival of seq. It reports whether seq filled a hole
// (a retransmission that arrived) and how many new holes its arrival opened.
func (t *Tracker) Received(seq uint16, now time.Time) (recovered bool, opened int) {
	if !t.started {
		t.started, t.highest = true, seq
		return false, 0
	}
	d := int16(seq - t.highest)
	switch {
	case d == 0:
		return false, 0
	case d < 0:
		return t.remove(seq), 0
	case int(d) > MaxJump:
		// A discontinuity (sender restart, long outage): nothing to ask for.
		t.n = 0
		t.highest = seq
		return false, 0
	}
	opened = int(d) - 1
	if opened > 0 {
		t.open(t.highest+1, opened, now)
	}
	t.highest = seq
	return false, opened
}

// open adds the k holes from first on, giving up the oldest beyond the
// bound.
func (t *Tracker) open(first uint16, k int, now time.Time) {
	if t.list == nil {
		t.list = make([]missing, t.Policy.withDefaults().Outstanding)
	}
	size := len(t.list)
	if k > size { // the oldest of the new holes do not fit at all
		t.evicted += uint64(k - size)
		first += uint16(k - size)
		k = size
	}
	if over := t.n + k - size; over > 0 {
		copy(t.list, t.list[over:t.n])
		t.n -= over
		t.evicted += uint64(over)
	}
	for i := range k {
		t.list[t.n] = missing{seq: first + uint16(i), since: now, next: now}
		t.n++
	}
}

func (t *Tracker) remove(seq uint16) bool {
	for i := 0; i < t.n; i++ {
		if t.list[i].seq == seq {
			copy(t.list[i:], t.list[i+1:t.n])
			t.n--
			return true
		}
	}
	return false
}

// Due appends to dst the sequence numbers to request now, oldest first and
// at most Policy.Batch of them, and forgets those asked for Policy.Tries
// times or missing longer than Policy.Timeout.
func (t *Tracker) Due(now time.Time, dst []uint16) []uint16 {
	p := t.Policy.withDefaults()
	kept, asked := 0, 0
	for i := 0; i < t.n; i++ {
		m := t.list[i]
		if m.tries >= p.Tries || now.Sub(m.since) > p.Timeout {
			continue
		}
		if !now.Before(m.next) && (p.Batch <= 0 || asked < p.Batch) {
			dst = append(dst, m.seq)
			asked++
			m.tries++
			m.next = now.Add(p.Retry)
		}
		t.list[kept] = m
		kept++
	}
	t.n = kept
	return dst
}

// Outstanding is the number of sequence numbers still tracked as missing.
func (t *Tracker) Outstanding() int { return t.n }

// Evicted counts holes given up because Policy.Outstanding were tracked.
func (t *Tracker) Evicted() uint64 { return t.evicted }
