// Package relay is the function's side of the relay to the gateway
// (docs/relay.md): a QUIC client that authenticates, receives the RTP of
// the channels its viewers watch as datagrams, recovers relay losses with
// NACKs and carries the signalling of viewer sessions to a Handler.
package relay

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"lightspeed/shared/nack"
	"lightspeed/shared/relaywire"
)

// Timings of the client; those the gateway keeps too are relaywire's.
const (
	dialTimeout   = 10 * time.Second
	nackInterval  = 10 * time.Millisecond
	inboxSize     = 4096        // received datagrams not yet handed on: a keyframe cache
	loadInterval  = time.Second // load reports and subscription retries
	keyframeQueue = 16          // keyframe requests waiting to be written, per connection
	minBackoff    = 250 * time.Millisecond
	maxBackoff    = 5 * time.Second
)

// nackPolicy is how the client asks for relay losses again. A new
// subscription starts with the keyframe cache, hundreds to thousands of
// datagrams at once; when they overflow quic-go's 128-datagram queue, far
// more than the default 64 go missing together, and a hole given up leaves
// a late viewer frozen until the next keyframe: so each flow tracks up to
// MaxTracked holes. Batch keeps one tick's request within the sequence
// numbers one nack message may carry (the gateway closes the connection on
// a larger one); the rest are asked for at the next tick. A retransmission
// can wait behind the rest of a burst and be lost again in the same full
// queue, so a hole is asked for 8 times, 25 ms apart: for 200 ms.
var nackPolicy = nack.Policy{
	Tries:       8,
	Retry:       25 * time.Millisecond,
	Timeout:     time.Second,
	Outstanding: nack.MaxTracked,
	Batch:       relaywire.MaxNACKSeqs,
}

// ErrStopped is returned by the methods that wait for a connection once
// Run has returned.
var ErrStopped = errors.New("relay: client stopped")

// Config configures a Client.
type Config struct {
	GatewayAddr string // the gateway's relay address, e.g. "127.0.0.1:4433"
	Secret      string // the shared secret; required
	Fingerprint string // lowercase hex SHA-256 of the gateway certificate's DER, pinned; or
	CAFile      string // PEM file of the CA that signed the gateway certificate

	Region    string // told to the gateway in hello
	MachineID string // unique per machine; the gateway uses it as the function id
	MediaAddr string // public ip:port of the WebRTC UDP mux
	Capacity  int    // max viewers

	Logger     *slog.Logger // default slog.Default()
	Registerer prometheus.Registerer
}

// Handler is what the client drives: the WebRTC fan-out.
type Handler interface {
	// WriteRTP takes one packet of a subscribed channel, numbered and
	// marked (Packet). It is called by one goroutine at a time, must not
	// block, and p is valid only during the call.
	WriteRTP(p *Packet)
	// StartSession starts a viewer session: with the viewer's offer it
	// returns ("answer", sdp); with offer "" it returns ("offer", sdp). The
	// SDP is complete (ICE gathering finished). layer is the rid of the
	// video layer the viewer pins ("": the highest). It runs in its own
	// goroutine; ctx ends when the gateway closes the session or the
	// connection is lost.
	StartSession(ctx context.Context, session string, channel uint32, offer, layer string) (sdpType, sdp string, err error)
	// SetLayer pins a session to the video layer of rid layer ("": the
	// highest); the viewer switches at that layer's next keyframe. A
	// session_layer that comes while StartSession runs is handed on once
	// it returned.
	SetLayer(session, layer string) error
	// SetAnswer applies the viewer's answer to the offer StartSession made.
	SetAnswer(session, sdp string) error
	// AddCandidate adds a viewer's trickled ICE candidate.
	AddCandidate(session string, c relaywire.Candidate) error
	// CloseSession ends a session the gateway closed.
	CloseSession(session, reason string)
	// Load reports the function's load; it is called every second.
	Load() relaywire.Load
}

