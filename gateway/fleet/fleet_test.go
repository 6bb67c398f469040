package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
)

// machines is a provider that keeps its machines in memory and records
// every call: the fleet's decisions are what these tests check; the real
// providers have tests of their own.
type machines struct {
	mu    sync.Mutex
	ms    map[string]*Machine
	calls []string
	specs []Spec
	n     int
	fail  error // the next Create fails with it
}

func newMachines() *machines { return &machines{ms: map[string]*Machine{}} }

func (p *machines) Name() string { return "memory" }

func (p *machines) List(context.Context) ([]Machine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Machine
	for _, m := range p.ms {
		out = append(out, *m)
	}
	return out, nil
}

func (p *machines) Create(_ context.Context, s Spec) (Machine, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.fail; err != nil {
		p.fail = nil
		p.calls = append(p.calls, "create "+s.Region+" failed")
		return Machine{}, err
	}
	p.n++
	m := &Machine{ID: fmt.Sprintf("m%d", p.n), Region: s.Region, State: Started, Port: s.Port}
	p.ms[m.ID] = m
	p.specs = append(p.specs, s)
	p.calls = append(p.calls, "create "+s.Region)
	return *m, nil
}

func (p *machines) set(id string, s State) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.ms[id]
	if m == nil {
		return fmt.Errorf("memory: %s: %w", id, ErrNotFound)
	}
	m.State = s
	return nil
}

func (p *machines) Start(_ context.Context, id string) error {
	p.record("start " + id)
	return p.set(id, Started)
}

func (p *machines) Stop(_ context.Context, id string) error {
	p.record("stop " + id)
	return p.set(id, Stopped)
}

func (p *machines) Destroy(_ context.Context, id string) error {
	p.record("destroy " + id)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ms, id)
	return nil
}

func (p *machines) record(c string) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
}

// took returns the calls made since the last took.
func (p *machines) took() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

// conns stands for the relay: the functions connected, as the test says.
type conns struct {
	mu           sync.Mutex
	fns          map[string]relay.Function
	drained      []string
	disconnected []string
}

func (c *conns) Functions() []relay.Function {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []relay.Function
	for _, f := range c.fns {
		out = append(out, f)
	}
	return out
}

func (c *conns) Disconnect(id, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.fns[id]; !ok {
		return relay.ErrFunctionGone
	}
	delete(c.fns, id)
	c.disconnected = append(c.disconnected, id)
	return nil
}

func (c *conns) Drain(id, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.fns[id]
	if !ok {
		return relay.ErrFunctionGone
	}
	f.Draining = true
	c.fns[id] = f
	c.drained = append(c.drained, id)
	return nil
}

// connect makes machine id connected with viewers of capacity.
func (c *conns) connect(id, region string, viewers, capacity int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fns == nil {
		c.fns = map[string]relay.Function{}
	}
	c.fns[id] = relay.Function{ID: id, MachineID: id, Region: region, Viewers: viewers, Capacity: capacity, MediaAddr: "192.0.2.1:10000"}
}

func (c *conns) disconnect(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.fns, id)
}

var t0 = time.Unix(1_800_000_000, 0)

func newTestFleet(t *testing.T, cfg Config) (*Fleet, *machines, *conns) {
	t.Helper()
	p, c := newMachines(), &conns{}
	cfg.Provider, cfg.Relay = p, c
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Capacity = 10
	cfg.Env = map[string]string{"LS_RELAY_SECRET": "s"}
	cfg.Registerer = prometheus.NewRegistry()
	return New(cfg), p, c
}

// readyInAms has a viewer from ams start a function there (m1) at t0,
// which connects with viewers by the next round.
func readyInAms(t *testing.T, f *Fleet, p *machines, c *conns, viewers int) {
	t.Helper()
	f.Want("ams")
	at(f, 0)
	c.connect("m1", "ams", viewers, 10)
	at(f, time.Second)
	want(t, p, "create ams")
}

