package flyprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose Sleep advances it at once. The fake API reads
// the same clock, so machines change state and rate limits refill as the
// provider waits, or as a test calls Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	if d > 0 {
		c.now = c.now.Add(d)
	}
	return nil
}

// Advance moves the clock forward by d.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Slept is the sum of the waits asked of the clock.
func (c *fakeClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum time.Duration
	for _, d := range c.sleeps {
		sum += d
	}
	return sum
}

// fakeFly is a Machines API (fly.io/docs/machines/api/machines-resource)
// for one app, on loopback. It checks the token, the paths, the query
// parameters and the create body field by field against the documented
// schema, keeps machines whose states move with its clock, enforces Fly's
// published rate limits, and fails requests as told (faults).
type fakeFly struct {
	t       testing.TB
	clock   *fakeClock
	app     string
	token   string
	srv     *httptest.Server
	closing chan struct{} // closed at the test's end: hung requests return

	mu       sync.Mutex
	machines map[string]*fakeMachine
	order    []string // ids, oldest first
	seq      int
	faults   map[string][]fault // per action, next first
	// chaos, when set, may fail a request that no queued fault fails.
	chaos       func(action string) (fault, bool)
	requests    []fakeRequest
	buckets     map[paceKey]*fakeBucket
	rateLimited int // 429s for going faster than Fly's limits
	// noRateLimit turns the limits off. The fake clock jumps as soon as
	// a caller sleeps, so concurrent requests granted at once may arrive
	// after the clock moved on, as if late, and a token bucket on arrival
	// times would refuse them; concurrent tests check arrivals otherwise
	// (TestRequestsArePacedPerMachineAndAction).
	noRateLimit bool
	// ignoreFilters makes list ignore metadata.* filters, as an API that
	// did not know them would.
	ignoreFilters bool
	startingAfter time.Duration // created → starting
	bootDelay     time.Duration // → started
	stopDelay     time.Duration // stopping → stopped
	destroyDelay  time.Duration // destroying → destroyed
}

// fakeRequest is a request the fake received.
type fakeRequest struct {
	action  string // list, create, get, start, stop, destroy
	machine string
	method  string
	query   url.Values
	body    []byte
	at      time.Time // on the fake clock
}

// fakeMachine is a machine the fake keeps.
type fakeMachine struct {
	id, name, region, state string
	config                  map[string]any
	created, updated        time.Time
	next                    []transition // ahead, soonest first
}

// transition is a state a machine enters at a time.
type transition struct {
	at    time.Time
	state string
}

// fault is how the fake fails a request.
type fault struct {
	status     int    // answer this status with {"error": …}
	retryAfter string // with status: the Retry-After header
	act        bool   // do the request's work first
	drop       bool   // close the connection without an answer
	hang       bool   // answer nothing until the client gives up
	garble     bool   // answer 200 with half of the body (with act)
	huge       int    // answer 200 with a body this long
}

// fakeBucket is a token bucket of the fake's rate limits.
type fakeBucket struct {
	tokens float64
	last   time.Time
}

const (
	testToken   = "fm2_test-token"
	testApp     = "ls-fn"
	testGateway = "lightspeed-gw"
)

func newFakeFly(t testing.TB, clock *fakeClock) *fakeFly {
	s := &fakeFly{
		t:             t,
		clock:         clock,
		app:           testApp,
		token:         testToken,
		closing:       make(chan struct{}),
		machines:      make(map[string]*fakeMachine),
		faults:        make(map[string][]fault),
		buckets:       make(map[paceKey]*fakeBucket),
		startingAfter: 100 * time.Millisecond,
		bootDelay:     10 * time.Second,
		stopDelay:     10 * time.Second,
		destroyDelay:  10 * time.Second,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/apps/{app}/machines", s.route("list", s.list))
	mux.HandleFunc("POST /v1/apps/{app}/machines", s.route("create", s.create))
	mux.HandleFunc("GET /v1/apps/{app}/machines/{id}", s.route("get", s.get))
	mux.HandleFunc("POST /v1/apps/{app}/machines/{id}/start", s.route("start", s.start))
	mux.HandleFunc("POST /v1/apps/{app}/machines/{id}/stop", s.route("stop", s.stop))
	mux.HandleFunc("DELETE /v1/apps/{app}/machines/{id}", s.route("destroy", s.destroy))
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	t.Cleanup(func() { close(s.closing) }) // runs first: hung handlers return
	return s
}

// inject queues faults for the next requests of action.
func (s *fakeFly) inject(action string, fs ...fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[action] = append(s.faults[action], fs...)
}

// received returns the requests of action received so far.
func (s *fakeFly) received(action string) []fakeRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []fakeRequest
	for _, r := range s.requests {
		if r.action == action {
			out = append(out, r)
		}
	}
	return out
}

