// Package relay is the gateway's side of the relay to functions
// (docs/relay.md): a QUIC server that authenticates each function, sends it
// the RTP of the channels it subscribes as datagrams, answers its NACKs
// from the hubs' retransmission rings and carries the signalling of its
// viewer sessions.
package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// Bounds of the relay's gateway end; its timings, shared with the
// function, are relaywire's.
const (
	subscriptionCapacity = 2048 // packets queued per (function, channel)
	nackQueue            = 64   // NACK messages waiting per function
	candidateBuffer      = 32   // trickled candidates waiting per session
)

// Errors of the session API.
var (
	ErrNoSession    = errors.New("relay: no such session")
	ErrFunctionGone = errors.New("relay: function gone")
)

// Config configures a Server.
type Config struct {
	Addr       string          // UDP listen address; default ":4433"
	Secret     string          // shared secret functions prove they know; required
	Cert       tls.Certificate // the certificate functions pin; required
	Logger     *slog.Logger    // default slog.Default()
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = ":4433"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// quicConfig is the gateway's QUIC configuration: relaywire's, with one
// control stream opened by the function and no unidirectional streams from
// it (only the gateway opens those, for the datagram fallback).
func quicConfig() *quic.Config {
	c := relaywire.QUICConfig()
	c.MaxIncomingStreams = 1
	c.MaxIncomingUniStreams = -1
	return c
}

// Server is the relay's gateway end.
type Server struct {
	cfg     Config
	hubs    *hub.Registry
	log     *slog.Logger
	metrics *metrics
	now     func() time.Time // the clock of the keyframe limits; tests set theirs before Listen

	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
	wg  sync.WaitGroup // connection handlers

	mu       sync.Mutex
	conns    map[*quic.Conn]struct{}
	funcs    map[string]*function // authenticated, by id
	sessions map[string]*Session

	dropMu      sync.Mutex
	subs        map[*hub.Subscription]struct{} // live subscriptions, for the dropped count
	closedDrops uint64                         // packets dropped by subscriptions closed since
}

// NewServer returns a Server that relays the hubs of hubs. Call Listen,
// then Serve.
func NewServer(cfg Config, hubs *hub.Registry) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:      cfg,
		hubs:     hubs,
		log:      cfg.Logger,
		now:      time.Now,
		conns:    make(map[*quic.Conn]struct{}),
		funcs:    make(map[string]*function),
		sessions: make(map[string]*Session),
		subs:     make(map[*hub.Subscription]struct{}),
	}
	s.metrics = newMetrics(cfg.Registerer, s.dropped)
	return s
}

// Listen binds the UDP socket.
func (s *Server) Listen() error {
	if s.cfg.Secret == "" {
		return errors.New("relay: no secret")
	}
	if len(s.cfg.Cert.Certificate) == 0 {
		return errors.New("relay: no certificate")
	}
	tlsConf := relaywire.TLSConfig()
	tlsConf.Certificates = []tls.Certificate{s.cfg.Cert}
	ua, err := net.ResolveUDPAddr("udp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("relay: address %q: %w", s.cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("relay: listen: %w", err)
	}
	// The server owns the socket and the transport, so that Serve can
	// release the port as soon as it has closed the connections.
	tr := &quic.Transport{
		Conn:              udp,
		StatelessResetKey: resetKey(s.cfg.Secret),
		// Every new connection proves its source address first (a Retry:
		// one round trip more for a function, which connects rarely), so
		// a spoofed Initial costs the relay no connection state.
		VerifySourceAddress: func(net.Addr) bool { return true },
	}
	ln, err := tr.Listen(tlsConf, quicConfig())
	if err != nil {
		tr.Close()
		udp.Close()
		return fmt.Errorf("relay: listen: %w", err)
	}
	s.udp, s.tr, s.ln = udp, tr, ln
	return nil
}

// resetKey derives the QUIC stateless reset key from the relay secret, so
// a gateway restarted with the same data dir answers the packets of its
// predecessor's connections with a stateless reset: the functions learn at
// their next packet (a keep-alive at most) that their connection is gone
// and reconnect, instead of waiting out the idle timeout.
func resetKey(secret string) *quic.StatelessResetKey {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("lightspeed relay: QUIC stateless reset key"))
	var k quic.StatelessResetKey
	copy(k[:], mac.Sum(nil))
	return &k
}

// Close releases the socket of a Server that will not Serve.
func (s *Server) Close() {
	if s.ln != nil {
		s.ln.Close()
		s.tr.Close()
		s.udp.Close()
	}
}

// Addr is the bound UDP address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts functions until ctx is done, then closes every connection,
// waits for their goroutines, releases the socket and returns nil.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("relay: listening", "addr", s.ln.Addr().String(), "fingerprint", Fingerprint(s.cfg.Cert))
	var err error
	for {
		qc, aerr := s.ln.Accept(ctx)
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("relay: accept: %w", aerr)
			}
			break
		}
		s.mu.Lock()
		s.conns[qc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(qc)
			s.mu.Lock()
			delete(s.conns, qc)
			s.mu.Unlock()
		}()
	}
	s.ln.Close()
	s.mu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns))
	for qc := range s.conns {
		conns = append(conns, qc)
	}
	s.mu.Unlock()
	for _, qc := range conns {
		qc.CloseWithError(relaywire.CodeNone, "gateway shutting down")
	}
	s.wg.Wait()
	s.tr.Close()
	s.udp.Close()
	return err
}

