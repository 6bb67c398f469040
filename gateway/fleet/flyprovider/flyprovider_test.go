package flyprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"lightspeed/gateway/fleet"
)

const testImage = "registry.fly.io/ls-fn:deployment-7"

// newTestProvider returns a provider of s's app on s's clock; edit may
// change its config first.
func newTestProvider(t *testing.T, s *fakeFly, edit func(*Config)) *Provider {
	t.Helper()
	cfg := Config{
		APIURL:         s.srv.URL,
		Token:          testToken,
		App:            testApp,
		GatewayID:      testGateway,
		PublicIPv4:     "203.0.113.7",
		Image:          testImage,
		HTTPClient:     s.srv.Client(),
		Logger:         slog.New(slog.NewTextHandler(t.Output(), nil)),
		Clock:          s.clock,
		RequestTimeout: 5 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testSpec(port int) fleet.Spec {
	return fleet.Spec{Region: "fra", Port: port, Env: map[string]string{
		"LS_GATEWAY_ADDR":    "lightspeed-gw.internal:4433",
		"LS_RELAY_SECRET":    "s3cret",
		"LS_CAPACITY":        "500",
		"LS_WEBRTC_UDP_ADDR": ":8189", // the provider's value wins
		"LS_MACHINE_ID":      "x",     // would hide FLY_MACHINE_ID
	}}
}

func TestNewRejectsAnIncompleteConfig(t *testing.T) {
	good := Config{Token: "t", App: "a", GatewayID: "g", PublicIPv4: "203.0.113.7"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no token", func(c *Config) { c.Token = "" }, "FLY_API_TOKEN"},
		{"no app", func(c *Config) { c.App = "" }, "app"},
		{"no gateway id", func(c *Config) { c.GatewayID = "" }, "gateway id"},
		{"no public IPv4", func(c *Config) { c.PublicIPv4 = "" }, "IPv4"},
		{"an IPv6 public address", func(c *Config) { c.PublicIPv4 = "2001:db8::1" }, "IPv4"},
		{"a public address that is no address", func(c *Config) { c.PublicIPv4 = "fly.dev" }, "IPv4"},
		{"memory not a multiple of 256", func(c *Config) { c.MemoryMB = 300 }, "multiple of 256"},
		{"an unknown CPU kind", func(c *Config) { c.CPUKind = "gpu" }, "CPU kind"},
		{"an API URL without scheme", func(c *Config) { c.APIURL = "api.machines.dev" }, "API URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "fly: ") {
				t.Fatalf("New: %v, want an error starting with fly: and naming %q", err, tc.want)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Fatalf("New(complete config): %v", err)
	}
}

func TestCreateSendsTheDocumentedMachineConfig(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	p := newTestProvider(t, s, nil)

	got, err := p.Create(t.Context(), testSpec(10001))
	if err != nil {
		t.Fatal(err)
	}
	fm, ok := s.machine(got.ID)
	if !ok {
		t.Fatalf("Create returned %q, which the API does not have", got.ID)
	}
	want := fleet.Machine{ID: fm.id, Region: "fra", State: fleet.Starting, Port: 10001, Image: testImage, Created: clock.Now()}
	if got != want {
		t.Errorf("Create = %+v, want %+v", got, want)
	}

	reqs := s.received("create")
	if len(reqs) != 1 {
		t.Fatalf("%d create requests, want 1", len(reqs))
	}
	var body struct {
		Region string `json:"region"`
		Config struct {
			Image       string            `json:"image"`
			Env         map[string]string `json:"env"`
			Guest       guest             `json:"guest"`
			Services    []service         `json:"services"`
			Metadata    map[string]string `json:"metadata"`
			Restart     restartPolicy     `json:"restart"`
			Metrics     metricsEndpoint   `json:"metrics"`
			AutoDestroy *bool             `json:"auto_destroy"`
		} `json:"config"`
	}
	if err := json.Unmarshal(reqs[0].body, &body); err != nil {
		t.Fatal(err)
	}
	c := body.Config
	if body.Region != "fra" || c.Image != testImage {
		t.Errorf("region %q, image %q; want fra, %s", body.Region, c.Image, testImage)
	}
	wantEnv := map[string]string{
		"LS_GATEWAY_ADDR":    "lightspeed-gw.internal:4433",
		"LS_RELAY_SECRET":    "s3cret",
		"LS_CAPACITY":        "500",
		"LS_WEBRTC_UDP_ADDR": "fly-global-services:10001",
		"LS_PUBLIC_IPS":      "203.0.113.7",
		"LS_METRICS_ADDR":    ":9091",
	}
	if fmt.Sprint(c.Env) != fmt.Sprint(wantEnv) {
		t.Errorf("env %v, want %v", c.Env, wantEnv)
	}
	if c.Guest != (guest{CPUKind: "shared", CPUs: 1, MemoryMB: 512}) {
		t.Errorf("guest %+v, want shared-cpu-1x with 512 MB", c.Guest)
	}
	if len(c.Services) != 1 || c.Services[0].Protocol != "udp" || c.Services[0].InternalPort != 10001 ||
		len(c.Services[0].Ports) != 1 || c.Services[0].Ports[0].Port != 10001 {
		t.Errorf("services %+v, want one udp service on 10001 inside and out", c.Services)
	}
	if c.Metadata[MetaRole] != RoleFunction || c.Metadata[MetaGateway] != testGateway ||
		c.Metadata[MetaPort] != "10001" || len(c.Metadata[MetaCreate]) != 24 || len(c.Metadata) != 4 {
		t.Errorf("metadata %v, want role, gateway, port and a create mark", c.Metadata)
	}
	if c.Restart.Policy != "on-failure" {
		t.Errorf("restart policy %q, want on-failure", c.Restart.Policy)
	}
	if c.Metrics != (metricsEndpoint{Port: 9091, Path: "/metrics"}) {
		t.Errorf("metrics %+v, want Fly's Prometheus to scrape :9091/metrics", c.Metrics)
	}
	if c.AutoDestroy == nil || *c.AutoDestroy {
		t.Errorf("auto_destroy %v, want false", c.AutoDestroy)
	}

	// Each create has its own mark.
	second, err := p.Create(t.Context(), testSpec(10002))
	if err != nil {
		t.Fatal(err)
	}
	sm, _ := s.machine(second.ID)
	if sm.config["metadata"].(map[string]any)[MetaCreate] == c.Metadata[MetaCreate] {
		t.Error("two creates carry the same create mark")
	}
}

func TestCreateRefusesAPortOutOfRange(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	p := newTestProvider(t, s, nil)
	for _, port := range []int{0, -1, 65536} {
		if _, err := p.Create(t.Context(), testSpec(port)); err == nil || !strings.Contains(err.Error(), "port") {
			t.Errorf("Create(port %d): %v, want an error about the port", port, err)
		}
	}
	if n := len(s.received("create")); n != 0 {
		t.Errorf("%d create requests, want none", n)
	}
}

func TestCreateTakesTheImageOfTheAppsMachinesWhenNoneIsConfigured(t *testing.T) {
	clock := newFakeClock()
	t0 := clock.Now()
	deployed := func(image string, updated time.Time) fakeMachine {
		return fakeMachine{region: "ams", state: "stopped", created: t0.Add(-time.Hour), updated: updated,
			config: map[string]any{"image": image, "metadata": map[string]any{"fly_process_group": "app"}}}
	}
	ours := func(image string, updated time.Time) fakeMachine {
		return fakeMachine{region: "ams", state: "started", created: updated, updated: updated,
			config: map[string]any{"image": image, "metadata": map[string]any{MetaRole: RoleFunction, MetaGateway: testGateway, MetaPort: "10000"}}}
	}
	for _, tc := range []struct {
		name     string
		machines []fakeMachine
		want     string // "": an error
	}{
		{"the newest deployed machine's", []fakeMachine{
			deployed("registry.fly.io/ls-fn:deployment-1", t0.Add(-2*time.Minute)),
			deployed("registry.fly.io/ls-fn:deployment-2", t0.Add(-time.Minute)),
			ours("registry.fly.io/ls-fn:deployment-0", t0),
		}, "registry.fly.io/ls-fn:deployment-2"},
		{"a deployed machine's over a newer one of a gateway", []fakeMachine{
			ours("registry.fly.io/ls-fn:deployment-0", t0),
			deployed("registry.fly.io/ls-fn:deployment-3", t0.Add(-time.Hour)),
		}, "registry.fly.io/ls-fn:deployment-3"},
		{"the newest machine's when a gateway made them all", []fakeMachine{
			ours("registry.fly.io/ls-fn:deployment-4", t0.Add(-time.Minute)),
			ours("registry.fly.io/ls-fn:deployment-5", t0),
		}, "registry.fly.io/ls-fn:deployment-5"},
		{"none: an error, and no create", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeFly(t, clock)
			for _, m := range tc.machines {
				s.add(m)
			}
			p := newTestProvider(t, s, func(c *Config) { c.Image = "" })
			got, err := p.Create(t.Context(), testSpec(10001))
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "no image configured") {
					t.Fatalf("Create: %v, want an error saying no image is configured", err)
				}
				if n := len(s.received("create")); n != 0 {
					t.Fatalf("%d create requests, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Image != tc.want {
				t.Errorf("image %q, want %q", got.Image, tc.want)
			}
		})
	}
}

func TestListReturnsThisGatewaysMachinesInEveryStateButDestroyed(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprintf("API ignores metadata filters %v", ignore), func(t *testing.T) {
			clock := newFakeClock()
			s := newFakeFly(t, clock)
			s.ignoreFilters = ignore
			p := newTestProvider(t, s, nil)
			a, err := p.Create(t.Context(), testSpec(10001))
			if err != nil {
				t.Fatal(err)
			}
			b, err := p.Create(t.Context(), testSpec(10002))
			if err != nil {
				t.Fatal(err)
			}
			gone, err := p.Create(t.Context(), testSpec(10003))
			if err != nil {
				t.Fatal(err)
			}
			s.add(fakeMachine{region: "ams", state: "started", config: map[string]any{"image": testImage,
				"metadata": map[string]any{MetaRole: RoleFunction, MetaGateway: "another-gw", MetaPort: "10001"}}})
			s.add(fakeMachine{region: "ams", state: "stopped"}) // deployed by fly deploy, unmarked
			s.add(fakeMachine{region: "ams", state: "started", config: map[string]any{"image": testImage,
				"metadata": map[string]any{MetaGateway: testGateway}}}) // not a function
			clock.Advance(s.bootDelay)
			if err := p.Stop(t.Context(), b.ID); err != nil {
				t.Fatal(err)
			}
			if err := p.Destroy(t.Context(), gone.ID); err != nil {
				t.Fatal(err)
			}
			clock.Advance(s.destroyDelay)

			got, err := p.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]fleet.State{a.ID: fleet.Started, b.ID: fleet.Stopped}
			if len(got) != len(want) {
				t.Fatalf("List = %+v, want machines %v", got, want)
			}
			for _, m := range got {
				if st, ok := want[m.ID]; !ok || m.State != st || m.Region != "fra" || m.Image != testImage {
					t.Errorf("List has %+v, want one of %v in fra running %s", m, want, testImage)
				}
			}
			lists := s.received("list")
			if q := lists[len(lists)-1].query; q.Get("metadata."+MetaGateway) != testGateway {
				t.Errorf("list query %v, want metadata.%s=%s", q, MetaGateway, testGateway)
			}
		})
	}
}

