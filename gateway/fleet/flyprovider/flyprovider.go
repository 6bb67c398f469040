// Package flyprovider is the fleet's "fly" provider: it runs each function
// as a Fly Machine of the function app, through the Machines REST API
// (docs/fly-machines.md has the facts it relies on, with their sources).
//
// Create makes a machine in the spec's region from the app's image, with
// the spec's environment, a UDP service whose public and internal port are
// both the spec's port (Fly routes UDP by port and does not rewrite it),
// LS_WEBRTC_UDP_ADDR bound to fly-global-services on that port,
// LS_PUBLIC_IPS set to the app's dedicated IPv4, and metadata marking it
// as this gateway's function (MetaRole, MetaGateway, MetaPort) and as the
// fruit of this Create call (MetaCreate). The function announces its
// FLY_MACHINE_ID to the relay, so the relay's function id is the machine's
// id. List reads the machines by those marks, so a restarted gateway
// adopts them.
//
// Every call is paced per (machine, action) at Fly's published rate, and
// retried within bounds (Config.MaxAttempts, Config.MaxRetryTime) after a
// 429 (waiting its Retry-After), a 5xx, or a network failure. A create is
// never sent twice once the API may have acted on it: when its answer is
// lost, Create lists the machines carrying its MetaCreate mark and returns
// the one it finds, or an error wrapping ErrOutcomeUnknown; a machine made
// all the same carries this gateway's marks and shows in the next List.
package flyprovider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"lightspeed/gateway/fleet"
)

// Defaults of Config.
const (
	// DefaultAPIURL is the Machines API's public address.
	DefaultAPIURL = "https://api.machines.dev"
	// DefaultCPUKind, DefaultCPUs and DefaultMemoryMB make a
	// shared-cpu-1x with 512 MB: a function at its default capacity (500
	// viewers at ~233 KB each, docs/bench.md) needs ~120 MB of heap plus
	// the runtime and the channel caches; 256 MB would leave too little
	// room for RSS peaks, and an out-of-memory kill drops every viewer of
	// the machine.
	DefaultCPUKind  = "shared"
	DefaultCPUs     = 1
	DefaultMemoryMB = 512
	// DefaultMaxAttempts is the most requests one call sends.
	DefaultMaxAttempts = 5
	// DefaultMaxRetryTime is the most time one call spends, waits included.
	DefaultMaxRetryTime = 2 * time.Minute
	// DefaultRequestTimeout is how long one request may wait for its
	// answer. A create answers once the machine exists, before it boots.
	DefaultRequestTimeout = 60 * time.Second
)

// MetricsPort is where a function machine serves its metrics
// (LS_METRICS_ADDR), which the machine's config tells Fly's Prometheus to
// scrape.
const MetricsPort = 9091

// TokenEnv is the environment variable Fly's tools and documentation keep
// the API token in; the gateway reads Config.Token from it.
const TokenEnv = "FLY_API_TOKEN"

// ErrOutcomeUnknown is wrapped by Create's error when the API may have made
// the machine but no List has shown it yet. If it was made, it carries the
// gateway's marks and a later List returns it.
var ErrOutcomeUnknown = errors.New("fly: create outcome unknown")

// Config configures a Provider.
type Config struct {
	// APIURL is the Machines API's address; empty: DefaultAPIURL. Inside
	// Fly's private network it can be http://_api.internal:4280.
	APIURL string
	// Token authenticates every request (Authorization: Bearer); the
	// gateway reads it from FLY_API_TOKEN (TokenEnv). A deploy token of
	// the function app is enough.
	Token string
	// App is the function app's name.
	App string
	// Image is the container image of new machines; empty: the image of
	// the app's newest machine not made by a gateway (the one `fly
	// deploy` of the function app made), else of the newest one, read at
	// every Create.
	Image string
	// CPUKind, CPUs and MemoryMB size new machines; zero: DefaultCPUKind,
	// DefaultCPUs, DefaultMemoryMB. MemoryMB is a multiple of 256.
	CPUKind  string
	CPUs     int
	MemoryMB int
	// PublicIPv4 is the function app's dedicated IPv4 address (`fly ips
	// allocate-v4`), which carries its UDP: functions advertise it to
	// viewers (LS_PUBLIC_IPS). Fly has no UDP over public IPv6.
	PublicIPv4 string
	// GatewayID names this gateway in its machines' metadata (MetaGateway),
	// so that List returns its machines and no other gateway's. It must
	// stay the same across restarts (the gateway app's name, say).
	GatewayID string
	// HTTPClient sends the requests; nil: a client on
	// http.DefaultTransport. Its Timeout, if any, bounds each request on
	// top of RequestTimeout.
	HTTPClient *http.Client
	// Logger receives retries and uncertain creates; nil: slog.Default().
	Logger *slog.Logger
	// Clock paces and times retries; nil: the system's clock.
	Clock Clock
	// RequestTimeout bounds each request; zero: DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxAttempts bounds the requests of one call; zero: DefaultMaxAttempts.
	MaxAttempts int
	// MaxRetryTime bounds the time of one call, waits included; zero:
	// DefaultMaxRetryTime.
	MaxRetryTime time.Duration
}

