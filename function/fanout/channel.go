package fanout

import (
	"sync"
	"sync/atomic"
	"time"

	"lightspeed/function/packetcache"
	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// channel is one subscribed channel of the fan-out: the shared caches of
// its tracks (its audio and each of its video layers) and the viewers its
// packets go to.
type channel struct {
	id    uint32
	ready chan struct{} // closed when the subscription was answered

	// Set before ready is closed. The video tracks come highest layer
	// first (the gateway lists them so).
	tracks []relaywire.TrackInfo
	err    error

	// Guarded by Fanout.mu.
	refs       int  // sessions of the channel, connected or not
	subscribed bool // Subscribe was called
	gone       bool // removed from the fan-out
	grace      *time.Timer
	graceGen   int

	mu      sync.RWMutex // guards media and viewers; writers of viewers read the caches under RLock
	media   [relaywire.NumTracks]trackMedia
	viewers []*viewer // joined viewers

	// Writers are woken once per video frame, at its marker packet, so
	// that each viewer's packets of a frame leave as one segmented send.
	// A frame whose marker does not come within frameHold is released by
	// the hold timer. Guarded by mu.
	wake    func()      // wakes the writers; nil in tests without a Fanout
	hold    *time.Timer // releases a held frame
	holding bool

	keyframes keyframeGate // the viewers' keyframe requests, throttled; its own lock

	in, invalid, duplicates atomic.Uint64
}

// trackMedia is the state of one track of a channel. Its packets come
// numbered as viewers see them (the relay's receiver keeps the numbering
// continuous; a viewer that switched video layers sees them shifted) and
// marked by the hub (keyframe and stream starts).
type trackMedia struct {
	cache  *packetcache.Cache // nil for a video layer until its first packet
	clock  uint32             // RTP clock rate
	lastTS uint32             // timestamp of the newest frame
	lastAt time.Time          // when the first packet of that frame arrived
}

// Slots of the per-track caches (docs/fanout.md has what they hold). The
// video cache also holds the packets since the last keyframe: it starts at
// videoSlots and doubles, up to videoSlotsMax, whenever the current GOP
// would not fit, so a channel's memory follows its stream. Audio is never
// asked for again (Opus has no NACK here): its cache only holds packets
// until every viewer's writer has sent them.
const (
	videoSlots    = 512
	videoSlotsMax = 4096
	audioSlots    = 256
)

// frameHold is how long the packets of a video frame wait for its marker
// packet before the writers send them anyway.
const frameHold = 2 * time.Millisecond

// newChannel makes a channel with the caches of its audio and its first
// video layer (the only one without simulcast); the caches of more layers
// are made at their first packet.
func newChannel(id uint32) *channel {
	ch := &channel{id: id, ready: make(chan struct{})}
	for t := range relaywire.Track(relaywire.NumTracks) {
		ch.media[t].clock = t.ClockRate()
	}
	ch.media[relaywire.Video].cache = packetcache.New(videoSlots, videoSlotsMax)
	ch.media[relaywire.Audio].cache = packetcache.New(audioSlots, audioSlots)
	return ch
}

// setTracks records the answer to the subscription.
func (ch *channel) setTracks(tracks []relaywire.TrackInfo) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, ti := range tracks {
		if t := ti.Flow.Track(); t < relaywire.NumTracks && ti.ClockRate != 0 {
			ch.media[t].clock = ti.ClockRate
		}
	}
}

// layer returns the video track of the layer of rid layer, and false when
// the channel has no such layer: then, as for "", the highest layer (the
// first video track of the subscription). Called once ready is closed.
func (ch *channel) layer(rid string) (relaywire.Track, bool) {
	top, first := relaywire.Video, true
	for _, ti := range ch.tracks {
		t := ti.Flow.Track()
		if ti.Track != "video" || !t.IsVideo() || t >= relaywire.NumTracks {
			continue
		}
		if first {
			top, first = t, false
		}
		if rid != "" && ti.Layer == rid {
			return t, true
		}
	}
	return top, rid == ""
}

// videoFmtp is the channel's H.264 fmtp line, or "" if the subscription
// did not say.
func (ch *channel) videoFmtp() string {
	for _, ti := range ch.tracks {
		if ti.Track == "video" {
			return ti.Fmtp
		}
	}
	return ""
}