func TestMachineStatesFollowTheAPIOverTime(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	p := newTestProvider(t, s, nil)
	ctx := t.Context()
	m, err := p.Create(ctx, testSpec(10001))
	if err != nil {
		t.Fatal(err)
	}
	state := func() fleet.State {
		t.Helper()
		ms, err := p.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ms {
			if x.ID == m.ID {
				return x.State
			}
		}
		return "absent"
	}
	for _, step := range []struct {
		do   func() error
		wait time.Duration
		want fleet.State
	}{
		{nil, 0, fleet.Starting},               // created
		{nil, s.startingAfter, fleet.Starting}, // starting
		{nil, s.bootDelay, fleet.Started},      // started
		{func() error { return p.Stop(ctx, m.ID) }, 0, fleet.Stopping},
		{nil, s.stopDelay, fleet.Stopped},
		{func() error { return p.Start(ctx, m.ID) }, 0, fleet.Starting},
		{nil, s.bootDelay, fleet.Started},
		{func() error { return p.Destroy(ctx, m.ID) }, 0, fleet.Destroyed}, // destroying
		{nil, s.destroyDelay, "absent"},
	} {
		if step.do != nil {
			if err := step.do(); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(step.wait)
		if got := state(); got != step.want {
			fm, _ := s.machine(m.ID)
			t.Fatalf("after %v: state %q (Fly's %q), want %q", clock.Now().Sub(m.Created), got, fm.state, step.want)
		}
	}
}

func TestFleetStateOfEveryDocumentedFlyState(t *testing.T) {
	for fly, want := range map[string]fleet.State{
		"creating": fleet.Starting, "created": fleet.Starting, "starting": fleet.Starting,
		"restarting": fleet.Starting, "updating": fleet.Starting, "replacing": fleet.Starting,
		"replaced": fleet.Starting, "migrated": fleet.Starting,
		"started":  fleet.Started,
		"stopping": fleet.Stopping, "suspending": fleet.Stopping,
		"stopped": fleet.Stopped, "suspended": fleet.Stopped,
		"destroying": fleet.Destroyed, "destroyed": fleet.Destroyed,
		"failed": fleet.Failed, "launch_failed": fleet.Failed,
		"": fleet.Failed, "hibernating": fleet.Failed,
	} {
		if got := fleetState(fly); got != want {
			t.Errorf("fleetState(%q) = %q, want %q", fly, got, want)
		}
	}
}

func TestEveryRequestCarriesTheToken(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	p := newTestProvider(t, s, func(c *Config) { c.Token = "fm2_wrong" })
	_, err := p.List(t.Context())
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusUnauthorized ||
		!strings.HasPrefix(err.Error(), "fly: app "+testApp+": list: 401 Unauthorized: You must be authenticated") {
		t.Fatalf("List with a wrong token: %v, want a 401 error", err)
	}
	if n := len(s.received("list")); n != 1 {
		t.Errorf("%d list requests, want 1: a 401 is not retried", n)
	}
}

func TestCallsAboutAnUnknownMachineWrapErrNotFound(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	p := newTestProvider(t, s, nil)
	const id = "0e286039f42e86"
	for name, call := range map[string]func(context.Context, string) error{
		"start": p.Start, "stop": p.Stop, "destroy": p.Destroy,
	} {
		err := call(t.Context(), id)
		if !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("%s: %v, want fleet.ErrNotFound", name, err)
		}
		if want := "fly: machine " + id + ": " + name + ": 404 Not Found: machine not found"; err == nil || err.Error() != want {
			t.Errorf("%s: %q, want %q", name, err, want)
		}
	}
}