// Provider runs functions as Fly Machines. It implements fleet.Provider
// and is safe for concurrent use.
type Provider struct {
	api      *client
	image    string
	guest    guest
	publicIP string
	gateway  string
	log      *slog.Logger
}

var _ fleet.Provider = (*Provider)(nil)

// New checks cfg and returns a provider. It sends no request.
func New(cfg Config) (*Provider, error) {
	base := cfg.APIURL
	if base == "" {
		base = DefaultAPIURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fly: API URL %q: want http(s)://host", base)
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("fly: no API token (set %s)", TokenEnv)
	}
	if cfg.App == "" {
		return nil, errors.New("fly: no function app name")
	}
	if cfg.GatewayID == "" {
		return nil, errors.New("fly: no gateway id to mark machines with")
	}
	ip, err := netip.ParseAddr(cfg.PublicIPv4)
	if err != nil || !ip.Is4() {
		return nil, fmt.Errorf("fly: public IPv4 %q: want the function app's dedicated IPv4 address (fly ips allocate-v4)", cfg.PublicIPv4)
	}
	g := guest{CPUKind: cfg.CPUKind, CPUs: cfg.CPUs, MemoryMB: cfg.MemoryMB}
	if g.CPUKind == "" {
		g.CPUKind = DefaultCPUKind
	}
	if g.CPUs == 0 {
		g.CPUs = DefaultCPUs
	}
	if g.MemoryMB == 0 {
		g.MemoryMB = DefaultMemoryMB
	}
	if g.CPUKind != "shared" && g.CPUKind != "performance" {
		return nil, fmt.Errorf("fly: CPU kind %q: want shared or performance", g.CPUKind)
	}
	if g.CPUs < 1 || g.MemoryMB < 256 || g.MemoryMB%256 != 0 {
		return nil, fmt.Errorf("fly: guest %d CPUs, %d MB: want 1 CPU or more and a multiple of 256 MB", g.CPUs, g.MemoryMB)
	}
	p := &Provider{
		api: &client{
			base:     strings.TrimRight(base, "/"),
			app:      cfg.App,
			token:    cfg.Token,
			http:     cfg.HTTPClient,
			log:      cfg.Logger,
			clock:    cfg.Clock,
			timeout:  cfg.RequestTimeout,
			attempts: cfg.MaxAttempts,
			budget:   cfg.MaxRetryTime,
			maxBody:  defaultMaxBody,
		},
		image:    cfg.Image,
		guest:    g,
		publicIP: ip.String(),
		gateway:  cfg.GatewayID,
	}
	c := p.api
	if c.http == nil {
		c.http = &http.Client{}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultRequestTimeout
	}
	if c.attempts <= 0 {
		c.attempts = DefaultMaxAttempts
	}
	if c.budget <= 0 {
		c.budget = DefaultMaxRetryTime
	}
	c.pace = newPacer(c.clock)
	p.log = c.log
	return p, nil
}

// Name is "fly".
func (p *Provider) Name() string { return "fly" }

// List returns the machines of the app that carry this gateway's marks,
// in every state but destroyed.
func (p *Provider) List(ctx context.Context) ([]fleet.Machine, error) {
	ms, err := p.list(ctx, "list", url.Values{"metadata." + MetaGateway: {p.gateway}})
	if err != nil {
		return nil, err
	}
	out := make([]fleet.Machine, 0, len(ms))
	for _, m := range ms {
		// The API filters by one mark; the others are checked here.
		if m.ours(p.gateway) {
			out = append(out, m.fleetMachine())
		}
	}
	return out, nil
}

