// Package fanout is the function's WebRTC fan-out: it takes the RTP packets
// of the channels its viewers watch, as the relay delivers them, and writes
// each packet once to each viewer's PeerConnection.
//
// Every channel track has one shared cache (a ring of fixed slots by
// sequence number) that also holds the packets since the last keyframe.
// A viewer that connects is sent the cached keyframe and what followed,
// then the live packets; NACKs are answered from the same cache. Each
// viewer has a bounded queue of references into that cache, drained by one
// of a pool of writers, so a slow viewer drops its own packets and never
// holds up the relay or the other viewers. All WebRTC media uses one UDP
// port (an ICE UDP mux), written in batches: sendmmsg, with each viewer's
// packets of a frame as one segmented send (UDP GSO).
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/function/relay"
	"lightspeed/function/udpbatch"
	"lightspeed/shared/relaywire"
	"lightspeed/shared/webrtcapi"
)

// Who owns what in a Fanout. What New sets is never changed. mu guards
// the maps of sessions and channels, the totals, the writers' viewer
// counts, and the fields of viewers (viewer.sess) and channels said to be
// guarded by Fanout.mu; it is never held across a call into pion or the
// Upstream. chans is the copy of the channel map WriteRTP reads without a
// lock: replaced, never changed, under mu. certs and load have locks of
// their own; keyframes is atomics. wg counts every goroutine and pending grace timer; quit ends
// the fan-out's own goroutines (writers, sender reports).

// Upstream is the relay client as the fan-out sees it.
type Upstream interface {
	// Subscribe asks the gateway for the channel's tracks and their packets.
	Subscribe(ctx context.Context, channel uint32) ([]relaywire.TrackInfo, error)
	// Unsubscribe stops the channel's packets.
	Unsubscribe(channel uint32)
	// SendCandidate sends a local ICE candidate of a session to its viewer.
	SendCandidate(session string, c relaywire.Candidate)
	// SessionClosed tells the gateway that the fan-out ended a session.
	SessionClosed(session, reason string)
	// RequestKeyframe asks the gateway for a keyframe of video track t (a
	// layer) of a subscribed channel, for a viewer whose decoder needs one
	// or that switches to that layer. It must not wait (the viewers' RTCP
	// readers call it); false means the request was dropped (no connection
	// to the gateway).
	RequestKeyframe(channel uint32, t relaywire.Track) bool
}

// Config configures a Fanout. The zero value of a field means its default.
type Config struct {
	UDPAddr   string   // ICE UDP mux listen address, default ":8189" (all WebRTC media on this one port)
	PublicIPs []string // advertised with NAT 1:1 (host candidates); empty = the real interface addresses
	Capacity  int      // max viewers, default 500

	ICEDisconnectedTimeout time.Duration // default 5 s
	ICEFailedTimeout       time.Duration // default 10 s
	ICEKeepalive           time.Duration // default 2 s

	// UnsubscribeGrace is how long a channel stays subscribed after its
	// last viewer left, default 10 s.
	UnsubscribeGrace time.Duration
	// ConnectTimeout ends a session that is not connected this long after
	// StartSession (an offer never answered, ICE that never starts),
	// default 30 s.
	ConnectTimeout time.Duration

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // where the metrics are registered; nil: nowhere
}

