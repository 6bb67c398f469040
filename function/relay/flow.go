package relay

import (
	"bytes"
	"time"

	"lightspeed/shared/nack"
	"lightspeed/shared/relaywire"
)

// window is how many sequence numbers behind the newest a flow remembers
// as received: a packet arriving within it is handed on once; one farther
// behind is handed on only if the NACK tracker still holds its hole. It
// divides 2^16, so the ring of bits stays aligned across the wrap-around.
const window = nack.MaxJump

// Packet is one RTP packet of a subscribed channel as the relay hands it
// to the fan-out: numbered for the function's viewers, with what the
// gateway's hub decided about it. The fan-out trusts these marks and never
// inspects the media to find them.
type Packet struct {
	Channel   uint32
	Track     relaywire.Track
	Seq       uint16 // continuous for the channel's life on this function, across restarts of the relayed stream
	Timestamp uint32 // likewise
	Marker    bool
	Keyframe  bool // the first packet of a keyframe: a decoder may start here
	// StreamStart marks the first packet of a new stream: the publisher
	// restarted (the hub's mark), or the relayed stream did (another SSRC,
	// as after a gateway restart, or numbering that jumped). A keyframe
	// from before it no longer serves a new viewer, and a decoder needs
	// the next keyframe.
	StreamStart bool
	// StreamFrom is, with StreamStart, the sequence number where the new
	// stream begins: Seq, or less when the stream's first packets were
	// lost and come later (recovered, they still belong to it).
	StreamFrom uint16
	// Renumbered marks a stream start of the relayed stream itself
	// (another SSRC, numbering that jumped), not of the publisher: a
	// decoder following the old stream cannot go on into this one.
	Renumbered bool
	Payload    []byte // without CSRCs, header extension and padding; valid only during the call
}

// flow is the function's one receiver of one track. It finds the holes
// and duplicates of the relayed stream (per connection: the NACK tracker,
// a ring of bits for the sequence numbers of the window that arrived, the
// SSRC it follows) and numbers what it hands on (across connections, in
// out): the relayed stream's sequence numbers and timestamps, shifted by
// offsets that change only when that stream restarts, so that viewers see
// one continuous stream.
type flow struct {
	channel uint32
	track   relaywire.Track
	out     *numbering // the channel's, kept while it is subscribed

	tracker  nack.Tracker
	started  bool
	ssrc     uint32
	oldSSRC  uint32 // the stream before the newest one (if hasOld); its stragglers are dropped
	hasOld   bool
	stale    int  // far-behind packets dropped in a row
	jumped   bool // the packet just accepted restarted the numbering of the same SSRC
	anchored bool // the subscription's answer told where the stream starts
	highest  uint16
	seen     [window / 64]uint64

	// held are datagrams of a new stream that came before the
	// subscription's answer (see waits), copied, in arrival order: handed
	// on once the answer anchors the stream. Beyond maxHeld they are
	// dropped, to be asked for again.
	held [][]byte
}

// maxHeld bounds the datagrams a flow holds for its subscription's answer:
// a keyframe cache's burst at a few megabits is a few hundred.
const maxHeld = 1024

// waits reports whether d is of a new stream that must wait for the
// subscription's answer: numbered before the answer says where that
// stream starts, its first packets, recovered later, would fall on
// numbers the old stream used.
func (f *flow) waits(d *relaywire.Datagram) bool {
	return !f.anchored && f.out.started && d.SSRC != f.out.ssrc
}

// hold keeps a copy of datagram b, which waits, and reports whether it
// could.
func (f *flow) hold(b []byte) bool {
	if len(f.held) >= maxHeld {
		return false
	}
	f.held = append(f.held, bytes.Clone(b))
	return true
}

// newFlow returns the receiver of a track whose output numbering is out.
func newFlow(channel uint32, t relaywire.Track, out *numbering) *flow {
	return &flow{channel: channel, track: t, out: out, tracker: nack.Tracker{Policy: nackPolicy}}
}

// numbering is the output numbering of one track of a subscribed channel.
// It outlives connections: a new connection (to the same gateway, whose
// hub keeps its SSRC and numbering, or to a restarted one, whose hub does
// not) continues it.
type numbering struct {
	clock   uint32 // RTP clock rate
	started bool   // a packet was numbered: the fields below hold
	ssrc    uint32 // the relayed stream numbered now
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16    // the newest output sequence number
	lastTS  uint32    // the output timestamp of the newest frame
	lastAt  time.Time // when that frame's first packet came

	// The first sequence number the gateway sends of a stream that is
	// not numbered yet (its answer to a subscription): a new stream's
	// numbering starts there, so that packets lost before the first one
	// received and recovered later fit before it.
	nextSSRC  uint32
	nextFirst uint16
	hasNext   bool
}

