package simulation

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v3"

	functionapp "lightspeed/function/app"
	"lightspeed/gateway/app"
	"lightspeed/gateway/fleet"
	"lightspeed/shared/envconfig"
	"lightspeed/shared/testkit/lossy"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
	"lightspeed/shared/testkit/viewer"
)

// The roles the test binary plays in the namespaces; parameters come in
// SIM_ variables (LS_ ones configure the gateway and the functions).
const (
	roleGateway  = "sim-gateway"  // the gateway and a publisher streaming to it, in the center
	roleFunction = "sim-function" // a function, started by the local provider in its region
	roleViewer   = "sim-viewer"   // a viewer that watches $SIM_WHEP from $SIM_REGION, and comes back when it loses the stream
	roleDelay    = "sim-delay"    // a UDP forwarder on 127.0.0.1 to $SIM_TARGET, $SIM_DELAY each way
	roleObserver = "sim-observer" // prints the fleet (GET /api/functions) whenever it changes
)

const (
	streamKey = "77-simulationkey"
	httpPort  = "8080"
	relayPort = "4433"
	// runVar marks every process of one run, so that the test can find
	// and end what is left of it.
	runVar = "SIM_RUN"
)

// region is a simulated region and the one-way delay of its relay path
// to the gateway.
type region struct {
	name  string
	delay time.Duration
}

// regions are the default regions. The gateway's site is nearest
// Amsterdam.
var regions = []region{
	{"ams", 5 * time.Millisecond},
	{"sin", 80 * time.Millisecond},
	{"syd", 110 * time.Millisecond},
}

