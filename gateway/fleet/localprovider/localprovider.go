// Package localprovider is the fleet's "local" provider: it runs each
// function as a process on the gateway's machine.
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
//	Started   the process runs (Create, Start, or adopted by New)
//	Stopping  Stop asked it to exit: SIGTERM, then SIGKILL after Config.Grace
//	Stopped   it exited after Stop, after the gateway's context ended or
//	          Close, or by itself with status 0 (a function idle for
//	          LS_IDLE_EXIT); Start runs it again
//	Failed    it exited by itself with another status or a signal (an
//	          adopted process: exited by itself at all, its status being
//	          unknown), or Start could not run it again
//
// A process that cannot be started by Create leaves no machine behind:
// Create returns the error.
//
// The provider works in one of two modes, by Config.StateDir:
//
// Without a state directory, machines cannot be adopted across gateway
// restarts: they are children of the gateway and end with it (on Linux
// they get SIGTERM even when the gateway is killed), so a new provider
// lists none and the fleet creates its functions afresh. Their output
// reaches the gateway through a pipe.
//
// With a state directory (Linux only: adoption reads /proc), a gateway
// that stops gracefully (its context ends, or Close) still stops every
// process, but one that is killed or crashes leaves them running, and a
// provider started again on the same directory adopts them. The
// directory holds, for each machine:
//
//	<id>.json  its record: id, region, port, the spec's environment (to
//	           run it again with the same environment), created time, state,
//	           and the pid and start time (/proc/<pid>/stat field 22) of
//	           its process; written atomically at every change, removed
//	           by Destroy
//	<id>.log   what its processes write (stdout and stderr), appended,
//	           emptied once past 10 MB; the provider follows it to its
//	           logger, removed by Destroy
//
// New reads the records: a machine whose process still runs (the same
// pid and start time, and LS_MACHINE_ID=<id> in its environment) is
// adopted as Started, its log followed from its end; any other is
// Stopped, so Start runs it again with the same id, region, port and
// environment; a record that cannot be read is logged and removed. In
// this mode processes have a session of their own and no parent-death
// signal, and write to a file rather than a pipe, so that they neither
// end with the gateway nor die of SIGPIPE once nobody reads their
// output. An adopted process is not the gateway's child: the provider
// polls /proc to see it exit (its exit status is unknown). After a
// graceful stop the records stay, Stopped, so that a later gateway
// starts those machines again or destroys them.
//
// The records hold the spec's environment, secrets included: the files
// are 0600, and the directory, if New makes it, 0700.
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
	"runtime"
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
	// StateDir is where the provider keeps a record and a log file of
	// each machine, so that functions outlive a gateway that is killed
	// and a provider started again on the same directory adopts them
	// (see the package comment). It is created if missing. Empty: the
	// functions end with the gateway and nothing is adopted. Linux only:
	// elsewhere New fails.
	StateDir string
}

// Provider runs functions as processes. It is safe for concurrent use.
type Provider struct {
	command  []string
	env      map[string]string
	host     string
	grace    time.Duration
	log      *slog.Logger
	stateDir string // empty: no records, no adoption

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
	specEnv map[string]string // the spec's Env, kept in the record
	env     []string          // the process's whole environment, the same at every start
	run     *run              // nil when no process runs
}

// run is one process of a machine: a child of the provider, or a
// process it adopted.
type run struct {
	pid      int
	start    uint64             // its start time, /proc/<pid>/stat field 22 (0 where unknown)
	stop     context.CancelFunc // asks it to exit: SIGTERM, then SIGKILL after the grace
	stopping bool               // the provider asked it to exit (guarded by Provider.mu)
	done     chan struct{}      // closed once it exited and its state is set
}

// errClosed is the cause of a request to a closed provider.
var errClosed = errors.New("provider closed")

