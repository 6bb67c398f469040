package ratelimit

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The reasons of lightspeed_http_refused_total.
const (
	ReasonRate        = "rate"         // 429: too many requests from the IP
	ReasonIPSessions  = "ip_sessions"  // 429: too many sessions from the IP
	ReasonSessions    = "sessions"     // 503: too many sessions in all
	ReasonBodySize    = "body_size"    // 413: a request body over its limit
	ReasonBodyTimeout = "body_timeout" // 408: a request body not sent within its deadline
	ReasonMessageSize = "message_size" // a websocket message over its limit (closed with 1009)
	ReasonNoToken     = "no_token"     // 401: a bearer token is needed and missing or wrong
	ReasonNotAllowed  = "not_allowed"  // 403: no token is configured that could let the request in
)

// Refusals counts the requests one endpoint refuses by reason, as
// lightspeed_http_refused_total{endpoint,reason}. Every endpoint has its
// own Refusals, registered in the same registry (the endpoint is a
// constant label, so they coexist). A nil *Refusals counts nothing.
type Refusals struct {
	vec *prometheus.CounterVec
}

// NewRefusals returns the refusals of endpoint, with the reasons given
// counted from 0, registered in reg (nil: not registered).
func NewRefusals(reg prometheus.Registerer, endpoint string, reasons ...string) (*Refusals, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "lightspeed_http_refused_total",
		Help:        "HTTP requests and websocket messages refused by the abuse limits, by endpoint and reason (docs/limits.md).",
		ConstLabels: prometheus.Labels{"endpoint": endpoint},
	}, []string{"reason"})
	for _, r := range reasons {
		vec.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			return nil, fmt.Errorf("register lightspeed_http_refused_total{endpoint=%q}: %w", endpoint, err)
		}
	}
	return &Refusals{vec: vec}, nil
}

// Inc counts one refusal for reason.
func (r *Refusals) Inc(reason string) {
	if r != nil {
		r.vec.WithLabelValues(reason).Inc()
	}
}

// Counter is the counter of reason (tests read it with
// prometheus/testutil).
func (r *Refusals) Counter(reason string) prometheus.Counter {
	return r.vec.WithLabelValues(reason)
}

// BodyTimeout is how long a client may take to send a request body once
// its handler reads it (WHEP, WHIP): the HTTP server's ReadHeaderTimeout
// covers only the header, so a body dripped a byte at a time would hold a
// goroutine and a connection for ever.
const BodyTimeout = 15 * time.Second

// SetBodyDeadline bounds the reading of a request's body to d; the
// returned func lifts the deadline again (call it once the body is read:
// the server's background read of a kept-alive connection would otherwise
// cancel the request's context when it passes). Where the
// ResponseWriter cannot set deadlines (tests' recorders), it does nothing.
func SetBodyDeadline(w http.ResponseWriter, d time.Duration) (lift func()) {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(d)) != nil {
		return func() {}
	}
	return func() { _ = rc.SetReadDeadline(time.Time{}) }
}

// IsTimeout reports whether err is a deadline that passed.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// WriteError answers a request with code and a plain-text body saying
// what is wrong.
func WriteError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintf(w, format+"\n", args...)
}

// ReadBody reads a request body (an SDP offer, a trickle fragment) of
// media type want, at most limit bytes, within BodyTimeout. It answers the
// request itself and returns false on another type (415), a larger body
// (413, counted as ReasonBodySize in refused), one that did not come in
// time (408, counted as ReasonBodyTimeout; the connection is closed) or a
// failed read (400).
func ReadBody(w http.ResponseWriter, r *http.Request, want string, limit int64, refused *Refusals) (string, bool) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != want {
		got := r.Header.Get("Content-Type")
		if len(got) > 64 {
			got = got[:64] + "…"
		}
		WriteError(w, http.StatusUnsupportedMediaType, "want Content-Type %s, got %q", want, got)
		return "", false
	}
	lift := SetBodyDeadline(w, BodyTimeout)
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	lift()
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case IsTimeout(err):
			refused.Inc(ReasonBodyTimeout)
			w.Header().Set("Connection", "close")
			WriteError(w, http.StatusRequestTimeout, "the body did not come within %v", BodyTimeout)
		case errors.As(err, &mbe):
			refused.Inc(ReasonBodySize)
			WriteError(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", limit)
		default:
			WriteError(w, http.StatusBadRequest, "read body: %v", err)
		}
		return "", false
	}
	return string(b), true
}