// Function describes a connected, authenticated function.
type Function struct {
	ID        string
	Region    string
	MachineID string
	MediaAddr string // public ip:port of its WebRTC UDP mux
	Capacity  int    // max viewers
	Viewers   int
	EgressBps float64
	CPU       float64 // 0..1 of its machine
	Draining  bool
	Connected time.Time
}

// Functions returns the authenticated functions, sorted by ID.
func (s *Server) Functions() []Function {
	s.mu.Lock()
	fns := make([]*function, 0, len(s.funcs))
	for _, f := range s.funcs {
		fns = append(fns, f)
	}
	s.mu.Unlock()
	out := make([]Function, 0, len(fns))
	for _, f := range fns {
		out = append(out, f.info())
	}
	slices.SortFunc(out, func(a, b Function) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Drain tells a function to take no new sessions and keep its current
// ones.
func (s *Server) Drain(functionID, reason string) error {
	f := s.function(functionID)
	if f == nil {
		return fmt.Errorf("relay: function %s: %w", functionID, ErrFunctionGone)
	}
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
	if err := f.write(&relaywire.Drain{Reason: reason}); err != nil {
		return fmt.Errorf("relay: function %s: drain: %w", functionID, ErrFunctionGone)
	}
	f.log.Info("relay: draining", "reason", reason)
	return nil
}

// Disconnect closes the connection of a function the fleet has given up
// on (destroyed, replaced): a process that died stays connected until
// QUIC's idle timeout, and would meanwhile be offered to viewers. Its
// sessions end as when it disconnects itself.
func (s *Server) Disconnect(functionID, reason string) error {
	f := s.function(functionID)
	if f == nil {
		return fmt.Errorf("relay: function %s: %w", functionID, ErrFunctionGone)
	}
	f.log.Info("relay: disconnecting", "reason", reason)
	f.qc.CloseWithError(relaywire.CodeNone, reason)
	s.unregister(f)
	return nil
}

func (s *Server) function(id string) *function {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.funcs[id]
}

// register adds an authenticated function. An older connection of the same
// id (the same machine, reconnected) is closed.
func (s *Server) register(f *function) {
	s.mu.Lock()
	old := s.funcs[f.id]
	s.funcs[f.id] = f
	s.mu.Unlock()
	s.metrics.functions.Inc()
	if old != nil {
		old.log.Warn("relay: replaced by a newer connection of the same machine")
		old.qc.CloseWithError(relaywire.CodeReplaced, "replaced by a newer connection")
	}
}

// unregister removes a function that disconnected and ends its sessions,
// once per connection.
func (s *Server) unregister(f *function) {
	s.mu.Lock()
	if f.unregistered { // Disconnect did, before the connection ended
		s.mu.Unlock()
		return
	}
	f.unregistered = true
	if s.funcs[f.id] == f {
		delete(s.funcs, f.id)
	}
	var ended []*Session
	for id, ss := range s.sessions {
		if ss.fn == f {
			delete(s.sessions, id)
			ended = append(ended, ss)
		}
	}
	s.mu.Unlock()
	s.metrics.functions.Dec()
	for _, ss := range ended {
		ss.end(ErrFunctionGone)
	}
}

// trackSub and untrackSub keep the live subscriptions for the dropped
// count.
func (s *Server) trackSub(sub *hub.Subscription) {
	s.dropMu.Lock()
	s.subs[sub] = struct{}{}
	s.dropMu.Unlock()
}

func (s *Server) untrackSub(sub *hub.Subscription) {
	s.dropMu.Lock()
	if _, ok := s.subs[sub]; ok {
		delete(s.subs, sub)
		s.closedDrops += sub.Dropped()
	}
	s.dropMu.Unlock()
}

// dropped counts the packets that full subscriptions dropped: functions
// slower than their channels.
func (s *Server) dropped() float64 {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	n := s.closedDrops
	for sub := range s.subs {
		n += sub.Dropped()
	}
	return float64(n)
}

// newID returns 16 random hex characters.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type metrics struct {
	functions     prometheus.Gauge
	datagrams     prometheus.Counter
	streamed      prometheus.Counter
	dropped       prometheus.CounterFunc
	nacks         prometheus.Counter
	retransmitted prometheus.Counter
	unrecoverable prometheus.Counter
	authFailures  *prometheus.CounterVec
	keyframes     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, dropped func() float64) *metrics {
	m := &metrics{
		functions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lightspeed_relay_functions", Help: "Functions connected and authenticated."}),
		datagrams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_relay_datagrams_sent_total", Help: "RTP packets sent to functions as datagrams, retransmissions included."}),
		streamed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_relay_stream_packets_total", Help: "RTP packets sent on a stream because they did not fit a datagram."}),
		dropped: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "lightspeed_relay_dropped_total", Help: "RTP packets dropped because a function's subscription queue was full."}, dropped),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_relay_nacks_received_total", Help: "Sequence numbers functions asked for again."}),
		retransmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_relay_retransmitted_total", Help: "RTP packets sent again after a NACK."}),
		unrecoverable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_relay_unrecoverable_total", Help: "Sequence numbers asked for again that were no longer held."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_relay_auth_failures_total", Help: "Function connections refused before welcome, by reason."}, []string{"reason"}),
		keyframes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_relay_keyframe_requests_total",
			Help: "Keyframe requests from functions: asked of the publisher, cannot (FTL or none live), throttled, or for a channel not subscribed."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.functions, m.datagrams, m.streamed, m.dropped, m.nacks, m.retransmitted, m.unrecoverable, m.authFailures, m.keyframes)
	}
	return m
}
