package hub

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// Registry holds the hubs of all channels.
type Registry struct {
	opts Options

	mu     sync.Mutex
	closed bool
	hubs   map[uint32]*Hub
}

// NewRegistry returns an empty registry whose hubs use opts.
func NewRegistry(opts Options) *Registry {
	return &Registry{opts: opts, hubs: make(map[uint32]*Hub)}
}

// Get returns the hub of channel, or nil when there is none.
func (r *Registry) Get(channel uint32) *Hub {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hubs[channel]
}

// GetOrCreate returns the hub of channel, creating it if needed. After
// Close it returns a closed hub that the registry does not keep.
func (r *Registry) GetOrCreate(channel uint32) *Hub {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hubs[channel]; h != nil {
		return h
	}
	h := New(channel, r.opts)
	if r.closed {
		h.Close()
		return h
	}
	r.hubs[channel] = h
	return h
}

// Claim makes the caller the only publisher of channel, creating the
// channel's hub if needed, and returns the handle through which it
// publishes. Of any number of ingests claiming one channel at once,
// exactly one gets a handle. While a handle holds the channel, Claim fails
// with an error wrapping ErrInUse ("hub: channel 77: in use"); the hub
// never ends a publisher to make room. After Close the error wraps
// ErrClosed.
func (r *Registry) Claim(channel uint32) (*Publisher, error) {
	return r.GetOrCreate(channel).claim()
}

// Publisher is one ingest's claim on a channel, from Registry.Claim to
// Release, and the only way to write into the channel's hub. Its methods
// are safe for concurrent use. Once released, a Publisher is inert: its
// writes and counts are ignored and change nothing, whoever holds the
// channel next.
type Publisher struct {
	hub *Hub
}

// Hub returns the hub of the claimed channel, for its stats and output.
func (p *Publisher) Hub() *Hub { return p.hub }

// Start begins the publish session: the channel goes live with info as its
// publisher. Packets written before Start are dropped. Start on a started
// or released Publisher does nothing.
func (p *Publisher) Start(info PublisherInfo) { p.hub.startPublish(p, info) }

// SetKeyframeRequester gives the hub a way to ask the publisher for a
// keyframe of a video layer (a WHIP publisher's PLI or FIR about that
// layer's stream); the ingest throttles it. The hub asks when a subscriber
// wants to start at a keyframe and none is cached for a layer, and on
// RequestKeyframe. Without one (FTL) the hub never asks,
// and keyframes come when the publisher sends them.
func (p *Publisher) SetKeyframeRequester(ask func(Track)) { p.hub.setKeyframeRequester(p, ask) }

// WriteRTP takes one publisher packet of track t, in arrival order.
// Packets are released downstream in publisher order; a packet behind a
// missing one waits at most MaxHold after the first such arrival. Late and
// duplicate packets are dropped and counted. The hub copies what it keeps,
// so pkt.Payload may alias the caller's read buffer. Packets written
// before Start or after Release are dropped.
func (p *Publisher) WriteRTP(t Track, pkt *rtp.Packet, arrival time.Time) {
	p.hub.writeRTP(p, t, pkt, arrival)
}

// AddNACKs counts n NACKs that ingest sent to the publisher.
func (p *Publisher) AddNACKs(n int) { p.hub.addRecovery(p, n, 0) }

// AddRecovered counts n retransmitted packets that ingest received.
func (p *Publisher) AddRecovered(n int) { p.hub.addRecovery(p, 0, n) }

// Release ends the claim. A started session ends: packets held behind
// missing ones are released (the missing ones counted as lost), the GOP
// cache is emptied and the channel goes offline. The hub and its
// subscriptions stay; the next claim continues the output numbering.
// Release is idempotent.
func (p *Publisher) Release() { p.hub.endPublish(p) }

// List returns the hubs sorted by channel.
func (r *Registry) List() []*Hub {
	r.mu.Lock()
	defer r.mu.Unlock()
	hubs := make([]*Hub, 0, len(r.hubs))
	for _, h := range r.hubs {
		hubs = append(hubs, h)
	}
	slices.SortFunc(hubs, func(a, b *Hub) int { return cmp.Compare(a.channel, b.channel) })
	return hubs
}

// Close closes every hub and empties the registry.
func (r *Registry) Close() {
	r.mu.Lock()
	hubs := r.hubs
	r.hubs = make(map[uint32]*Hub)
	r.closed = true
	r.mu.Unlock()
	for _, h := range hubs {
		h.Close()
	}
}
