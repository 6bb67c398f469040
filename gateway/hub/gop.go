package hub

// gopMax bounds the GOP cache; a longer GOP leaves the cache invalid until
// the next keyframe.
const gopMax = 4096

// gopCache holds copies of the packets released since the last keyframe:
// every video packet from the keyframe's first one on and every audio
// packet released after it, in release order. Its storage is reused from
// one GOP to the next, so it stops allocating once grown. (The function's
// packetcache holds a GOP too, but per track in a ring by sequence number
// that also answers NACKs; a new subscription here needs both tracks
// replayed interleaved as they were released, which that ring cannot
// tell.)
type gopCache struct {
	valid   bool // starts at a keyframe and is complete
	entries []gopEntry
	data    []byte // the packets' bytes, back to back
}

type gopEntry struct {
	off int // where its bytes start in data
	stored
}

// reset empties the cache at a keyframe.
func (c *gopCache) reset() {
	c.valid = true
	c.entries = c.entries[:0]
	c.data = c.data[:0]
}

// invalidate empties the cache until the next keyframe.
func (c *gopCache) invalidate() {
	c.reset()
	c.valid = false
}

// add appends a copy of p if the cache is valid.
func (c *gopCache) add(p Packet) {
	if !c.valid {
		return
	}
	if len(c.entries) == gopMax {
		c.invalidate()
		return
	}
	c.entries = append(c.entries, gopEntry{off: len(c.data), stored: storedOf(p)})
	c.data = append(c.data, p.Data...)
}

// packet returns cached packet i; its Data aliases the cache.
func (c *gopCache) packet(i int) Packet {
	e := c.entries[i]
	return e.packet(c.data[e.off : e.off+int(e.n)])
}
