// Package fleet keeps the gateway's functions (edge WebRTC workers) where
// the viewers are: it starts or wakes one in a region whose viewers no
// function there can take, starts another before a region is full, keeps a
// minimum ready per listed region, stops functions idle for a while,
// destroys those stopped for long, replaces those that never connect to the
// relay or lose their connection, and drains on request. It works through
// a Provider (local processes, Fly Machines). The scheduler keeps choosing
// among the functions connected to the relay; the fleet makes sure there is
// something to choose (docs/fleet.md).
//
// One goroutine (Run) makes every decision, once a second and whenever a
// viewer could not be served in its region; it calls the provider without
// holding the fleet's lock, which guards only the members and the demand.
package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
)

// Relay is what the fleet needs of the relay server.
type Relay interface {
	// Functions returns the functions connected now.
	Functions() []relay.Function
	// Drain tells a function to take no new sessions.
	Drain(functionID, reason string) error
	// Disconnect closes a function's connection: the fleet gave up on it.
	Disconnect(functionID, reason string) error
}

// Config configures a Fleet. Zero durations and numbers take the defaults
// named.
type Config struct {
	Provider Provider // nil: no scaling, the fleet only reports the relay's functions
	Relay    Relay

	Regions []string // regions functions may run in (LS_FUNCTION_REGIONS); empty: any the viewers come from
	Home    string   // the gateway's region, for viewers that name none

	Min            int           // functions kept ready per listed region (LS_FUNCTION_MIN)
	ScaleAt        float64       // share of a region's capacity in use that starts another function, default 0.8
	IdleStop       time.Duration // a function without viewers this long is stopped, default 5m
	IdleDestroy    time.Duration // a stopped function unused this long is destroyed, default 24h
	ConnectTimeout time.Duration // a started function must connect to the relay within this, default 2m
	GoneTimeout    time.Duration // a function whose relay connection dropped and did not come back is replaced after this, default 30s
	ListEvery      time.Duration // how often the provider's list is read, default 5s
	Interval       time.Duration // how often decisions are made without demand, default 1s

	Ports    PortRange         // WebRTC UDP ports for new functions (LS_FUNCTION_UDP_PORTS)
	Capacity int               // viewers a new function takes (its LS_CAPACITY), default 500
	Env      map[string]string // the environment of every new function: relay address, secret, fingerprint

	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // where the metrics go; nil: nowhere
}

