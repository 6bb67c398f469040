// Package signaling is where viewers meet functions: WHEP and the original
// Lightspeed websocket protocol. The gateway picks a function for each
// viewer and forwards offers, answers and ICE candidates to it over the
// relay; media then flows from the function to the viewer directly.
package signaling

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
	"lightspeed/shared/relaywire"
)

// Relay is the part of the relay server that signaling uses.
type Relay interface {
	StartSession(ctx context.Context, functionID string, channel uint32, offer, layer string) (*relay.Session, error)
	SetLayer(sessionID, layer string) error
	SetAnswer(ctx context.Context, sessionID, sdp string) error
	AddCandidate(sessionID string, c relaywire.Candidate) error
	CloseSession(sessionID, reason string)
}

// Picker chooses a function for a viewer.
type Picker interface {
	Pick(region string, exclude ...string) (scheduler.Function, error)
	Release(functionID string)
}

// Config is what signaling works with.
type Config struct {
	Hubs           *hub.Registry
	Relay          Relay
	Picker         Picker
	Known          func(channel uint32) bool // the channel has a stream key
	DefaultChannel uint32                    // for a websocket that names none
	SessionTimeout time.Duration             // to get an answer from a function; default 15 s
	Logger         *slog.Logger
	Registerer     prometheus.Registerer

	// Private reports whether a channel's viewers need a viewer token
	// (WHEP: Authorization: Bearer; websocket: ?token=). nil: every
	// channel is public.
	Private func(channel uint32) bool
	// TokenKey is the key viewer tokens are signed with (see
	// viewtoken.LoadOrCreateKey). Without it no token holds, and private
	// channels refuse every viewer.
	TokenKey []byte

	// Limits bounds what one client IP, and all of them, may ask of
	// signaling (docs/limits.md); the zero value bounds nothing.
	Limits Limits
	// ClientIPHeader names a header that a trusted proxy in front of the
	// gateway sets to the client's IP ("Fly-Client-IP" on Fly); empty:
	// the connection's address. The limits count by this IP.
	ClientIPHeader string
}

// Limits are signaling's abuse limits. Loopback clients are exempt from
// the per-IP ones (see package ratelimit).
type Limits struct {
	// Rate bounds WHEP POSTs and websocket opens (together) per client
	// IP: beyond, 429 with Retry-After. Zero: no bound.
	Rate ratelimit.Config
	// SessionsPerIP bounds the viewer sessions open from one client IP
	// (WHEP sessions, from their 201 to their end, and websocket pages,
	// from the upgrade to the close): beyond, 429. 0: no bound.
	SessionsPerIP int
	// Sessions bounds them in all: beyond, 503 with Retry-After. 0: no
	// bound.
	Sessions int
}

// Signaling serves WHEP and the Lightspeed websocket.
type Signaling struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by relay session id
	viewers  map[uint32]int      // sessions per channel
	sockets  map[*wsConn]struct{}

	sessionsStarted *prometheus.CounterVec
	sessionErrors   *prometheus.CounterVec
	authFailures    *prometheus.CounterVec

	limiter     *ratelimit.Limiter  // WHEP POSTs and websocket opens per IP; nil: none
	slots       *ratelimit.Sessions // viewer sessions per IP and in all; nil: none
	refusedWHEP *ratelimit.Refusals // lightspeed_http_refused_total{endpoint="whep"}
	refusedWS   *ratelimit.Refusals // {endpoint="websocket"}
}

// session is one viewer's session on a function.
type session struct {
	*relay.Session
	kind     string // "whep" or "websocket"
	servedBy string // the function's region and id, for the viewer page's stats
	release  func() // gives back the session's slot when it ends; nil: none held

	mu       sync.Mutex
	remote   relaywire.CandidateSet // the addresses the viewer's candidates name, in its SDP and trickled
	trickled int                    // candidate messages trickled, ends of candidates too
}

// addSDP counts the candidates of the viewer's SDP, or reports false when
// they would name more than relaywire.MaxCandidates addresses (the
// function would refuse them).
func (s *session) addSDP(sdp string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote.AddSDP(sdp)
}

// addTrickled counts trickled candidates, all or none: it reports false,
// counting nothing, when they would pass relaywire.MaxCandidates addresses
// or relaywire.MaxTrickle messages.
func (s *session) addTrickled(cands ...relaywire.Candidate) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trickled+len(cands) > relaywire.MaxTrickle || !s.remote.AddTrickled(cands) {
		return false
	}
	s.trickled += len(cands)
	return true
}