// expect tells the numbering where the gateway's stream ssrc starts.
func (n *numbering) expect(first uint16, ssrc uint32) {
	if n.started && ssrc != n.ssrc {
		n.nextSSRC, n.nextFirst, n.hasNext = ssrc, first, true
	}
}

// newNumbering returns the numbering of a track, with the clock of its
// kind until the subscription tells.
func newNumbering(t relaywire.Track) *numbering {
	return &numbering{clock: t.ClockRate()}
}

// farApart is how far a connection's first packet may land from the
// newest output sequence number and still continue the same numbering: a
// new connection to the same gateway starts with its keyframe cache (at
// most 4096 packets back), while an outage of minutes moves the stream on
// by tens of thousands, which reads as going backwards once past half the
// sequence space.
const farApart = 8192

// number gives p (with the relayed stream's sequence number and
// timestamp) its output numbering. A packet of another stream than the
// last one numbered, of numbering that jumped, or the first of a
// connection landing farApart or more from the newest, starts a new
// stream: its sequence number follows the newest output one (or leaves
// room for the stream's first packets, when the subscription said where
// they start) and its timestamp is advanced by the wall-clock pause since
// the newest frame (an hour at most, which 32 bits of ticks hold; at least
// one tick).
func (n *numbering) number(p *Packet, ssrc uint32, jumped, fresh bool, now time.Time) {
	far := fresh && ssrc == n.ssrc && n.started && abs16(p.Seq+n.seqOff-n.lastSeq) >= farApart
	switch {
	case !n.started:
		n.started, n.ssrc = true, ssrc
		n.lastSeq, n.lastTS, n.lastAt = p.Seq-1, p.Timestamp, now
	case ssrc != n.ssrc || jumped || far:
		pause := min(max(now.Sub(n.lastAt), 0), time.Hour)
		step := max(uint32(relaywire.Ticks(pause, n.clock)), 1)
		base := p.Seq
		if n.hasNext && ssrc == n.nextSSRC && !jumped && int16(p.Seq-n.nextFirst) >= 0 && int16(p.Seq-n.nextFirst) < window {
			base = n.nextFirst
		}
		n.ssrc, n.hasNext = ssrc, false
		n.seqOff = n.lastSeq + 1 - base
		n.tsOff = n.lastTS + step - p.Timestamp
		p.StreamStart, p.StreamFrom, p.Renumbered = true, n.lastSeq+1, true
		p.Seq += n.seqOff
		p.Timestamp += n.tsOff
		n.lastSeq, n.lastTS, n.lastAt = p.Seq, p.Timestamp, now
		return
	}
	if p.StreamStart {
		p.StreamFrom = p.Seq + n.seqOff // the hub's mark: the stream begins here
	}
	p.Seq += n.seqOff
	p.Timestamp += n.tsOff
	if int16(p.Seq-n.lastSeq) > 0 {
		if p.Timestamp != n.lastTS {
			n.lastTS, n.lastAt = p.Timestamp, now
		}
		n.lastSeq = p.Seq
	}
}

// abs16 is the distance of a difference of sequence numbers from zero.
func abs16(d uint16) int {
	if v := int(int16(d)); v >= 0 {
		return v
	}
	return -int(int16(d))
}

// receive is the flow's whole work for one datagram: accept it, then
// number it. ok is false for a packet not to hand on (a duplicate, a
// straggler of an old stream, or one that waits for the subscription's
// answer and was not held: dropped, it becomes a hole the answer's anchor
// asks for again).
func (f *flow) receive(d *relaywire.Datagram, now time.Time, st *counters) (p Packet, ok bool) {
	if f.waits(d) {
		return Packet{}, false
	}
	fresh := !f.started
	if !f.accept(d.Seq, d.SSRC, now, st) {
		return Packet{}, false
	}
	p = Packet{
		Channel:     f.channel,
		Track:       f.track,
		Seq:         d.Seq,
		Timestamp:   d.Timestamp,
		Marker:      d.Marker,
		Keyframe:    d.Flags.Keyframe(),
		StreamStart: d.Flags.StreamStart(),
		Payload:     d.Payload,
	}
	f.out.number(&p, d.SSRC, f.jumped, fresh, now)
	return p, true
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
	f.anchored = true
	f.out.expect(first, ssrc)
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
	f.jumped = false
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
			f.jumped = true
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
