package fanout

// maxPayload is the largest RTP payload the fan-out carries. The hub sends
// packets of at most 1200 bytes, so every payload it sends fits.
const maxPayload = 1200

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
	slotKeyframe // the payload carries an IDR slice, SPS or PPS start (h264.PayloadInfo.Keyframe)
)

// cached describes the packet in one slot.
type cached struct {
	seq   uint16
	n     uint16 // payload length
	ts    uint32
	flags uint8
}

func (c cached) marker() bool { return c.flags&slotMarker != 0 }

// incoming is one packet offered to a packetCache.
type incoming struct {
	seq      uint16
	ts       uint32
	marker   bool
	keyframe bool // h264.PayloadInfo.Keyframe
	hasSPS   bool // h264.PayloadInfo.HasSPS
	payload  []byte
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
	first   uint16 // oldest sequence number stored since the stream began
	fresh   bool   // the next packet begins a stream (first packet, or after a discontinuity)

	keyframe   uint16 // first packet of the newest keyframe
	keyframeOK bool
}

// newPacketCache makes a cache of slots slots that grows, by doubling, up
// to maxSlots to hold the packets since the last keyframe.
func newPacketCache(slots, maxSlots int) *packetCache {
	return &packetCache{
		meta:  make([]cached, slots),
		data:  make([]byte, slots*maxPayload),
		max:   max(slots, maxSlots),
		fresh: true,
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
// A keyframe starts at a packet carrying an IDR slice, SPS or PPS whose
// previous packet ended a frame (marker bit, or another timestamp), or at
// the first packet of a stream if it carries an SPS (also when it comes
// late, recovered after the packets behind it). A late packet with a
// marker bit makes the packet after it a keyframe start too, so reordering
// does not hide one.
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
	// The stream's start: its first packet, or a late one older than every
	// packet of the stream so far (the first packets lost, then recovered).
	start := c.fresh || seqAfter(c.first, p.seq)
	if start {
		c.first = p.seq
	}
	c.fresh = false
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

	if p.keyframe {
		prev, ok := c.lookup(p.seq - 1)
		if (ok && (prev.marker() || prev.ts != p.ts)) || (start && p.hasSPS) {
			c.markKeyframe(p.seq)
			keyframeStart = newest
		}
	}
	if p.marker {
		if next, ok := c.lookup(p.seq + 1); ok && next.flags&slotKeyframe != 0 {
			c.markKeyframe(p.seq + 1)
		}
	}
	return true, keyframeStart
}

func (c *packetCache) markKeyframe(seq uint16) {
	if !c.keyframeOK || seqAfter(seq, c.keyframe) {
		c.keyframe, c.keyframeOK = seq, true
	}
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