// New returns signaling over cfg.
func New(cfg Config) *Signaling {
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Signaling{
		cfg:      cfg,
		log:      cfg.Logger,
		sessions: make(map[string]*session),
		viewers:  make(map[uint32]int),
		sockets:  make(map[*wsConn]struct{}),
		sessionsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_viewer_sessions_total", Help: "Viewer sessions started, by protocol."}, []string{"protocol"}),
		sessionErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_viewer_session_errors_total", Help: "Viewer session requests refused, by reason."}, []string{"reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lightspeed_viewer_auth_failures_total", Help: "Viewers of private channels refused for their viewer token, by reason."}, []string{"reason"}),
	}
	for _, r := range authReasons {
		s.authFailures.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.sessionsStarted, s.sessionErrors, s.authFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "lightspeed_viewers", Help: "Viewer sessions open through signaling."}, func() float64 { return float64(s.totalViewers()) }))
	}
	s.limiter = ratelimit.New(cfg.Limits.Rate)
	s.slots = ratelimit.NewSessions(cfg.Limits.SessionsPerIP, cfg.Limits.Sessions)
	var err error
	if s.refusedWHEP, err = ratelimit.NewRefusals(cfg.Registerer, "whep",
		ratelimit.ReasonRate, ratelimit.ReasonIPSessions, ratelimit.ReasonSessions, ratelimit.ReasonBodySize, ratelimit.ReasonBodyTimeout); err != nil {
		panic(err) // as MustRegister above: the registry has this metric already
	}
	if s.refusedWS, err = ratelimit.NewRefusals(cfg.Registerer, "websocket",
		ratelimit.ReasonRate, ratelimit.ReasonIPSessions, ratelimit.ReasonSessions, ratelimit.ReasonMessageSize); err != nil {
		panic(err)
	}
	return s
}

// refusals returns the refusal counter of protocol ("whep" or
// "websocket").
func (s *Signaling) refusals(protocol string) *ratelimit.Refusals {
	if protocol == "websocket" {
		return s.refusedWS
	}
	return s.refusedWHEP
}

// clientIP is the IP the limits count r by.
func (s *Signaling) clientIP(r *http.Request) netip.Addr {
	return ratelimit.ClientIP(r, s.cfg.ClientIPHeader)
}

// admit applies the per-IP request rate to a WHEP POST or a websocket
// open. A refusal is answered here (429, Retry-After, a plain-text body),
// counted, and logged when it is the first of the IP's since it was last
// let in; then admit reports false.
func (s *Signaling) admit(w http.ResponseWriter, r *http.Request, protocol string, ip netip.Addr) bool {
	d := s.limiter.Allow(ip)
	if d.OK {
		return true
	}
	s.refusals(protocol).Inc(ratelimit.ReasonRate)
	if d.First {
		s.log.Info("signaling: client over its request rate; refusing until it slows down", "ip", ip, "protocol", protocol,
			"shared_bucket", d.Shared, "retry_after", d.RetryAfter)
	}
	w.Header().Set("Retry-After", ratelimit.RetryAfter(d.RetryAfter))
	httpError(w, http.StatusTooManyRequests, "too many requests from your address; try again in %s s", ratelimit.RetryAfter(d.RetryAfter))
	return false
}

// sessionRetry is the Retry-After of a refusal for too many sessions.
const sessionRetry = 5 * time.Second

// takeSlot counts a viewer session of ip against the limits, or answers
// 429 (ip has its share) or 503 (every slot is taken), counts and logs the
// refusal and returns nil. The returned func gives the slot back, once.
func (s *Signaling) takeSlot(w http.ResponseWriter, protocol string, ip netip.Addr, channel uint32) func() {
	err := s.slots.Acquire(ip)
	if err == nil {
		var once sync.Once
		return func() { once.Do(func() { s.slots.Release(ip) }) }
	}
	w.Header().Set("Retry-After", ratelimit.RetryAfter(sessionRetry))
	if errors.Is(err, ratelimit.ErrIPFull) {
		s.refusals(protocol).Inc(ratelimit.ReasonIPSessions)
		s.log.Info("signaling: viewer refused", "ip", ip, "channel", channel, "protocol", protocol,
			"reason", ratelimit.ReasonIPSessions, "max", s.cfg.Limits.SessionsPerIP)
		httpError(w, http.StatusTooManyRequests, "too many viewer sessions from your address (%d at most); close one and try again", s.cfg.Limits.SessionsPerIP)
		return nil
	}
	s.refusals(protocol).Inc(ratelimit.ReasonSessions)
	s.log.Warn("signaling: viewer refused", "ip", ip, "channel", channel, "protocol", protocol,
		"reason", ratelimit.ReasonSessions, "max", s.cfg.Limits.Sessions)
	httpError(w, http.StatusServiceUnavailable, "the server takes no more viewers now (%d at most); try again shortly", s.cfg.Limits.Sessions)
	return nil
}