func TestMain(m *testing.M) {
	var err error
	switch role := netns.Role(); role {
	case "":
		os.Exit(m.Run())
	case roleGateway:
		err = serveGateway()
	case roleFunction:
		err = functionapp.Main(nil, io.Discard)
	case roleViewer:
		err = serveViewer()
	case roleDelay:
		err = serveDelay()
	case roleObserver:
		err = serveObserver()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// signalled returns a context that ends on SIGTERM or an interrupt.
func signalled() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
}

// serveGateway runs a gateway configured by its LS_ variables, as the
// gateway command does, with a publisher streaming the test media to it.
func serveGateway() error {
	ctx, stop := signalled()
	defer stop()
	var cfg app.Config
	if err := envconfig.Load(&cfg, "gateway", nil, io.Discard); err != nil {
		return err
	}
	store, err := app.OpenKeys(cfg)
	if err != nil {
		return err
	}
	g, err := app.New(cfg, store, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	key := cfg.StreamKey
	if key == "" { // the data dir's, as the gateway command makes it
		k, _, err := store.EnsureDefault(cfg.DefaultChannel)
		if err != nil {
			return err
		}
		key = k.String()
	}
	live := func() bool { h := g.Hubs().Get(77); return h != nil && h.Stats().Live }
	return stackrole.Stack{Gateway: g, StreamKey: key, Live: live}.Run(ctx)
}

// serveDelay forwards UDP from 127.0.0.1 to $SIM_TARGET with $SIM_DELAY
// each way, and prints "FORWARD <its address>".
func serveDelay() error {
	ctx, stop := signalled()
	defer stop()
	delay, err := time.ParseDuration(os.Getenv("SIM_DELAY"))
	if err != nil {
		return err
	}
	f, err := lossy.New(os.Getenv("SIM_TARGET"))
	if err != nil {
		return err
	}
	defer f.Close()
	f.SetDelay(delay)
	fmt.Println("FORWARD", f.Addr())
	<-ctx.Done()
	return nil
}

// serveObserver prints "FUNCTIONS <json>" whenever the fleet's functions,
// by id, region, state and viewers, change, and "DOWN <n>" the nth time
// the gateway stops answering; it keeps asking across gateway restarts.
// For each name=address of $SIM_SCRAPE it prints "STATS <name>
// <goroutines> <heap bytes in use> <unix ms>" from the metrics there,
// every tick.
func serveObserver() error {
	ctx, stop := signalled()
	defer stop()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	downs := 0
	var scrape [][2]string // name, address
	for _, t := range strings.Split(os.Getenv("SIM_SCRAPE"), ",") {
		if name, addr, ok := strings.Cut(t, "="); ok {
			scrape = append(scrape, [2]string{name, addr})
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, target := range scrape {
			if g, h, err := goStats(client, target[1]); err == nil {
				fmt.Println("STATS", target[0], g, h, time.Now().UnixMilli())
			}
		}
		fs, err := getFunctions(client, "http://127.0.0.1:"+httpPort+"/api/functions")
		if err != nil {
			if last != "" { // the gateway went away
				downs++
				fmt.Println("DOWN", downs)
				last = ""
			}
			continue
		}
		for i := range fs {
			fs[i].StartedAt, fs[i].LastSeen = time.Time{}, time.Time{}
		}
		slices.SortFunc(fs, func(a, b fleet.Info) int { return strings.Compare(a.ID, b.ID) })
		b, _ := json.Marshal(fs)
		if s := string(b); s != last {
			fmt.Println("FUNCTIONS", s)
			last = s
		}
	}
}

// goStats reads go_goroutines and go_memstats_heap_inuse_bytes from the
// Prometheus text at http://addr/metrics.
func goStats(client *http.Client, addr string) (goroutines, heap int64, err error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, l := range strings.Split(string(b), "\n") {
		var v float64
		if _, err := fmt.Sscanf(l, "go_goroutines %g", &v); err == nil {
			goroutines, found = int64(v), found+1
		} else if _, err := fmt.Sscanf(l, "go_memstats_heap_inuse_bytes %g", &v); err == nil {
			heap, found = int64(v), found+1
		}
	}
	if found != 2 {
		return 0, 0, errors.New("no Go metrics")
	}
	return goroutines, heap, nil
}

func getFunctions(client *http.Client, url string) ([]fleet.Info, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var fs []fleet.Info
	return fs, json.NewDecoder(resp.Body).Decode(&fs)
}

// serveViewer runs $SIM_VIEWERS viewers (default 1) of $SIM_WHEP from
// $SIM_REGION (in the Fly-Region header, as Fly's edge sets it); like the
// viewer page, each comes back with a new session when it loses the
// stream. Viewer i prints "SERVED <i> <session> <served by>" for each
// session, "PLAYING <i> <session> <unix ms>" once 30 video packets arrived,
// "RECEIVED <i> <session> <video packets> <lost> <delay grown, ms>" every
// half second (delay grown: see delayMeter; lost:
// sequence numbers of the session's video never received), and "LOST <i>
// <session> <why>" when it gives a session up.
func serveViewer() error {
	ctx, stop := signalled()
	defer stop()
	n := 1
	if v := os.Getenv("SIM_VIEWERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			return fmt.Errorf("SIM_VIEWERS=%q", v)
		}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for session := 1; ; session++ {
				err := watchOnce(ctx, i, session)
				if ctx.Err() != nil {
					return
				}
				fmt.Printf("LOST %d %d %v\n", i, session, err)
				select { // a page waits a moment too before it reconnects
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		})
	}
	wg.Wait()
	return nil
}

// stalled is how long a viewer goes without video before it reconnects, as
// the viewer page does.
const stalled = 5 * time.Second

// gapCounter counts the sequence numbers of a stream never received: a
// number skipped is missing until it arrives (recovered by NACK) or falls
// 512 behind the newest, when it counts as lost.
type gapCounter struct {
	mu      sync.Mutex
	started bool
	newest  uint16
	missing map[uint16]struct{}
	lost    int
}

func (g *gapCounter) add(seq uint16) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		g.started, g.newest, g.missing = true, seq, map[uint16]struct{}{}
		return
	}
	d := int16(seq - g.newest)
	if d <= 0 {
		delete(g.missing, seq)
		return
	}
	for s := g.newest + 1; s != seq && len(g.missing) < 4096; s++ {
		g.missing[s] = struct{}{}
	}
	g.newest = seq
	for s := range g.missing {
		if int16(g.newest-s) > 512 {
			delete(g.missing, s)
			g.lost++
		}
	}
}

// delayMeter follows how late a stream's video arrives against its own
// clock: each packet's arrival time less its RTP timestamp's time, both
// counted from the first packet. Its minimum over a window is the
// window's delay up to a constant; the constant is the minimum of the
// window that ends baselineAfter into the session (after the cached
// keyframe's burst, whose timestamps are older than the live ones), so
// what it reports is how much the delay grew since.
type delayMeter struct {
	mu               sync.Mutex
	start            time.Time
	firstTS          uint32
	windowMin        float64 // ms, of the window going on
	windowEnd        time.Time
	last             float64 // ms, the minimum of the last full window
	base             float64
	hasBase, started bool
}