// at runs one round of decisions at t0 + d.
func at(f *Fleet, d time.Duration) { f.reconcile(context.Background(), t0.Add(d)) }

func want(t *testing.T, p *machines, calls ...string) {
	t.Helper()
	if got := p.took(); !slices.Equal(got, calls) {
		t.Fatalf("provider calls %q, want %q", got, calls)
	}
}

func TestAViewerWithoutAFunctionInItsRegionStartsOneThere(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	at(f, 0)
	want(t, p) // nothing wanted, nothing started
	f.Want("ams")
	at(f, time.Second)
	want(t, p, "create ams")
	if s := p.specs[0]; s.Port != 10000 || s.Env["LS_CAPACITY"] != "10" || s.Env["LS_RELAY_SECRET"] != "s" {
		t.Fatalf("spec %+v", s)
	}
	f.Want("ams") // more viewers while it starts: no second one
	at(f, 2*time.Second)
	want(t, p)

	ready := f.Ready()
	c.connect("m1", "ams", 0, 10)
	at(f, 3*time.Second)
	select {
	case <-ready:
	default:
		t.Fatal("Ready not closed when the function connected")
	}
	if fs := f.Functions(); len(fs) != 1 || fs[0].State != StateReady || fs[0].Region != "ams" || fs[0].UDPAddr != "192.0.2.1:10000" {
		t.Fatalf("functions %+v", fs)
	}
	if n := testutil.CollectAndCount(f.metrics.startSeconds); n != 1 {
		t.Fatalf("start latency observed %d times", n)
	}
}

func TestFunctionsRunInTheNearestListedRegion(t *testing.T) {
	f, p, _ := newTestFleet(t, Config{Regions: []string{"sin", "ams"}})
	f.Want("cdg") // Paris: Amsterdam is nearer than Singapore
	at(f, 0)
	want(t, p, "create ams")
	f.Want("nrt") // Tokyo: Singapore
	at(f, time.Second)
	want(t, p, "create sin")
}

func TestAFunctionThatNeverConnectsIsReplaced(t *testing.T) {
	f, p, _ := newTestFleet(t, Config{ConnectTimeout: time.Minute})
	f.Want("ams")
	at(f, 0)
	want(t, p, "create ams")
	at(f, 59*time.Second)
	want(t, p)
	at(f, 61*time.Second)
	want(t, p, "destroy m1")
	at(f, 62*time.Second)
	want(t, p, "create ams")
	if n := testutil.ToFloat64(f.metrics.failures.WithLabelValues("ams")); n != 1 {
		t.Fatalf("failures %v", n)
	}
}

func TestAFunctionThatLostItsRelayConnectionIsReplaced(t *testing.T) {
	f, p, c := newTestFleet(t, Config{GoneTimeout: 30 * time.Second})
	readyInAms(t, f, p, c, 3)
	c.disconnect("m1")
	at(f, 20*time.Second)
	want(t, p) // it may come back
	at(f, 32*time.Second)
	want(t, p, "destroy m1")
	at(f, 33*time.Second)
	want(t, p, "create ams")
}

func TestAFunctionThatExitedIsReplaced(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	readyInAms(t, f, p, c, 0)
	p.set("m1", Stopped) // it exited by itself
	c.disconnect("m1")
	at(f, 10*time.Second) // the next list shows it
	want(t, p, "destroy m1")
	at(f, 11*time.Second)
	want(t, p, "create ams")
}

// TestAFailedFunctionsLingeringConnectionIsClosed: a process killed
// hard stays connected to the relay until QUIC's idle timeout; the fleet
// that replaces it closes that connection, so no viewer is sent to it.
func TestAFailedFunctionsLingeringConnectionIsClosed(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	readyInAms(t, f, p, c, 1)
	p.set("m1", Failed)
	at(f, 10*time.Second) // the next list shows it
	want(t, p, "destroy m1")
	if !slices.Equal(c.disconnected, []string{"m1"}) {
		t.Fatalf("relay connections closed: %q, want m1's", c.disconnected)
	}
	for _, fn := range f.Functions() {
		if fn.ID == "m1" {
			t.Fatalf("the failed function is still listed: %+v", fn)
		}
	}
}