func TestAStopTheMachineCannotTakeNamesMachineActionAndAnswer(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "stopped"})
	p := newTestProvider(t, s, nil)
	err := p.Stop(t.Context(), "3d8d413b29d089")
	want := "fly: machine 3d8d413b29d089: stop: 412 Precondition Failed: unable to stop machine from current state: 'stopped'"
	if err == nil || err.Error() != want {
		t.Fatalf("Stop: %v, want %q", err, want)
	}
	if errors.Is(err, fleet.ErrNotFound) {
		t.Error("a 412 wraps ErrNotFound")
	}
}

func TestRateLimitedRequestsWaitForRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		retryAfter func(now time.Time) string
		atLeast    time.Duration
	}{
		{"in seconds", func(time.Time) string { return "3" }, 3 * time.Second},
		{"as an HTTP date", func(now time.Time) string { return now.Add(3 * time.Second).Format(http.TimeFormat) }, 2 * time.Second},
		{"absent: a second at least", func(time.Time) string { return "" }, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newFakeFly(t, clock)
			s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
			s.inject("stop", fault{status: http.StatusTooManyRequests, retryAfter: tc.retryAfter(clock.Now())})
			p := newTestProvider(t, s, nil)
			if err := p.Stop(t.Context(), "3d8d413b29d089"); err != nil {
				t.Fatal(err)
			}
			reqs := s.received("stop")
			if len(reqs) != 2 {
				t.Fatalf("%d stop requests, want 2", len(reqs))
			}
			if gap := reqs[1].at.Sub(reqs[0].at); gap < tc.atLeast {
				t.Errorf("asked again after %v, want at least %v", gap, tc.atLeast)
			}
		})
	}
}