const (
	delayWindow   = 2 * time.Second
	baselineAfter = 4 * time.Second
)

func (m *delayMeter) add(ts uint32, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		m.started, m.start, m.firstTS = true, now, ts
		m.windowMin, m.windowEnd = math.Inf(1), now.Add(delayWindow)
	}
	off := float64(now.Sub(m.start).Microseconds())/1000 - float64(ts-m.firstTS)/90
	m.windowMin = min(m.windowMin, off)
	if now.After(m.windowEnd) {
		m.last = m.windowMin
		if !m.hasBase && now.Sub(m.start) >= baselineAfter {
			m.base, m.hasBase = m.windowMin, true
		}
		m.windowMin, m.windowEnd = math.Inf(1), now.Add(delayWindow)
	}
}

// grown returns how much the delay grew since the baseline, in ms (0 until
// there is one).
func (m *delayMeter) grown() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.hasBase {
		return 0
	}
	return int(math.Round(m.last - m.base))
}

func (g *gapCounter) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lost
}

func watchOnce(ctx context.Context, i, session int) error {
	var packets atomic.Int64
	var last atomic.Int64 // unix nanoseconds of the last video packet
	var gaps gapCounter
	var delay delayMeter
	last.Store(time.Now().UnixNano())
	postCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	v, err := viewer.WHEP(postCtx, os.Getenv("SIM_WHEP"), viewer.Options{
		Region: os.Getenv("SIM_REGION"), RegionHeader: "Fly-Region", NoMDNS: true, Interceptors: true,
		OnPacket: func(kind webrtc.RTPCodecType, b []byte) {
			if kind == webrtc.RTPCodecTypeVideo && len(b) >= 4 {
				packets.Add(1)
				last.Store(time.Now().UnixNano())
				gaps.add(uint16(b[2])<<8 | uint16(b[3]))
				if len(b) >= 8 {
					delay.add(binary.BigEndian.Uint32(b[4:8]), time.Now())
				}
			}
		},
	})
	if err != nil {
		return err
	}
	defer v.Close()
	fmt.Printf("SERVED %d %d %s\n", i, session, v.ServedBy())
	last.Store(time.Now().UnixNano())
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	playing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-v.Failed():
			return errors.New("the connection failed")
		case <-tick.C:
		}
		n := packets.Load()
		if !playing && n >= 30 {
			playing = true
			fmt.Printf("PLAYING %d %d %d\n", i, session, time.Now().UnixMilli())
		}
		fmt.Printf("RECEIVED %d %d %d %d %d\n", i, session, n, gaps.count(), delay.grown())
		if since := time.Since(time.Unix(0, last.Load())); since > stalled {
			return fmt.Errorf("no video for %v", since.Round(time.Millisecond))
		}
	}
}

// sim is one running simulation.
type sim struct {
	t       *testing.T
	star    *netns.Star
	dir     string
	run     string
	gateway *netns.Process
	gwEnv   []string
	fleet   *netns.Process // the observer
}

// options change a simulation from the defaults.
type options struct {
	regions []region // nil: regions
	env     []string // gateway settings, after (so over) the defaults
	fnEnv   []string // settings of every function ("NAME=value", no quotes)
	scrape  string   // $SIM_SCRAPE of the observer; {<region>} stands for its address
}

