package hub

import "lightspeed/shared/relaywire"

// gopMax bounds the GOP cache; a longer GOP leaves the cache invalid until
// the next keyframe. Simulcast layers share it.
const gopMax = 8192

// gopCache holds copies of the packets released since the last keyframe:
// every video packet from the keyframe's first one on and every audio
// packet released after it, in release order. With several video layers it
// holds what was released since the oldest of the layers' newest
// keyframes, so that it starts at a keyframe of every layer that has had
// one. Its storage is reused from one GOP to the next, so it stops
// allocating once grown. (The function's packetcache holds a GOP too, but
// per track in a ring by sequence number that also answers NACKs; a new
// subscription here needs the tracks replayed interleaved as they were
// released, which that ring cannot tell.)
type gopCache struct {
	valid   bool // starts at a keyframe and is complete
	entries []gopEntry
	data    []byte // the packets' bytes, back to back
	// start is where each video layer's newest keyframe starts in
	// entries; -1 for a layer without one in the cache.
	start [relaywire.NumTracks]int
}

type gopEntry struct {
	off int // where its bytes start in data
	stored
}

// invalidate empties the cache until the next keyframe.
func (c *gopCache) invalidate() {
	c.valid = false
	c.entries = c.entries[:0]
	c.data = c.data[:0]
	for i := range c.start {
		c.start[i] = -1
	}
}

// keyframe is told that the next packet added starts a keyframe of video
// track t, one of the first layers tracks: the cache drops what no layer
// needs any more.
func (c *gopCache) keyframe(t Track, layers int) {
	if !c.valid {
		c.invalidate()
		c.valid = true
	}
	c.start[t] = len(c.entries)
	from := c.start[t]
	for i := range layers {
		if s := c.start[relaywire.LayerTrack(i)]; s >= 0 {
			from = min(from, s)
		}
	}
	c.trim(from)
}

// trim drops the first n entries.
func (c *gopCache) trim(n int) {
	if n == 0 {
		return
	}
	if n == len(c.entries) {
		c.entries, c.data = c.entries[:0], c.data[:0]
	} else {
		off := c.entries[n].off
		c.data = c.data[:copy(c.data, c.data[off:])]
		c.entries = c.entries[:copy(c.entries, c.entries[n:])]
		for i := range c.entries {
			c.entries[i].off -= off
		}
	}
	for i, s := range c.start {
		switch {
		case s >= n:
			c.start[i] = s - n
		case s >= 0:
			c.start[i] = -1
		}
	}
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
