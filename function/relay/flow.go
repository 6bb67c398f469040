package relay

import (
	"time"

	"lightspeed/shared/nack"
	"lightspeed/shared/relaywire"
)

// window is how many sequence numbers behind the newest a flow remembers
// as received: a packet arriving within it is handed on once; one farther
// behind is handed on only if the NACK tracker still holds its hole. It
// divides 2^16, so the ring of bits stays aligned across the wrap-around.
const window = nack.MaxJump

// flow is the receive state of one track: the SSRC of its stream, the
// NACK tracker that finds its holes and a ring of bits, one per sequence
// number of the window, set for those received.
type flow struct {
	channel uint32
	track   relaywire.Track
	tracker nack.Tracker
	started bool
	ssrc    uint32
	oldSSRC uint32 // the stream before the newest one (if hasOld); its stragglers are dropped
	hasOld  bool
	stale   int // far-behind packets dropped in a row
	highest uint16
	seen    [window / 64]uint64
}

func (f *flow) mark(seq uint16)        { f.seen[seq%window/64] |= 1 << (seq % 64) }
func (f *flow) unmark(seq uint16)      { f.seen[seq%window/64] &^= 1 << (seq % 64) }
func (f *flow) marked(seq uint16) bool { return f.seen[seq%window/64]&(1<<(seq%64)) != 0 }

// restart forgets everything and starts the flow at seq of stream ssrc.
func (f *flow) restart(seq uint16, ssrc uint32, now time.Time) {
	f.tracker = nack.Tracker{Policy: nackPolicy}
	f.tracker.Received(seq, now)
	f.seen = [window / 64]uint64{}
	f.started, f.ssrc, f.highest, f.stale = true, ssrc, seq, 0
	f.mark(seq)
}

// anchor tells the flow where its subscription starts: first, the
// sequence number of the first packet the gateway sends of stream ssrc.
// Packets from first up to the first one the flow received were lost
// before the flow could know they were sent; they become holes the
// tracker asks for. (The first packets of a subscription are the cached
// keyframe's SPS and IDR: lost and not asked for, a new viewer would wait
// for the next keyframe.) Called with the gateway's answer to the
// subscription, which datagrams may overtake.
func (f *flow) anchor(first uint16, ssrc uint32, now time.Time, st *counters) {
	if !f.started {
		f.restart(first-1, ssrc, now) // first itself comes next
		return
	}
	if ssrc != f.ssrc {
		return
	}
	if d := int(int16(f.highest - first)); d < 0 || d >= window {
		return // first is newer than everything received, or too far back to tell
	}
	lo := first // the oldest packet received from first on
	for lo != f.highest && !f.marked(lo) {
		lo++
	}
	if lo == first {
		return
	}
	// The tracker again, from first-1 on, as if the packets received had
	// come in order: the holes before lo open, those after it open again.
	f.tracker = nack.Tracker{Policy: nackPolicy}
	f.tracker.Received(first-1, now)
	for seq := lo; ; seq++ {
		if f.marked(seq) {
			f.tracker.Received(seq, now)
		}
		if seq == f.highest {
			break
		}
	}
	st.lost.Add(uint64(lo - first))
}

// staleLimit is how many far-behind packets in a row, none handed on in
// between, make a flow take the numbering as jumped (by half the sequence
// space or more, which reads as behind) and follow it: a stream's
// duplicates never come that many in a row.
const staleLimit = 64

// accept records the arrival of packet seq of stream ssrc and reports
// whether to hand it on: every sequence number once, whether it came in
// order, as a retransmission (even one from behind the window: the tracker
// still knew its hole), or late after its NACKs were given up; duplicates
// not. Another SSRC is another stream, with numbering of its own: the flow
// follows it from its first packet and drops the old stream's stragglers.
// (A gateway keeps a channel's SSRC and numbering for its life, across
// publisher reconnects, and a flow lives as long as one connection to one
// gateway: this is a guard, as is staleLimit.)
func (f *flow) accept(seq uint16, ssrc uint32, now time.Time, st *counters) bool {
	switch {
	case !f.started:
		f.restart(seq, ssrc, now)
		return true
	case ssrc == f.ssrc:
	case f.hasOld && ssrc == f.oldSSRC:
		st.duplicates.Add(1)
		return false
	default:
		old := f.ssrc
		f.restart(seq, ssrc, now)
		f.oldSSRC, f.hasOld = old, true
		return true
	}
	if ok := f.accepted(seq, now, st); ok {
		f.stale = 0
		return true
	}
	return false
}

// accepted is accept for a packet of the flow's stream.
func (f *flow) accepted(seq uint16, now time.Time, st *counters) bool {
	recovered, opened := f.tracker.Received(seq, now)
	st.lost.Add(uint64(opened))
	switch d := int(int16(seq - f.highest)); {
	case d > 0:
		if d >= window {
			f.seen = [window / 64]uint64{}
		} else {
			for s := f.highest + 1; s != seq; s++ {
				f.unmark(s) // missing, for now
			}
		}
		f.highest = seq
		f.mark(seq)
	case d <= -window && recovered:
		// A retransmission of a hole still tracked, come back after the
		// window moved past it (a burst of losses in a keyframe cache that
		// keeps coming): hand it on, but leave the ring alone, whose bit for
		// it now stands for a newer sequence number.
		st.recovered.Add(1)
	case d <= -window:
		// Far behind, its hole no longer tracked: a duplicate
		// retransmission, or a packet so late (over a second at a few
		// hundred packets a second) that no viewer waits for it. Which, the
		// ring cannot tell; either way it is dropped, and the flow's
		// numbering stays, unless such packets keep coming.
		if f.stale++; f.stale >= staleLimit {
			f.restart(seq, f.ssrc, now)
			return true
		}
		st.duplicates.Add(1)
		return false
	case f.marked(seq):
		st.duplicates.Add(1)
		return false
	default:
		f.mark(seq)
		if recovered {
			st.recovered.Add(1)
		} else {
			st.late.Add(1)
		}
	}
	return true
}
