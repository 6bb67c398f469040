// Package ftl is the gateway's FTL ingest: the TCP control protocol that
// authenticates a publisher (OBS, the FTL SDK) and the UDP socket that
// receives its RTP media, requests lost video packets again and hands every
// accepted packet to the channel's hub.
//
// The wire facts it follows are in docs/ftl.md.
package ftl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
)

// KeyStore looks up the secret of a channel's stream key.
type KeyStore interface {
	Secret(channel uint32) (string, bool)
}

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	ControlAddr    string        // TCP listen address; default ":8084"
	MediaAddr      string        // UDP listen address; default: ControlAddr's port on all addresses
	AnnouncePort   int           // UDP port told to publishers; default: the media socket's port
	AuthTimeout    time.Duration // from connect to the end of the handshake; default 5 s
	MediaTimeout   time.Duration // from "." to the first media packet; default 10 s
	SilenceTimeout time.Duration // media silence that ends a live stream; default 10 s
	IdleTimeout    time.Duration // control silence (no PING) that ends a live stream; default 30 s
	ProxyProtocol  bool          // control connections start with a PROXY protocol header (Fly.io's proxy_proto handler)
	Logger         *slog.Logger
	Registerer     prometheus.Registerer // metrics; nil: not registered
}

func (c *Config) setDefaults() {
	if c.ControlAddr == "" {
		c.ControlAddr = ":8084"
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 5 * time.Second
	}
	if c.MediaTimeout == 0 {
		c.MediaTimeout = 10 * time.Second
	}
	if c.SilenceTimeout == 0 {
		c.SilenceTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is the FTL ingest: one TCP listener for control connections and
// one UDP socket for the media of every live channel.
type Server struct {
	cfg     Config
	keys    KeyStore
	hubs    *hub.Registry
	log     *slog.Logger
	metrics *metrics
	limiter *keys.Failures

	ln    net.Listener
	media *net.UDPConn
	port  int // announced UDP port

	watchers sync.WaitGroup // one per started session

	mu       sync.Mutex
	sessions map[*session]struct{} // every session holding its channel, from CONNECT on
	bySSRC   map[uint32]*session   // by negotiated SSRC, from "." on
	conns    map[net.Conn]struct{}
}

// NewServer returns a Server that authenticates with keys and writes media
// into the hubs of hubs. Call Listen, then Serve.
func NewServer(cfg Config, store KeyStore, hubs *hub.Registry) *Server {
	cfg.setDefaults()
	return &Server{
		cfg:      cfg,
		keys:     store,
		hubs:     hubs,
		log:      cfg.Logger,
		metrics:  newMetrics(cfg.Registerer),
		limiter:  keys.NewFailures(),
		sessions: make(map[*session]struct{}),
		bySSRC:   make(map[uint32]*session),
		conns:    make(map[net.Conn]struct{}),
	}
}

// Listen binds the control and media sockets.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.ControlAddr)
	if err != nil {
		return fmt.Errorf("ftl: listen control: %w", err)
	}
	mediaAddr := s.cfg.MediaAddr
	if mediaAddr == "" {
		mediaAddr = fmt.Sprintf(":%d", ln.Addr().(*net.TCPAddr).Port)
	}
	ua, err := net.ResolveUDPAddr("udp", mediaAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("ftl: media address %q: %w", mediaAddr, err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil {
		ln.Close()
		return fmt.Errorf("ftl: listen media: %w", err)
	}
	_ = uc.SetReadBuffer(4 << 20)
	s.ln, s.media = ln, uc
	s.port = s.cfg.AnnouncePort
	if s.port == 0 {
		s.port = uc.LocalAddr().(*net.UDPAddr).Port
	}
	return nil
}

// ControlAddr is the bound TCP address.
func (s *Server) ControlAddr() net.Addr { return s.ln.Addr() }

// MediaAddr is the bound UDP address.
func (s *Server) MediaAddr() net.Addr { return s.media.LocalAddr() }

// Serve accepts control connections and reads media until ctx is done, then
// ends every stream and closes the sockets.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.log.Info("ftl: listening", "control", s.ln.Addr().String(), "media", s.media.LocalAddr().String(), "announced_port", s.port)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.readMedia() })
	var conns sync.WaitGroup
	g.Go(func() error {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return fmt.Errorf("ftl: accept: %w", err)
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				s.handleControl(c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	})
	g.Go(func() error {
		<-ctx.Done()
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		conns.Wait()
		// Streams draining after DISCONNECT have no connection left: end them.
		s.mu.Lock()
		var live []*session
		for sess := range s.sessions {
			live = append(live, sess)
		}
		s.mu.Unlock()
		for _, sess := range live {
			sess.end("gateway shutting down", codeTerminated)
		}
		s.watchers.Wait() // every session has ended and left its hub
		s.media.Close()
		return nil
	})
	err := g.Wait()
	if ctx.Err() != nil && err != nil && errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// claim makes sess the publisher of its channel in the hub registry. When
// a gone publisher of this server holds the channel, it is ended and the
// claim tried once more; when any other does, the error wraps
// hub.ErrInUse.
func (s *Server) claim(sess *session) error {
	pub, err := s.hubs.Claim(sess.channel)
	if errors.Is(err, hub.ErrInUse) && s.endGone(sess.channel) {
		pub, err = s.hubs.Claim(sess.channel)
	}
	if err != nil {
		return err
	}
	sess.pub = pub
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	return nil
}

// endGone ends the session of this server that holds channel if its
// publisher is gone: it sent DISCONNECT, or showed no life (media or PING)
// within the silence timeout. It reports whether it ended one; the
// channel's claim is released when it returns.
func (s *Server) endGone(channel uint32) bool {
	var old *session
	s.mu.Lock()
	for sess := range s.sessions {
		if sess.channel == channel {
			old = sess
		}
	}
	s.mu.Unlock()
	switch {
	case old == nil:
		return false
	case old.isDraining():
		old.end("publisher disconnected", 0) // the publisher is back: stop waiting for stragglers
	case old.alive(time.Now(), s.cfg.SilenceTimeout):
		return false
	default:
		old.end("replaced by a new publisher", codeTerminated)
	}
	return true
}

// register makes sess's SSRCs known to the media socket. It fails when
// another live stream uses one of them.
func (s *Server) register(sess *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.bySSRC[sess.audio.ssrc]; sess.audio.enabled && o != nil {
		return errAudioSSRC
	}
	if o := s.bySSRC[sess.video.ssrc]; sess.video.enabled && o != nil {
		return errVideoSSRC
	}
	if sess.audio.enabled {
		s.bySSRC[sess.audio.ssrc] = sess
	}
	if sess.video.enabled {
		s.bySSRC[sess.video.ssrc] = sess
	}
	return nil
}

// release forgets sess everywhere.
func (s *Server) release(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, sess)
	for ssrc, o := range s.bySSRC {
		if o == sess {
			delete(s.bySSRC, ssrc)
		}
	}
}

func (s *Server) sessionBySSRC(ssrc uint32) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySSRC[ssrc]
}

// sessionByAddr finds the live session whose publisher sends from addr: the
// learned address, or before learning, the control connection's IP.
func (s *Server) sessionByAddr(addr netip.AddrPort) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var byIP *session
	for _, sess := range s.bySSRC {
		learned := sess.learnedAddr()
		if learned == addr {
			return sess
		}
		if !learned.IsValid() && sess.ip == addr.Addr() {
			byIP = sess
		}
	}
	return byIP
}

// metrics are the ingest's Prometheus counters.
type metrics struct {
	connections  prometheus.Counter
	authFailures *prometheus.CounterVec
	streams      prometheus.Counter
	packets      *prometheus.CounterVec
	video, audio prometheus.Counter // packets{kind="video"|"audio"}, resolved once for the per-packet path
	rejected     *prometheus.CounterVec
	nacks        prometheus.Counter
	pings        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_ftl_connections_total", Help: "FTL control connections accepted."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_ftl_auth_failures_total", Help: "FTL authentications refused, by reason."}, []string{"reason"}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_ftl_streams_total", Help: "FTL streams started."}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_ftl_media_packets_total", Help: "FTL media packets accepted, by kind."}, []string{"kind"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_ftl_media_rejected_total", Help: "UDP packets on the FTL media socket that were dropped, by reason."}, []string{"reason"}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_ftl_nacks_sent_total", Help: "Sequence numbers requested again from publishers."}),
		pings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lightspeed_ftl_pings_echoed_total", Help: "FTL media pings echoed to publishers."}),
	}
	m.video = m.packets.WithLabelValues("video")
	m.audio = m.packets.WithLabelValues("audio")
	if reg != nil {
		reg.MustRegister(m.connections, m.authFailures, m.streams, m.packets, m.rejected, m.nacks, m.pings)
	}
	return m
}

// Close releases the sockets of a Server that will not Serve.
func (s *Server) Close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.media != nil {
		s.media.Close()
	}
}