// ingest stores a relayed packet in the track's cache (rp.Track below
// relaywire.NumTracks) and queues it for every viewer that takes it: the
// audio, and the video layer the viewer gets. It never waits for a viewer.
func (ch *channel) ingest(rp *relay.Packet, now time.Time) {
	ch.in.Add(1)
	t := rp.Track
	if len(rp.Payload) > packetcache.MaxPayload {
		ch.invalid.Add(1)
		return
	}
	video := t != relaywire.Audio
	p := packetcache.Packet{
		Seq:         rp.Seq,
		TS:          rp.Timestamp,
		Marker:      rp.Marker,
		Keyframe:    video && rp.Keyframe,
		StreamStart: rp.StreamStart,
		StreamFrom:  rp.StreamFrom,
		Payload:     rp.Payload,
	}

	ch.mu.Lock()
	defer ch.mu.Unlock()
	m := &ch.media[t]
	if m.cache == nil { // a video layer's first packet
		m.cache = packetcache.New(videoSlots, videoSlotsMax)
	}
	oldKey, hadKey := m.cache.Keyframe()
	stored, keyframeStart := m.cache.Store(p)
	if !stored {
		ch.duplicates.Add(1)
		return
	}
	// A keyframe revealed by a late packet (its first packet recovered
	// after the ones behind it, or a late marker before it): viewers
	// waiting for a keyframe start from it now, not at the next one.
	var gopFrom uint16
	var gopLen int
	revealed := false
	if key, ok := m.cache.Keyframe(); video && !keyframeStart && ok && (!hadKey || key != oldKey) {
		gopFrom, gopLen, revealed = m.cache.GOP()
	}
	// The newest frame's timestamp and when its first packet came: the
	// track's clock, from which sender reports and a restart extrapolate.
	// A frame's later packets come later only because of the frame's size.
	if p.Seq == m.cache.Newest() && (p.TS != m.lastTS || m.lastAt.IsZero()) {
		m.lastTS, m.lastAt = p.TS, now
	}
	// A new relayed stream of this video layer (a restarted gateway's):
	// the decoders of the layer's viewers need its first keyframe (which
	// may be this packet). A publisher's restart goes on to viewers as it
	// comes: the hub keeps its numbering, and OBS starts with a keyframe.
	restart := video && rp.Renumbered && p.Seq == m.cache.Newest()
	for _, v := range ch.viewers {
		var gen uint8
		if video {
			if t != v.cur.track {
				// Another layer than the viewer's: taken from the first
				// packet of a keyframe of the layer it switches to.
				if t != v.target || !keyframeStart || !ch.switchLayer(v, &p, t, now) {
					continue
				}
			} else {
				if restart {
					v.videoLive = false
				}
				if !v.videoLive {
					switch {
					case keyframeStart:
						v.goLive(p.Seq)
					case revealed:
						// With p, if p is in the keyframe's range.
						if queueGOP(v, t, m.cache, gopFrom, gopLen) {
							v.goLive(gopFrom)
						}
						continue
					default:
						continue
					}
				}
			}
			gen = v.cur.gen
		}
		v.queue.add(entry{track: t, gen: gen, seq: p.Seq})
	}
	ch.release(video, p.Marker)
}

// queueGOP queues to v the n cached packets of video track t from seq
// from on (the newest keyframe's), and reports whether it did: not when
// they would not all fit in v's queue (a keyframe revealed long after it
// came, which the next keyframe serves better than a queue that drops).
// Called with the channel's mu held.
func queueGOP(v *viewer, t relaywire.Track, c *packetcache.Cache, from uint16, n int) bool {
	if n > v.queue.free() {
		return false
	}
	for i := range n {
		seq := from + uint16(i)
		if _, held := c.Lookup(seq); held {
			v.queue.add(entry{track: t, gen: v.cur.gen, seq: seq})
		}
	}
	return true
}

// switchLayer moves v from its layer to video track t at p, the first
// packet of a keyframe of t, and reports whether it did. v's video goes
// on as one stream: p gets the sequence number after the newest one of
// v's layer (v's own numbering: packets v was queued, or dropped from its
// full queue and may ask for) and a timestamp advanced from that layer's
// newest frame by the wall-clock time since it came (at least one tick,
// at most an hour), and t's later packets follow with the same offsets.
// It fails when v's queue has no gen free for them (entries of two
// layers before are still queued): v stays until t's next keyframe.
// Called with mu held, for a v whose video went out (only then does a
// switch wait for a keyframe: see aim).
func (ch *channel) switchLayer(v *viewer, p *packetcache.Packet, t relaywire.Track, now time.Time) bool {
	old := &ch.media[v.cur.track]
	last := old.cache.Newest() + v.cur.seqOff
	lastTS := old.lastTS + v.cur.tsOff
	pause := min(max(now.Sub(old.lastAt), 0), time.Hour)
	step := max(uint32(relaywire.Ticks(pause, ch.media[t].clock)), 1)
	offs := offsets{seq: last + 1 - p.Seq, ts: lastTS + step - p.TS}
	var prevGen uint8
	if v.hasPrev {
		prevGen = v.prev.gen
	}
	gen, ok := v.queue.newGen(v.cur.gen, prevGen, offs)
	if !ok {
		return false
	}
	v.prev, v.hasPrev = v.cur, true
	v.cur = layerMap{track: t, gen: gen, seqOff: offs.seq, tsOff: offs.ts, from: last + 1}
	v.videoLive = true
	return true
}

