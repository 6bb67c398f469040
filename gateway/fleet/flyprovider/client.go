package flyprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"lightspeed/gateway/fleet"
)

// Error is a failed call to the Machines API. Its text names the layer,
// the subject and the action: "fly: machine 3d8d413b29d089: stop: 409
// Conflict: …". It wraps fleet.ErrNotFound when the API answered 404
// about a machine, and the transport's error when no answer came.
type Error struct {
	App      string // the Fly app
	Machine  string // the machine's id; empty for calls about the app (list, create)
	Op       string // what the provider was doing: "list", "create", "stop", …
	Status   int    // the HTTP status of the answer; 0 when none came
	Message  string // the API's "error" field, or the start of its answer
	Err      error  // why no usable answer came (network, timeout, decoding)
	Attempts int    // requests sent for this call

	// uncertain: the last request may have been acted on (no answer, or
	// a 5xx or 408 answer).
	uncertain bool
	// afterUncertain: some request of this call may have been acted on.
	afterUncertain bool
}

// Error returns "fly: machine <id>: <op>: <status>: <message>" (or "fly:
// app <app>: …" for calls about the app).
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("fly: ")
	if e.Machine != "" {
		fmt.Fprintf(&b, "machine %s: ", e.Machine)
	} else {
		fmt.Fprintf(&b, "app %s: ", e.App)
	}
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Unwrap returns fleet.ErrNotFound for a 404 about a machine, and Err.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Status == http.StatusNotFound && e.Machine != "" {
		errs = append(errs, fleet.ErrNotFound)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Retry timing: exponential from retryBase, capped at retryCap, with
// jitter (each wait is between half and all of its step).
const (
	retryBase = 250 * time.Millisecond
	retryCap  = 10 * time.Second
	// rateLimitedWait is the least wait after a 429 that names no time:
	// Fly's limits are per second.
	rateLimitedWait = time.Second
	// maxRetryAfter caps a Retry-After before it is weighed against the
	// call's time budget.
	maxRetryAfter = time.Hour
)

// Bounds on what is read of an answer.
const (
	defaultMaxBody = 8 << 20 // a list of a few thousand machines
	maxErrorBody   = 4 << 10 // an error's answer
	maxMessage     = 200     // bytes of it kept in an Error
	maxDrain       = 64 << 10
)

// client calls the Machines API of one app: it authenticates, paces,
// retries and reads answers within bounds.
type client struct {
	base     string // API URL, no trailing slash
	app      string
	token    string
	http     *http.Client
	log      *slog.Logger
	clock    Clock
	pace     *pacer
	timeout  time.Duration // per request
	attempts int           // most requests per call
	budget   time.Duration // most time per call, waits included
	maxBody  int64
}

// call is one API call, which may take several requests.
type call struct {
	op      string // names the call in errors and logs
	action  string // the action Fly rate-limits: "list", "create", "start", "stop", "destroy"
	machine string // the machine's id; "" for the app
	method  string
	path    string // under /v1/apps/{app}/machines
	query   url.Values
	body    []byte // JSON; nil for none
	// once: the call is not safe to repeat (a create). Only failures the
	// API cannot have acted on (429, no connection) are retried; at any
	// other the call ends, its Error marked uncertain.
	once bool
}

// budget is what a call has spent.
type budget struct {
	start     time.Time
	attempts  int
	uncertain bool
}

func (c *client) newBudget() *budget { return &budget{start: c.clock.Now()} }

// outcome sorts a request's end by what may be done next.
type outcome int

const (
	succeeded    outcome = iota
	final                // answered, and asking again would not change it (4xx)
	notPerformed         // the API did not act (429, no connection): safe to repeat
	failed               // the API answered a failure it may have acted on (5xx, 408)
	lost                 // no usable answer: the API may have acted
)

// result is the end of one request.
type result struct {
	body       []byte
	err        *Error
	kind       outcome
	retryAfter time.Duration // a 429's Retry-After; -1 when none
}

// do makes the call, retrying within the client's bounds, and returns
// the answer's body.
func (c *client) do(ctx context.Context, k call) ([]byte, error) {
	return c.doWithin(ctx, k, c.newBudget())
}

// doWithin is do spending b, which a caller may share between calls.
func (c *client) doWithin(ctx context.Context, k call, b *budget) ([]byte, error) {
	key := paceKey{subject: k.machine, action: k.action}
	var last *Error
	for {
		err := c.pace.wait(ctx, key)
		if err == nil {
			err = ctx.Err() // the line may have been free when ctx ended
		}
		if err != nil {
			return nil, c.stopped(k, b, last, err)
		}
		b.attempts++
		r := c.attempt(ctx, k)
		if r.kind == succeeded {
			return r.body, nil
		}
		e := r.err
		e.App, e.Machine, e.Op, e.Attempts = c.app, k.machine, k.op, b.attempts
		e.uncertain = r.kind == failed || r.kind == lost
		b.uncertain = b.uncertain || e.uncertain
		e.afterUncertain = b.uncertain
		last = e
		limited := e.Status == http.StatusTooManyRequests
		if limited {
			// The whole (machine, action) line waits, not only this
			// call, and even if this call gives up.
			ra := r.retryAfter
			if ra < 0 {
				ra = rateLimitedWait
			}
			c.pace.hold(key, c.clock.Now().Add(ra))
		}
		if r.kind == final || ctx.Err() != nil || (k.once && r.kind != notPerformed) {
			return nil, e
		}
		d, ok := c.backoff(ctx, b, r)
		if !ok {
			return nil, e
		}
		c.log.Warn("fly: retrying", "op", k.op, "function", k.machine, "attempt", b.attempts, "wait", d, "err", e)
		if limited {
			c.pace.hold(key, c.clock.Now().Add(d)) // the pacer waits it out
			continue
		}
		if err := c.clock.Sleep(ctx, d); err != nil {
			return nil, c.stopped(k, b, last, err)
		}
	}
}

// stopped is the error of a call whose context ended while it waited.
func (c *client) stopped(k call, b *budget, last *Error, err error) error {
	if last == nil {
		return &Error{App: c.app, Machine: k.machine, Op: k.op, Err: err, Attempts: b.attempts, afterUncertain: b.uncertain}
	}
	return fmt.Errorf("%w (stopped waiting to retry: %w)", last, err)
}

// backoff is the wait before the next request of a call, and whether
// there is one within the call's bounds.
func (c *client) backoff(ctx context.Context, b *budget, r result) (time.Duration, bool) {
	if b.attempts >= c.attempts {
		return 0, false
	}
	d := r.retryAfter
	if d < 0 {
		d = jittered(b.attempts)
		if r.err.Status == http.StatusTooManyRequests {
			d = max(d, rateLimitedWait)
		}
	}
	if c.clock.Now().Add(d).Sub(b.start) > c.budget {
		return d, false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return d, false
	}
	return d, true
}

// jittered is the wait after the n-th failed request (n ≥ 1): half of
// retryBase·2ⁿ⁻¹ (capped at retryCap) plus a random part of the other half.
func jittered(n int) time.Duration {
	step := retryCap
	if n <= 16 {
		step = min(retryCap, retryBase<<(n-1))
	}
	half := step / 2
	return half + rand.N(step-half+1)
}

// retryAfter reads a Retry-After header, in seconds or as an HTTP date
// (RFC 9110, section 10.2.3), into a wait from now; -1 when absent or
// unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return -1
	}
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs < 0 {
			return -1
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return -1
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// attempt sends one request of k.
func (c *client) attempt(ctx context.Context, k call) result {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body io.Reader
	if k.body != nil {
		body = bytes.NewReader(k.body)
	}
	req, err := http.NewRequestWithContext(actx, k.method, c.url(k), body)
	if err != nil {
		return result{err: &Error{Err: err}, kind: final}
	}
	req.Header.Set("Authorization", authorization(c.token))
	req.Header.Set("Accept", "application/json")
	if k.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isDialError(err) {
			return result{err: &Error{Err: err}, kind: notPerformed, retryAfter: -1}
		}
		if ctx.Err() == nil && actx.Err() != nil {
			err = fmt.Errorf("no answer within %v: %w", c.timeout, err)
		}
		return result{err: &Error{Err: err}, kind: lost, retryAfter: -1}
	}
	defer drainClose(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, err := readAtMost(resp.Body, c.maxBody)
		if err != nil {
			return result{err: &Error{Status: resp.StatusCode, Err: err}, kind: lost, retryAfter: -1}
		}
		return result{body: b}
	}
	e := &Error{Status: resp.StatusCode, Message: errorMessage(resp.Body)}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return result{err: e, kind: notPerformed, retryAfter: retryAfter(resp.Header.Get("Retry-After"), c.clock.Now())}
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return result{err: e, kind: failed, retryAfter: -1}
	default:
		return result{err: e, kind: final}
	}
}