// New returns a provider whose processes end with ctx (the gateway's):
// when it is done they get SIGTERM, as with Close, but nobody waits for
// them; call Close to wait. With a state directory it first adopts the
// machines recorded there.
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
	if cfg.StateDir != "" && runtime.GOOS != "linux" {
		return nil, fmt.Errorf("local: a state directory needs Linux's /proc to adopt functions, not %s", runtime.GOOS)
	}
	p := &Provider{
		command:  command,
		env:      maps.Clone(cfg.Env),
		host:     cfg.Host,
		grace:    cfg.Grace,
		log:      cfg.Logger,
		stateDir: cfg.StateDir,
		machines: make(map[string]*machine),
	}
	if p.grace <= 0 {
		p.grace = DefaultGrace
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	if p.stateDir != "" {
		if err := p.load(); err != nil {
			p.Close()
			return nil, err
		}
	}
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
	m.specEnv = maps.Clone(spec.Env)
	m.env = p.environ(spec, id)
	if err := p.start(m); err != nil {
		p.remove(id) // its log file, if it has one
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

// start starts m's process and a goroutine that waits for it, and
// records it. p.mu is held and m has no process.
func (p *Provider) start(m *machine) error {
	ctx, cancel := context.WithCancel(p.ctx)
	cmd := exec.CommandContext(ctx, p.command[0], p.command[1:]...)
	cmd.Env = m.env
	fail := func(err error) error {
		cancel()
		m.State = fleet.Failed
		if p.machines[m.ID] == m { // not a machine Create is making
			p.save(m)
		}
		return fmt.Errorf("local: machine %s: start: %w", m.ID, err)
	}
	// finish is called once the process has exited, to log the last of
	// its output.
	var finish func()
	if p.stateDir == "" {
		// One writer for both streams: exec then makes one pipe and
		// writes from one goroutine, so lines are never interleaved
		// mid-way.
		out := &output{log: p.functionLog(m)}
		cmd.Stdout, cmd.Stderr = out, out
		finish = out.flush
	} else {
		// A file, not a pipe: the process may outlive the gateway, and
		// writing to a pipe nobody reads would kill it (SIGPIPE). The
		// provider follows the file from its end before the process
		// starts, so it logs all the process writes.
		f, err := p.openLog(m.ID)
		if err != nil {
			return fail(err)
		}
		defer f.Close() // the process has its own copy
		t, err := p.follow(m)
		if err != nil {
			return fail(err)
		}
		cmd.Stdout, cmd.Stderr = f, f
		finish = t.close
	}
	cmd.SysProcAttr = sysProcAttr(p.stateDir != "")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = p.grace // then SIGKILL, and its output is cut off
	if err := cmd.Start(); err != nil {
		finish()
		return fail(err)
	}
	r := &run{pid: cmd.Process.Pid, stop: cancel, done: make(chan struct{})}
	if p.stateDir != "" {
		// Read now, while the process cannot have been reaped: it is
		// what tells a later provider that this pid is still this
		// process.
		if _, start, err := procStat(r.pid); err == nil {
			r.start = start
		} else {
			p.log.Warn("local: function's start time", "function", m.ID, "pid", r.pid, "err", err)
		}
	}
	m.run, m.State, m.Image = r, fleet.Started, p.command[0]
	p.save(m)
	p.runs.Go(func() { p.wait(m, r, cmd, finish) })
	p.log.Info("local: function started", "function", m.ID, "region", m.Region, "port", m.Port, "pid", r.pid)
	return nil
}

// functionLog is the logger of m's output lines.
func (p *Provider) functionLog(m *machine) *slog.Logger {
	return p.log.With("function", m.ID, "region", m.Region)
}

// wait waits for r, m's child process cmd, to exit, calls finish and
// sets m's state.
func (p *Provider) wait(m *machine, r *run, cmd *exec.Cmd, finish func()) {
	err := cmd.Wait()
	finish()
	r.stop()
	exit, code := "", -1
	if ps := cmd.ProcessState; ps != nil {
		exit, code = ps.String(), ps.ExitCode()
	} else {
		exit = err.Error()
	}
	p.exited(m, r, exit, code == 0)
}

// exited sets m's state once r, its process, has exited (its output
// logged): Stopped if the provider asked it to exit or it exited cleanly,
// Failed otherwise; and updates or removes m's record.
func (p *Provider) exited(m *machine, r *run, exit string, clean bool) {
	p.mu.Lock()
	asked := r.stopping || p.ctx.Err() != nil
	state := fleet.Stopped
	if !asked && !clean {
		state = fleet.Failed
	}
	if m.run == r {
		m.run = nil
		if m.State != fleet.Destroyed {
			m.State = state
		}
		if m.State == fleet.Destroyed {
			p.remove(m.ID)
		} else {
			p.save(m)
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
		m.run.stop()
		m.State = fleet.Stopping
		p.save(m)
	}
	return nil
}

// Destroy forgets a machine at once and stops its process, then waits
// (within ctx) for the process to exit, so that its port is free when
// Destroy returns. Its record goes once no process runs.
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
		r.stop()
	} else {
		p.remove(id)
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

// Close stops every process, adopted ones too (SIGTERM, then SIGKILL
// after the grace), and waits for them to exit. Their machines stay
// listed, Stopped, and so do their records; they cannot be started again
// by this provider.
func (p *Provider) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.runs.Wait()
}
