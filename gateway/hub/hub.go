// Package hub normalizes the RTP stream of one live channel. An ingest
// claims a channel from the Registry, which gives one Publisher at a time
// per channel, and writes publisher packets through it into the channel's
// Hub; subscribers read one clean, continuous stream per track: stable
// SSRC, output sequence numbers and timestamps that continue across
// publisher reconnects, packets no larger than MaxPacketSize, keyframe
// starts marked. A Hub also keeps a retransmission ring and the packets
// since the last keyframe for late joiners.
package hub

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"lightspeed/shared/h264"
	"lightspeed/shared/relaywire"
)

// Track names a track of a channel, as the relay does: its audio or one
// layer of its video.
type Track = relaywire.Track

// The tracks of a channel; the video layers after the first are
// relaywire.LayerTrack(1) and up.
const (
	Video = relaywire.Video // H.264, 90 kHz, output payload type 96
	Audio = relaywire.Audio // Opus, 48 kHz, output payload type 97
)

const numTracks = relaywire.NumTracks

// MaxPacketSize is the size limit of every output packet, the relay's: a
// 12-byte RTP header (no CSRC, no extensions) and at most 1188 bytes of
// payload.
const MaxPacketSize = relaywire.MaxPacketSize

const (
	headerSize     = 12
	maxPayloadSize = MaxPacketSize - headerSize

	// DefaultMaxHold is the default of Options.MaxHold.
	DefaultMaxHold = 40 * time.Millisecond
)

// ErrClosed is returned by Subscription.Next once the subscription or its
// hub is closed.
var ErrClosed = errors.New("hub: closed")

// ErrInUse is wrapped by the error of Registry.Claim when another publisher
// holds the channel, as in "hub: channel 77: in use".
var ErrInUse = errors.New("in use")

// Options configure every hub of a Registry.
type Options struct {
	MaxHold time.Duration    // how long packets behind a missing one are held; default 40ms
	Logger  *slog.Logger     // default slog.Default()
	Now     func() time.Time // clock; default time.Now (tests inject one)
}

// withDefaults returns o with its zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.MaxHold <= 0 {
		o.MaxHold = DefaultMaxHold
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// PublisherInfo describes the publisher of one session (from the FTL handshake).
type PublisherInfo struct {
	Software         string // e.g. "OBS Studio 29.1.3"
	Remote           string // publisher address
	VideoCodec       string // "H264"
	AudioCodec       string // "OPUS"
	VideoPayloadType uint8
	AudioPayloadType uint8
	// Layers names the video layers of a simulcast publisher (their rids),
	// in the order of their tracks: layer i is written as
	// relaywire.LayerTrack(i). Empty: one video layer, Video, without a
	// name. At most relaywire.MaxLayers.
	Layers []string
}

// Hub normalizes the stream of one channel. All its methods are safe for
// concurrent use; one mutex guards the whole hub, and no method ever waits
// for a subscriber.
type Hub struct {
	channel uint32
	opts    Options
	log     *slog.Logger

	mu          sync.Mutex
	closed      bool
	owner       *Publisher // the claim on the channel; nil: free
	live        bool       // owner has started its session
	since       time.Time
	publisher   PublisherInfo
	askKeyframe func(Track) // the owner's keyframe requester; nil: it cannot be asked
	publishes   int
	layers      int // video layers of the current (or last) publisher: tracks LayerTrack(0..layers-1)

	tracks [numTracks]track
	subs   []*Subscription
	gop    gopCache

	frag h264.Fragmenter
	out  [MaxPacketSize]byte // the output packet being built

	timer         *time.Timer // fires ReleaseExpired; armed only while something is held
	timerSet      bool
	timerDeadline time.Time

	// what Stats reports, besides each track's own
	bits     rateWindow
	counters counters
}

// counters are the packet counts Stats reports.
type counters struct {
	packetsIn, packetsOut, lost, late, nacks, recovered, dropped uint64
	discontinuities                                              uint64
}

// New returns the hub of channel. Its output SSRCs, first sequence numbers
// and first timestamps are random and the SSRCs stay for the hub's life.
func New(channel uint32, opts Options) *Hub {
	opts = opts.withDefaults()
	h := &Hub{
		channel: channel,
		opts:    opts,
		log:     opts.Logger.With("channel", channel),
		layers:  1,
	}
	h.tracks[Audio].init(Audio, relaywire.AudioPayloadType, relaywire.AudioClockRate, 960)
	for i := range relaywire.MaxLayers {
		t := relaywire.LayerTrack(i)
		h.tracks[t].init(t, relaywire.VideoPayloadType, relaywire.VideoClockRate, 3000)
	}
	for t := range h.tracks { // distinct SSRCs
		for slices.ContainsFunc(h.tracks[:t], func(o track) bool { return o.ssrc == h.tracks[t].ssrc }) {
			h.tracks[t].ssrc = rand.Uint32()
		}
	}
	h.gop.invalidate()
	return h
}

