package ftl

import "time"

// NACK bounds. The FTL SDK keeps its last 2048 packets, so a request for a
// packet further back than that can never be answered; the hub holds a gap
// for a few tens of milliseconds only, so a retransmission later than
// nackTimeout is useless. These bounds make NACK storms impossible: at most
// maxOutstanding sequence numbers are ever asked for, each at most
// nackTries times.
const (
	maxOutstanding = 64                     // sequence numbers tracked as missing at once
	maxNACKJump    = 512                    // a larger forward jump is a discontinuity, not loss
	nackTries      = 3                      // requests per missing packet
	nackRetry      = 15 * time.Millisecond  // between requests for the same packet
	nackTimeout    = 500 * time.Millisecond // a missing packet is given up after this
)

// missing is one sequence number the publisher has not delivered yet.
type missing struct {
	seq   uint16
	since time.Time // when the gap was seen
	next  time.Time // when to ask (again)
	tries int
}

// nackTracker finds the holes in one publisher track's sequence numbers and
// decides which to request again. It is not safe for concurrent use.
type nackTracker struct {
	started bool
	highest uint16
	list    [maxOutstanding]missing // oldest first
	n       int
	evicted uint64 // given up because the list was full
}

// seqLess reports whether a comes before b in 16-bit serial-number order.
func seqLess(a, b uint16) bool { return int16(a-b) < 0 }

// received records the arrival of seq. It reports whether seq filled a hole
// (a retransmission that arrived) and how many new holes its arrival opened.
func (t *nackTracker) received(seq uint16, now time.Time) (recovered bool, opened int) {
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
	case int(d) > maxNACKJump:
		// A discontinuity (sender restart, long outage): nothing to ask for.
		t.n = 0
		t.highest = seq
		return false, 0
	}
	for s := t.highest + 1; s != seq; s++ {
		t.add(s, now)
		opened++
	}
	t.highest = seq
	return false, opened
}

func (t *nackTracker) add(seq uint16, now time.Time) {
	if t.n == len(t.list) {
		copy(t.list[:], t.list[1:])
		t.n--
		t.evicted++
	}
	t.list[t.n] = missing{seq: seq, since: now, next: now}
	t.n++
}

func (t *nackTracker) remove(seq uint16) bool {
	for i := 0; i < t.n; i++ {
		if t.list[i].seq == seq {
			copy(t.list[i:], t.list[i+1:t.n])
			t.n--
			return true
		}
	}
	return false
}

// due appends to dst the sequence numbers to request now, and forgets those
// that were asked for nackTries times or are older than nackTimeout.
func (t *nackTracker) due(now time.Time, dst []uint16) []uint16 {
	kept := 0
	for i := 0; i < t.n; i++ {
		m := t.list[i]
		if m.tries >= nackTries || now.Sub(m.since) > nackTimeout {
			continue
		}
		if !now.Before(m.next) {
			dst = append(dst, m.seq)
			m.tries++
			m.next = now.Add(nackRetry)
		}
		t.list[kept] = m
		kept++
	}
	t.n = kept
	return dst
}

// outstanding is the number of sequence numbers still tracked as missing.
func (t *nackTracker) outstanding() int { return t.n }