func TestARateLimitHoldsBackTheNextCallOfTheSameMachineAndAction(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
	s.add(fakeMachine{id: "3d8d413b29d090", region: "ams", state: "started"})
	s.inject("stop", fault{status: http.StatusTooManyRequests, retryAfter: "5"})
	p := newTestProvider(t, s, func(c *Config) { c.MaxRetryTime = 2 * time.Second })
	// A Retry-After beyond the call's budget: it gives up at once…
	if err := p.Stop(t.Context(), "3d8d413b29d089"); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("Stop: %v, want the 429", err)
	}
	// …another machine's stop does not wait…
	if err := p.Stop(t.Context(), "3d8d413b29d090"); err != nil {
		t.Fatal(err)
	}
	// …and the next stop of the same machine waits the Retry-After out.
	if err := p.Stop(t.Context(), "3d8d413b29d089"); err != nil {
		t.Fatal(err)
	}
	reqs := s.received("stop")
	if len(reqs) != 3 {
		t.Fatalf("%d stop requests, want 3", len(reqs))
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap != 0 {
		t.Errorf("the other machine's stop waited %v", gap)
	}
	if gap := reqs[2].at.Sub(reqs[0].at); gap < 5*time.Second {
		t.Errorf("the same machine's next stop went %v after the 429, want 5s or more", gap)
	}
}

