package relay

import (
	"time"

	"lightspeed/shared/nack"
	"lightspeed/shared/relaywire"
)

// window is how many sequence numbers behind the newest a flow remembers
// as received: a packet arriving within it is handed on once, a packet
// farther behind means the numbering restarted. It divides 2^16, so the
// ring of bits stays aligned across the wrap-around.
const window = nack.MaxJump

// flow is the receive state of one track: the NACK tracker that finds its
// holes and a ring of bits, one per sequence number of the window, set for
// those received.
type flow struct {
	channel uint32
	track   relaywire.Track
	tracker nack.Tracker
	started bool
	highest uint16
	seen    [window / 64]uint64
}

func (f *flow) mark(seq uint16)        { f.seen[seq%window/64] |= 1 << (seq % 64) }
func (f *flow) unmark(seq uint16)      { f.seen[seq%window/64] &^= 1 << (seq % 64) }
func (f *flow) marked(seq uint16) bool { return f.seen[seq%window/64]&(1<<(seq%64)) != 0 }

// restart forgets everything and starts the flow at seq.
func (f *flow) restart(seq uint16, now time.Time) {
	f.tracker = nack.Tracker{Policy: nackPolicy}
	f.tracker.Received(seq, now)
	f.seen = [window / 64]uint64{}
	f.started, f.highest = true, seq
	f.mark(seq)
}

// accept records the arrival of seq and reports whether to hand the packet
// on: every sequence number once, whether it came in order, as a
// retransmission (even one from behind the window: the tracker still knew
// its hole), or late after its NACKs were given up; duplicates not.
func (f *flow) accept(seq uint16, now time.Time, st *counters) bool {
	if !f.started {
		f.restart(seq, now)
		return true
	}
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
		// Far behind: the numbering restarted; follow it.
		f.restart(seq, now)
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