// url is k's address: {base}/v1/apps/{app}/machines{path}?{query}.
func (c *client) url(k call) string {
	u := c.base + "/v1/apps/" + url.PathEscape(c.app) + "/machines" + k.path
	if len(k.query) > 0 {
		u += "?" + k.query.Encode()
	}
	return u
}

// isDialError tells whether err happened before a request was sent: the
// API cannot have acted on it.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// readAtMost reads all of r, failing when it is longer than limit bytes.
func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("answer longer than %d bytes", limit)
	}
	return b, nil
}

// errorMessage is the "error" field of an error answer
// ({"error": "…"}), or the start of its text on one line.
func errorMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxErrorBody))
	var body struct {
		Error string `json:"error"`
	}
	s := string(b)
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		s = body.Error
	}
	s = strings.ToValidUTF8(strings.Join(strings.Fields(s), " "), "\uFFFD")
	if len(s) > maxMessage {
		cut := s[:maxMessage]
		for !utf8.ValidString(cut) { // a rune cut in two
			cut = cut[:len(cut)-1]
		}
		s = cut + "…"
	}
	return s
}

// drainClose reads a little of what is left of body, so that the
// connection can carry another request, and closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrain))
	_ = body.Close()
}

// authorization is the Authorization header of token: a macaroon token as
// fly tokens create prints it ("FlyV1 fm2_…") goes as it is, any other
// token as a Bearer token.
func authorization(token string) string {
	if strings.HasPrefix(token, "FlyV1 ") {
		return token
	}
	return "Bearer " + token
}