// live returns the machines not destroyed, oldest first, as of now.
func (s *fakeFly) live() []*fakeMachine {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle()
	var out []*fakeMachine
	for _, id := range s.order {
		if m := s.machines[id]; m.state != "destroyed" {
			out = append(out, m)
		}
	}
	return out
}

// machine returns a copy of machine id's state and config.
func (s *fakeFly) machine(id string) (fakeMachine, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle()
	m, ok := s.machines[id]
	if !ok {
		return fakeMachine{}, false
	}
	return *m, true
}

// add puts a machine in the app, as another tool would have made it.
func (s *fakeFly) add(m fakeMachine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.id == "" {
		m.id = s.newID()
	}
	if m.created.IsZero() {
		m.created = s.clock.Now()
	}
	if m.updated.IsZero() {
		m.updated = m.created
	}
	if m.config == nil {
		m.config = map[string]any{"image": "registry.fly.io/" + s.app + ":deployment-1"}
	}
	s.machines[m.id] = &m
	s.order = append(s.order, m.id)
}

func (s *fakeFly) newID() string {
	s.seq++
	return fmt.Sprintf("3d8d413b29%04x", s.seq)
}

// settle moves every machine to the state it has reached by now. s.mu is
// held.
func (s *fakeFly) settle() {
	now := s.clock.Now()
	for _, m := range s.machines {
		for len(m.next) > 0 && !m.next[0].at.After(now) {
			m.state = m.next[0].state
			m.updated = m.next[0].at
			m.next = m.next[1:]
		}
	}
}

// become sets m's state now and schedules the ones after. s.mu is held.
func (s *fakeFly) become(m *fakeMachine, state string, next ...transition) {
	m.state = state
	m.updated = s.clock.Now()
	m.next = next
}

// route wraps an action's handler with what every request goes through:
// the app, the token, the rate limits and the faults.
func (s *fakeFly) route(action string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		id := r.PathValue("id")
		s.mu.Lock()
		s.requests = append(s.requests, fakeRequest{action: action, machine: id, method: r.Method, query: r.URL.Query(), body: body, at: s.clock.Now()})
		s.mu.Unlock()

		if r.Header.Get("Authorization") != "Bearer "+s.token {
			apiError(w, http.StatusUnauthorized, "You must be authenticated to view this.")
			return
		}
		if r.PathValue("app") != s.app {
			apiError(w, http.StatusNotFound, "app not found")
			return
		}
		if wait, ok := s.admit(paceKey{subject: id, action: action}); !ok {
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			apiError(w, http.StatusTooManyRequests, "rate limit exceeded")
			return
		}
		f, failing := s.nextFault(action)
		if !failing {
			h(w, r.WithContext(withBody(r.Context(), body)))
			return
		}
		rec := httptest.NewRecorder()
		if f.act {
			h(rec, r.WithContext(withBody(r.Context(), body)))
		}
		switch {
		case f.drop:
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case f.hang:
			select {
			case <-r.Context().Done():
			case <-s.closing:
			}
		case f.garble:
			w.Header().Set("Content-Type", "application/json")
			b := rec.Body.Bytes()
			w.Write(b[:len(b)/2])
		case f.huge > 0:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("[" + strings.Repeat(" ", f.huge-2) + "]"))
		default:
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			}
			apiError(w, f.status, fmt.Sprintf("injected %d", f.status))
		}
	}
}

