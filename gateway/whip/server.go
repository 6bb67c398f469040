// Package whip is the gateway's WHIP ingest (RFC 9725), what OBS 30 and
// later publish with: an HTTP endpoint that takes a publisher's SDP offer,
// authenticated by its stream key as a Bearer token, answers it with every
// candidate inside (OBS trickles nothing), receives the publisher's H.264
// (one video, or up to four simulcast layers) and Opus over one ICE UDP
// mux port shared by all publishers, and writes every RTP packet into the
// channel's hub, as the FTL ingest does, each simulcast layer as a track
// of its own. It asks the publisher for lost packets (NACK) and keyframes
// (PLI or FIR, per layer).
//
// The design is in docs/whip.md.
package whip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/gateway/ratelimit"
	"lightspeed/shared/relaywire"
	"lightspeed/shared/webrtcapi"
)

// KeyStore looks up the secret of a channel's stream key (the FTL
// ingest's interface; the gateway's keys.Store implements it).
type KeyStore interface {
	Secret(channel uint32) (string, bool)
}

// Config configures a Server. Zero fields take the defaults noted.
type Config struct {
	// UDPAddr is the one UDP port of every WHIP publisher's media (ICE
	// UDP mux); default ":8085". Bound to a loopback address, the server
	// gathers on loopback only and advertises 127.0.0.1 (tests, one
	// machine).
	UDPAddr string
	// PublicIPs are advertised as host candidates (NAT 1:1) instead of the
	// interfaces' addresses.
	PublicIPs []string
	// MaxSessions bounds the WHIP sessions, from POST to their end;
	// default 16. A POST beyond gets 503.
	MaxSessions int
	// ConnectTimeout is how long a session may take from its answer to a
	// connected PeerConnection (ICE and DTLS) before it is ended and its
	// channel freed; default 10 s.
	ConnectTimeout time.Duration
	// KeyframeInterval is the least time between two keyframe requests to
	// one publisher; default 1 s.
	KeyframeInterval time.Duration
	// ClientIPHeader names a header that a trusted proxy in front of the
	// gateway sets to the client's IP ("Fly-Client-IP" on Fly); empty:
	// the connection's address. It is what failed authentications and
	// RateLimit are counted by.
	ClientIPHeader string
	// RateLimit bounds the POSTs per client IP, whatever their key:
	// beyond, 429 with Retry-After (docs/limits.md). Its clock defaults to
	// Now. Zero: no bound (failed authentications are slowed down all
	// the same).
	RateLimit ratelimit.Config

	ICEDisconnectedTimeout time.Duration // see webrtcapi.Config; default 5 s
	ICEFailedTimeout       time.Duration // default 10 s
	ICEKeepalive           time.Duration // default 2 s

	Logger     *slog.Logger
	Registerer prometheus.Registerer // metrics; nil: not registered
	Now        func() time.Time      // clock of the keyframe throttle and the auth limiter; default time.Now
}

