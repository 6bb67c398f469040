// Package packetcache is the function's cache of one track of one
// channel: a ring of fixed slots indexed by sequence number holding the
// recent packets, from which every viewer's retransmissions and late joins
// are served, and where the newest keyframe starts (as the gateway's hub
// marked it). Storing a packet copies it into its slot and allocates
// nothing.
//
// The gateway's hub keeps caches of its own for other jobs, so they are
// not this one: its retransmission ring answers a function's NACKs per
// track, and its keyframe cache replays video and audio interleaved in
// release order to a new subscription; this cache serves both a viewer's
// NACKs and its burst from one ring per track, by sequence number, because
// every viewer's queue refers to packets by sequence number.
package packetcache

import "lightspeed/shared/relaywire"

// MaxPayload is the largest RTP payload the cache holds: the relay's
// largest packet, so every payload it carries fits.
const MaxPayload = relaywire.MaxPacketSize

// Flags of a cache slot.
const (
	slotUsed     = 1 << iota
	slotMarker   // the packet has the RTP marker bit
	slotKeyframe // the hub marked the packet as the first of a keyframe
)

// Meta describes the packet in one slot.
type Meta struct {
	Seq   uint16
	N     uint16 // payload length
	TS    uint32
	flags uint8
}

// Marker reports whether the packet has the RTP marker bit.
func (m Meta) Marker() bool { return m.flags&slotMarker != 0 }

// Keyframe reports whether the hub marked the packet as the first of a
// keyframe.
func (m Meta) Keyframe() bool { return m.flags&slotKeyframe != 0 }

// Packet is one packet offered to a Cache, with the marks the gateway's
// hub gave it.
type Packet struct {
	Seq         uint16
	TS          uint32
	Marker      bool
	Keyframe    bool   // the first packet of a keyframe
	StreamStart bool   // the first packet of a new stream
	StreamFrom  uint16 // with StreamStart: where the new stream begins (Seq, or before it when its first packets come late)
	Payload     []byte
}

// Cache is the cache of one track. It is not safe for concurrent use; its
// owner's lock guards it.
type Cache struct {
	meta []Meta
	data []byte // len(meta) slots of MaxPayload bytes
	max  int    // slots it may grow to

	started bool
	last    uint16 // newest sequence number stored

	keyframe   uint16 // first packet of the newest keyframe
	keyframeOK bool

	streamStart   uint16 // first packet of the newest stream: keyframes before it are not taken
	streamStartOK bool
}

// New makes a cache of slots slots that grows, by doubling, up to
// maxSlots to hold the packets since the last keyframe. Both are powers of
// two that divide 65536, so a sequence number maps to the same slot on
// every lap.
func New(slots, maxSlots int) *Cache {
	return &Cache{
		meta: make([]Meta, slots),
		data: make([]byte, slots*MaxPayload),
		max:  max(slots, maxSlots),
	}
}

// grow doubles the cache, keeping every packet it holds (each maps to a
// slot of its own in the larger ring).
func (c *Cache) grow() {
	n := 2 * len(c.meta)
	meta := make([]Meta, n)
	data := make([]byte, n*MaxPayload)
	for i, m := range c.meta {
		if m.flags&slotUsed == 0 {
			continue
		}
		j := int(m.Seq) & (n - 1)
		meta[j] = m
		copy(data[j*MaxPayload:(j+1)*MaxPayload], c.data[i*MaxPayload:(i+1)*MaxPayload])
	}
	c.meta, c.data = meta, data
}

// seqAfter reports whether sequence number a comes after b, modulo 2^16.
func seqAfter(a, b uint16) bool { return int16(a-b) > 0 }

func (c *Cache) slot(seq uint16) int { return int(seq) & (len(c.meta) - 1) }

// Lookup returns the meta of seq if the cache holds it.
func (c *Cache) Lookup(seq uint16) (Meta, bool) {
	m := c.meta[c.slot(seq)]
	return m, m.flags&slotUsed != 0 && m.Seq == seq
}

