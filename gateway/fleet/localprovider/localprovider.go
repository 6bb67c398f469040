// Package localprovider is the fleet's "local" provider: it runs each
// function as a child process of the gateway, on the gateway's machine.
//
// A machine is one process of the function command (by default the
// gateway's own executable with the argument "function"), given the
// spec's environment and its own LS_REGION, LS_WEBRTC_UDP_ADDR and
// LS_MACHINE_ID, so the id the function announces to the relay is the
// machine's id. What it writes goes to the provider's logger, line by
// line, with its id (key "function") and region.
//
// A process's life maps to fleet states so:
//
//	Started   the process runs (Create, Start)
//	Stopping  Stop asked it to exit: SIGTERM, then SIGKILL after Config.Grace
//	Stopped   it exited after Stop, after the gateway's context ended or
//	          Close, or by itself with status 0 (a function idle for
//	          LS_IDLE_EXIT); Start runs it again
//	Failed    it exited by itself with another status or a signal, or
//	          Start could not run it again
//
// A process that cannot be started by Create leaves no machine behind:
// Create returns the error.
//
// Machines cannot be adopted across gateway restarts: they are children
// of the gateway and end with it (on Linux they get SIGTERM even when the
// gateway is killed), so a new provider lists none and the fleet creates
// its functions afresh.
package localprovider

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"lightspeed/gateway/fleet"
	"lightspeed/shared/envconfig"
)

// DefaultGrace is how long a function has to exit after SIGTERM when
// Config.Grace is zero.
const DefaultGrace = 10 * time.Second

// Config configures a Provider.
type Config struct {
	// Command is the function's command line: a binary and its
	// arguments. Empty: the gateway's own executable with the argument
	// "function". A separate function binary (LS_FUNCTION_BIN) is given
	// alone, run without arguments.
	Command []string
	// Env is environment every function gets (settings shared by all,
	// such as LS_LOG_LEVEL); a spec's Env overrides it. The gateway's own
	// LS_ variables are not passed on: they configure the gateway.
	Env map[string]string
	// Host is the address functions bind their WebRTC port on; empty:
	// every interface.
	Host string
	// Grace is how long a function has after SIGTERM before it is
	// killed; zero: DefaultGrace.
	Grace time.Duration
	// Logger receives the provider's events and every line its functions
	// write; nil: slog.Default().
	Logger *slog.Logger
}

// Provider runs functions as child processes. It is safe for concurrent
// use.
type Provider struct {
	command []string
	env     map[string]string
	host    string
	grace   time.Duration
	log     *slog.Logger

	ctx    context.Context // ends every process
	cancel context.CancelFunc
	runs   sync.WaitGroup // one goroutine per process, waiting for it

	mu       sync.Mutex
	machines map[string]*machine // by id; destroyed machines are gone
	closed   bool
}

var _ fleet.Provider = (*Provider)(nil)

// machine is one function the provider knows, and its process if it has
// one. Its fields are guarded by Provider.mu.
type machine struct {
	fleet.Machine
	env []string // the process's whole environment, the same at every start
	run *run     // nil when no process runs
}

// run is one process of a machine.
type run struct {
	cmd      *exec.Cmd
	out      *output
	cancel   context.CancelFunc // sends SIGTERM, and SIGKILL after the grace
	stopping bool               // the provider asked it to exit (guarded by Provider.mu)
	done     chan struct{}      // closed once it exited and its state is set
}

// errClosed is the cause of a request to a closed provider.
var errClosed = errors.New("provider closed")

// New returns a provider whose processes end with ctx (the gateway's):
// when it is done they get SIGTERM, as with Close, but nobody waits for
// them; call Close to wait.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	command := slices.Clone(cfg.Command)
	if len(command) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local: the gateway's executable: %w", err)
		}
		command = []string{self, "function"}
	}
	if command[0] == "" {
		return nil, errors.New("local: the function command has no binary")
	}
	p := &Provider{
		command:  command,
		env:      maps.Clone(cfg.Env),
		host:     cfg.Host,
		grace:    cfg.Grace,
		log:      cfg.Logger,
		machines: make(map[string]*machine),
	}
	if p.grace <= 0 {
		p.grace = DefaultGrace
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	return p, nil
}

// Name is "local".
func (p *Provider) Name() string { return "local" }

// List returns every machine not destroyed, oldest first.
func (p *Provider) List(ctx context.Context) ([]fleet.Machine, error) {
	p.mu.Lock()
	list := make([]fleet.Machine, 0, len(p.machines))
	for _, m := range p.machines {
		list = append(list, m.Machine)
	}
	p.mu.Unlock()
	slices.SortFunc(list, func(a, b fleet.Machine) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return list, nil
}

// Create starts a function process for spec. Its port must be free of
// the provider's other machines (stopped ones keep theirs).
func (p *Provider) Create(ctx context.Context, spec fleet.Spec) (fleet.Machine, error) {
	if spec.Port < 1 || spec.Port > 65535 {
		return fleet.Machine{}, fmt.Errorf("local: region %s: create: port %d is not a UDP port", spec.Region, spec.Port)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fleet.Machine{}, fmt.Errorf("local: region %s: create: %w", spec.Region, errClosed)
	}
	for _, m := range p.machines {
		if m.Port == spec.Port {
			return fleet.Machine{}, fmt.Errorf("local: region %s: create: port %d is machine %s's", spec.Region, spec.Port, m.ID)
		}
	}
	id := p.newID(spec.Region)
	m := &machine{Machine: fleet.Machine{
		ID:      id,
		Region:  spec.Region,
		State:   fleet.Starting,
		Port:    spec.Port,
		Image:   p.command[0],
		Created: time.Now(),
	}}
	m.env = p.environ(spec, id)
	if err := p.start(m); err != nil {
		return fleet.Machine{}, err
	}
	p.machines[id] = m
	return m.Machine, nil
}

// newID returns an unused id local-<region>-<8 hex>. p.mu is held.
func (p *Provider) newID(region string) string {
	for {
		var b [4]byte
		rand.Read(b[:])
		id := fmt.Sprintf("local-%s-%x", region, b)
		if region == "" {
			id = fmt.Sprintf("local-%x", b)
		}
		if p.machines[id] == nil {
			return id
		}
	}
}

// environ is the whole environment of machine id's process: the
// gateway's without its LS_ settings, then the provider's Env, the spec's
// Env, and what the provider decides.
func (p *Provider) environ(spec fleet.Spec, id string) []string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && !strings.HasPrefix(k, envconfig.Prefix) {
			env[k] = v
		}
	}
	maps.Copy(env, p.env)
	maps.Copy(env, spec.Env)
	env["LS_REGION"] = spec.Region
	env["LS_WEBRTC_UDP_ADDR"] = net.JoinHostPort(p.host, strconv.Itoa(spec.Port))
	env["LS_MACHINE_ID"] = id
	list := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		list = append(list, k+"="+env[k])
	}
	return list
}