// start makes the regions, their delayed relay paths, and the gateway
// with the local provider, which starts functions in the regions'
// namespaces through a wrapper.
func start(t *testing.T, o options) *sim {
	netns.Require(t)
	netns.Exclusive(t)
	ctx := t.Context()
	if o.regions == nil {
		o.regions = regions
	}
	names := make([]string, len(o.regions))
	for i, r := range o.regions {
		names[i] = r.name
	}
	star, err := netns.NewStar(ctx, names...)
	if err != nil {
		t.Fatal(err)
	}
	s := &sim{t: t, star: star, dir: t.TempDir(), run: rand.Text()}
	t.Cleanup(func() {
		// Processes stop in the test's cleanups, registered later and run
		// first; whatever of this run is still alive goes now.
		killRun(s.run)
		if err := star.Close(); err != nil {
			t.Errorf("namespaces: %v", err)
		}
	})

	relays := map[string]string{}
	for _, r := range o.regions {
		leaf, _ := star.Leaf(r.name)
		cmd := star.SelfCommand(ctx, leaf.NS, roleDelay)
		cmd.Env = append(cmd.Env, "SIM_TARGET="+leaf.CenterAddr.String()+":"+relayPort, "SIM_DELAY="+r.delay.String(), runVar+"="+s.run)
		p := s.process(cmd, "delay-"+r.name)
		line, err := p.WaitLine(ctx, "FORWARD ")
		if err != nil {
			t.Fatal(err)
		}
		relays[r.name] = strings.TrimPrefix(line, "FORWARD ")
	}

	s.gwEnv = []string{
		runVar + "=" + s.run,
		"LS_HTTP_ADDR=:" + httpPort,
		"LS_FTL_ADDR=127.0.0.1:0",
		"LS_FTL_MEDIA_ADDR=127.0.0.1:0",
		"LS_RELAY_ADDR=:" + relayPort,
		"LS_DATA_DIR=" + filepath.Join(s.dir, "data"),
		"LS_STREAM_KEY=" + streamKey,
		"LS_REGION=ams",
		"LS_WEBRTC_UDP_ADDR=:8189",
		"LS_FUNCTION_PROVIDER=local",
		"LS_FUNCTION_BIN=" + s.wrapper(relays, o.fnEnv),
		"LS_FUNCTION_REGIONS=" + strings.Join(names, ","),
		"LS_FUNCTION_CAPACITY=4",
		"LS_FUNCTION_SCALE_AT=50",
		"LS_FUNCTION_IDLE_STOP=8s",
		"LS_FUNCTION_START_WAIT=30s",
		"LS_FUNCTION_UDP_PORTS=10000-10019",
		// A region's viewers share its one address, as behind a NAT.
		"LS_VIEWERS_PER_IP=0",
	}
	s.gwEnv = append(s.gwEnv, o.env...)
	s.startGateway()
	obs := star.SelfCommand(ctx, star.Center, roleObserver)
	scrape := o.scrape
	for _, l := range star.Leaves {
		scrape = strings.ReplaceAll(scrape, "{"+l.Label+"}", l.Addr.String())
	}
	obs.Env = append(obs.Env, runVar+"="+s.run, "SIM_SCRAPE="+scrape)
	s.fleet = s.process(obs, "fleet")
	return s
}

// wrapper writes the function command the local provider runs: a script
// that runs the test binary as a function in the namespace of the region
// it was started for, advertising that namespace's address and dialing the
// relay through the region's delay.
func (s *sim) wrapper(relays map[string]string, env []string) string {
	s.t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		s.t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		s.t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# A function of the simulation, in its region's namespace.\ncase \"$LS_REGION\" in\n")
	for _, l := range s.star.Leaves {
		fmt.Fprintf(&b, "%s) ns=%s addr=%s relay=%s ;;\n", l.Label, l.NS, l.Addr, relays[l.Label])
	}
	b.WriteString("*) echo \"no namespace for region '$LS_REGION'\" >&2; exit 1 ;;\nesac\n")
	fmt.Fprintf(&b, "export LS_PUBLIC_IPS=\"$addr\" LS_GATEWAY_ADDR=\"$relay\" %s=%s %s=%s %s\n", netns.RoleEnv, roleFunction, runVar, s.run, strings.Join(env, " "))
	fmt.Fprintf(&b, "exec %s netns exec \"$ns\" %s -test.run='^$'\n", ip, exe)
	path := filepath.Join(s.dir, "function.sh")
	if err := os.WriteFile(path, []byte(b.String()), 0o755); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// process starts cmd, logged under name, and stops it when the test ends.
func (s *sim) process(cmd *exec.Cmd, name string) *netns.Process {
	s.t.Helper()
	p := &netns.Process{Cmd: cmd, Name: name, Logf: s.t.Logf}
	if err := p.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { p.Stop() })
	return p
}

// startGateway starts the gateway in the center and waits until its
// channel is live.
func (s *sim) startGateway() {
	s.t.Helper()
	cmd := s.star.SelfCommand(s.t.Context(), s.star.Center, roleGateway)
	cmd.Env = append(cmd.Env, s.gwEnv...)
	s.gateway = s.process(cmd, "gateway")
	if _, err := stackrole.WaitReady(s.t.Context(), s.gateway); err != nil {
		s.t.Fatal(err)
	}
}