// Store copies p into its slot. It reports false when p is a duplicate, is
// older than the packet already in its slot, or has a payload longer than
// MaxPayload. keyframeStart is true when p is the newest packet and starts
// a keyframe: a viewer waiting for one may begin with it.
//
// The hub marks where keyframes and streams start; the cache takes its
// word. The newest keyframe is the one whose first packet has the highest
// sequence number, also when that packet came late (recovered after the
// packets behind it), but never one from before the newest stream start:
// a new viewer must not get the last stream's keyframe with the new
// stream's frames.
func (c *Cache) Store(p Packet) (stored, keyframeStart bool) {
	if len(p.Payload) > MaxPayload {
		return false, false
	}
	i := c.slot(p.Seq)
	old := &c.meta[i]
	// The GOP would lose a packet to p: grow while it may.
	for old.flags&slotUsed != 0 && c.keyframeOK && !seqAfter(c.keyframe, old.Seq) && seqAfter(p.Seq, old.Seq) && len(c.meta) < c.max {
		c.grow()
		i = c.slot(p.Seq)
		old = &c.meta[i]
	}
	if old.flags&slotUsed != 0 {
		if old.Seq == p.Seq || seqAfter(old.Seq, p.Seq) {
			return false, false
		}
		if c.keyframeOK && old.Seq == c.keyframe {
			c.keyframeOK = false
		}
	}
	newest := !c.started || seqAfter(p.Seq, c.last)
	if newest {
		c.started, c.last = true, p.Seq
	}

	n := copy(c.data[i*MaxPayload:(i+1)*MaxPayload], p.Payload)
	flags := uint8(slotUsed)
	if p.Marker {
		flags |= slotMarker
	}
	if p.Keyframe {
		flags |= slotKeyframe
	}
	*old = Meta{Seq: p.Seq, N: uint16(n), TS: p.TS, flags: flags}

	// A stream start farther back than the ring reaches guards nothing
	// any more (and would read as ahead once the numbers wrap).
	if c.streamStartOK && int(c.last-c.streamStart) >= len(c.meta) {
		c.streamStartOK = false
	}
	if p.StreamStart && (!c.streamStartOK || seqAfter(p.StreamFrom, c.streamStart)) {
		c.streamStart, c.streamStartOK = p.StreamFrom, true
		if c.keyframeOK && seqAfter(p.StreamFrom, c.keyframe) {
			c.keyframeOK = false
		}
	}
	if p.Keyframe && (!c.keyframeOK || seqAfter(p.Seq, c.keyframe)) &&
		(!c.streamStartOK || !seqAfter(c.streamStart, p.Seq)) {
		c.keyframe, c.keyframeOK = p.Seq, true
		keyframeStart = newest
	}
	return true, keyframeStart
}

// GOP returns the range of sequence numbers from the start of the newest
// keyframe to the newest packet, if the cache still holds that keyframe.
func (c *Cache) GOP() (from uint16, n int, ok bool) {
	if !c.keyframeOK {
		return 0, 0, false
	}
	span := int(c.last-c.keyframe) + 1
	if span > len(c.meta) {
		return 0, 0, false
	}
	if _, held := c.Lookup(c.keyframe); !held {
		return 0, 0, false
	}
	return c.keyframe, span, true
}

// Load copies the payload of seq into buf (at least MaxPayload bytes).
func (c *Cache) Load(seq uint16, buf []byte) (Meta, bool) {
	m, ok := c.Lookup(seq)
	if !ok {
		return Meta{}, false
	}
	i := c.slot(seq)
	copy(buf, c.data[i*MaxPayload:i*MaxPayload+int(m.N)])
	return m, true
}

// Keyframe returns the first sequence number of the newest keyframe, if
// the cache knows one.
func (c *Cache) Keyframe() (seq uint16, ok bool) { return c.keyframe, c.keyframeOK }

// Newest returns the newest sequence number stored.
func (c *Cache) Newest() uint16 { return c.last }

// Slots returns the number of slots the cache has now.
func (c *Cache) Slots() int { return len(c.meta) }
