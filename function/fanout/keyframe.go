package fanout

import (
	"sync"
	"sync/atomic"
	"time"

	"lightspeed/shared/relaywire"
)

// Keyframe requests. A viewer's decoder that lost its reference (or never
// had one) sends a PLI or FIR about the video track. The gateway's hub can
// ask a WHIP publisher for a keyframe (an FTL publisher cannot be asked);
// the fan-out hands the request to the relay client (Upstream), which
// sends it as a keyframe_request. The viewers' RTCP readers call
// requestKeyframe; nothing in it waits: the throttle is a lock held for a
// comparison, and Upstream.RequestKeyframe only queues.
//
// Requests are aggregated per channel and video layer (track): the first
// goes at once, and those that follow within keyframeInterval, from any
// viewer of the channel, are dropped (counted as throttled), not sent when the interval is up. A
// keyframe serves every viewer of the channel, the one asked for arrives
// within that second, and the WHIP ingest sends the publisher at most one
// request a second itself, so a second request merged into the end of the
// interval would mostly ask again for a keyframe on its way. A decoder
// still without one asks again (browsers repeat their PLI while they wait),
// and that request goes once the interval is up. Dropping needs no timer
// and no goroutine per channel.

// keyframeInterval is the least time between two keyframe requests the
// fan-out hands on for one video layer of one channel.
const keyframeInterval = time.Second

// keyframeGate throttles the keyframe requests of one channel, per video
// layer. Its fields are guarded by its mu: the RTCP readers of all the
// channel's viewers take it, and the layer switches.
type keyframeGate struct {
	mu   sync.Mutex
	last [relaywire.NumTracks]time.Time // per track, when the last request was handed on; zero: never
}

// pass reports whether a request for track t at now may be handed on,
// and if so records it.
func (g *keyframeGate) pass(t relaywire.Track, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	last := &g.last[t]
	if !last.IsZero() && now.Sub(*last) < keyframeInterval {
		return false
	}
	*last = now
	return true
}

// keyframeCounters count the keyframe requests of the fan-out's viewers,
// one per RTCP packet that carried a PLI or FIR about a viewer's video,
// and one per switch of a viewer to another layer.
type keyframeCounters struct {
	sent      atomic.Uint64 // handed to the relay client
	throttled atomic.Uint64 // dropped: another went for the channel less than keyframeInterval before
	dropped   atomic.Uint64 // refused by the relay client: not connected, or its queue full
}

// requestKeyframe asks the gateway, through the relay client, for a
// keyframe of video track t of ch, unless one was asked for within
// keyframeInterval. It is called by the viewers' RTCP readers and by layer
// switches, and never waits.
func (f *Fanout) requestKeyframe(ch *channel, t relaywire.Track) {
	if !ch.keyframes.pass(t, f.now()) {
		f.keyframes.throttled.Add(1)
		return
	}
	if f.up.RequestKeyframe(ch.id, t) {
		f.keyframes.sent.Add(1)
	} else {
		f.keyframes.dropped.Add(1)
	}
}