// aim makes video track t the layer v is to get, and reports whether v
// now waits for a keyframe of t. Before any video went out to v, v takes
// t at once (from the keyframe cached when it joins, or t's next one);
// after, v keeps its layer until t's next keyframe start (switchLayer).
// Called with mu held.
func (ch *channel) aim(v *viewer, t relaywire.Track) bool {
	v.target = t
	if t == v.cur.track {
		return false // already there, or a switch called off
	}
	if !v.videoStarted {
		v.cur.track = t
	}
	return true
}

// layerOf is the video layer v gets now.
func (ch *channel) layerOf(v *viewer) relaywire.Track {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	return v.cur.track
}

// release wakes the writers for a packet: at the end of a video frame
// (of any layer), or for audio while no frame is held; a frame's other
// packets arm the hold timer. Called with mu held.
func (ch *channel) release(video, marker bool) {
	if ch.wake == nil {
		return
	}
	switch {
	case video && !marker:
		if !ch.holding {
			ch.holding = true
			if ch.hold == nil {
				ch.hold = time.AfterFunc(frameHold, ch.holdExpired)
			} else {
				ch.hold.Reset(frameHold)
			}
		}
		return
	case video:
		if ch.holding {
			ch.holding = false
			ch.hold.Stop()
		}
	case ch.holding:
		return // audio goes with the held frame
	}
	ch.wake()
}

// holdExpired releases a frame whose marker did not come in time.
func (ch *channel) holdExpired() {
	ch.mu.Lock()
	held := ch.holding
	ch.holding = false
	ch.mu.Unlock()
	if held {
		ch.wake()
	}
}

// stopHold stops the hold timer of a channel that goes away.
func (ch *channel) stopHold() {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.hold != nil {
		ch.hold.Stop()
	}
	ch.holding = false
}

// join makes v receive the channel's packets: under one lock it takes the
// range of the keyframe cached of v's layer as v's burst and starts
// queueing live packets, so no packet is missed or sent twice. Without a
// cached keyframe v's video waits for the next one.
func (ch *channel) join(v *viewer) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if c := ch.media[v.cur.track].cache; c != nil {
		if from, n, ok := c.GOP(); ok {
			v.burstTrack, v.burstFrom, v.burstLen = v.cur.track, from, n
			v.goLive(from)
		}
	}
	ch.viewers = append(ch.viewers, v)
}

// leave stops queueing packets for v.
func (ch *channel) leave(v *viewer) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.viewers = removeViewer(ch.viewers, v)
}

// load copies the cached payload of seq of track t into buf.
func (ch *channel) load(t relaywire.Track, seq uint16, buf []byte) (packetcache.Meta, bool) {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	if c := ch.media[t].cache; c != nil {
		return c.Load(seq, buf)
	}
	return packetcache.Meta{}, false
}

// clock is the RTP clock rate of track t.
func (ch *channel) clock(t relaywire.Track) uint32 {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	return ch.media[t].clock
}

// rtpTime is the RTP timestamp at now of v's audio (t Audio) or video (t
// Video: the layer v gets, shifted by v's offsets): the track's newest
// frame's timestamp advanced on its clock by the time since its first
// packet came. Every viewer of a track gets the same clock, and audio and
// every video layer are tied to the same wall clock. ok is false while
// the track has had no packet.
func (ch *channel) rtpTime(v *viewer, t relaywire.Track, now time.Time) (ts uint32, ok bool) {
	ch.mu.RLock()
	var off uint32
	if t != relaywire.Audio {
		t, off = v.cur.track, v.cur.tsOff
	}
	m := &ch.media[t]
	last, at, clock := m.lastTS, m.lastAt, m.clock
	ch.mu.RUnlock()
	if at.IsZero() {
		return 0, false
	}
	return last + off + uint32(relaywire.Ticks(now.Sub(at), clock)), true
}