func (c Config) withDefaults() Config {
	if c.UDPAddr == "" {
		c.UDPAddr = ":8189"
	}
	if c.Capacity <= 0 {
		c.Capacity = 500
	}
	if c.UnsubscribeGrace <= 0 {
		c.UnsubscribeGrace = 10 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Errors of the session methods.
var (
	ErrFull           = errors.New("fanout: full, no room for another viewer")
	ErrClosed         = errors.New("fanout: closed")
	ErrUnknownSession = errors.New("fanout: unknown session")
	ErrSessionExists  = errors.New("fanout: session already exists")
)

// Stats are the fan-out's counts since New.
type Stats struct {
	Viewers          int    // sessions, connected or not
	Connected        int    // of those, connected: receiving their channel's packets
	Channels         int    // subscribed channels
	PacketsIn        uint64 // packets handed to WriteRTP for a subscribed channel
	PacketsInvalid   uint64 // of those, not RTP or longer than the cache's slots
	PacketsDuplicate uint64 // of those, already cached or too old for the cache
	PacketsSent      uint64 // RTP packets written to viewers
	BytesSent        uint64 // SRTP bytes written to viewers
	QueueDrops       uint64 // packets dropped because a viewer's queue was full
	NACKed           uint64 // packets viewers asked for again
	Retransmits      uint64 // of those, queued to be sent again
	CacheMisses      uint64 // queued packets no longer in the cache when their turn came
	PLIs, FIRs       uint64 // keyframe requests of viewers' decoders, as RTCP packets
	// The viewers' RTCP packets with a PLI or FIR about their video and
	// their switches to another video layer, each handed to the relay
	// client as a keyframe request of the layer, or throttled (one a
	// second per channel and layer), or dropped by the relay client (not
	// connected).
	KeyframesSent, KeyframesThrottled, KeyframesDropped uint64
	SendCalls                                           uint64 // sendmmsg calls of the writers' batches
	SendDatagrams                                       uint64 // datagrams those calls sent
	SendSegmented                                       uint64 // of those, sent in segmented runs (UDP GSO)
	SendErrors                                          uint64 // batched datagrams that could not be sent
	ReadErrors                                          uint64 // transient socket read errors (ICMP reports) skipped
}

// Fanout serves the viewers of one function. Its methods are safe for
// concurrent use.
type Fanout struct {
	// Set by New, never changed.
	cfg     Config
	log     *slog.Logger
	up      Upstream
	api     *webrtc.API
	conn    *udpbatch.Conn
	mux     ice.UDPMux
	writers []*writer
	// loopback: the media port is bound to a loopback address (tests, the
	// bench, one machine). The fan-out then offers loopback candidates,
	// gathers on the loopback interface only, advertises 127.0.0.1 when no
	// public IP is set, and takes viewers' loopback candidates.
	loopback bool
	quit     chan struct{}    // closed by Close: stops the writers and the sender reports
	now      func() time.Time // the clock of the keyframe throttle; tests set theirs before the first session

	certs     webrtcapi.Certificates
	load      loadMeter
	keyframes keyframeCounters
	wg        sync.WaitGroup // every goroutine and pending grace timer

	// chans is the channel map WriteRTP reads without locking; it is
	// replaced, never changed, under mu.
	chans atomic.Pointer[map[uint32]*channel]

	mu            sync.Mutex
	closed        bool
	sessions      map[string]*viewer
	channels      map[uint32]*channel
	unsubscribing map[uint32]chan struct{} // closed when the Unsubscribe call returned
	running       map[*viewer]struct{}     // viewers whose goroutines still run
	totals        Stats                    // counts of retired viewers and removed channels
	assigned      []int                    // viewers given to each writer so far, by index in writers
}

// New binds the ICE UDP mux and returns a fan-out that subscribes channels
// through up.
func New(cfg Config, up Upstream) (*Fanout, error) {
	cfg = cfg.withDefaults()
	addr, err := net.ResolveUDPAddr("udp", cfg.UDPAddr)
	if err != nil {
		return nil, fmt.Errorf("fanout: udp address %q: %w", cfg.UDPAddr, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("fanout: listen %s: %w", cfg.UDPAddr, err)
	}
	sc := udpbatch.New(conn)
	loggers := webrtcapi.Loggers{Log: cfg.Logger, Layer: "fanout"}
	f := &Fanout{
		cfg:           cfg,
		log:           cfg.Logger,
		up:            up,
		conn:          sc,
		loopback:      addr.IP.IsLoopback(),
		mux:           webrtc.NewICEUDPMux(loggers.NewLogger("ice"), sc),
		sessions:      make(map[string]*viewer),
		channels:      make(map[uint32]*channel),
		unsubscribing: make(map[uint32]chan struct{}),
		running:       make(map[*viewer]struct{}),
		quit:          make(chan struct{}),
		now:           time.Now,
	}
	f.chans.Store(&map[uint32]*channel{})
	f.load.reset(time.Now())
	f.api, err = webrtcapi.New(webrtcapi.Config{
		Mux:                    f.mux,
		PublicIPs:              cfg.PublicIPs,
		Loopback:               f.loopback,
		SendOnly:               true, // viewers send no media
		ICEDisconnectedTimeout: cfg.ICEDisconnectedTimeout,
		ICEFailedTimeout:       cfg.ICEFailedTimeout,
		ICEKeepalive:           cfg.ICEKeepalive,
		Loggers:                loggers,
	})
	if err != nil {
		f.mux.Close()
		return nil, fmt.Errorf("fanout: %w", err)
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(collector{f}); err != nil {
			f.mux.Close()
			return nil, fmt.Errorf("fanout: register metrics: %w", err)
		}
	}
	f.newWriters()
	f.startReports()
	f.log.Info("fanout: listening", "addr", f.Addr().String(), "public_ips", strings.Join(cfg.PublicIPs, ","))
	return f, nil
}

// Addr is the bound address of the ICE UDP mux.
func (f *Fanout) Addr() net.Addr { return f.conn.LocalAddr() }

// WriteRTP hands the fan-out one relayed RTP packet of a channel's track.
// pkt is only read during the call. WriteRTP copies the packet into the
// track's cache and queues it for the channel's viewers; it never waits
// for a viewer. Packets of channels without viewers are ignored.
func (f *Fanout) WriteRTP(p *relay.Packet) {
	if p.Track >= relaywire.NumTracks {
		return
	}
	ch := (*f.chans.Load())[p.Channel]
	if ch == nil {
		return
	}
	ch.ingest(p, time.Now())
}

// Viewers is the number of sessions of a channel, connected or not.
func (f *Fanout) Viewers(channel uint32) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.channels[channel]; ch != nil {
		return ch.refs
	}
	return 0
}

// Load is what the function reports to the gateway: viewers, egress bits
// per second over the last 2 s, and the process's share of the machine's
// CPU over the same time.
func (f *Fanout) Load() relaywire.Load {
	s := f.Stats()
	return f.load.sample(time.Now(), s.Viewers, s.BytesSent)
}

// Stats returns the fan-out's counts.
func (f *Fanout) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.totals
	s.Viewers = len(f.sessions)
	for _, v := range f.sessions {
		if v.connected() {
			s.Connected++
		}
	}
	s.Channels = len(f.channels)
	for v := range f.running {
		v.addCounters(&s)
	}
	for _, ch := range f.channels {
		ch.addCounters(&s)
	}
	cs := f.conn.Stats()
	s.SendCalls, s.SendDatagrams, s.SendSegmented, s.SendErrors = cs.Calls, cs.Datagrams, cs.Segmented, cs.Errors
	s.ReadErrors = cs.ReadErrors
	s.KeyframesSent = f.keyframes.sent.Load()
	s.KeyframesThrottled = f.keyframes.throttled.Load()
	s.KeyframesDropped = f.keyframes.dropped.Load()
	return s
}

func (v *viewer) addCounters(s *Stats) {
	c := &v.counters
	s.PacketsSent += c.sent()
	s.BytesSent += c.bytes.Load()
	s.QueueDrops += v.queue.dropped.Load()
	s.NACKed += c.nacked.Load()
	s.Retransmits += c.retransmits.Load()
	s.CacheMisses += c.misses.Load()
	s.PLIs += c.plis.Load()
	s.FIRs += c.firs.Load()
}

func (ch *channel) addCounters(s *Stats) {
	s.PacketsIn += ch.in.Load()
	s.PacketsInvalid += ch.invalid.Load()
	s.PacketsDuplicate += ch.duplicates.Load()
}

// retire adds the counts of a viewer whose goroutines all ended to the
// totals.
func (f *Fanout) retire(v *viewer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v.addCounters(&f.totals)
	delete(f.running, v)
}

// publishChannels replaces the map WriteRTP reads. Called with mu held.
func (f *Fanout) publishChannels() {
	m := make(map[uint32]*channel, len(f.channels))
	for id, ch := range f.channels {
		m[id] = ch
	}
	f.chans.Store(&m)
}

// removeChannel forgets ch. Called with mu held.
func (f *Fanout) removeChannel(ch *channel) {
	if ch.gone {
		return
	}
	ch.gone = true
	ch.stopHold()
	if f.channels[ch.id] == ch {
		delete(f.channels, ch.id)
		f.publishChannels()
	}
	ch.addCounters(&f.totals)
}

// Close ends every session, closes the UDP mux and waits for the
// fan-out's goroutines. It does not notify the Upstream: when the function
// goes away, its relay connection does too, and the gateway ends the
// sessions and subscriptions of the connection.
func (f *Fanout) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	vs := make([]*viewer, 0, len(f.sessions))
	for _, v := range f.sessions {
		vs = append(vs, v)
	}
	for _, ch := range f.channels {
		if ch.grace != nil && ch.grace.Stop() {
			f.wg.Done()
		}
		ch.grace = nil
	}
	f.mu.Unlock()

	for _, v := range vs {
		f.closeViewer(v, "function closing", false)
	}
	close(f.quit)
	f.wg.Wait()

	f.mu.Lock()
	for _, ch := range f.channels {
		f.removeChannel(ch)
	}
	f.mu.Unlock()
	if err := f.mux.Close(); err != nil {
		return fmt.Errorf("fanout: close udp mux: %w", err)
	}
	f.log.Info("fanout: closed")
	return nil
}