func (c *Config) setDefaults() {
	if c.UDPAddr == "" {
		c.UDPAddr = ":8085"
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 16
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.KeyframeInterval <= 0 {
		c.KeyframeInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// answerTimeout bounds the work of one POST after the claim: OBS waits
// about 8 s for the answer. Gathering host candidates through the mux
// takes microseconds, so this only matters when something is stuck.
const answerTimeout = 5 * time.Second

// Server is the WHIP ingest. It is an http.Handler for the routes under
// /api/whip; its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	keys     KeyStore
	hubs     *hub.Registry
	log      *slog.Logger
	metrics  *metrics
	limiter  *keys.Failures
	rate     *ratelimit.Limiter // POSTs per client IP; nil: no bound
	routes   *http.ServeMux
	conn     *net.UDPConn
	mux      ice.UDPMux
	api      *webrtc.API // of publishers without simulcast
	simAPI   *webrtc.API // of simulcast publishers (newSimulcastAPI)
	certs    webrtcapi.Certificates
	loggers  webrtcapi.Loggers
	loopback bool

	wg sync.WaitGroup // every session's goroutines

	mu        sync.Mutex
	closed    bool
	reserved  int                 // sessions counted against MaxSessions
	sessions  map[string]*session // by id
	byChannel map[uint32]*session
}

// New binds the WHIP UDP port and returns a Server that authenticates
// publishers with keys and writes their media into hubs. Close releases
// it.
func New(cfg Config, store KeyStore, hubs *hub.Registry) (*Server, error) {
	cfg.setDefaults()
	if cfg.RateLimit.Now == nil {
		cfg.RateLimit.Now = cfg.Now
	}
	addr, err := net.ResolveUDPAddr("udp", cfg.UDPAddr)
	if err != nil {
		return nil, fmt.Errorf("whip: udp address %q: %w", cfg.UDPAddr, err)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("whip: listen %s: %w", cfg.UDPAddr, err)
	}
	_ = conn.SetReadBuffer(4 << 20)
	loggers := webrtcapi.Loggers{Log: cfg.Logger, Layer: "whip"}
	s := &Server{
		cfg:       cfg,
		keys:      store,
		hubs:      hubs,
		log:       cfg.Logger,
		limiter:   keys.NewFailures(),
		rate:      ratelimit.New(cfg.RateLimit),
		conn:      conn,
		loggers:   loggers,
		loopback:  addr.IP.IsLoopback(),
		mux:       webrtc.NewICEUDPMux(loggers.NewLogger("ice"), conn),
		sessions:  make(map[string]*session),
		byChannel: make(map[uint32]*session),
	}
	apiCfg := webrtcapi.Config{
		Mux:                    s.mux,
		PublicIPs:              cfg.PublicIPs,
		Loopback:               s.loopback,
		ICEDisconnectedTimeout: cfg.ICEDisconnectedTimeout,
		ICEFailedTimeout:       cfg.ICEFailedTimeout,
		ICEKeepalive:           cfg.ICEKeepalive,
		Loggers:                loggers,
	}
	if s.api, err = webrtcapi.New(apiCfg); err == nil {
		s.simAPI, err = newSimulcastAPI(apiCfg)
	}
	if err != nil {
		s.mux.Close()
		return nil, fmt.Errorf("whip: %w", err)
	}
	if s.metrics, err = newMetrics(cfg.Registerer); err != nil {
		s.mux.Close()
		return nil, err
	}
	s.routes = http.NewServeMux()
	s.routes.HandleFunc("POST /api/whip", s.post)
	s.routes.HandleFunc("POST /api/whip/{channel}", s.post)
	s.routes.HandleFunc("DELETE /api/whip/session/{id}", s.delete)
	s.routes.HandleFunc("PATCH /api/whip/session/{id}", s.patch)
	s.routes.HandleFunc("OPTIONS /api/whip", s.options)
	s.routes.HandleFunc("OPTIONS /api/whip/", s.options)
	s.log.Info("whip: listening", "udp", conn.LocalAddr().String(), "public_ips", strings.Join(cfg.PublicIPs, ","))
	return s, nil
}

// Addr is the bound address of the ICE UDP mux.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// ServeHTTP serves POST /api/whip, POST /api/whip/{channel}, DELETE and
// PATCH /api/whip/session/{id}, and OPTIONS on all of them. Every
// response carries the CORS headers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, Link, ETag, Retry-After")
	s.routes.ServeHTTP(w, r)
}

func (s *Server) options(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Accept-Post", "application/sdp")
	w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
	w.WriteHeader(http.StatusNoContent)
}

// httpError writes a plain-text error a person can read.
var httpError = ratelimit.WriteError

// readBody reads a request body of the wanted media type, at most maxBody
// bytes (ratelimit.ReadBody); it has answered the request when it returns
// false.
func readBody(w http.ResponseWriter, r *http.Request, want string, refused *ratelimit.Refusals) (string, bool) {
	return ratelimit.ReadBody(w, r, want, maxBody, refused)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// authenticate checks the request's Bearer stream key, for channel when
// it is not 0. It has answered the request when it returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, channel uint32) (keys.Key, bool) {
	ip, remote := clientAddr(r, s.cfg.ClientIPHeader)
	now := s.cfg.Now()
	if ok, wait := s.limiter.Allow(ip, now); !ok {
		s.metrics.result("rate_limited")
		w.Header().Set("Retry-After", strconv.Itoa(int(wait/time.Second)+1))
		httpError(w, http.StatusTooManyRequests, "too many failed authentications from %s; try again later", ip)
		return keys.Key{}, false
	}
	fail := func(reason, log string, args ...any) (keys.Key, bool) {
		s.limiter.Fail(ip, now)
		s.metrics.result("unauthorized")
		s.log.Warn("whip: publisher refused", "remote", remote, "channel", channel, "status", http.StatusUnauthorized, "reason", reason)
		w.Header().Set("WWW-Authenticate", `Bearer realm="lightspeed"`)
		httpError(w, http.StatusUnauthorized, log, args...)
		return keys.Key{}, false
	}
	k, err := bearerKey(r.Header.Get("Authorization"))
	if err != nil {
		return fail("no stream key", "%v", err)
	}
	if channel != 0 && k.Channel != channel {
		return fail(fmt.Sprintf("stream key for channel %d", k.Channel), "the stream key is not the key of channel %d", channel)
	}
	channel = k.Channel
	stored, ok := s.keys.Secret(k.Channel)
	if !ok || !keyMatches(stored, k.Secret) {
		return fail("wrong stream key", "wrong stream key for channel %d", k.Channel)
	}
	return k, true
}

func (s *Server) post(w http.ResponseWriter, r *http.Request) {
	if ip, _ := clientAddr(r, s.cfg.ClientIPHeader); !s.admit(w, ip) {
		return
	}
	var pathChannel uint32
	if v := r.PathValue("channel"); v != "" {
		ch, ok := parseChannel(v)
		if !ok {
			s.metrics.result("bad_request")
			httpError(w, http.StatusNotFound, "no channel %q: POST to /api/whip or /api/whip/<channel number>", truncate(v, 32))
			return
		}
		pathChannel = ch
	}
	key, ok := s.authenticate(w, r, pathChannel)
	if !ok {
		return
	}
	text, ok := readBody(w, r, "application/sdp", s.metrics.refused)
	if !ok {
		s.metrics.result("bad_body")
		return
	}
	o, err := checkOffer(text)
	if err != nil {
		var oe *offerError
		errors.As(err, &oe)
		s.metrics.result(map[int]string{400: "bad_offer", 406: "unsupported_codec"}[oe.status])
		s.log.Warn("whip: offer refused", "channel", key.Channel, "status", oe.status, "reason", oe.msg)
		httpError(w, oe.status, "%s", oe.msg)
		return
	}
	if !s.reserve() {
		s.metrics.result("full")
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "the gateway takes no more WHIP publishers now (%d at most)", s.cfg.MaxSessions)
		return
	}
	pub, err := s.hubs.Claim(key.Channel)
	if errors.Is(err, hub.ErrInUse) && s.replaceStale(key.Channel) {
		pub, err = s.hubs.Claim(key.Channel)
	}
	if err != nil {
		s.unreserve()
		if errors.Is(err, hub.ErrInUse) {
			s.metrics.result("in_use")
			s.log.Warn("whip: publisher refused", "channel", key.Channel, "status", http.StatusConflict, "reason", "channel already live")
			httpError(w, http.StatusConflict, "channel %d is already live: another publisher (FTL or WHIP) holds it", key.Channel)
			return
		}
		s.metrics.result("failed")
		httpError(w, http.StatusServiceUnavailable, "the gateway is shutting down")
		return
	}
	_, remote := clientAddr(r, s.cfg.ClientIPHeader)
	sess := newSession(s, key, pub, o, remote, software(r.UserAgent()))
	ctx, cancel := context.WithTimeout(r.Context(), answerTimeout)
	defer cancel()
	answer, err := sess.negotiate(ctx, text)
	if err != nil {
		sess.end("setup failed", "setup_failed")
		var oe *offerError
		if errors.As(err, &oe) {
			s.metrics.result(map[int]string{400: "bad_offer", 406: "unsupported_codec"}[oe.status])
			s.log.Warn("whip: offer refused", "channel", key.Channel, "status", oe.status, "reason", oe.msg)
			httpError(w, oe.status, "%s", oe.msg)
			return
		}
		s.metrics.result("failed")
		s.log.Warn("whip: session setup failed", "channel", key.Channel, "err", err)
		httpError(w, http.StatusInternalServerError, "could not set up the session: %v", err)
		return
	}
	if !s.register(sess) {
		sess.end("gateway shutting down", "shutdown")
		s.metrics.result("failed")
		httpError(w, http.StatusServiceUnavailable, "the gateway is shutting down")
		return
	}
	s.metrics.result("created")
	if n := len(o.layers); n > 0 {
		s.metrics.layers.WithLabelValues(strconv.Itoa(n)).Inc()
		s.log.Info("whip: session created", "channel", key.Channel, "session", sess.id, "remote", remote, "software", sess.software, "layers", o.layers)
	} else {
		s.log.Info("whip: session created", "channel", key.Channel, "session", sess.id, "remote", remote, "software", sess.software)
	}
	w.Header().Set("Location", "/api/whip/session/"+sess.id)
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("ETag", `"`+sess.id+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// admit applies RateLimit to a POST from ip. A refusal is answered here
// (429, Retry-After, a plain-text body), counted, and logged when it is
// the first of ip's since it was last let in; then admit reports false.
func (s *Server) admit(w http.ResponseWriter, ip netip.Addr) bool {
	d := s.rate.Allow(ip)
	if d.OK {
		return true
	}
	s.metrics.result("too_many_requests")
	s.metrics.refused.Inc(ratelimit.ReasonRate)
	if d.First {
		s.log.Warn("whip: client over its request rate; refusing until it slows down", "ip", ip, "shared_bucket", d.Shared, "retry_after", d.RetryAfter)
	}
	w.Header().Set("Retry-After", ratelimit.RetryAfter(d.RetryAfter))
	httpError(w, http.StatusTooManyRequests, "too many requests from %s; try again in %s s", ip, ratelimit.RetryAfter(d.RetryAfter))
	return false
}

// software returns what a publisher's User-Agent says it is, printable
// ASCII, at most 128 bytes.
func software(ua string) string {
	b := make([]byte, 0, min(len(ua), 128))
	for i := 0; i < len(ua) && len(b) < 128; i++ {
		if c := ua[i]; c >= ' ' && c <= '~' {
			b = append(b, c)
		}
	}
	return strings.TrimSpace(string(b))
}

// sessionOf finds the session of a resource URL and checks that the
// request carries its stream key. It has answered the request when it
// returns nil.
func (s *Server) sessionOf(w http.ResponseWriter, r *http.Request) *session {
	s.mu.Lock()
	sess := s.sessions[r.PathValue("id")]
	s.mu.Unlock()
	if sess == nil {
		httpError(w, http.StatusNotFound, "no such WHIP session (it ended, or never was)")
		return nil
	}
	k, err := bearerKey(r.Header.Get("Authorization"))
	if err != nil || k.Channel != sess.key.Channel || !keyMatches(sess.key.Secret, k.Secret) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lightspeed"`)
		httpError(w, http.StatusUnauthorized, "not the stream key of this session")
		return nil
	}
	return sess
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	sess := s.sessionOf(w, r)
	if sess == nil {
		return
	}
	sess.end("publisher sent DELETE", "deleted")
	w.WriteHeader(http.StatusOK)
}

// patch takes trickled ICE candidates (RFC 8840 SDP fragment). OBS sends
// none; browsers and other clients may.
func (s *Server) patch(w http.ResponseWriter, r *http.Request) {
	sess := s.sessionOf(w, r)
	if sess == nil {
		return
	}
	frag, ok := readBody(w, r, "application/trickle-ice-sdpfrag", s.metrics.refused)
	if !ok {
		return
	}
	cands, err := parseSDPFrag(frag)
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := sess.addCandidates(cands); err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reserve counts a new session against MaxSessions.
func (s *Server) reserve() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.reserved >= s.cfg.MaxSessions {
		return false
	}
	s.reserved++
	return true
}

func (s *Server) unreserve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved--
}