// list reads the app's machines matching q (GET /v1/apps/{app}/machines).
func (p *Provider) list(ctx context.Context, op string, q url.Values) ([]machine, error) {
	body, err := p.api.do(ctx, call{op: op, action: "list", method: http.MethodGet, query: q})
	if err != nil {
		return nil, err
	}
	ms, err := decodeMachines(body)
	if err != nil {
		return nil, &Error{App: p.api.app, Op: op, Status: http.StatusOK, Err: err}
	}
	return ms, nil
}

// Create makes a machine for spec and returns it, booting (Fly starts a
// machine once it is created). See the package's documentation for what
// it sends, and for an answer that is lost: a machine found by its mark
// is returned even if ctx ended meanwhile.
func (p *Provider) Create(ctx context.Context, spec fleet.Spec) (fleet.Machine, error) {
	if spec.Port < 1 || spec.Port > 65535 {
		return fleet.Machine{}, fmt.Errorf("fly: app %s: create in %s: port %d out of range", p.api.app, spec.Region, spec.Port)
	}
	image, err := p.imageFor(ctx)
	if err != nil {
		return fleet.Machine{}, err
	}
	mark, err := newMark()
	if err != nil {
		return fleet.Machine{}, fmt.Errorf("fly: app %s: create in %s: %w", p.api.app, spec.Region, err)
	}
	body, err := json.Marshal(p.createRequest(spec, image, mark))
	if err != nil {
		return fleet.Machine{}, fmt.Errorf("fly: app %s: create in %s: %w", p.api.app, spec.Region, err)
	}
	k := call{op: "create in " + spec.Region, action: "create", method: http.MethodPost, body: body, once: true}
	b := p.api.newBudget()
	for {
		ans, err := p.api.doWithin(ctx, k, b)
		if err == nil {
			m, derr := decodeMachine(ans)
			if derr == nil {
				p.log.Info("fly: machine created", "function", m.ID, "region", m.Region, "port", spec.Port, "image", image)
				return m.fleetMachine(), nil
			}
			// Created, but the answer does not say what: a List tells.
			err = &Error{App: p.api.app, Op: k.op, Status: http.StatusOK, Err: derr, Attempts: b.attempts, uncertain: true}
		}
		var e *Error
		if !errors.As(err, &e) || !e.uncertain {
			return fleet.Machine{}, err
		}
		found, ok, lerr := p.findCreated(ctx, mark)
		if ok {
			p.log.Warn("fly: machine created, its answer lost", "function", found.ID, "region", found.Region, "port", spec.Port, "err", err)
			return found.fleetMachine(), nil
		}
		if lerr != nil || e.Status < 400 {
			// No answer, or an unreadable one: the API may have made the
			// machine, or may be making it still.
			if lerr != nil {
				err = fmt.Errorf("%w; finding it: %w", err, lerr)
			}
			p.log.Warn("fly: create outcome unknown", "region", spec.Region, "port", spec.Port, MetaCreate, mark, "err", err)
			return fleet.Machine{}, fmt.Errorf("%w: app %s: create in %s: no machine has %s=%s yet: %w", ErrOutcomeUnknown, p.api.app, spec.Region, MetaCreate, mark, err)
		}
		// The API answered a failure (5xx, 408) and no machine carries the
		// mark: as far as the API shows, it made none; ask again.
		if ctx.Err() != nil {
			return fleet.Machine{}, err
		}
		d, more := p.api.backoff(ctx, b, result{err: e, retryAfter: -1})
		if !more {
			return fleet.Machine{}, err
		}
		p.log.Warn("fly: retrying", "op", k.op, "attempt", b.attempts, "wait", d, "err", err)
		if serr := p.api.clock.Sleep(ctx, d); serr != nil {
			return fleet.Machine{}, fmt.Errorf("%w (stopped waiting to retry: %w)", err, serr)
		}
	}
}

// findCreated looks for the machine of the Create call marked mark. It
// runs even when ctx has ended (the caller gave up, the machine may
// exist), for one request timeout at most.
func (p *Provider) findCreated(ctx context.Context, mark string) (machine, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.api.timeout)
	defer cancel()
	ms, err := p.list(ctx, "create: find machine", url.Values{"metadata." + MetaCreate: {mark}})
	if err != nil {
		return machine{}, false, err
	}
	for _, m := range ms {
		if m.Config.Metadata[MetaCreate] == mark && m.ours(p.gateway) {
			return m, true, nil
		}
	}
	return machine{}, false, nil
}

// Image is the image new machines get (see imageFor): the fleet drains
// machines running another, after a deploy of the function app.
func (p *Provider) Image(ctx context.Context) (string, error) { return p.imageFor(ctx) }

