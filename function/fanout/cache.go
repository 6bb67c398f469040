package fanout

import "lightspeed/shared/relaywire"

// maxPayload is the largest RTP payload the fan-out carries: the relay's
// largest packet, so every payload it carries fits.
const maxPayload = relaywire.MaxPacketSize

// Slots of the per-track caches. They are powers of two that divide 65536,
// so a sequence number maps to the same slot on every lap. The video cache
// also holds the packets since the last keyframe: it starts at
// videoSlots (about 1.2 s at 2.5 Mbit/s, 0.6 MB: a 1 s GOP, and far more
// than a NACK's round trip) and doubles, up to videoSlotsMax (about 4 s at
// 8 Mbit/s, 4.9 MB), whenever the current GOP would not fit; a channel's
// fixed memory follows its stream. Audio is never asked for again (Opus
// has no NACK here): its cache only holds packets until every viewer's
// writer has sent them, 256 slots (5 s of 20 ms frames, 0.3 MB).
const (
	videoSlots    = 512
	videoSlotsMax = 4096
	audioSlots    = 256
)

// Flags of a cache slot.
const (
	slotUsed     = 1 << iota
	slotMarker   // the packet has the RTP marker bit
	slotKeyframe // the hub marked the packet as the first of a keyframe
)

// cached describes the packet in one slot.
type cached struct {
	seq   uint16
	n     uint16 // payload length
	ts    uint32
	flags uint8
}

func (c cached) marker() bool { return c.flags&slotMarker != 0 }

// incoming is one packet offered to a packetCache, with the marks the
// gateway's hub gave it.
type incoming struct {
	seq         uint16
	ts          uint32
	marker      bool
	keyframe    bool // the first packet of a keyframe
	streamStart bool // the first packet of a new stream
	payload     []byte
}

// packetCache is the shared cache of one track of one channel: a ring of
// fixed slots indexed by sequence number holding the recent payloads, from
// which every viewer's retransmissions and late joins are served, and the
// sequence number where the last keyframe starts. Storing a packet copies
// it into its slot and allocates nothing. It is not safe for concurrent
// use; the channel's lock guards it.
type packetCache struct {
	meta []cached
	data []byte // len(meta) slots of maxPayload bytes
	max  int    // slots it may grow to

	started bool
	last    uint16 // newest sequence number stored

	keyframe   uint16 // first packet of the newest keyframe
	keyframeOK bool

	streamStart   uint16 // first packet of the newest stream: keyframes before it are not taken
	streamStartOK bool
}

// newPacketCache makes a cache of slots slots that grows, by doubling, up
// to maxSlots to hold the packets since the last keyframe.
func newPacketCache(slots, maxSlots int) *packetCache {
	return &packetCache{
		meta: make([]cached, slots),
		data: make([]byte, slots*maxPayload),
		max:  max(slots, maxSlots),
	}
}

// grow doubles the cache, keeping every packet it holds (each maps to a
// slot of its own in the larger ring).
func (c *packetCache) grow() {
	n := 2 * len(c.meta)
	meta := make([]cached, n)
	data := make([]byte, n*maxPayload)
	for i, m := range c.meta {
		if m.flags&slotUsed == 0 {
			continue
		}
		j := int(m.seq) & (n - 1)
		meta[j] = m
		copy(data[j*maxPayload:(j+1)*maxPayload], c.data[i*maxPayload:(i+1)*maxPayload])
	}
	c.meta, c.data = meta, data
}

// seqAfter reports whether sequence number a comes after b, modulo 2^16.
func seqAfter(a, b uint16) bool { return int16(a-b) > 0 }

func (c *packetCache) slot(seq uint16) int { return int(seq) & (len(c.meta) - 1) }

// lookup returns the meta of seq if the cache holds it.
func (c *packetCache) lookup(seq uint16) (cached, bool) {
	m := c.meta[c.slot(seq)]
	return m, m.flags&slotUsed != 0 && m.seq == seq
}

// store copies p into its slot. It reports false when p is a duplicate, is
// older than the packet already in its slot, or has a payload longer than
// maxPayload. keyframeStart is true when p is the newest packet and starts
// a keyframe: a viewer waiting for one may begin with it.
//
// The hub marks where keyframes and streams start; the cache takes its
// word. The newest keyframe is the one whose first packet has the highest
// sequence number, also when that packet came late (recovered after the
// packets behind it), but never one from before the newest stream start:
// a new viewer must not get the last stream's keyframe with the new
// stream's frames.
func (c *packetCache) store(p incoming) (stored, keyframeStart bool) {
	if len(p.payload) > maxPayload {
		return false, false
	}
	i := c.slot(p.seq)
	old := &c.meta[i]
	// The GOP would lose a packet to p: grow while it may.
	for old.flags&slotUsed != 0 && c.keyframeOK && !seqAfter(c.keyframe, old.seq) && seqAfter(p.seq, old.seq) && len(c.meta) < c.max {
		c.grow()
		i = c.slot(p.seq)
		old = &c.meta[i]
	}
	if old.flags&slotUsed != 0 {
		if old.seq == p.seq || seqAfter(old.seq, p.seq) {
			return false, false
		}
		if c.keyframeOK && old.seq == c.keyframe {
			c.keyframeOK = false
		}
	}
	newest := !c.started || seqAfter(p.seq, c.last)
	if newest {
		c.started, c.last = true, p.seq
	}

	n := copy(c.data[i*maxPayload:(i+1)*maxPayload], p.payload)
	flags := uint8(slotUsed)
	if p.marker {
		flags |= slotMarker
	}
	if p.keyframe {
		flags |= slotKeyframe
	}
	*old = cached{seq: p.seq, n: uint16(n), ts: p.ts, flags: flags}

	// A stream start farther back than the ring reaches guards nothing
	// any more (and would read as ahead once the numbers wrap).
	if c.streamStartOK && int(c.last-c.streamStart) >= len(c.meta) {
		c.streamStartOK = false
	}
	if p.streamStart && (!c.streamStartOK || seqAfter(p.seq, c.streamStart)) {
		c.streamStart, c.streamStartOK = p.seq, true
		if c.keyframeOK && seqAfter(p.seq, c.keyframe) {
			c.keyframeOK = false
		}
	}
	if p.keyframe && (!c.keyframeOK || seqAfter(p.seq, c.keyframe)) &&
		(!c.streamStartOK || !seqAfter(c.streamStart, p.seq)) {
		c.keyframe, c.keyframeOK = p.seq, true
		keyframeStart = newest
	}
	return true, keyframeStart
}

// gop returns the range of sequence numbers from the start of the newest
// keyframe to the newest packet, if the cache still holds that keyframe.
func (c *packetCache) gop() (from uint16, n int, ok bool) {
	if !c.keyframeOK {
		return 0, 0, false
	}
	span := int(c.last-c.keyframe) + 1
	if span > len(c.meta) {
		return 0, 0, false
	}
	if _, held := c.lookup(c.keyframe); !held {
		return 0, 0, false
	}
	return c.keyframe, span, true
}

// load copies the payload of seq into buf (at least maxPayload bytes).
func (c *packetCache) load(seq uint16, buf []byte) (cached, bool) {
	m, ok := c.lookup(seq)
	if !ok {
		return cached{}, false
	}
	i := c.slot(seq)
	copy(buf, c.data[i*maxPayload:i*maxPayload+int(m.n)])
	return m, true
}