// ClientStats counts what a Client received and recovered.
type ClientStats struct {
	Received      uint64 // RTP packets received, from datagrams and streams
	Duplicates    uint64 // packets received again, not handed on
	Lost          uint64 // sequence numbers found missing on arrival
	NACKsSent     uint64 // sequence numbers asked for again
	Recovered     uint64 // missing packets that arrived while asked for
	Late          uint64 // missing packets that arrived after their NACKs were given up
	Overflows     uint64 // datagrams dropped because the handler fell 4096 behind
	Reconnects    uint64 // connections established after the first
	ConnectFails  uint64 // connection attempts that failed before welcome
	Keyframes     uint64 // keyframe requests sent to the gateway
	KeyframeDrops uint64 // keyframe requests dropped: no connection, or keyframeQueue waiting
}

// counters are the atomics behind ClientStats.
type counters struct {
	received, duplicates, lost, nacks, recovered, late, overflows, reconnects, fails, connections atomic.Uint64
	keyframes, keyframeDrops                                                                      atomic.Uint64
}

// Client is the relay's function end. Its methods are safe for concurrent
// use.
type Client struct {
	cfg   Config
	log   *slog.Logger
	stats counters

	mu      sync.Mutex
	cur     *conn                         // the authenticated connection, or nil
	changed chan struct{}                 // closed and replaced whenever cur changes or Run stops
	stopped bool                          // Run has returned
	want    map[uint32]struct{}           // channels subscribed again after reconnects
	numbers map[relaywire.Flow]*numbering // output numbering of the wanted channels' tracks, across connections

	starts sync.WaitGroup // Handler.StartSession goroutines
}

// NewClient returns a Client; Run connects it.
func NewClient(cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{
		cfg:     cfg,
		log:     cfg.Logger,
		changed: make(chan struct{}),
		want:    make(map[uint32]struct{}),
		numbers: make(map[relaywire.Flow]*numbering),
	}
	if cfg.Registerer != nil {
		c.register(cfg.Registerer)
	}
	return c
}