func (c Config) withDefaults() Config {
	if c.ScaleAt <= 0 || c.ScaleAt > 1 {
		c.ScaleAt = 0.8
	}
	if c.IdleStop <= 0 {
		c.IdleStop = 5 * time.Minute
	}
	if c.IdleDestroy <= 0 {
		c.IdleDestroy = 24 * time.Hour
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 2 * time.Minute
	}
	if c.GoneTimeout <= 0 {
		c.GoneTimeout = 30 * time.Second
	}
	if c.ListEvery <= 0 {
		c.ListEvery = 5 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.Capacity <= 0 {
		c.Capacity = 500
	}
	if c.Ports == (PortRange{}) {
		c.Ports = PortRange{First: 10000, Last: 10999}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for i, r := range c.Regions {
		c.Regions[i] = strings.ToLower(strings.TrimSpace(r))
	}
	c.Home = strings.ToLower(c.Home)
	return c
}

// The fleet's states of a function (docs/fleet.md).
const (
	StateStarting = "starting" // created or woken, not connected to the relay yet
	StateReady    = "ready"    // connected to the relay
	StateDraining = "draining" // takes no new viewers, stops when empty
	StateStopped  = "stopped"  // stopped by the fleet (or exited), can be woken
	StateFailed   = "failed"   // its provider could not run it; it is replaced
)

// Info describes one function, as GET /api/functions shows it.
type Info struct {
	ID        string    `json:"id"`                   // the relay's function id (the machine's id for managed ones)
	Machine   string    `json:"machine_id,omitempty"` // the provider's machine id; empty for a function the fleet did not start
	Provider  string    `json:"provider,omitempty"`
	Region    string    `json:"region"`
	State     string    `json:"state"`
	Viewers   int       `json:"viewers"`
	Capacity  int       `json:"capacity"`
	UDPAddr   string    `json:"udp_addr,omitempty"` // where viewers send media: the function's public address
	StartedAt time.Time `json:"started_at,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"` // last time it was connected to the relay
}

// member is one machine the fleet manages.
type member struct {
	m         Machine
	state     string
	since     time.Time // when it entered state
	idleSince time.Time // since when it has had no viewers; zero while it has
	lastSeen  time.Time
	viewers   int
	capacity  int
	udpAddr   string
	retire    bool // destroy rather than stop once drained (it runs an old image)
}

// Fleet manages the functions. Its methods are safe for concurrent use.
type Fleet struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	members  map[string]*member // by machine id
	wants    map[string]int     // region → rounds left to serve a viewer who could not be served there
	backoff  map[string]backoff // region → when starting there may be tried again
	listed   time.Time          // last provider list
	imaged   time.Time          // last check of the image new machines get
	ready    chan struct{}      // closed and replaced when a function becomes ready
	poke     chan struct{}      // wakes Run
	adopted  bool               // the first list was read
	inFlight map[string]bool    // regions with a start being made
}

// wantRounds is how many rounds (seconds) a region's demand lasts without
// a viewer asking again: long enough to retry failed starts a few times.
const wantRounds = 60

// backoff spaces failed starts in a region.
type backoff struct {
	until time.Time
	wait  time.Duration
}

// New returns a fleet; Run makes it work.
func New(cfg Config) *Fleet {
	cfg = cfg.withDefaults()
	f := &Fleet{
		cfg:      cfg,
		log:      cfg.Logger,
		members:  make(map[string]*member),
		wants:    make(map[string]int),
		backoff:  make(map[string]backoff),
		ready:    make(chan struct{}),
		poke:     make(chan struct{}, 1),
		inFlight: make(map[string]bool),
	}
	f.metrics = newMetrics(f, cfg.Registerer)
	return f
}

// Managed reports whether the fleet starts functions (it has a provider).
func (f *Fleet) Managed() bool { return f.cfg.Provider != nil }

// Run makes the fleet's decisions until ctx is done: first it adopts what
// the provider already runs, then it reconciles once a second and
// whenever a viewer could not be served in its region.
func (f *Fleet) Run(ctx context.Context) error {
	if f.cfg.Provider == nil {
		<-ctx.Done()
		return nil
	}
	t := time.NewTimer(f.cfg.Interval)
	defer t.Stop()
	for {
		f.reconcile(ctx, time.Now())
		// While a function starts, look for its relay connection often, so
		// that the viewers waiting for it and its start time do not wait
		// for the next round.
		next := f.cfg.Interval
		if f.starting() {
			next = min(next, startingInterval)
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.poke:
		}
	}
}

// startingInterval is how often a round runs while a function starts.
const startingInterval = 50 * time.Millisecond

// starting reports whether a function is starting.
func (f *Fleet) starting() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.members {
		if m.state == StateStarting {
			return true
		}
	}
	return false
}