// admit takes a token of k's bucket: Fly's limits are 1 request per
// second per machine and action, in bursts of up to 3, and 5 (bursts of
// 10) for get. It says how long until a token when there is none.
func (s *fakeFly) admit(k paceKey) (time.Duration, bool) {
	rate, burst := 1.0, 3.0
	if k.action == "get" {
		rate, burst = 5, 10
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.noRateLimit {
		return 0, true
	}
	now := s.clock.Now()
	b := s.buckets[k]
	if b == nil {
		b = &fakeBucket{tokens: burst, last: now}
		s.buckets[k] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(burst, b.tokens+el.Seconds()*rate)
		b.last = now
	}
	// The tolerance absorbs rounding: the provider's bucket adds up the
	// same seconds in other pieces.
	if b.tokens < 1-1e-6 {
		s.rateLimited++
		return time.Duration((1 - b.tokens) / rate * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

func (s *fakeFly) nextFault(action string) (fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.faults[action]; len(q) > 0 {
		s.faults[action] = q[1:]
		return q[0], true
	}
	if s.chaos != nil {
		return s.chaos(action)
	}
	return fault{}, false
}

type bodyKey struct{}

// withBody hands the request's body, already read, to the handler.
func withBody(ctx context.Context, b []byte) context.Context {
	return context.WithValue(ctx, bodyKey{}, b)
}

func bodyOf(r *http.Request) []byte {
	b, _ := r.Context().Value(bodyKey{}).([]byte)
	return b
}

// apiError answers as the API does: {"error": "…"}.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// list is GET /v1/apps/{app}/machines: query parameters include_deleted,
// region and metadata.{key}.
func (s *fakeFly) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "include_deleted" && k != "region" && !strings.HasPrefix(k, "metadata.") {
			apiError(w, http.StatusBadRequest, "unknown query parameter "+k)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle()
	out := []any{}
	for _, id := range s.order {
		m := s.machines[id]
		if m.state == "destroyed" && q.Get("include_deleted") != "true" {
			continue
		}
		if reg := q.Get("region"); reg != "" && m.region != reg {
			continue
		}
		if !s.ignoreFilters && !matches(m, q) {
			continue
		}
		out = append(out, s.resource(m))
	}
	answer(w, out)
}

// matches tells whether m has every metadata.{key}=value of q.
func matches(m *fakeMachine, q url.Values) bool {
	meta, _ := m.config["metadata"].(map[string]any)
	for k, vs := range q {
		key, ok := strings.CutPrefix(k, "metadata.")
		if !ok {
			continue
		}
		if v, _ := meta[key].(string); v != vs[0] {
			return false
		}
	}
	return true
}

// resource is m as the API shows a Machine.
func (s *fakeFly) resource(m *fakeMachine) map[string]any {
	cfg := maps.Clone(m.config)
	cfg["init"] = map[string]any{}
	cfg["dns"] = map[string]any{}
	return map[string]any{
		"id":          m.id,
		"name":        m.name,
		"state":       m.state,
		"region":      m.region,
		"instance_id": "01HEPA330HZ37A78TK080NAK1M",
		"private_ip":  "fdaa:0:18:a7b:196:e274:9ce1:2",
		"config":      cfg,
		"image_ref": map[string]any{
			"registry":   "registry.fly.io",
			"repository": s.app,
			"tag":        "deployment-1",
			"digest":     "sha256:597c3e12f830132be2aa69b4c0deccb0657ea4253e6d59c6f38e41e9f69a0add",
		},
		"created_at": m.created.Format(time.RFC3339),
		"updated_at": m.updated.Format(time.RFC3339),
		"events":     []any{},
	}
}

// create is POST /v1/apps/{app}/machines.
func (s *fakeFly) create(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		apiError(w, http.StatusBadRequest, "Content-Type "+ct+", want application/json")
		return
	}
	region, cfg, err := checkCreateBody(bodyOf(r))
	if err != nil {
		s.t.Errorf("create body %s: %v", bodyOf(r), err)
		apiError(w, http.StatusBadRequest, err.Error())
		return
	}
	if region == "" {
		region = "ams" // "the same region as your WireGuard peer"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	m := &fakeMachine{id: s.newID(), region: region, config: cfg, created: now}
	m.name = "aged-thunder-" + m.id[len(m.id)-4:]
	s.become(m, "created",
		transition{now.Add(s.startingAfter), "starting"},
		transition{now.Add(s.bootDelay), "started"})
	s.machines[m.id] = m
	s.order = append(s.order, m.id)
	answer(w, s.resource(m))
}

// get is GET /v1/apps/{app}/machines/{id}.
func (s *fakeFly) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.find(w, r)
	if m == nil {
		return
	}
	answer(w, s.resource(m))
}

// start is POST …/{id}/start, with no body.
func (s *fakeFly) start(w http.ResponseWriter, r *http.Request) {
	if len(bodyOf(r)) != 0 {
		apiError(w, http.StatusBadRequest, "start takes no body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.find(w, r)
	if m == nil {
		return
	}
	prev := m.state
	switch prev {
	case "stopped", "suspended", "created", "failed":
	default:
		apiError(w, http.StatusPreconditionFailed, "unable to start machine from current state: '"+prev+"'")
		return
	}
	now := s.clock.Now()
	s.become(m, "starting", transition{now.Add(s.bootDelay), "started"})
	answer(w, map[string]any{"previous_state": prev, "migrated": false, "new_host": ""})
}

// stop is POST …/{id}/stop, with no body or {"signal", "timeout"}.
func (s *fakeFly) stop(w http.ResponseWriter, r *http.Request) {
	if b := bodyOf(r); len(b) != 0 {
		if _, err := fields(b, []string{"signal", "timeout"}, []string{"signal", "timeout"}); err != nil {
			apiError(w, http.StatusBadRequest, "stop body: "+err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.find(w, r)
	if m == nil {
		return
	}
	if m.state != "started" && m.state != "starting" {
		apiError(w, http.StatusPreconditionFailed, "unable to stop machine from current state: '"+m.state+"'")
		return
	}
	s.become(m, "stopping", transition{s.clock.Now().Add(s.stopDelay), "stopped"})
	answer(w, map[string]any{"ok": true})
}

// destroy is DELETE …/{id}, with the query parameter force.
func (s *fakeFly) destroy(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "force" {
			apiError(w, http.StatusBadRequest, "unknown query parameter "+k)
			return
		}
	}
	if f := q.Get("force"); f != "" && f != "true" && f != "false" {
		apiError(w, http.StatusBadRequest, "force="+f)
		return
	}
	if len(bodyOf(r)) != 0 {
		apiError(w, http.StatusBadRequest, "delete takes no body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.find(w, r)
	if m == nil {
		return
	}
	switch m.state {
	case "destroying":
	case "started", "starting", "stopping", "created":
		if q.Get("force") != "true" {
			apiError(w, http.StatusPreconditionFailed, "unable to destroy machine, not currently stopped")
			return
		}
		fallthrough
	default:
		s.become(m, "destroying", transition{s.clock.Now().Add(s.destroyDelay), "destroyed"})
	}
	answer(w, map[string]any{"ok": true})
}

// find returns the machine the path names, or answers 404. s.mu is held.
func (s *fakeFly) find(w http.ResponseWriter, r *http.Request) *fakeMachine {
	s.settle()
	m := s.machines[r.PathValue("id")]
	if m == nil || m.state == "destroyed" {
		apiError(w, http.StatusNotFound, "machine not found")
		return nil
	}
	return m
}

// The documented fields (fly.io/docs/machines/api/machines-resource), and
// those of them the provider is meant to send.
var (
	createDocumented = []string{"config", "lease_ttl", "lsvd", "name", "region", "skip_launch", "skip_service_registration"}
	createSent       = []string{"config", "region"}
	configDocumented = []string{"image", "auto_destroy", "checks", "dns", "env", "files", "guest", "init", "metadata",
		"metrics", "mounts", "processes", "restart", "schedule", "services", "size", "standbys", "statics", "stop_config"}
	configSent        = []string{"image", "auto_destroy", "env", "guest", "metadata", "metrics", "restart", "services"}
	metricsDocumented = []string{"port", "path", "https"}
	metricsSent       = []string{"port", "path"}
	guestDocumented   = []string{"cpu_kind", "gpu_kind", "host_dedication_id", "cpus", "kernel_args", "memory_mb"}
	guestSent         = []string{"cpu_kind", "cpus", "memory_mb"}
	serviceDocumented = []string{"protocol", "internal_port", "concurrency", "ports", "auto_start", "auto_stop", "min_machines_running"}
	serviceSent       = []string{"protocol", "internal_port", "ports"}
	portDocumented    = []string{"port", "start_port", "end_port", "handlers", "force_https", "http_options", "tls_options", "proxy_proto_options"}
	portSent          = []string{"port"}
	restartDocumented = []string{"policy", "max_retries"}
	restartSent       = []string{"policy"}
	regionCode        = regexp.MustCompile(`^[a-z]{3}$`)
)

// checkCreateBody checks a create body against the documented schema and
// returns its region and config.
func checkCreateBody(b []byte) (region string, cfg map[string]any, err error) {
	top, err := fields(b, createDocumented, createSent)
	if err != nil {
		return "", nil, fmt.Errorf("body: %w", err)
	}
	if raw, ok := top["region"]; ok {
		if err := json.Unmarshal(raw, &region); err != nil || !regionCode.MatchString(region) {
			return "", nil, fmt.Errorf("region %s: want a region code", raw)
		}
	}
	c, err := fields(top["config"], configDocumented, configSent)
	if err != nil {
		return "", nil, fmt.Errorf("config: %w", err)
	}
	var image string
	if err := json.Unmarshal(c["image"], &image); err != nil || image == "" {
		return "", nil, errors.New("config.image: required, a string")
	}
	for _, k := range []string{"env", "metadata"} {
		if raw, ok := c[k]; ok {
			var m map[string]string
			if err := json.Unmarshal(raw, &m); err != nil {
				return "", nil, fmt.Errorf("config.%s: want {string: string}: %w", k, err)
			}
			if _, ok := m[""]; ok {
				return "", nil, fmt.Errorf("config.%s: empty key", k)
			}
		}
	}
	if raw, ok := c["auto_destroy"]; ok {
		var v bool
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", nil, fmt.Errorf("config.auto_destroy: want a bool: %w", err)
		}
	}
	if raw, ok := c["guest"]; ok {
		if err := checkGuest(raw); err != nil {
			return "", nil, fmt.Errorf("config.guest: %w", err)
		}
	}
	if raw, ok := c["services"]; ok {
		if err := checkServices(raw); err != nil {
			return "", nil, fmt.Errorf("config.services: %w", err)
		}
	}
	if raw, ok := c["metrics"]; ok {
		m, err := fields(raw, metricsDocumented, metricsSent)
		if err != nil {
			return "", nil, fmt.Errorf("config.metrics: %w", err)
		}
		var port int
		var path string
		if json.Unmarshal(m["port"], &port) != nil || port < 1 || port > 65535 || json.Unmarshal(m["path"], &path) != nil || !strings.HasPrefix(path, "/") {
			return "", nil, fmt.Errorf("config.metrics %s %s: want a port and an absolute path", m["port"], m["path"])
		}
	}
	if raw, ok := c["restart"]; ok {
		r, err := fields(raw, restartDocumented, restartSent)
		if err != nil {
			return "", nil, fmt.Errorf("config.restart: %w", err)
		}
		var policy string
		if err := json.Unmarshal(r["policy"], &policy); err != nil || !slices.Contains([]string{"no", "always", "on-failure"}, policy) {
			return "", nil, fmt.Errorf("config.restart.policy %s: want no, always or on-failure", r["policy"])
		}
	}
	if err := json.Unmarshal(top["config"], &cfg); err != nil {
		return "", nil, err
	}
	return region, cfg, nil
}

// checkGuest checks a guest object: "Memory must be a multiple of 256
// for shared sizes"; shared memory from 256 to 2048 MB per CPU,
// performance from 2048 to 8192.
func checkGuest(raw json.RawMessage) error {
	if _, err := fields(raw, guestDocumented, guestSent); err != nil {
		return err
	}
	var g struct {
		CPUKind  string `json:"cpu_kind"`
		CPUs     int    `json:"cpus"`
		MemoryMB int    `json:"memory_mb"`
	}
	if err := json.Unmarshal(raw, &g); err != nil {
		return err
	}
	lo, hi := 256, 2048
	switch g.CPUKind {
	case "shared":
	case "performance":
		lo, hi = 2048, 8192
	default:
		return fmt.Errorf("cpu_kind %q: want shared or performance", g.CPUKind)
	}
	if g.CPUs < 1 {
		return fmt.Errorf("cpus %d", g.CPUs)
	}
	if g.MemoryMB%256 != 0 || g.MemoryMB < lo*g.CPUs || g.MemoryMB > hi*g.CPUs {
		return fmt.Errorf("memory_mb %d for %d %s CPUs", g.MemoryMB, g.CPUs, g.CPUKind)
	}
	return nil
}

// checkServices checks a services array. UDP must use the same port
// outside and inside: "Fly will only rewrite the IP addresses for UDP
// packets".
func checkServices(raw json.RawMessage) error {
	var svcs []json.RawMessage
	if err := json.Unmarshal(raw, &svcs); err != nil {
		return fmt.Errorf("want an array: %w", err)
	}
	for i, sraw := range svcs {
		if _, err := fields(sraw, serviceDocumented, serviceSent); err != nil {
			return fmt.Errorf("%d: %w", i, err)
		}
		var svc struct {
			Protocol     string            `json:"protocol"`
			InternalPort int               `json:"internal_port"`
			Ports        []json.RawMessage `json:"ports"`
		}
		if err := json.Unmarshal(sraw, &svc); err != nil {
			return fmt.Errorf("%d: %w", i, err)
		}
		if svc.Protocol != "tcp" && svc.Protocol != "udp" {
			return fmt.Errorf("%d: protocol %q: want tcp or udp", i, svc.Protocol)
		}
		if svc.InternalPort < 1 || svc.InternalPort > 65535 {
			return fmt.Errorf("%d: internal_port %d", i, svc.InternalPort)
		}
		if len(svc.Ports) == 0 {
			return fmt.Errorf("%d: no ports", i)
		}
		for j, praw := range svc.Ports {
			if _, err := fields(praw, portDocumented, portSent); err != nil {
				return fmt.Errorf("%d: ports %d: %w", i, j, err)
			}
			var p struct {
				Port int `json:"port"`
			}
			if err := json.Unmarshal(praw, &p); err != nil || p.Port < 1 || p.Port > 65535 {
				return fmt.Errorf("%d: ports %d: port %s", i, j, praw)
			}
			if svc.Protocol == "udp" && p.Port != svc.InternalPort {
				return fmt.Errorf("%d: udp port %d outside, %d inside: Fly does not rewrite UDP ports", i, p.Port, svc.InternalPort)
			}
		}
	}
	return nil
}

// fields decodes a JSON object, refusing a field the reference does not
// document, and one it documents that the provider is not meant to send.
func fields(raw []byte, documented, sent []string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("want an object, got %.80s", raw)
	}
	for k := range m {
		if !slices.Contains(documented, k) {
			return nil, fmt.Errorf("unknown field %q", k)
		}
		if !slices.Contains(sent, k) {
			return nil, fmt.Errorf("field %q is not one the provider sends", k)
		}
	}
	return m, nil
}