func TestServerErrorsAreRetriedWithGrowingBackoff(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "stopped"})
	s.inject("start",
		fault{status: http.StatusServiceUnavailable},
		fault{status: http.StatusBadGateway},
		fault{status: http.StatusInternalServerError})
	p := newTestProvider(t, s, nil)
	if err := p.Start(t.Context(), "3d8d413b29d089"); err != nil {
		t.Fatal(err)
	}
	reqs := s.received("start")
	if len(reqs) != 4 {
		t.Fatalf("%d start requests, want 4", len(reqs))
	}
	for i := 1; i < len(reqs); i++ {
		step := retryBase << (i - 1)
		// Pacing may add to the last wait, never take from it.
		if gap := reqs[i].at.Sub(reqs[i-1].at); gap < step/2 || gap > step+time.Second {
			t.Errorf("wait %d: %v, want between %v and %v", i, gap, step/2, step+time.Second)
		}
	}
	if m, _ := s.machine("3d8d413b29d089"); m.state != "starting" {
		t.Errorf("machine %s, want starting", m.state)
	}
}

func TestRetriesAreBoundedInCountAndTime(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(*Config)
		faults   []fault
		requests int
		want     string
	}{
		{"by attempts", func(c *Config) { c.MaxAttempts = 4 },
			repeat(fault{status: http.StatusServiceUnavailable}, 10), 4,
			"fly: machine 3d8d413b29d089: stop: 503 Service Unavailable: injected 503 (after 4 attempts)"},
		{"by time", func(c *Config) { c.MaxAttempts = 100; c.MaxRetryTime = 2 * time.Second },
			repeat(fault{status: http.StatusServiceUnavailable}, 100), 0,
			"stop: 503 Service Unavailable"},
		{"a Retry-After beyond the time budget is not waited for", func(c *Config) { c.MaxRetryTime = time.Minute },
			[]fault{{status: http.StatusTooManyRequests, retryAfter: "3600"}}, 1,
			"fly: machine 3d8d413b29d089: stop: 429 Too Many Requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			s := newFakeFly(t, clock)
			s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
			s.inject("stop", tc.faults...)
			p := newTestProvider(t, s, tc.edit)
			start := clock.Now()
			err := p.Stop(t.Context(), "3d8d413b29d089")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Stop: %v, want %q", err, tc.want)
			}
			n := len(s.received("stop"))
			if tc.requests > 0 && n != tc.requests {
				t.Errorf("%d stop requests, want %d", n, tc.requests)
			}
			if spent := clock.Now().Sub(start); spent > p.api.budget {
				t.Errorf("spent %v waiting, budget %v", spent, p.api.budget)
			}
			if tc.requests == 0 && (n < 2 || n > 10) {
				t.Errorf("%d stop requests in a 2 s budget, want a few", n)
			}
		})
	}
}

