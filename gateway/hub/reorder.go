package hub

import (
	"time"

	"github.com/pion/rtp"
)

const (
	// reorderSize is the number of publisher packets a track can hold
	// behind a missing one; a packet further ahead resets the buffer.
	reorderSize = 512
	// maxHeldPayload bounds the payload of a held packet (an FTL packet is
	// at most 1392 bytes). A larger packet that would have to wait is not
	// kept: it counts as lost when its turn is skipped.
	maxHeldPayload = 1500
	// lateWindow is how far behind the expected sequence number a packet
	// may be and still be a late copy (the FTL client retransmits from a
	// 2048-packet ring). Packets further behind mean the publisher
	// restarted its numbering; restartAfter of them in a row resynchronize.
	lateWindow   = 2048
	restartAfter = 16
)

// seqDiff returns how far sequence number a is ahead of b, modulo 2^16
// (negative when a is behind b).
func seqDiff(a, b uint16) int { return int(int16(a - b)) }

// heldPacket is one slot of the reorder buffer: a copy of a publisher
// packet waiting for the ones before it.
type heldPacket struct {
	present bool
	marker  bool
	seq     uint16
	n       uint16
	ts      uint32
	arrival time.Time
	payload [maxHeldPayload]byte
}

// reorder is the reorder buffer of one track, indexed by publisher
// sequence number modulo reorderSize. Every held packet is within
// reorderSize ahead of next, so a slot holds at most one candidate.
type reorder struct {
	slots     *[reorderSize]heldPacket // allocated when the first packet has to wait
	started   bool                     // next is known (set by the first packet of a session)
	next      uint16                   // the publisher sequence number to release next
	held      int                      // present slots
	since     time.Time                // earliest arrival among held packets
	farBehind int                      // packets in a row beyond lateWindow behind next
}

// put keeps a copy of a packet that is ahead of next. It reports false for
// a duplicate of a held packet.
func (b *reorder) put(pkt *rtp.Packet, arrival time.Time) bool {
	if len(pkt.Payload) > maxHeldPayload {
		return true // not kept: skipped as lost when its turn passes
	}
	if b.slots == nil {
		b.slots = new([reorderSize]heldPacket)
	}
	s := &b.slots[pkt.SequenceNumber%reorderSize]
	if s.present {
		return false
	}
	s.present, s.marker, s.seq, s.ts, s.arrival = true, pkt.Marker, pkt.SequenceNumber, pkt.Timestamp, arrival
	s.n = uint16(copy(s.payload[:], pkt.Payload))
	if b.held == 0 || arrival.Before(b.since) {
		b.since = arrival
	}
	b.held++
	return true
}

// head returns the slot of next if it holds next, else nil.
func (b *reorder) head() *heldPacket {
	if b.held == 0 {
		return nil
	}
	s := &b.slots[b.next%reorderSize]
	if s.present && s.seq == b.next {
		return s
	}
	return nil
}

// resetSince recomputes since after held packets left the buffer.
func (b *reorder) resetSince() {
	first := true
	for i := range b.slots {
		s := &b.slots[i]
		if s.present && (first || s.arrival.Before(b.since)) {
			b.since, first = s.arrival, false
		}
	}
}

// writeRTP takes one publisher packet of track t from p, in arrival order
// (see Publisher.WriteRTP). Packets are released downstream in publisher
// order; a packet behind a missing one waits at most MaxHold after the
// first such arrival. Late and duplicate packets are dropped and counted.
// Packets from a publisher that does not hold the hub or has not started
// are dropped.
func (h *Hub) writeRTP(p *Publisher, t Track, pkt *rtp.Packet, arrival time.Time) {
	if t >= numTracks || pkt == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.live || h.owner != p {
		return
	}
	if t.IsVideo() && t.Layer() >= h.layers {
		return // not a layer the publisher announced
	}
	h.counters.packetsIn++
	bits := uint64(8 * (headerSize + len(pkt.Payload)))
	h.bits.add(arrival, bits)

	tr := &h.tracks[t]
	tr.bits.add(arrival, bits)
	b := &tr.buf
	if !b.started {
		b.started, b.next = true, pkt.SequenceNumber
	}
	switch d := seqDiff(pkt.SequenceNumber, b.next); {
	case d == 0:
		b.farBehind = 0
		b.next++
		h.release(tr, pkt.Timestamp, pkt.Marker, pkt.Payload, arrival)
		if b.held == 0 {
			return // nothing held before, nothing held now: the timer is unchanged
		}
		h.drain(tr)
	case d < 0 && d >= -lateWindow:
		b.farBehind = 0
		h.counters.late++
		return
	case d < 0:
		b.farBehind++
		if b.farBehind < restartAfter {
			h.counters.late++
			return
		}
		h.restart(tr, pkt, arrival)
	case d >= reorderSize:
		h.restart(tr, pkt, arrival)
	default:
		b.farBehind = 0
		if !b.put(pkt, arrival) {
			h.counters.late++
			return
		}
	}
	h.armTimer(arrival)
}