// start starts m's process and a goroutine that waits for it. p.mu is
// held and m has no process.
func (p *Provider) start(m *machine) error {
	ctx, cancel := context.WithCancel(p.ctx)
	cmd := exec.CommandContext(ctx, p.command[0], p.command[1:]...)
	cmd.Env = m.env
	// One writer for both streams: exec then makes one pipe and writes
	// from one goroutine, so lines are never interleaved mid-way.
	out := &output{log: p.log.With("function", m.ID, "region", m.Region)}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = p.grace // then SIGKILL, and its output is cut off
	if err := cmd.Start(); err != nil {
		cancel()
		m.State = fleet.Failed
		return fmt.Errorf("local: machine %s: start: %w", m.ID, err)
	}
	r := &run{cmd: cmd, out: out, cancel: cancel, done: make(chan struct{})}
	m.run, m.State = r, fleet.Started
	p.runs.Go(func() { p.wait(m, r) })
	p.log.Info("local: function started", "function", m.ID, "region", m.Region, "port", m.Port, "pid", cmd.Process.Pid)
	return nil
}

// wait waits for r, m's process, to exit and sets m's state.
func (p *Provider) wait(m *machine, r *run) {
	err := r.cmd.Wait()
	r.out.flush()
	r.cancel()
	exit, code := "", -1
	if ps := r.cmd.ProcessState; ps != nil {
		exit, code = ps.String(), ps.ExitCode()
	} else {
		exit = err.Error()
	}

	p.mu.Lock()
	asked := r.stopping || p.ctx.Err() != nil
	state := fleet.Stopped
	if !asked && code != 0 {
		state = fleet.Failed
	}
	if m.run == r {
		m.run = nil
		if m.State != fleet.Destroyed {
			m.State = state
		}
	}
	p.mu.Unlock()
	close(r.done)

	args := []any{"function", m.ID, "region", m.Region, "exit", exit}
	switch {
	case asked:
		p.log.Info("local: function stopped", args...)
	case state == fleet.Stopped:
		p.log.Info("local: function exited", args...)
	default:
		p.log.Error("local: function failed", args...)
	}
}

// Start runs a stopped or failed machine again, with the same id, region,
// port and environment. A machine still stopping is waited for (within
// ctx); one running is left alone.
func (p *Provider) Start(ctx context.Context, id string) error {
	for {
		p.mu.Lock()
		m, err := p.machine(id, "start")
		if err != nil {
			p.mu.Unlock()
			return err
		}
		if m.run == nil {
			if p.closed {
				err = fmt.Errorf("local: machine %s: start: %w", id, errClosed)
			} else {
				err = p.start(m)
			}
			p.mu.Unlock()
			return err
		}
		r := m.run
		stopping := r.stopping
		p.mu.Unlock()
		if !stopping {
			return nil
		}
		select {
		case <-r.done:
		case <-ctx.Done():
			return fmt.Errorf("local: machine %s: start: still stopping: %w", id, ctx.Err())
		}
	}
}

// Stop asks a machine's process to exit: SIGTERM, then SIGKILL after the
// grace. List shows it Stopped once it has exited.
func (p *Provider) Stop(ctx context.Context, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, err := p.machine(id, "stop")
	if err != nil {
		return err
	}
	if m.run != nil && !m.run.stopping {
		m.run.stopping = true
		m.run.cancel()
		m.State = fleet.Stopping
	}
	return nil
}

// Destroy forgets a machine at once and stops its process, then waits
// (within ctx) for the process to exit, so that its port is free when
// Destroy returns.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	p.mu.Lock()
	m, err := p.machine(id, "destroy")
	if err != nil {
		p.mu.Unlock()
		return err
	}
	delete(p.machines, id)
	m.State = fleet.Destroyed
	r := m.run
	if r != nil {
		r.stopping = true
		r.cancel()
	}
	p.mu.Unlock()
	if r == nil {
		return nil
	}
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("local: machine %s: destroy: still exiting: %w", id, ctx.Err())
	}
}

// machine returns the machine id, or an error wrapping fleet.ErrNotFound
// about op. p.mu is held.
func (p *Provider) machine(id, op string) (*machine, error) {
	m := p.machines[id]
	if m == nil {
		return nil, fmt.Errorf("local: machine %s: %s: %w", id, op, fleet.ErrNotFound)
	}
	return m, nil
}

// Close stops every process (SIGTERM, then SIGKILL after the grace) and
// waits for them to exit. Their machines stay listed, Stopped; they
// cannot be started again.
func (p *Provider) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.runs.Wait()
}