func repeat(f fault, n int) []fault {
	fs := make([]fault, n)
	for i := range fs {
		fs[i] = f
	}
	return fs
}

func TestACallEndsWithItsContext(t *testing.T) {
	t.Run("cancelled before: no request", func(t *testing.T) {
		s := newFakeFly(t, newFakeClock())
		s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
		p := newTestProvider(t, s, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := p.Stop(ctx, "3d8d413b29d089")
		if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "fly: machine 3d8d413b29d089: stop") {
			t.Fatalf("Stop: %v, want context.Canceled, naming the machine", err)
		}
		if n := len(s.received("stop")); n != 0 {
			t.Errorf("%d stop requests, want none", n)
		}
		if _, err := p.Create(ctx, testSpec(10001)); !errors.Is(err, context.Canceled) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("Create: %v, want context.Canceled, outcome known", err)
		}
		if n := len(s.received("create")); n != 0 {
			t.Errorf("%d create requests, want none", n)
		}
	})
	t.Run("a deadline before the next retry: no wait", func(t *testing.T) {
		s := newFakeFly(t, newFakeClock())
		s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
		s.inject("stop", fault{status: http.StatusServiceUnavailable})
		p := newTestProvider(t, s, func(c *Config) { c.Clock = realClock{} })
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Stop(ctx, "3d8d413b29d089")
		if err == nil || !strings.Contains(err.Error(), "503") {
			t.Fatalf("Stop: %v, want the 503", err)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("returned after %v", el)
		}
	})
}