// register makes a negotiated session reachable by its id and channel.
func (s *Server) register(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || sess.isEnded() {
		return false
	}
	s.sessions[sess.id] = sess
	s.byChannel[sess.key.Channel] = sess
	s.metrics.current.Set(float64(len(s.sessions)))
	return true
}

// forget removes an ended session and frees its reservation.
// replaceStale ends the WHIP session holding channel if its publisher is
// gone (no media for staleAfter), so that the publisher's new POST (OBS
// reconnecting after it lost its network) takes the channel at once; it
// reports whether it ended one. A live session, or an FTL publisher, is
// left alone: the POST gets 409.
func (s *Server) replaceStale(channel uint32) bool {
	s.mu.Lock()
	old := s.byChannel[channel]
	s.mu.Unlock()
	if old == nil || !old.stale(time.Now()) {
		return false
	}
	old.end("replaced: its publisher came back with a new session", "replaced")
	return true
}

func (s *Server) forget(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	if s.byChannel[sess.key.Channel] == sess {
		delete(s.byChannel, sess.key.Channel)
	}
	s.reserved--
	s.metrics.current.Set(float64(len(s.sessions)))
}

// RequestKeyframe asks the WHIP publisher of channel for a keyframe (PLI,
// or FIR when that is all it offered) of each of its video layers.
// Requests for one layer are at least KeyframeInterval apart; it reports
// whether one was sent. A channel without a WHIP publisher (none, or FTL,
// which cannot be asked) returns false.
func (s *Server) RequestKeyframe(channel uint32) bool {
	s.mu.Lock()
	sess := s.byChannel[channel]
	s.mu.Unlock()
	if sess == nil {
		return false
	}
	sent := false
	for i := range sess.layerCount() {
		if sess.requestKeyframe(relaywire.LayerTrack(i), "requested") {
			sent = true
		}
	}
	return sent
}