// Viewers is the number of open viewer sessions of channel.
func (s *Signaling) Viewers(channel uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewers[channel]
}

func (s *Signaling) totalViewers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.viewers {
		n += v
	}
	return n
}

// live reports whether channel has a publisher now.
func (s *Signaling) live(channel uint32) bool {
	h := s.cfg.Hubs.Get(channel)
	return h != nil && h.Stats().Live
}

// known reports whether channel exists (a key, or a hub).
func (s *Signaling) known(channel uint32) bool {
	return s.cfg.Hubs.Get(channel) != nil || (s.cfg.Known != nil && s.cfg.Known(channel))
}

var errNoCapacity = errors.New("no function can take another viewer")

// start picks a function for a viewer in region and opens a session on it,
// pinned to the video layer of rid layer ("": the highest; see
// checkLayer). A function that vanished meanwhile is skipped, up to three
// tries.
// release, when not nil, gives back the viewer's slot when the session
// ends (it is not called when start fails).
func (s *Signaling) start(ctx context.Context, kind, region string, channel uint32, offer, layer string, release func()) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SessionTimeout)
	defer cancel()
	var tried []string
	for range 3 {
		fn, err := s.cfg.Picker.Pick(region, tried...)
		if err != nil {
			s.sessionErrors.WithLabelValues("no_capacity").Inc()
			return nil, errNoCapacity
		}
		rs, err := s.cfg.Relay.StartSession(ctx, fn.ID, channel, offer, layer)
		if err != nil {
			s.cfg.Picker.Release(fn.ID)
			if errors.Is(err, relay.ErrFunctionGone) && ctx.Err() == nil {
				tried = append(tried, fn.ID)
				continue
			}
			s.sessionErrors.WithLabelValues("function").Inc()
			return nil, err
		}
		sess := &session{Session: rs, kind: kind, servedBy: fn.Region + " (" + fn.ID + ")", release: release}
		sess.remote.AddSDP(offer) // checked by checkOffer
		s.mu.Lock()
		s.sessions[rs.ID] = sess
		s.viewers[channel]++
		s.mu.Unlock()
		s.sessionsStarted.WithLabelValues(kind).Inc()
		s.log.Info("signaling: viewer session started", "session", rs.ID, "function", fn.ID, "channel", channel, "protocol", kind, "region", region, "layer", layer)
		go s.watch(sess)
		s.broadcastInfo()
		return sess, nil
	}
	s.sessionErrors.WithLabelValues("no_capacity").Inc()
	return nil, errNoCapacity
}

// watch forgets a session once it is over, wherever it ended.
func (s *Signaling) watch(sess *session) {
	<-sess.Done()
	s.mu.Lock()
	if s.sessions[sess.ID] == sess {
		delete(s.sessions, sess.ID)
		s.viewers[sess.Channel]--
		if s.viewers[sess.Channel] <= 0 {
			delete(s.viewers, sess.Channel)
		}
	}
	s.mu.Unlock()
	if sess.release != nil {
		sess.release()
	}
	s.cfg.Picker.Release(sess.FunctionID)
	s.log.Info("signaling: viewer session ended", "session", sess.ID, "function", sess.FunctionID, "channel", sess.Channel)
	s.broadcastInfo()
}

func (s *Signaling) lookup(id string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// Close ends every websocket page (HTTP shutdown does not end hijacked
// connections); their sessions close with them.
func (s *Signaling) Close() {
	s.mu.Lock()
	socks := make([]*wsConn, 0, len(s.sockets))
	for c := range s.sockets {
		socks = append(socks, c)
	}
	s.mu.Unlock()
	for _, c := range socks {
		c.close()
	}
}