func TestIdleFunctionsStopThenWakeForViewersAndAreDestroyedWhenUnused(t *testing.T) {
	f, p, c := newTestFleet(t, Config{IdleStop: 5 * time.Minute, IdleDestroy: time.Hour})
	readyInAms(t, f, p, c, 2)
	c.connect("m1", "ams", 0, 10) // the last viewer left
	at(f, 10*time.Second)
	at(f, 5*time.Minute)
	want(t, p)
	at(f, 5*time.Minute+11*time.Second)
	want(t, p, "stop m1")
	c.disconnect("m1")
	if fs := f.Functions(); fs[0].State != StateStopped {
		t.Fatalf("state %s", fs[0].State)
	}

	f.Want("ams") // a viewer again: the stopped one wakes, none is created
	at(f, 10*time.Minute)
	want(t, p, "start m1")
	c.connect("m1", "ams", 0, 10)
	at(f, 10*time.Minute+time.Second)
	at(f, 20*time.Minute)
	want(t, p, "stop m1")
	c.disconnect("m1")
	at(f, 20*time.Minute+59*time.Minute)
	want(t, p)
	at(f, 20*time.Minute+61*time.Minute)
	want(t, p, "destroy m1")
}

func TestARegionPastItsThresholdStartsAnotherBeforeItIsFull(t *testing.T) {
	f, p, c := newTestFleet(t, Config{ScaleAt: 0.8})
	readyInAms(t, f, p, c, 7)
	c.connect("m1", "ams", 8, 10)
	at(f, 2*time.Second)
	want(t, p, "create ams")
	at(f, 3*time.Second) // the second is starting: no third
	want(t, p)
	if p.specs[1].Port != 10001 {
		t.Fatalf("second function's port %d, want the next free one", p.specs[1].Port)
	}
}

// TestAnIdleFunctionStaysWhileItsRegionWouldBePastItsThreshold: the
// second function a region's load started stays idle rather than stop,
// while stopping it would put the region past its threshold again (which
// would start it again, and so on).
func TestAnIdleFunctionStaysWhileItsRegionWouldBePastItsThreshold(t *testing.T) {
	f, p, c := newTestFleet(t, Config{ScaleAt: 0.5, IdleStop: time.Minute})
	readyInAms(t, f, p, c, 0)
	c.connect("m1", "ams", 5, 10)
	at(f, 2*time.Second)
	want(t, p, "create ams")
	c.connect("m2", "ams", 0, 10)
	at(f, 3*time.Second)
	at(f, 10*time.Minute)
	want(t, p) // 5 of 10 would be past 50 %
	c.connect("m1", "ams", 4, 10)
	at(f, 11*time.Minute)
	want(t, p, "stop m2")
}

func TestListedRegionsKeepTheirMinimum(t *testing.T) {
	f, p, c := newTestFleet(t, Config{Regions: []string{"ams", "sin"}, Min: 1, IdleStop: time.Minute})
	at(f, 0)
	got := p.took()
	slices.Sort(got)
	if !slices.Equal(got, []string{"create ams", "create sin"}) {
		t.Fatalf("calls %q", got)
	}
	c.connect("m1", p.specs[0].Region, 0, 10)
	c.connect("m2", p.specs[1].Region, 0, 10)
	at(f, time.Second)
	at(f, 10*time.Minute)
	want(t, p) // idle, but the minimum
}

func TestAFailedStartIsRetriedWithBackoff(t *testing.T) {
	f, p, _ := newTestFleet(t, Config{})
	p.fail = errors.New("no capacity in ams")
	f.Want("ams")
	at(f, 0)
	want(t, p, "create ams failed")
	at(f, 500*time.Millisecond)
	want(t, p)
	at(f, 1100*time.Millisecond)
	want(t, p, "create ams")
}