// Close ends every session, releasing their channels, closes the UDP port
// and waits for the sessions' goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	var all []*session
	for _, sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.end("gateway shutting down", "shutdown")
	}
	s.wg.Wait()
	s.mux.Close()
}

// newID returns a random session id: 128 bits in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// unreachable reports whether a publisher's candidate address is one no
// publisher can have (loopback, unspecified, multicast, link-local): the
// gateway would send connectivity checks to its own host or link. A server
// on loopback (tests) takes every address.
func (s *Server) unreachable(a netip.Addr) bool {
	if s.loopback {
		return false
	}
	return a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast()
}

// metrics are the ingest's Prometheus metrics.
type metrics struct {
	current   prometheus.Gauge
	results   *prometheus.CounterVec
	ended     *prometheus.CounterVec
	keyframes *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	layers    *prometheus.CounterVec
	refused   *ratelimit.Refusals // lightspeed_http_refused_total{endpoint="whip"}
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		current: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "lightspeed_whip_sessions", Help: "WHIP sessions now, from their 201 to their end."}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_whip_sessions_total", Help: "WHIP POSTs, by result (created or why refused)."}, []string{"result"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_whip_sessions_ended_total", Help: "WHIP sessions ended, by reason."}, []string{"reason"}),
		keyframes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_whip_keyframe_requests_total", Help: "Keyframe requests sent to WHIP publishers, by kind (pli, fir) and video layer (0 to 3; 0 without simulcast)."}, []string{"kind", "layer"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_whip_nacks_sent_total", Help: "Sequence numbers requested again from WHIP publishers, by video layer (0 to 3; 0 without simulcast)."}, []string{"layer"}),
		layers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_whip_simulcast_sessions_total", Help: "WHIP sessions created with simulcast, by their number of video layers."}, []string{"layers"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.current, m.results, m.ended, m.keyframes, m.nacks, m.layers} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("whip: register metrics: %w", err)
			}
		}
	}
	var err error
	if m.refused, err = ratelimit.NewRefusals(reg, "whip", ratelimit.ReasonRate, ratelimit.ReasonBodySize, ratelimit.ReasonBodyTimeout); err != nil {
		return nil, fmt.Errorf("whip: %w", err)
	}
	return m, nil
}

func (m *metrics) result(r string) { m.results.WithLabelValues(r).Inc() }