// Channel returns the channel id of the hub.
func (h *Hub) Channel() uint32 { return h.channel }

// claim gives the hub to a new Publisher, if no other holds it.
func (h *Hub) claim() (*Publisher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("hub: channel %d: %w", h.channel, ErrClosed)
	}
	if h.owner != nil {
		return nil, fmt.Errorf("hub: channel %d: %w", h.channel, ErrInUse)
	}
	h.owner = &Publisher{hub: h}
	return h.owner, nil
}

// startPublish begins the publish session of p, if p holds the hub and has
// not started yet. The first packet released in each track continues the
// output: sequence number last+1, timestamp advanced by the wall-clock
// pause since the last released packet.
func (h *Hub) startPublish(p *Publisher, info PublisherInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.owner != p || h.live {
		return
	}
	for i := range h.tracks {
		h.tracks[i].startSession()
	}
	h.live = true
	h.since = h.opts.Now()
	h.publisher = info
	h.publisher.Layers = slices.Clone(info.Layers[:min(len(info.Layers), relaywire.MaxLayers)])
	h.layers = max(1, len(h.publisher.Layers))
	h.publishes++
	if len(h.publisher.Layers) > 0 {
		h.log.Info("hub: publish started", "remote", info.Remote, "software", info.Software, "layers", h.publisher.Layers)
	} else {
		h.log.Info("hub: publish started", "remote", info.Remote, "software", info.Software)
	}
}

// endPublish frees the hub from p, if p holds it. A started session ends:
// packets held behind missing ones are released (the missing ones counted
// as lost) and the channel goes offline. The hub and its subscriptions
// stay, waiting for the next claim.
func (h *Hub) endPublish(p *Publisher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.owner != p {
		return
	}
	h.owner = nil
	h.askKeyframe = nil
	if !h.live {
		return
	}
	for i := range h.tracks {
		h.flush(&h.tracks[i])
		h.flushCarry(&h.tracks[i])
	}
	h.armTimer(h.opts.Now())
	h.gop.invalidate() // the next session starts with its own keyframe
	h.live = false
	c := h.counters
	h.log.Info("hub: publish ended", "duration", h.opts.Now().Sub(h.since).Round(time.Millisecond),
		"packets_in", c.packetsIn, "lost", c.lost, "late", c.late)
}

// Close ends every subscription (their Next returns ErrClosed) and stops
// the hub's timer. Later writes are ignored.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	h.live = false
	if h.timer != nil {
		h.timer.Stop()
		h.timerSet = false
	}
	for _, s := range h.subs {
		s.shut()
	}
	h.subs = nil
}

// Tracks describes the output tracks: the video layers, highest first
// (videoOrder), then the audio. A video fmtp carries the profile and level
// of the layer's last SPS, or constrained baseline 3.1 (42e01f) until one
// is seen.
func (h *Hub) Tracks() []relaywire.TrackInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	var infos []relaywire.TrackInfo
	for _, t := range h.videoOrder() {
		tr := &h.tracks[t]
		infos = append(infos, relaywire.TrackInfo{Flow: relaywire.FlowOf(h.channel, t), Track: Video.String(),
			Layer: h.rid(t), SSRC: tr.ssrc, PayloadType: relaywire.VideoPayloadType, Codec: relaywire.VideoCodec,
			ClockRate: relaywire.VideoClockRate, Fmtp: tr.video.fmtpOr(relaywire.DefaultH264Fmtp)})
	}
	return append(infos, relaywire.TrackInfo{Flow: relaywire.FlowOf(h.channel, Audio), Track: Audio.String(),
		SSRC: h.tracks[Audio].ssrc, PayloadType: relaywire.AudioPayloadType, Codec: relaywire.AudioCodec,
		ClockRate: relaywire.AudioClockRate, Channels: relaywire.AudioChannels, Fmtp: relaywire.OpusFmtp})
}

