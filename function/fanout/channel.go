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
// its tracks and the viewers its packets go to.
type channel struct {
	id    uint32
	ready chan struct{} // closed when the subscription was answered

	// Set before ready is closed.
	tracks []relaywire.TrackInfo
	err    error

	// Guarded by Fanout.mu.
	refs       int  // sessions of the channel, connected or not
	subscribed bool // Subscribe was called
	gone       bool // removed from the fan-out
	grace      *time.Timer
	graceGen   int

	mu      sync.RWMutex // guards media and viewers; writers of viewers read the caches under RLock
	media   [2]trackMedia
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
// continuous) and marked by the hub (keyframe and stream starts).
type trackMedia struct {
	cache  *packetcache.Cache
	clock  uint32    // RTP clock rate
	lastTS uint32    // timestamp of the newest frame
	lastAt time.Time // when the first packet of that frame arrived
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

func newChannel(id uint32) *channel {
	ch := &channel{id: id, ready: make(chan struct{})}
	ch.media[relaywire.Video] = trackMedia{cache: packetcache.New(videoSlots, videoSlotsMax), clock: relaywire.VideoClockRate}
	ch.media[relaywire.Audio] = trackMedia{cache: packetcache.New(audioSlots, audioSlots), clock: relaywire.AudioClockRate}
	return ch
}

// setTracks records the answer to the subscription.
func (ch *channel) setTracks(tracks []relaywire.TrackInfo) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, ti := range tracks {
		t := relaywire.Audio
		if ti.Track == "video" {
			t = relaywire.Video
		}
		if ti.ClockRate != 0 {
			ch.media[t].clock = ti.ClockRate
		}
	}
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

// ingest stores a relayed packet in the track's cache and queues it for
// every viewer that takes it. It never waits for a viewer.
func (ch *channel) ingest(rp *relay.Packet, now time.Time) {
	ch.in.Add(1)
	t := rp.Track
	if len(rp.Payload) > packetcache.MaxPayload {
		ch.invalid.Add(1)
		return
	}
	p := packetcache.Packet{
		Seq:         rp.Seq,
		TS:          rp.Timestamp,
		Marker:      rp.Marker,
		Keyframe:    t == relaywire.Video && rp.Keyframe,
		StreamStart: rp.StreamStart,
		StreamFrom:  rp.StreamFrom,
		Payload:     rp.Payload,
	}

	ch.mu.Lock()
	defer ch.mu.Unlock()
	m := &ch.media[t]
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
	if key, ok := m.cache.Keyframe(); t == relaywire.Video && !keyframeStart && ok && (!hadKey || key != oldKey) {
		gopFrom, gopLen, revealed = m.cache.GOP()
	}
	// The newest frame's timestamp and when its first packet came: the
	// track's clock, from which sender reports and a restart extrapolate.
	// A frame's later packets come later only because of the frame's size.
	if p.Seq == m.cache.Newest() && (p.TS != m.lastTS || m.lastAt.IsZero()) {
		m.lastTS, m.lastAt = p.TS, now
	}
	// A new relayed stream (a restarted gateway's): viewers' decoders need
	// its first keyframe (which may be this packet). A publisher's restart
	// goes on to viewers as it comes: the hub keeps its numbering, and
	// OBS starts with a keyframe.
	restart := t == relaywire.Video && rp.Renumbered && p.Seq == m.cache.Newest()
	e := entry{track: t, seq: p.Seq}
	for _, v := range ch.viewers {
		if restart {
			v.videoLive = false
		}
		if t == relaywire.Video && !v.videoLive {
			switch {
			case keyframeStart:
				v.videoLive = true
			case revealed:
				v.videoLive = queueGOP(v, m.cache, gopFrom, gopLen) // with p, if p is in the keyframe's range
				continue
			default:
				continue
			}
		}
		v.queue.add(e)
	}
	ch.release(t, p.Marker)
}

// queueGOP queues to v the n cached video packets from seq from on (the
// newest keyframe's), and reports whether it did: not when they would not
// all fit in v's queue (a keyframe revealed long after it came, which the
// next keyframe serves better than a queue that drops). Called with the
// channel's mu held.
func queueGOP(v *viewer, c *packetcache.Cache, from uint16, n int) bool {
	if n > v.queue.free() {
		return false
	}
	for i := range n {
		seq := from + uint16(i)
		if _, held := c.Lookup(seq); held {
			v.queue.add(entry{track: relaywire.Video, seq: seq})
		}
	}
	return true
}

// release wakes the writers for a packet of track t: at the end of a
// video frame, or for audio while no frame is held; a frame's other
// packets arm the hold timer. Called with mu held.
func (ch *channel) release(t relaywire.Track, marker bool) {
	if ch.wake == nil {
		return
	}
	switch {
	case t == relaywire.Video && !marker:
		if !ch.holding {
			ch.holding = true
			if ch.hold == nil {
				ch.hold = time.AfterFunc(frameHold, ch.holdExpired)
			} else {
				ch.hold.Reset(frameHold)
			}
		}
		return
	case t == relaywire.Video:
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
// range of the cached keyframe as v's burst and starts queueing live
// packets, so no packet is missed or sent twice. Without a cached keyframe
// v's video waits for the next one.
func (ch *channel) join(v *viewer) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	from, n, ok := ch.media[relaywire.Video].cache.GOP()
	v.burstFrom, v.burstLen, v.videoLive = from, n, ok
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
	return ch.media[t].cache.Load(seq, buf)
}

// clock is the RTP clock rate of track t.
func (ch *channel) clock(t relaywire.Track) uint32 {
	ch.mu.RLock()
	defer ch.mu.RUnlock()
	return ch.media[t].clock
}

// rtpTime is the RTP timestamp of track t at now: the newest frame's
// timestamp advanced on the track's clock by the time since its first
// packet came. Every viewer of the channel gets the same clock, and audio
// and video are tied to the same wall clock. ok is false while the track
// has had no packet.
func (ch *channel) rtpTime(t relaywire.Track, now time.Time) (ts uint32, ok bool) {
	ch.mu.RLock()
	m := &ch.media[t]
	last, at, clock := m.lastTS, m.lastAt, m.clock
	ch.mu.RUnlock()
	if at.IsZero() {
		return 0, false
	}
	return last + uint32(relaywire.Ticks(now.Sub(at), clock)), true
}