// Want tells the fleet that a viewer in region could not be served by a
// function in its region (or the nearest listed one): it starts or wakes
// one there.
func (f *Fleet) Want(region string) {
	if f.cfg.Provider == nil {
		return
	}
	r := f.regionFor(region)
	f.mu.Lock()
	f.wants[r] = wantRounds
	f.mu.Unlock()
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// Ready returns a channel closed when a function next becomes ready.
func (f *Fleet) Ready() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

// regionFor is where functions for viewers of region run: region itself if
// functions may run there, else the nearest listed region. A viewer
// without a known region counts as the gateway's home region, or the first
// listed one, or "local" when the gateway knows none (one machine).
func (f *Fleet) regionFor(region string) string {
	region = strings.ToLower(region)
	if _, ok := scheduler.LookupRegion(region); !ok {
		region = f.cfg.Home
	}
	if region == "" && len(f.cfg.Regions) > 0 {
		region = f.cfg.Regions[0]
	}
	if region == "" {
		return "local"
	}
	if len(f.cfg.Regions) == 0 || slices.Contains(f.cfg.Regions, region) {
		return region
	}
	best, bestKm := "", math.Inf(1)
	for _, r := range f.cfg.Regions {
		km, ok := scheduler.Distance(region, r)
		if !ok {
			km = math.MaxFloat64
		}
		if best == "" || km < bestKm {
			best, bestKm = r, km
		}
	}
	return best
}

// Functions describes every function: those the fleet manages and those
// connected to the relay without it (embedded, or started by hand), by ID.
func (f *Fleet) Functions() []Info {
	conns := f.cfg.Relay.Functions()
	f.mu.Lock()
	out := make([]Info, 0, len(f.members)+len(conns))
	for _, m := range f.members {
		out = append(out, Info{
			ID: m.m.ID, Machine: m.m.ID, Provider: f.cfg.Provider.Name(), Region: m.m.Region, State: m.state,
			Viewers: m.viewers, Capacity: m.capacity, UDPAddr: m.udpAddr, StartedAt: m.m.Created, LastSeen: m.lastSeen,
		})
	}
	f.mu.Unlock()
	for _, c := range conns {
		if slices.ContainsFunc(out, func(i Info) bool { return i.ID == c.MachineID || i.ID == c.ID }) {
			continue
		}
		state := StateReady
		if c.Draining {
			state = StateDraining
		}
		out = append(out, Info{ID: c.ID, Region: c.Region, State: state, Viewers: c.Viewers, Capacity: c.Capacity,
			UDPAddr: c.MediaAddr, StartedAt: c.Connected, LastSeen: time.Now()})
	}
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// ErrUnknownFunction is returned by Drain for a function neither the fleet
// nor the relay knows.
var ErrUnknownFunction = errors.New("fleet: no such function")

// Drain marks a function draining: it takes no new viewers, keeps its
// current ones, and is stopped when it has none. A managed function's
// region gets a replacement first, so its capacity does not dip.
func (f *Fleet) Drain(id, reason string) error {
	f.mu.Lock()
	m := f.members[id]
	var region string
	if m != nil {
		if m.state == StateDraining {
			f.mu.Unlock()
			return nil
		}
		region = m.m.Region
		if m.state == StateReady || m.state == StateStarting {
			f.wants[region] = wantRounds // the replacement
		}
		f.setState(m, StateDraining, time.Now())
	}
	f.mu.Unlock()
	err := f.cfg.Relay.Drain(id, reason)
	switch {
	case m == nil && err != nil:
		return fmt.Errorf("%w: %s", ErrUnknownFunction, id)
	case err != nil && !errors.Is(err, relay.ErrFunctionGone):
		return err
	}
	f.log.Info("fleet: draining", "function", id, "region", region, "reason", reason)
	select {
	case f.poke <- struct{}{}:
	default:
	}
	return nil
}

// setState moves m to state; f.mu is held.
func (f *Fleet) setState(m *member, state string, now time.Time) {
	if m.state == state {
		return
	}
	m.state, m.since = state, now
	if state == StateReady {
		close(f.ready)
		f.ready = make(chan struct{})
	}
}

// reconcile makes one round of decisions at now.
func (f *Fleet) reconcile(ctx context.Context, now time.Time) {
	if !f.adopted || now.Sub(f.listed) >= f.cfg.ListEvery {
		f.list(ctx, now)
	}
	f.checkImage(ctx, now)
	conns := make(map[string]relay.Function)
	for _, c := range f.cfg.Relay.Functions() {
		conns[c.MachineID] = c
	}
	var acts []action
	f.mu.Lock()
	if !f.adopted {
		f.mu.Unlock()
		return // the provider's machines are not known yet: starting more could double them
	}
	// Every member's load is this round's before any decision reads a
	// region's (spare): the members are a map, in no order.
	for _, m := range f.members {
		f.see(m, conns, now)
	}
	for _, m := range f.members {
		acts = append(acts, f.observe(m, conns, now)...)
	}
	acts = append(acts, f.demand(now)...)
	for _, a := range acts {
		if a.kind == actStart {
			f.inFlight[a.region] = true
		}
	}
	f.mu.Unlock()
	for _, a := range acts {
		f.do(ctx, a, now)
	}
}

// imageEvery is how often the fleet asks an Imager for the image of new
// machines.
const imageEvery = time.Minute

// checkImage drains the functions that run another image than new
// machines get, once a minute: after a deploy of the function app, its
// functions are replaced (replacements first) and stop when empty.
func (f *Fleet) checkImage(ctx context.Context, now time.Time) {
	im, ok := f.cfg.Provider.(Imager)
	if !ok || (!f.imaged.IsZero() && now.Sub(f.imaged) < imageEvery) {
		return
	}
	f.imaged = now
	image, err := im.Image(ctx)
	if err != nil || image == "" {
		return
	}
	var old []string
	f.mu.Lock()
	for id, m := range f.members {
		if m.m.Image == "" || m.m.Image == image {
			continue
		}
		m.retire = true // never woken again: a stopped one is destroyed when unused
		if m.state == StateReady || m.state == StateStarting {
			old = append(old, id)
		}
	}
	f.mu.Unlock()
	for _, id := range old {
		if err := f.Drain(id, "runs an old image"); err != nil {
			f.log.Warn("fleet: drain", "function", id, "err", err)
		}
	}
}

// list reads the provider's machines: it adopts those the fleet does not
// know and follows what happened to the others.
func (f *Fleet) list(ctx context.Context, now time.Time) {
	machines, err := f.cfg.Provider.List(ctx)
	if err != nil {
		f.log.Warn("fleet: list machines", "provider", f.cfg.Provider.Name(), "err", err)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed = now
	seen := make(map[string]bool, len(machines))
	for _, mc := range machines {
		seen[mc.ID] = true
		m := f.members[mc.ID]
		if m == nil {
			if mc.State == Destroyed {
				continue
			}
			m = &member{m: mc, capacity: f.cfg.Capacity, since: now, lastSeen: time.Time{}}
			m.state = StateStarting
			switch mc.State {
			case Stopped, Stopping:
				m.state = StateStopped
			case Failed:
				m.state = StateFailed
			}
			f.members[mc.ID] = m
			f.log.Info("fleet: adopted", "function", mc.ID, "region", mc.Region, "state", m.state, "reason", "the provider runs it")
			continue
		}
		m.m.State = mc.State
		switch {
		case mc.State == Failed && m.state != StateFailed:
			f.setState(m, StateFailed, now)
		case (mc.State == Stopped || mc.State == Destroyed) && (m.state == StateReady || m.state == StateStarting):
			// It exited or was stopped behind the fleet's back.
			f.setState(m, StateFailed, now)
		}
	}
	for id, m := range f.members {
		if !seen[id] && m.state != StateStarting {
			delete(f.members, id) // destroyed outside the fleet
		}
	}
	f.adopted = true
}

// The kinds of action a round decides.
const (
	actStart   = iota // wake a stopped function in region, or create one
	actStop           // stop id
	actDestroy        // destroy id
	actReplace        // destroy id, then start another in region
)

// action is one provider call a round decided, with why.
type action struct {
	kind   int
	id     string
	region string
	reason string
}

// see takes what the relay's connections at now tell of one member: its
// load, and that a starting one is ready; f.mu is held.
func (f *Fleet) see(m *member, conns map[string]relay.Function, now time.Time) {
	c, connected := conns[m.m.ID]
	if connected {
		m.lastSeen, m.viewers, m.capacity, m.udpAddr = now, c.Viewers, c.Capacity, c.MediaAddr
		if m.state == StateStarting {
			f.metrics.startSeconds.Observe(now.Sub(m.since).Seconds())
			f.log.Info("fleet: function ready", "function", m.m.ID, "region", m.m.Region, "after", now.Sub(m.since).Round(time.Millisecond))
			f.setState(m, StateReady, now)
		}
		if m.viewers > 0 {
			m.idleSince = time.Time{}
		} else if m.idleSince.IsZero() {
			m.idleSince = now
		}
	}
}

// observe decides what to do about one member, seen at now (see); f.mu is
// held.
func (f *Fleet) observe(m *member, conns map[string]relay.Function, now time.Time) []action {
	_, connected := conns[m.m.ID]
	switch m.state {
	case StateStarting:
		if now.Sub(m.since) >= f.cfg.ConnectTimeout {
			return []action{{kind: actReplace, id: m.m.ID, region: m.m.Region, reason: "did not connect to the relay"}}
		}
	case StateReady:
		if !connected && now.Sub(m.lastSeen) >= f.cfg.GoneTimeout {
			return []action{{kind: actReplace, id: m.m.ID, region: m.m.Region, reason: "lost its relay connection"}}
		}
		if connected && m.viewers == 0 && now.Sub(m.idleSince) >= f.cfg.IdleStop && f.spare(m, now) {
			return []action{{kind: actStop, id: m.m.ID, region: m.m.Region, reason: "idle"}}
		}
	case StateDraining:
		if (!connected || m.viewers == 0) && m.retire {
			return []action{{kind: actDestroy, id: m.m.ID, region: m.m.Region, reason: "drained, runs an old image"}}
		}
		if !connected || m.viewers == 0 {
			return []action{{kind: actStop, id: m.m.ID, region: m.m.Region, reason: "drained"}}
		}
	case StateStopped:
		if m.retire {
			return []action{{kind: actDestroy, id: m.m.ID, region: m.m.Region, reason: "stopped, runs an old image"}}
		}
		if now.Sub(m.since) >= f.cfg.IdleDestroy {
			return []action{{kind: actDestroy, id: m.m.ID, region: m.m.Region, reason: "stopped and unused"}}
		}
	case StateFailed:
		return []action{{kind: actReplace, id: m.m.ID, region: m.m.Region, reason: "failed"}}
	}
	return nil
}

// spare reports whether m can stop: its region keeps its minimum, and the
// capacity left stays under the scale-out threshold, or the round after
// would start a function again for the load it still has (and stop it
// again when idle, and so on); f.mu is held.
func (f *Fleet) spare(m *member, now time.Time) bool {
	n, viewers, capacity := 0, 0, 0
	for _, o := range f.members {
		if o != m && o.m.Region == m.m.Region && (o.state == StateReady || o.state == StateStarting) {
			n++
			viewers += o.viewers
			capacity += o.capacity
		}
	}
	if viewers > 0 && float64(viewers) >= f.cfg.ScaleAt*float64(capacity) {
		return false
	}
	return n >= f.cfg.Min || !slices.Contains(f.cfg.Regions, m.m.Region)
}

// demand decides the starts of a round: regions whose viewers could not be
// served there, regions past the load threshold, listed regions under
// their minimum; f.mu is held.
func (f *Fleet) demand(now time.Time) []action {
	type load struct{ up, starting, viewers, capacity int }
	loads := make(map[string]*load)
	at := func(r string) *load {
		if loads[r] == nil {
			loads[r] = &load{}
		}
		return loads[r]
	}
	for _, m := range f.members {
		l := at(m.m.Region)
		switch m.state {
		case StateStarting:
			l.up++
			l.starting++
			l.capacity += m.capacity
		case StateReady:
			l.up++
			l.viewers += m.viewers
			l.capacity += m.capacity
		}
	}
	var acts []action
	planned := make(map[string]bool) // one start per region and round
	start := func(region, reason string) {
		if planned[region] || f.inFlight[region] || now.Before(f.backoff[region].until) {
			return
		}
		planned[region] = true
		acts = append(acts, action{kind: actStart, region: region, reason: reason})
	}
	for region, left := range f.wants {
		l := loads[region]
		switch {
		case left <= 0:
			delete(f.wants, region) // nobody asked for a while
		case l != nil && l.starting > 0:
			delete(f.wants, region) // one is on its way
		case l != nil && l.viewers < l.capacity && !f.drainingIn(region):
			delete(f.wants, region) // there is room
		default:
			f.wants[region] = left - 1
			start(region, "viewers with no function in their region")
		}
	}
	for region, l := range loads {
		if l.starting == 0 && l.capacity > 0 && float64(l.viewers) >= f.cfg.ScaleAt*float64(l.capacity) {
			start(region, fmt.Sprintf("load %d of %d viewers", l.viewers, l.capacity))
		}
	}
	for _, region := range f.cfg.Regions {
		up := 0
		if l := loads[region]; l != nil {
			up = l.up
		}
		if up < f.cfg.Min {
			start(region, "below the minimum")
		}
	}
	return acts
}

// drainingIn reports whether region has a draining function whose
// replacement was asked for; f.mu is held.
func (f *Fleet) drainingIn(region string) bool {
	for _, m := range f.members {
		if m.m.Region == region && m.state == StateDraining && m.viewers > 0 {
			return true
		}
	}
	return false
}

// do carries out one action through the provider.
func (f *Fleet) do(ctx context.Context, a action, now time.Time) {
	p := f.cfg.Provider
	switch a.kind {
	case actStart:
		defer func() {
			f.mu.Lock()
			delete(f.inFlight, a.region)
			f.mu.Unlock()
		}()
		if id := f.stoppedIn(a.region); id != "" {
			if err := p.Start(ctx, id); err == nil {
				f.mu.Lock()
				if m := f.members[id]; m != nil {
					f.setState(m, StateStarting, now)
					m.idleSince = time.Time{}
				}
				delete(f.wants, a.region)
				f.mu.Unlock()
				f.metrics.count(f.metrics.wakes, a.region)
				f.log.Info("fleet: woke", "function", id, "region", a.region, "reason", a.reason)
				return
			} else {
				f.log.Warn("fleet: wake failed", "function", id, "region", a.region, "err", err)
			}
		}
		port, ok := f.freePort()
		if !ok {
			f.failed(a.region, now, errors.New("no free UDP port in LS_FUNCTION_UDP_PORTS"))
			return
		}
		env := make(map[string]string, len(f.cfg.Env)+1)
		for k, v := range f.cfg.Env {
			env[k] = v
		}
		env["LS_CAPACITY"] = fmt.Sprint(f.cfg.Capacity)
		mc, err := p.Create(ctx, Spec{Region: a.region, Port: port, Env: env})
		if err != nil {
			f.failed(a.region, now, err)
			return
		}
		f.mu.Lock()
		f.members[mc.ID] = &member{m: mc, state: StateStarting, since: now, capacity: f.cfg.Capacity}
		delete(f.wants, a.region)
		delete(f.backoff, a.region)
		f.mu.Unlock()
		f.metrics.count(f.metrics.starts, a.region)
		f.log.Info("fleet: started", "function", mc.ID, "region", a.region, "port", port, "reason", a.reason)
	case actStop:
		if err := p.Stop(ctx, a.id); err != nil && !errors.Is(err, ErrNotFound) {
			f.metrics.count(f.metrics.failures, a.region)
			f.log.Warn("fleet: stop failed", "function", a.id, "region", a.region, "err", err)
			return
		}
		f.mu.Lock()
		if m := f.members[a.id]; m != nil {
			f.setState(m, StateStopped, now)
		}
		f.mu.Unlock()
		f.metrics.count(f.metrics.stops, a.region)
		f.log.Info("fleet: stopped", "function", a.id, "region", a.region, "reason", a.reason)
	case actDestroy, actReplace:
		if err := p.Destroy(ctx, a.id); err != nil && !errors.Is(err, ErrNotFound) {
			f.metrics.count(f.metrics.failures, a.region)
			f.log.Warn("fleet: destroy failed", "function", a.id, "region", a.region, "err", err)
			return
		}
		// A dead process's connection lingers until QUIC's idle timeout;
		// meanwhile viewers would be sent to it.
		f.cfg.Relay.Disconnect(a.id, a.reason)
		f.mu.Lock()
		delete(f.members, a.id)
		if a.kind == actReplace {
			f.wants[a.region] = wantRounds
		}
		f.mu.Unlock()
		f.metrics.count(f.metrics.destroys, a.region)
		f.log.Info("fleet: destroyed", "function", a.id, "region", a.region, "reason", a.reason)
		if a.kind == actReplace {
			f.metrics.count(f.metrics.failures, a.region)
			select {
			case f.poke <- struct{}{}:
			default:
			}
		}
	}
}

// failed records a start that failed in region and backs the next off.
func (f *Fleet) failed(region string, now time.Time, err error) {
	f.metrics.count(f.metrics.failures, region)
	f.mu.Lock()
	b := f.backoff[region]
	b.wait = min(max(2*b.wait, time.Second), time.Minute)
	b.until = now.Add(b.wait)
	f.backoff[region] = b
	f.mu.Unlock()
	f.log.Warn("fleet: start failed", "region", region, "err", err, "retry_in", b.wait)
}

// stoppedIn returns a stopped function of region to wake, if any.
func (f *Fleet) stoppedIn(region string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, m := range f.members {
		if m.m.Region == region && m.state == StateStopped && !m.retire {
			return id
		}
	}
	return ""
}

// freePort returns the lowest port of the range no member uses.
func (f *Fleet) freePort() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	used := make(map[int]bool, len(f.members))
	for _, m := range f.members {
		used[m.m.Port] = true
	}
	for p := f.cfg.Ports.First; p <= f.cfg.Ports.Last; p++ {
		if !used[p] {
			return p, true
		}
	}
	return 0, false
}