// videoOrder returns the video tracks of the current layers, highest
// first: by the resolution of their last SPS, then by bitrate, then in the
// publisher's order. Called with mu held.
func (h *Hub) videoOrder() []Track {
	order := make([]Track, h.layers)
	for i := range order {
		order[i] = relaywire.LayerTrack(i)
	}
	if len(order) == 1 {
		return order
	}
	now := h.opts.Now()
	slices.SortStableFunc(order, func(a, b Track) int {
		va, vb := &h.tracks[a].video, &h.tracks[b].video
		if c := cmp.Compare(vb.width*vb.height, va.width*va.height); c != 0 {
			return c
		}
		return cmp.Compare(h.tracks[b].bits.rate(now), h.tracks[a].bits.rate(now))
	})
	return order
}

// rid is the publisher's name of video track t, or "" without simulcast.
// Called with mu held.
func (h *Hub) rid(t Track) string {
	if l := t.Layer(); t.IsVideo() && l < len(h.publisher.Layers) {
		return h.publisher.Layers[l]
	}
	return ""
}

// addRecovery counts NACKs that ingest sent to p's publisher and
// retransmitted packets it received, if p holds the hub.
func (h *Hub) addRecovery(p *Publisher, nacks, recovered int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.owner != p {
		return
	}
	h.counters.nacks += uint64(max(nacks, 0))
	h.counters.recovered += uint64(max(recovered, 0))
}

// Retransmit copies the output packet seq of track t into dst if the
// retransmission ring still holds it, and returns it with the marks it was
// released with; its Data aliases dst. dst should have room for
// MaxPacketSize bytes; ok is false when the packet is gone or dst is too
// small.
func (h *Hub) Retransmit(t Track, seq uint16, dst []byte) (p Packet, ok bool) {
	if t >= numTracks {
		return Packet{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tracks[t].ring.load(t, seq, dst)
}

// Subscribe adds a subscription to the hub's output. With FromKeyframe the
// packets released since the last keyframe (video and audio, in release
// order) are queued first, atomically with joining the live stream, and the
// capacity is raised to hold them plus 256; when no keyframe is cached the
// subscription starts with the live stream. On a closed hub the
// subscription is closed already.
func (h *Hub) Subscribe(o SubscribeOptions) *Subscription {
	var ask func() // called once the lock is released
	defer func() {
		if ask != nil {
			ask()
		}
	}()
	h.mu.Lock()
	defer h.mu.Unlock()
	capacity := o.Capacity
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	fromCache := o.FromKeyframe && h.gop.valid
	if o.FromKeyframe && h.live && h.askKeyframe != nil {
		// A subscriber that wants to start at a keyframe and finds none
		// cached for a layer would wait for the publisher's next one.
		var missing []Track
		for i := range h.layers {
			if t := relaywire.LayerTrack(i); !h.gop.valid || h.gop.start[t] < 0 {
				missing = append(missing, t)
			}
		}
		if len(missing) > 0 {
			askFn := h.askKeyframe
			ask = func() {
				for _, t := range missing {
					askFn(t)
				}
			}
		}
	}
	if fromCache {
		capacity = max(capacity, len(h.gop.entries)+256)
	}
	s := newSubscription(h, capacity)
	for t := range s.first {
		s.first[t] = h.tracks[t].seq
	}
	if h.closed {
		s.shut()
		return s
	}
	if fromCache {
		var seen [numTracks]bool
		for i := range h.gop.entries {
			p := h.gop.packet(i)
			if !seen[p.Track] {
				seen[p.Track] = true
				s.first[p.Track] = p.Seq
			}
			s.push(p)
		}
	}
	h.subs = append(h.subs, s)
	return s
}

// RequestKeyframe asks the live publisher for a keyframe of video track t
// (a layer it sends), for a viewer whose decoder needs one, and reports
// whether the publisher can be asked.
func (h *Hub) RequestKeyframe(t Track) bool {
	h.mu.Lock()
	ask := h.askKeyframe
	if !h.live || !t.IsVideo() || t.Layer() >= h.layers {
		ask = nil
	}
	h.mu.Unlock()
	if ask == nil {
		return false
	}
	ask(t)
	return true
}

// setKeyframeRequester records how p's publisher is asked for a keyframe,
// if p holds the hub.
func (h *Hub) setKeyframeRequester(p *Publisher, ask func(Track)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.owner == p {
		h.askKeyframe = ask
	}
}

// unsubscribe removes s from the hub's fan-out.
func (h *Hub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.subs {
		if x == s {
			last := len(h.subs) - 1
			copy(h.subs[i:], h.subs[i+1:])
			h.subs[last] = nil
			h.subs = h.subs[:last]
			return
		}
	}
}