// imageFor is the image of a new machine: the configured one, else that
// of the app's newest machine, preferring those no gateway made.
func (p *Provider) imageFor(ctx context.Context) (string, error) {
	if p.image != "" {
		return p.image, nil
	}
	ms, err := p.list(ctx, "create: find image", nil)
	if err != nil {
		return "", err
	}
	var best machine
	var bestTime time.Time
	bestDeployed := false
	for _, m := range ms {
		if m.Config.Image == "" || fleetState(m.State) == fleet.Destroyed {
			continue
		}
		deployed := m.Config.Metadata[MetaRole] == ""
		t := newest(m.UpdatedAt, m.CreatedAt)
		if best.ID == "" || deployed && !bestDeployed || deployed == bestDeployed && t.After(bestTime) {
			best, bestTime, bestDeployed = m, t, deployed
		}
	}
	if best.ID == "" {
		return "", fmt.Errorf("fly: app %s: create: no image configured, and the app has no machine to take it from (deploy the function app once, or set the image)", p.api.app)
	}
	return best.Config.Image, nil
}

// newest is the later of two RFC 3339 times; unreadable ones are zero.
func newest(a, b string) time.Time {
	ta, _ := time.Parse(time.RFC3339, a)
	tb, _ := time.Parse(time.RFC3339, b)
	if tb.After(ta) {
		return tb
	}
	return ta
}

// createRequest is the body that creates a machine for spec.
func (p *Provider) createRequest(spec fleet.Spec, image, mark string) createRequest {
	port := strconv.Itoa(spec.Port)
	env := maps.Clone(spec.Env)
	if env == nil {
		env = make(map[string]string)
	}
	// Fly delivers UDP only to a socket bound to fly-global-services, on
	// the port it arrived on, through the app's dedicated IPv4.
	env["LS_WEBRTC_UDP_ADDR"] = "fly-global-services:" + port
	env["LS_PUBLIC_IPS"] = p.publicIP
	// The function must announce FLY_MACHINE_ID, the id List returns.
	delete(env, "LS_MACHINE_ID")
	// Its metrics, for Fly's Prometheus: no service exposes the port, so
	// only the private network reaches it.
	env["LS_METRICS_ADDR"] = ":" + strconv.Itoa(MetricsPort)
	g := p.guest
	return createRequest{
		Region: spec.Region,
		Config: machineConfig{
			Image: image,
			Env:   env,
			Guest: &g,
			Services: []service{{
				Protocol:     "udp",
				InternalPort: spec.Port,
				Ports:        []servicePort{{Port: spec.Port}},
			}},
			Metadata: map[string]string{
				MetaRole:    RoleFunction,
				MetaGateway: p.gateway,
				MetaPort:    port,
				MetaCreate:  mark,
			},
			// A crash restarts the function; a clean exit (idle) leaves
			// the machine stopped, for the fleet to start or destroy.
			Restart:     &restartPolicy{Policy: "on-failure"},
			Metrics:     &metricsEndpoint{Port: MetricsPort, Path: "/metrics"},
			AutoDestroy: false,
		},
	}
}

// newMark returns a unique MetaCreate mark.
func newMark() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("create mark: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Start starts a stopped machine (POST …/machines/{id}/start).
func (p *Provider) Start(ctx context.Context, id string) error {
	return p.machineCall(ctx, id, "start", http.MethodPost, "/start", nil)
}

// Stop stops a machine, keeping it (POST …/machines/{id}/stop).
func (p *Provider) Stop(ctx context.Context, id string) error {
	return p.machineCall(ctx, id, "stop", http.MethodPost, "/stop", nil)
}

// Destroy destroys a machine, stopping it first if it runs (DELETE
// …/machines/{id}?force=true). A machine already gone after a request
// whose answer was lost counts as destroyed.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	err := p.machineCall(ctx, id, "destroy", http.MethodDelete, "", url.Values{"force": {"true"}})
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound && e.afterUncertain {
		return nil
	}
	return err
}

// machineCall makes a call about machine id.
func (p *Provider) machineCall(ctx context.Context, id, action, method, path string, q url.Values) error {
	if id == "" {
		return fmt.Errorf("fly: app %s: %s: no machine id", p.api.app, action)
	}
	_, err := p.api.do(ctx, call{
		op:      action,
		action:  action,
		machine: id,
		method:  method,
		path:    "/" + url.PathEscape(id) + path,
		query:   q,
	})
	return err
}
