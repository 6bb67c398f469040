package hub

import (
	"cmp"
	"slices"
	"sync"
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
