package hub

import (
	"context"
	"sync"
)

// DefaultCapacity is the default of SubscribeOptions.Capacity.
const DefaultCapacity = 1024

// SubscribeOptions configure a subscription.
type SubscribeOptions struct {
	Capacity     int  // slots in the subscription's queue; default 1024
	FromKeyframe bool // start with the cached packets since the last keyframe (then live), atomically
}

// Packet is one output RTP packet.
type Packet struct {
	Track     Track
	Data      []byte // marshalled RTP packet, <= MaxPacketSize; valid until the next call of Next on the same Subscription
	Seq       uint16
	Timestamp uint32
	Keyframe  bool // first packet of a keyframe (a subscriber may start here)
	// StreamStart marks the first packet of the track in a publisher
	// session: the packets before it came from another session, so a
	// keyframe cached from before it no longer serves a new subscriber.
	StreamStart bool
}

// Subscription is one reader of a hub's output: a queue of fixed slots,
// allocated once, that the hub fills without ever waiting. When the queue
// is full the hub drops the packet and counts it.
type Subscription struct {
	hub    *Hub
	notify chan struct{} // a token after each push
	done   chan struct{} // closed by shut

	mu      sync.Mutex
	closed  bool
	meta    []stored
	data    []byte // len(meta) slots of MaxPacketSize bytes
	head    int
	count   int
	dropped uint64

	cur [MaxPacketSize]byte // the packet last returned by Next

	first [numTracks]uint16 // set by Subscribe, then read-only
}

// First returns the sequence number of the first packet of track t the
// subscription delivers: the first of that track in the keyframe cache it
// started with, or else the next one the hub releases. A receiver that
// knows it can ask again for packets lost before the first it receives.
func (s *Subscription) First(t Track) uint16 { return s.first[t] }

// stored describes a packet whose bytes are kept elsewhere (in a queue
// slot, in the keyframe cache): all of Packet but its Data.
type stored struct {
	n           uint16 // length of Data
	seq         uint16
	ts          uint32
	track       Track
	keyframe    bool
	streamStart bool
}

// storedOf describes p.
func storedOf(p Packet) stored {
	return stored{n: uint16(len(p.Data)), seq: p.Seq, ts: p.Timestamp, track: p.Track, keyframe: p.Keyframe, streamStart: p.StreamStart}
}

// packet is the packet described, with its bytes data.
func (m stored) packet(data []byte) Packet {
	return Packet{Track: m.track, Data: data, Seq: m.seq, Timestamp: m.ts, Keyframe: m.keyframe, StreamStart: m.streamStart}
}

func newSubscription(h *Hub, capacity int) *Subscription {
	return &Subscription{
		hub:    h,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
		meta:   make([]stored, capacity),
		data:   make([]byte, capacity*MaxPacketSize),
	}
}

// push queues a copy of p. It reports false when the queue is full and p
// is dropped.
func (s *Subscription) push(p Packet) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return true
	}
	if s.count == len(s.meta) {
		s.dropped++
		s.mu.Unlock()
		return false
	}
	i := (s.head + s.count) % len(s.meta)
	n := copy(s.data[i*MaxPacketSize:(i+1)*MaxPacketSize], p.Data)
	s.meta[i] = storedOf(p)
	s.meta[i].n = uint16(n)
	s.count++
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}

// Next returns the next packet, waiting for one until ctx is done. A queued
// packet is returned even when ctx is done already, so a cancelled context
// drains the queue without waiting. Packet.Data is valid until the next
// call of Next; Next must not be called concurrently with itself. Once the
// subscription or its hub is closed, Next returns ErrClosed.
func (s *Subscription) Next(ctx context.Context) (Packet, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Packet{}, ErrClosed
		}
		if s.count > 0 {
			q := s.meta[s.head]
			i := s.head * MaxPacketSize
			n := copy(s.cur[:], s.data[i:i+int(q.n)])
			s.head = (s.head + 1) % len(s.meta)
			s.count--
			s.mu.Unlock()
			return q.packet(s.cur[:n]), nil
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.done:
		case <-ctx.Done():
			return Packet{}, ctx.Err()
		}
	}
}

// Pending returns how many packets are queued.
func (s *Subscription) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Dropped returns how many packets were dropped because the queue was full.
func (s *Subscription) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Close leaves the hub; a waiting Next returns ErrClosed.
func (s *Subscription) Close() {
	s.hub.unsubscribe(s)
	s.shut()
}

// shut marks the subscription closed and wakes a waiting Next.
func (s *Subscription) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.done)
	}
}