func TestAHungRequestIsAbandonedAndRetried(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	p := newTestProvider(t, s, func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
	if _, err := p.Create(t.Context(), testSpec(10001)); err != nil {
		t.Fatal(err)
	}
	s.inject("list", fault{hang: true})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ms, err := p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 {
		t.Errorf("List = %+v, want the machine", ms)
	}
	if n := len(s.received("list")); n != 2 {
		t.Errorf("%d list requests, want 2", n)
	}
}

func TestACreateWhoseAnswerIsLostReturnsTheMachineAListFinds(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    fault
	}{
		{"connection closed after the machine was made", fault{act: true, drop: true}},
		{"no answer within the timeout after the machine was made", fault{act: true, hang: true}},
		{"a 500 after the machine was made", fault{act: true, status: http.StatusInternalServerError}},
		{"a garbled answer", fault{act: true, garble: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeFly(t, newFakeClock())
			s.inject("create", tc.f)
			p := newTestProvider(t, s, func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
			got, err := p.Create(t.Context(), testSpec(10001))
			if err != nil {
				t.Fatal(err)
			}
			live := s.live()
			if len(live) != 1 || live[0].id != got.ID {
				t.Fatalf("Create = %+v; the API has %d machines, want only it", got, len(live))
			}
			if got.Port != 10001 || got.Region != "fra" || got.State != fleet.Starting {
				t.Errorf("Create = %+v", got)
			}
			if n := len(s.received("create")); n != 1 {
				t.Errorf("%d create requests, want 1", n)
			}
		})
	}
}

func TestACreateTheAPIDidNotPerform(t *testing.T) {
	for _, tc := range []struct {
		name     string
		f        fault
		creates  int  // requests
		made     bool // the machine exists after
		unknown  bool // the error wraps ErrOutcomeUnknown
		reconcil bool // a List looked for it
	}{
		{"a 503: asked again", fault{status: http.StatusServiceUnavailable}, 2, true, false, true},
		{"a 429: asked again after its Retry-After", fault{status: http.StatusTooManyRequests, retryAfter: "1"}, 2, true, false, false},
		{"connection closed: outcome unknown, not asked again", fault{drop: true}, 1, false, true, true},
		{"no answer: outcome unknown, not asked again", fault{hang: true}, 1, false, true, true},
		{"a 422: a final answer, not asked again", fault{status: http.StatusUnprocessableEntity}, 1, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeFly(t, newFakeClock())
			s.inject("create", tc.f)
			p := newTestProvider(t, s, func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
			got, err := p.Create(t.Context(), testSpec(10001))
			if tc.made != (err == nil) {
				t.Fatalf("Create = %+v, %v; want made %v", got, err, tc.made)
			}
			if errors.Is(err, ErrOutcomeUnknown) != tc.unknown {
				t.Errorf("Create: %v; want outcome unknown %v", err, tc.unknown)
			}
			if tc.unknown && !strings.Contains(err.Error(), MetaCreate+"=") {
				t.Errorf("Create: %v; want the create mark named", err)
			}
			if n := len(s.received("create")); n != tc.creates {
				t.Errorf("%d create requests, want %d", n, tc.creates)
			}
			want := 0
			if tc.made {
				want = 1
			}
			if live := s.live(); len(live) != want {
				t.Errorf("the API has %d machines, want %d", len(live), want)
			}
			if lists := len(s.received("list")) > 0; lists != tc.reconcil {
				t.Errorf("listed %v, want %v", lists, tc.reconcil)
			}
		})
	}
}

func TestADestroyWhoseAnswerWasLostAndThenFindsNoMachineSucceeds(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	s.destroyDelay = 0
	s.add(fakeMachine{id: "3d8d413b29d089", region: "ams", state: "started"})
	s.inject("destroy", fault{act: true, drop: true})
	p := newTestProvider(t, s, nil)
	if err := p.Destroy(t.Context(), "3d8d413b29d089"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if n := len(s.received("destroy")); n != 2 {
		t.Errorf("%d destroy requests, want 2", n)
	}
	if q := s.received("destroy")[0].query; q.Get("force") != "true" {
		t.Errorf("destroy query %v, want force=true", q)
	}
}

func TestRequestsArePacedPerMachineAndAction(t *testing.T) {
	t.Run("a line per action, at Fly's rate, however many callers", func(t *testing.T) {
		clock := newFakeClock()
		s := newFakeFly(t, clock)
		s.noRateLimit = true
		p := newTestProvider(t, s, nil)
		t0 := clock.Now()
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := p.List(t.Context()); err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				if _, err := p.Create(t.Context(), testSpec(10000+i)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		for _, action := range []string{"list", "create"} {
			reqs := s.received(action)
			if len(reqs) != n {
				t.Fatalf("%d %s requests, want %d", len(reqs), action, n)
			}
			ats := make([]time.Time, n)
			for i, r := range reqs {
				ats[i] = r.at
			}
			slices.SortFunc(ats, time.Time.Compare)
			// A request arrives after it was let go, so the k-th arrival
			// is no earlier than the k-th departure: 3 at once, then one
			// a second.
			for k, at := range ats {
				earliest := t0.Add(time.Duration(max(0, k+1-paceBurst)) * time.Second)
				if at.Before(earliest) {
					t.Errorf("%s request %d went at +%v, want +%v or later", action, k+1, at.Sub(t0), earliest.Sub(t0))
				}
			}
		}
		// The two lines wait side by side, not one after the other.
		if slept, most := clock.Slept(), 2*(n-paceBurst)*time.Second+time.Millisecond; slept > most {
			t.Errorf("waited %v in all, want at most %v", slept, most)
		}
	})
	t.Run("machines do not wait for each other", func(t *testing.T) {
		clock := newFakeClock()
		s := newFakeFly(t, clock)
		var ids []string
		for i := range 8 {
			id := fmt.Sprintf("3d8d413b29d%03d", i)
			s.add(fakeMachine{id: id, region: "ams", state: "started"})
			ids = append(ids, id)
		}
		p := newTestProvider(t, s, nil)
		var wg sync.WaitGroup
		for _, id := range ids {
			wg.Go(func() {
				if err := p.Stop(t.Context(), id); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if slept := clock.Slept(); slept != 0 {
			t.Errorf("waited %v stopping 8 machines once each, want no wait", slept)
		}
	})
}

func TestEveryCreateMakesAtMostOneMachineUnderFaults(t *testing.T) {
	clock := newFakeClock()
	s := newFakeFly(t, clock)
	s.destroyDelay = 0
	rng := rand.New(rand.NewPCG(1, 2))
	s.chaos = func(string) (fault, bool) {
		switch x := rng.IntN(100); {
		case x < 8:
			return fault{status: http.StatusServiceUnavailable}, true
		case x < 14:
			return fault{status: http.StatusInternalServerError, act: true}, true
		case x < 22:
			return fault{status: http.StatusTooManyRequests, retryAfter: "1"}, true
		case x < 26:
			return fault{drop: true}, true
		case x < 30:
			return fault{drop: true, act: true}, true
		}
		return fault{}, false
	}
	p := newTestProvider(t, s, nil)
	made := map[string]bool{}
	unknown := 0
	for i := range 40 {
		m, err := p.Create(t.Context(), testSpec(10000+i))
		switch {
		case err == nil:
			made[m.ID] = true
		case errors.Is(err, ErrOutcomeUnknown):
			unknown++
		default:
			var e *Error
			if !errors.As(err, &e) || e.Status < 500 && e.Status != http.StatusTooManyRequests {
				t.Errorf("Create: %v", err)
			}
		}
	}
	s.mu.Lock()
	s.chaos = nil
	s.mu.Unlock()

	marks := map[string]string{}
	for _, m := range s.live() {
		mark := m.config["metadata"].(map[string]any)[MetaCreate].(string)
		if other, dup := marks[mark]; dup {
			t.Errorf("machines %s and %s come from one Create", other, m.id)
		}
		marks[mark] = m.id
	}
	for id := range made {
		if _, ok := s.machine(id); !ok {
			t.Errorf("Create returned %s, which the API does not have", id)
		}
	}
	if len(marks) > len(made)+unknown {
		t.Errorf("the API has %d machines; Create returned %d and %d unknown outcomes", len(marks), len(made), unknown)
	}
	listed, err := p.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(marks) {
		t.Errorf("List has %d machines, the API %d: some are not found", len(listed), len(marks))
	}
	t.Logf("%d made, %d unknown, %d on the API", len(made), unknown, len(marks))
	if len(made) < 30 {
		t.Errorf("only %d of 40 creates succeeded", len(made))
	}
}

func TestAnAnswerLongerThanTheBoundIsRefused(t *testing.T) {
	s := newFakeFly(t, newFakeClock())
	p := newTestProvider(t, s, nil)
	p.api.maxBody = 1 << 10
	s.inject("list", repeat(fault{huge: 4 << 10}, 10)...)
	_, err := p.List(t.Context())
	if err == nil || !strings.Contains(err.Error(), "answer longer than "+strconv.Itoa(1<<10)+" bytes") {
		t.Fatalf("List: %v, want an error about the answer's length", err)
	}
}