func TestARestartedGatewayAdoptsTheMachinesItHas(t *testing.T) {
	p, c := newMachines(), &conns{}
	p.ms["old"] = &Machine{ID: "old", Region: "ams", State: Started, Port: 10000}
	p.ms["sleeping"] = &Machine{ID: "sleeping", Region: "ams", State: Stopped, Port: 10001}
	c.connect("old", "ams", 4, 10)
	f := New(Config{Provider: p, Relay: c, Capacity: 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	at(f, 0)
	f.Want("ams")
	at(f, time.Second)
	want(t, p) // "old" has room
	states := map[string]string{}
	for _, i := range f.Functions() {
		states[i.ID] = i.State
	}
	if states["old"] != StateReady || states["sleeping"] != StateStopped {
		t.Fatalf("adopted %v", states)
	}
	c.connect("old", "ams", 10, 10) // full: the stopped one wakes, port 10002 is not needed
	f.Want("ams")
	at(f, 2*time.Second)
	want(t, p, "start sleeping")
}

func TestDrainStartsAReplacementFirstThenStopsWhenEmpty(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	readyInAms(t, f, p, c, 3)
	if err := f.Drain("m1", "deploy"); err != nil {
		t.Fatal(err)
	}
	at(f, 2*time.Second)
	want(t, p, "create ams")
	if !slices.Equal(c.drained, []string{"m1"}) {
		t.Fatalf("relay drained %v", c.drained)
	}
	c.connect("m1", "ams", 0, 10)
	at(f, 3*time.Second)
	want(t, p, "stop m1")
	if err := f.Drain("nope", "x"); !errors.Is(err, ErrUnknownFunction) {
		t.Fatalf("Drain of an unknown function: %v", err)
	}
}

func TestPickServesAtOnceWhereThereIsRoomAndAsksForTheViewersRegion(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	c.connect("embedded", "ams", 0, 10) // a function the fleet did not start
	s := scheduler.New(func() []scheduler.Function {
		var out []scheduler.Function
		for _, fn := range c.Functions() {
			out = append(out, scheduler.Function{ID: fn.ID, Region: fn.Region, Capacity: fn.Capacity, Viewers: fn.Viewers})
		}
		return out
	}, "ams")
	pk := &Picker{Scheduler: s, Fleet: f, Wait: time.Second}
	at(f, 0)
	fn, err := pk.Pick("sin")
	if err != nil || fn.ID != "embedded" {
		t.Fatalf("Pick = %v, %v; want the function in ams at once", fn.ID, err)
	}
	at(f, time.Second)
	want(t, p, "create sin")
}

func TestPickWaitsForAStartingFunctionWhenNoneHasRoom(t *testing.T) {
	f, p, c := newTestFleet(t, Config{})
	s := scheduler.New(func() []scheduler.Function {
		var out []scheduler.Function
		for _, fn := range c.Functions() {
			out = append(out, scheduler.Function{ID: fn.ID, Region: fn.Region, Capacity: fn.Capacity, Viewers: fn.Viewers})
		}
		return out
	}, "ams")
	pk := &Picker{Scheduler: s, Fleet: f, Wait: 10 * time.Second}
	at(f, 0)
	type result struct {
		fn  scheduler.Function
		err error
	}
	done := make(chan result, 1)
	go func() {
		fn, err := pk.Pick("ams")
		done <- result{fn, err}
	}()
	// The fleet hears of the viewer, starts a function, which connects.
	for len(p.specs) == 0 {
		<-f.poke
		at(f, time.Second)
	}
	c.connect("m1", "ams", 0, 10)
	at(f, 2*time.Second)
	r := <-done
	if r.err != nil || r.fn.ID != "m1" {
		t.Fatalf("Pick = %v, %v; want the new function", r.fn.ID, r.err)
	}

	pk.Wait = 10 * time.Millisecond
	c.connect("m1", "ams", 10, 10) // full, and nothing else starts in time
	if _, err := pk.Pick("ams"); !errors.Is(err, scheduler.ErrNoCapacity) {
		t.Fatalf("Pick with no room: %v", err)
	}
}

func TestTheHTTPAPIListsFunctionsAndDrainsOnlyForTheAdmin(t *testing.T) {
	f, _, c := newTestFleet(t, Config{})
	c.connect("fn1", "ams", 2, 10)
	for _, tt := range []struct {
		name, token, method, path, auth string
		code                            int
		body                            string
	}{
		{"anyone lists", "tok", "GET", "/api/functions", "", 200, `"id":"fn1"`},
		{"no admin token configured", "", "POST", "/api/functions/fn1/drain", "Bearer tok", 403, "LS_ADMIN_TOKEN"},
		{"no credentials", "tok", "POST", "/api/functions/fn1/drain", "", 401, "admin token"},
		{"wrong token", "tok", "POST", "/api/functions/fn1/drain", "Bearer nope", 401, "admin token"},
		{"unknown function", "tok", "POST", "/api/functions/zz/drain", "Bearer tok", 404, "no such function"},
		{"the admin drains", "tok", "POST", "/api/functions/fn1/drain", "Bearer tok", 204, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			w := httptest.NewRecorder()
			f.Handler(tt.token).ServeHTTP(w, req)
			if w.Code != tt.code || !strings.Contains(w.Body.String(), tt.body) {
				t.Fatalf("%s %s: %d %q, want %d with %q", tt.method, tt.path, w.Code, w.Body.String(), tt.code, tt.body)
			}
		})
	}
	if !slices.Equal(c.drained, []string{"fn1"}) {
		t.Fatalf("drained %v, want fn1 once", c.drained)
	}
	_ = http.StatusOK
}

func TestParsePortRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want PortRange
		ok   bool
	}{
		{"10000-10999", PortRange{10000, 10999}, true},
		{" 5000 ", PortRange{5000, 5000}, true},
		{"9-8", PortRange{}, false},
		{"0-10", PortRange{}, false},
		{"1-70000", PortRange{}, false},
		{"a-b", PortRange{}, false},
	} {
		got, err := ParsePortRange(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePortRange(%q) = %v, %v", tt.in, got, err)
		}
	}
}