// restart handles a publisher numbering discontinuity: what is held is
// released, one output sequence number is left out to show the break, and
// pkt starts the new numbering.
func (h *Hub) restart(tr *track, pkt *rtp.Packet, arrival time.Time) {
	h.flush(tr)
	h.flushCarry(tr)
	h.counters.discontinuities++
	h.log.Info("hub: publisher sequence discontinuity", "track", tr.kind,
		"expected", tr.buf.next, "got", pkt.SequenceNumber)
	tr.seq++
	tr.buf.farBehind = 0
	tr.buf.next = pkt.SequenceNumber + 1
	h.release(tr, pkt.Timestamp, pkt.Marker, pkt.Payload, arrival)
}

// drain releases held packets from next on while next is present.
func (h *Hub) drain(tr *track) {
	b := &tr.buf
	released := false
	for s := b.head(); s != nil; s = b.head() {
		s.present = false
		b.held--
		b.next++
		released = true
		h.release(tr, s.ts, s.marker, s.payload[:s.n], s.arrival)
	}
	if released && b.held > 0 {
		b.resetSince()
	}
}

// skip gives up on the missing packets before the first held one: they
// count as lost and leave as many output sequence numbers unused.
func (h *Hub) skip(tr *track) {
	h.flushCarry(tr) // before the gap
	b := &tr.buf
	n := 0
	for b.head() == nil && n < reorderSize {
		b.next++
		n++
	}
	h.counters.lost += uint64(n)
	tr.seq += uint16(n)
}

// flush releases everything held in tr, skipping what is missing.
func (h *Hub) flush(tr *track) {
	for tr.buf.held > 0 {
		h.skip(tr)
		h.drain(tr)
	}
}

// ReleaseExpired releases the packets that waited MaxHold behind a missing
// one, skipping the missing ones (counted as lost). An internal timer calls
// it while packets are held; tests with an injected clock call it directly.
func (h *Hub) ReleaseExpired(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.releaseExpired(now)
}

// releaseExpired is ReleaseExpired with h.mu held.
func (h *Hub) releaseExpired(now time.Time) {
	for i := range h.tracks {
		tr := &h.tracks[i]
		for tr.buf.held > 0 && now.Sub(tr.buf.since) >= h.opts.MaxHold {
			h.skip(tr)
			h.drain(tr)
		}
	}
	h.armTimer(now)
}

// onTimer is the hold timer's callback.
func (h *Hub) onTimer() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.timerSet = false
	h.releaseExpired(h.opts.Now())
}

// armTimer sets the hold timer to the earliest deadline of the held
// packets, or stops it when nothing is held. now is the current time on
// the hub's clock.
func (h *Hub) armTimer(now time.Time) {
	var deadline time.Time
	found := false
	for i := range h.tracks {
		b := &h.tracks[i].buf
		if b.held == 0 {
			continue
		}
		if d := b.since.Add(h.opts.MaxHold); !found || d.Before(deadline) {
			deadline, found = d, true
		}
	}
	switch {
	case !found:
		if h.timerSet {
			h.timer.Stop()
			h.timerSet = false
		}
	case h.timerSet && deadline.Equal(h.timerDeadline):
	case h.timer == nil:
		h.timer = time.AfterFunc(deadline.Sub(now), h.onTimer)
		h.timerSet, h.timerDeadline = true, deadline
	default:
		h.timer.Reset(deadline.Sub(now))
		h.timerSet, h.timerDeadline = true, deadline
	}
}