// Run connects to the gateway, authenticates and serves h until ctx is
// done, reconnecting with exponential backoff (250 ms doubling to 5 s,
// jittered) whenever the connection fails or ends. It returns nil when ctx
// is done, or an error for a configuration it cannot use. Run must be
// called once.
func (c *Client) Run(ctx context.Context, h Handler) error {
	defer c.stop()
	if c.cfg.Secret == "" {
		return errors.New("relay: no secret")
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return err
	}
	backoff := minBackoff
	for {
		established, err := c.connect(ctx, h, tlsConf)
		if ctx.Err() != nil {
			return nil
		}
		if established {
			backoff = minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		if established {
			c.log.Warn("relay: disconnected from the gateway", "err", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			c.log.Warn("relay: cannot connect to the gateway", "addr", c.cfg.GatewayAddr, "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// stop marks the client stopped, wakes the waiters and waits for the
// session goroutines.
func (c *Client) stop() {
	c.mu.Lock()
	c.stopped = true
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	c.starts.Wait()
}

// tlsConfig verifies the gateway by its pinned fingerprint or by a CA.
func (c *Client) tlsConfig() (*tls.Config, error) {
	conf := relaywire.TLSConfig()
	switch {
	case c.cfg.Fingerprint != "":
		want, err := hex.DecodeString(strings.ToLower(strings.ReplaceAll(c.cfg.Fingerprint, ":", "")))
		if err != nil || len(want) != sha256.Size {
			return nil, fmt.Errorf("relay: fingerprint %q is not a hex SHA-256", c.cfg.Fingerprint)
		}
		// The pin replaces the name and CA checks.
		conf.InsecureSkipVerify = true
		conf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("relay: gateway sent no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if subtle.ConstantTimeCompare(sum[:], want) != 1 {
				return fmt.Errorf("relay: gateway certificate fingerprint %x, want %x", sum, want)
			}
			return nil
		}
	case c.cfg.CAFile != "":
		pem, err := os.ReadFile(c.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("relay: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("relay: CA file %s: no certificate", c.cfg.CAFile)
		}
		conf.RootCAs = pool
		if host, _, err := net.SplitHostPort(c.cfg.GatewayAddr); err == nil {
			conf.ServerName = host
		}
	default:
		return nil, errors.New("relay: neither a fingerprint nor a CA file to verify the gateway")
	}
	return conf, nil
}

// quicConfig is the function's QUIC configuration: relaywire's, with no
// bidirectional streams from the gateway (it opens only unidirectional
// ones, for the datagram fallback).
func quicConfig() *quic.Config {
	c := relaywire.QUICConfig()
	c.MaxIncomingStreams = -1
	return c
}

// connect makes one connection and serves it until it ends. established
// reports whether it got as far as welcome.
func (c *Client) connect(ctx context.Context, h Handler, tlsConf *tls.Config) (established bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	qc, err := quic.DialAddr(dctx, c.cfg.GatewayAddr, tlsConf, quicConfig())
	cancel()
	if err != nil {
		c.stats.fails.Add(1)
		return false, fmt.Errorf("relay: dial %s: %w", c.cfg.GatewayAddr, err)
	}
	cc, err := c.handshake(ctx, qc, h)
	if err != nil {
		c.stats.fails.Add(1)
		qc.CloseWithError(relaywire.CodeNone, "")
		return false, err
	}
	if c.stats.connections.Add(1) > 1 {
		c.stats.reconnects.Add(1)
	}
	return true, cc.run(ctx)
}

// current returns the authenticated connection, or nil.
func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// setCurrent makes cc (or nil) the connection and wakes the waiters.
func (c *Client) setCurrent(cc *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = cc
	close(c.changed)
	c.changed = make(chan struct{})
}

// waitConn waits for an authenticated connection.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		cur, changed, stopped := c.cur, c.changed, c.stopped
		c.mu.Unlock()
		switch {
		case cur != nil:
			return cur, nil
		case stopped:
			return nil, ErrStopped
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("relay: waiting for the gateway: %w", context.Cause(ctx))
		}
	}
}

// SetMediaAddr sets the public ip:port of the WebRTC UDP mux told to the
// gateway (Config.MediaAddr), from the next connection on; call it before
// Run when the address is known only after binding.
func (c *Client) SetMediaAddr(addr string) {
	c.mu.Lock()
	c.cfg.MediaAddr = addr
	c.mu.Unlock()
}

// hello returns the hello message of a new connection.
func (c *Client) hello() *relaywire.Hello {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &relaywire.Hello{Version: relaywire.Version, Region: c.cfg.Region, MachineID: c.cfg.MachineID,
		MediaAddr: c.cfg.MediaAddr, Capacity: c.cfg.Capacity}
}

// Connected reports whether the client is connected and authenticated.
func (c *Client) Connected() bool { return c.current() != nil }

// Draining reports whether the gateway asked this connection to take no
// new sessions.
func (c *Client) Draining() bool {
	cc := c.current()
	return cc != nil && cc.isDraining()
}

// Subscribe asks for a channel's tracks, waiting for a connection first,
// and returns them once the gateway has answered. Datagrams of the channel
// reach Handler.WriteRTP from then on (the first ones possibly before
// Subscribe returns). The channel is remembered and subscribed again after
// every reconnect until Unsubscribe. Subscribing a subscribed channel
// returns its tracks again.
func (c *Client) Subscribe(ctx context.Context, channel uint32) ([]relaywire.TrackInfo, error) {
	c.mu.Lock()
	_, wanted := c.want[channel]
	c.want[channel] = struct{}{}
	c.mu.Unlock()
	for {
		cc, err := c.waitConn(ctx)
		if err == nil {
			var tracks []relaywire.TrackInfo
			tracks, err = cc.subscribe(ctx, channel)
			if errors.Is(err, errConnLost) {
				continue
			}
			if err == nil {
				return tracks, nil
			}
		}
		if !wanted {
			c.mu.Lock()
			delete(c.want, channel)
			c.forgetNumbering(channel)
			c.mu.Unlock()
		}
		return nil, err
	}
}

// Unsubscribe stops a channel's datagrams and forgets it.
func (c *Client) Unsubscribe(channel uint32) {
	c.mu.Lock()
	delete(c.want, channel)
	c.forgetNumbering(channel)
	c.mu.Unlock()
	if cc := c.current(); cc != nil {
		cc.unsubscribe(channel)
	}
}

// numberingOf returns the output numbering of a flow, made at its first
// subscription and kept until the channel is unsubscribed.
func (c *Client) numberingOf(id relaywire.Flow) *numbering {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.numbers[id]
	if n == nil {
		n = newNumbering(id.Track())
		c.numbers[id] = n
	}
	return n
}

// forgetNumbering drops the numbering of a channel's tracks; c.mu is held.
func (c *Client) forgetNumbering(channel uint32) {
	for t := range relaywire.Track(relaywire.NumTracks) {
		delete(c.numbers, relaywire.FlowOf(channel, t))
	}
}

// wanted returns the channels to subscribe on every connection.
func (c *Client) wanted() []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]uint32, 0, len(c.want))
	for ch := range c.want {
		out = append(out, ch)
	}
	return out
}

// SendCandidate trickles one of a session's ICE candidates to the gateway.
// Without a connection it is dropped.
func (c *Client) SendCandidate(session string, cand relaywire.Candidate) {
	if cc := c.current(); cc != nil {
		cc.write(&relaywire.CandidateMsg{Session: session, Candidate: cand})
	}
}

// SessionClosed tells the gateway that a session ended on this side.
// Without a connection it is dropped.
func (c *Client) SessionClosed(session, reason string) {
	if cc := c.current(); cc != nil {
		cc.write(&relaywire.SessionClose{Session: session, Reason: reason})
	}
}

// RequestKeyframe asks the gateway for a keyframe of video track t (a
// layer) of a subscribed channel, for a viewer whose decoder needs one or
// that switches to that layer; the fan-out throttles these to one a second
// per channel and layer. It never waits: the request is queued for the
// connection's writer, and dropped (false, counted) when there is no
// connection or keyframeQueue requests wait already (a gateway that does
// not read its control stream).
func (c *Client) RequestKeyframe(channel uint32, t relaywire.Track) bool {
	if cc := c.current(); cc != nil {
		select {
		case cc.keyframes <- relaywire.KeyframeRequest{Channel: channel, Track: t}:
			return true
		default:
		}
	}
	c.stats.keyframeDrops.Add(1)
	return false
}

// Stats returns the client's counts.
func (c *Client) Stats() ClientStats {
	s := &c.stats
	return ClientStats{
		Received:      s.received.Load(),
		Duplicates:    s.duplicates.Load(),
		Lost:          s.lost.Load(),
		NACKsSent:     s.nacks.Load(),
		Recovered:     s.recovered.Load(),
		Late:          s.late.Load(),
		Overflows:     s.overflows.Load(),
		Reconnects:    s.reconnects.Load(),
		ConnectFails:  s.fails.Load(),
		Keyframes:     s.keyframes.Load(),
		KeyframeDrops: s.keyframeDrops.Load(),
	}
}

// register exposes the counts as metrics.
func (c *Client) register(reg prometheus.Registerer) {
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	s := &c.stats
	reg.MustRegister(
		counter("lightspeed_relay_client_received_total", "RTP packets received from the gateway.", &s.received),
		counter("lightspeed_relay_client_duplicates_total", "RTP packets received again or too late.", &s.duplicates),
		counter("lightspeed_relay_client_lost_total", "Sequence numbers found missing on arrival.", &s.lost),
		counter("lightspeed_relay_client_nacks_sent_total", "Sequence numbers asked for again.", &s.nacks),
		counter("lightspeed_relay_client_recovered_total", "Missing packets that arrived after a NACK.", &s.recovered),
		counter("lightspeed_relay_client_late_total", "Missing packets that arrived after their NACKs were given up.", &s.late),
		counter("lightspeed_relay_client_overflows_total", "Datagrams dropped because the fan-out fell behind.", &s.overflows),
		counter("lightspeed_relay_client_reconnects_total", "Connections to the gateway after the first.", &s.reconnects),
		counter("lightspeed_relay_client_connect_failures_total", "Connection attempts that failed before welcome.", &s.fails),
		counter("lightspeed_relay_client_keyframe_requests_total", "Keyframe requests sent to the gateway.", &s.keyframes),
		counter("lightspeed_relay_client_keyframe_requests_dropped_total", "Keyframe requests dropped: no connection, or the gateway not reading.", &s.keyframeDrops),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lightspeed_relay_client_connected", Help: "1 while connected to the gateway."},
			func() float64 {
				if c.Connected() {
					return 1
				}
				return 0
			}),
	)
}