// viewers starts a process of n viewers in region.
func (s *sim) viewers(region string, n int) *netns.Process {
	s.t.Helper()
	leaf, _ := s.star.Leaf(region)
	cmd := s.star.SelfCommand(s.t.Context(), leaf.NS, roleViewer)
	cmd.Env = append(cmd.Env, runVar+"="+s.run, "SIM_REGION="+region, "SIM_VIEWERS="+strconv.Itoa(n),
		"SIM_WHEP=http://"+leaf.CenterAddr.String()+":"+httpPort+"/api/whep/77")
	return s.process(cmd, "viewers-"+region)
}

// viewer starts one viewer in region.
func (s *sim) viewer(region string) *netns.Process { return s.viewers(region, 1) }

// servedBy waits until viewer i of v plays its session and returns the
// function that serves it, "<region> (<id>)".
func (s *sim) servedBy(v *netns.Process, i, session int) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), time.Minute)
	defer cancel()
	if _, err := v.WaitLine(ctx, fmt.Sprintf("PLAYING %d %d ", i, session)); err != nil {
		s.t.Fatal(err)
	}
	prefix := fmt.Sprintf("SERVED %d %d ", i, session)
	line, err := v.WaitLine(ctx, prefix)
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimPrefix(line, prefix)
}

// progress is what viewer i of a process last reported.
type progress struct{ session, packets, lost, delayGrown int }

// received returns viewer i's latest report.
func received(v *netns.Process, i int) progress {
	lines := v.Lines()
	for j := len(lines) - 1; j >= 0; j-- {
		var p progress
		var k int
		if _, err := fmt.Sscanf(lines[j], "RECEIVED %d %d %d %d %d", &k, &p.session, &p.packets, &p.lost, &p.delayGrown); err == nil && k == i {
			return p
		}
	}
	return progress{}
}

// playingAt waits until viewer i of v plays session and returns when it
// began to (the viewer's clock: the same machine's).
func (s *sim) playingAt(v *netns.Process, i, session int, within time.Duration) time.Time {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), within)
	defer cancel()
	line, err := v.WaitLine(ctx, fmt.Sprintf("PLAYING %d %d ", i, session))
	if err != nil {
		s.t.Fatalf("viewer %d of %s: %v", i, v.Name, err)
	}
	var ms int64
	fmt.Sscanf(line, "PLAYING %d %d %d", &i, &session, &ms)
	return time.UnixMilli(ms)
}

// lostSessions counts the sessions viewers of v gave up.
func lostSessions(v *netns.Process) int {
	n := 0
	for _, l := range v.Lines() {
		if strings.HasPrefix(l, "LOST ") {
			n++
		}
	}
	return n
}

// waitFor polls, every 100 ms for at most a minute, until cond holds.
func (s *sim) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("after a minute: not %s", what)
		}
		select {
		case <-s.t.Context().Done():
			s.t.Fatal(s.t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// functions returns the fleet as the observer last printed it; nil while
// the gateway is down.
func (s *sim) functions() []fleet.Info {
	lines := s.fleet.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "DOWN ") {
			return nil
		}
		if j, ok := strings.CutPrefix(lines[i], "FUNCTIONS "); ok {
			var fs []fleet.Info
			if json.Unmarshal([]byte(j), &fs) == nil {
				return fs
			}
		}
	}
	return nil
}

// waitFleet waits until the fleet satisfies cond and returns it.
func (s *sim) waitFleet(what string, cond func(fs []fleet.Info) bool) []fleet.Info {
	s.t.Helper()
	var fs []fleet.Info
	s.waitFor(what, func() bool { fs = s.functions(); return cond(fs) })
	return fs
}

// in returns the functions of fs in region that are in one of states.
func in(fs []fleet.Info, region string, states ...string) []fleet.Info {
	var out []fleet.Info
	for _, f := range fs {
		if f.Region == region && slices.Contains(states, f.State) {
			out = append(out, f)
		}
	}
	return out
}

// pidOf finds the process of function id by its environment.
func pidOf(t *testing.T, id string) int {
	t.Helper()
	pids := pidsWith("LS_MACHINE_ID=" + id)
	if len(pids) != 1 {
		t.Fatalf("processes of function %s: %v", id, pids)
	}
	return pids[0]
}

// pidsWith lists the processes whose environment has the variable kv.
func pidsWith(kv string) []int {
	dirs, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && bytes.Contains(append([]byte{0}, env...), []byte("\x00"+kv+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killRun kills every process of the run still alive.
func killRun(run string) {
	for _, pid := range pidsWith(runVar + "=" + run) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