func TestAViewerWithoutARegionCountsAsTheGatewaysOrLocal(t *testing.T) {
	for _, tt := range []struct {
		home    string
		regions []string
		want    string
	}{
		{"fra", nil, "fra"},
		{"", []string{"sin", "ams"}, "sin"},
		{"", nil, "local"},
	} {
		f, p, _ := newTestFleet(t, Config{Home: tt.home, Regions: tt.regions})
		f.Want("")
		at(f, 0)
		if got := p.took(); !slices.Contains(got, "create "+tt.want) {
			t.Errorf("home %q regions %v: calls %q, want a start in %s", tt.home, tt.regions, got, tt.want)
		}
	}
}

// imaging is a provider whose new machines get image.
type imaging struct {
	*machines
	image string
}

func (p *imaging) Image(context.Context) (string, error) { return p.image, nil }

func TestADeployDrainsTheFunctionsOfTheOldImage(t *testing.T) {
	p, c := &imaging{machines: newMachines(), image: "app:v1"}, &conns{}
	p.ms["old"] = &Machine{ID: "old", Region: "ams", State: Started, Port: 10000, Image: "app:v1"}
	c.connect("old", "ams", 3, 10)
	f := New(Config{Provider: p, Relay: c, Capacity: 10, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	at(f, 0)
	want(t, p.machines) // the image is current
	p.image = "app:v2"
	at(f, 30*time.Second)
	want(t, p.machines) // checked once a minute
	at(f, 61*time.Second)
	want(t, p.machines, "create ams") // the replacement first
	if !slices.Equal(c.drained, []string{"old"}) {
		t.Fatalf("drained %v", c.drained)
	}
	c.connect("old", "ams", 0, 10)
	at(f, 62*time.Second)
	want(t, p.machines, "destroy old") // not kept to be woken with its old image
}
