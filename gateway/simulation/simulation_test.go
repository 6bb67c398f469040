package simulation

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// regions are the simulated regions and the one-way delay of each one's
// relay path to the gateway. The gateway's site is nearest Amsterdam.
var regions = []struct {
	name  string
	delay time.Duration
}{
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
	live := func() bool { h := g.Hubs().Get(77); return h != nil && h.Stats().Live }
	return stackrole.Stack{Gateway: g, StreamKey: cfg.StreamKey, Live: live}.Run(ctx)
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
func serveObserver() error {
	ctx, stop := signalled()
	defer stop()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	downs := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
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

// serveViewer watches $SIM_WHEP as a viewer from $SIM_REGION (in the
// Fly-Region header, as Fly's edge sets it) and, like the viewer page,
// comes back with a new session when it loses the stream. It prints
// "SERVED <session> <served by>" for each session, "PLAYING <session>"
// once 30 video packets arrived, and "RECEIVED <session> <video packets>"
// every half second.
func serveViewer() error {
	ctx, stop := signalled()
	defer stop()
	for session := 1; ; session++ {
		err := watchOnce(ctx, session)
		if ctx.Err() != nil {
			return nil
		}
		fmt.Printf("LOST %d %v\n", session, err)
		select { // a page waits a moment too before it reconnects
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stalled is how long a viewer goes without video before it reconnects, as
// the viewer page does.
const stalled = 5 * time.Second

func watchOnce(ctx context.Context, session int) error {
	var packets atomic.Int64
	var last atomic.Int64 // unix nanoseconds of the last video packet
	last.Store(time.Now().UnixNano())
	postCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	v, err := viewer.WHEP(postCtx, os.Getenv("SIM_WHEP"), viewer.Options{
		Region: os.Getenv("SIM_REGION"), RegionHeader: "Fly-Region", NoMDNS: true, Interceptors: true,
		OnPacket: func(kind webrtc.RTPCodecType, _ []byte) {
			if kind == webrtc.RTPCodecTypeVideo {
				packets.Add(1)
				last.Store(time.Now().UnixNano())
			}
		},
	})
	if err != nil {
		return err
	}
	defer v.Close()
	fmt.Printf("SERVED %d %s\n", session, v.ServedBy())
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
			fmt.Printf("PLAYING %d\n", session)
		}
		fmt.Printf("RECEIVED %d %d\n", session, n)
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

// start makes the regions, their delayed relay paths, and the gateway
// with the local provider, which starts functions in the regions'
// namespaces through a wrapper.
func start(t *testing.T) *sim {
	netns.Require(t)
	netns.Exclusive(t)
	ctx := t.Context()
	names := make([]string, len(regions))
	for i, r := range regions {
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
	for _, r := range regions {
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
		"LS_FUNCTION_BIN=" + s.wrapper(relays),
		"LS_FUNCTION_REGIONS=ams,sin,syd",
		"LS_FUNCTION_CAPACITY=4",
		"LS_FUNCTION_SCALE_AT=50",
		"LS_FUNCTION_IDLE_STOP=8s",
		"LS_FUNCTION_START_WAIT=30s",
		"LS_FUNCTION_UDP_PORTS=10000-10019",
	}
	s.startGateway()
	obs := star.SelfCommand(ctx, star.Center, roleObserver)
	obs.Env = append(obs.Env, runVar+"="+s.run)
	s.fleet = s.process(obs, "fleet")
	return s
}

// wrapper writes the function command the local provider runs: a script
// that runs the test binary as a function in the namespace of the region
// it was started for, advertising that namespace's address and dialing the
// relay through the region's delay.
func (s *sim) wrapper(relays map[string]string) string {
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
	fmt.Fprintf(&b, "export LS_PUBLIC_IPS=\"$addr\" LS_GATEWAY_ADDR=\"$relay\" %s=%s %s=%s\n", netns.RoleEnv, roleFunction, runVar, s.run)
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

// viewer starts a viewer in region.
func (s *sim) viewer(region string) *netns.Process {
	s.t.Helper()
	leaf, _ := s.star.Leaf(region)
	cmd := s.star.SelfCommand(s.t.Context(), leaf.NS, roleViewer)
	cmd.Env = append(cmd.Env, runVar+"="+s.run, "SIM_REGION="+region,
		"SIM_WHEP=http://"+leaf.CenterAddr.String()+":"+httpPort+"/api/whep/77")
	return s.process(cmd, "viewer-"+region)
}

// servedBy waits until v plays its session and returns the function that
// serves it, "<region> (<id>)".
func (s *sim) servedBy(v *netns.Process, session int) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), time.Minute)
	defer cancel()
	if _, err := v.WaitLine(ctx, fmt.Sprintf("PLAYING %d", session)); err != nil {
		s.t.Fatal(err)
	}
	line, err := v.WaitLine(ctx, fmt.Sprintf("SERVED %d ", session))
	if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimPrefix(line, fmt.Sprintf("SERVED %d ", session))
}

// received returns v's latest session and how many video packets it has.
func received(v *netns.Process) (session, packets int) {
	lines := v.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		var s, n int
		if _, err := fmt.Sscanf(lines[i], "RECEIVED %d %d", &s, &n); err == nil {
			return s, n
		}
	}
	return 0, 0
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

// TestTheFleetFollowsViewersAcrossRegions runs the gateway in the center
// of three regions (ams 5 ms, sin 80 ms and syd 110 ms from it on the
// relay path), functions of capacity 4 that the fleet scales out at 50 %,
// and viewers in the regions:
//
//  1. the first viewer of ams waits for a function started in ams;
//  2. the first viewer of sin is served at once from ams, the only
//     function; ams, at half its capacity, starts a second function
//     before its first is full, and sin gets its own function;
//  3. the first viewer of syd is served at once from sin, the nearest
//     region with room, and syd gets its own function, where the next
//     viewer of syd lands;
//  4. that function, killed with SIGKILL, is replaced in syd, and its
//     viewer comes back on its own;
//  5. the gateway, killed with SIGKILL and started again with the same
//     data dir, adopts the functions that kept running (no new ones) and
//     the viewers keep playing;
//  6. once the viewers leave, every function stops when idle.
func TestTheFleetFollowsViewersAcrossRegions(t *testing.T) {
	s := start(t)

	// 1.
	a1 := s.viewer("ams")
	ams1 := s.servedBy(a1, 1)
	if !strings.HasPrefix(ams1, "ams (") {
		t.Fatalf("first viewer of ams served by %q", ams1)
	}

	// 2.
	s1 := s.viewer("sin")
	if got := s.servedBy(s1, 1); got != ams1 {
		t.Fatalf("first viewer of sin served by %q, want at once by %q", got, ams1)
	}
	fs := s.waitFleet("a second function in ams and one in sin, ready", func(fs []fleet.Info) bool {
		return len(in(fs, "ams", fleet.StateReady)) == 2 && len(in(fs, "sin", fleet.StateReady)) == 1
	})
	for _, f := range in(fs, "ams", fleet.StateReady) {
		if f.Viewers >= f.Capacity {
			t.Fatalf("ams's function %s is full (%d of %d): the second should start before", f.ID, f.Viewers, f.Capacity)
		}
	}
	sin := in(fs, "sin", fleet.StateReady)[0]

	// 3.
	y1 := s.viewer("syd")
	if got, want := s.servedBy(y1, 1), "sin ("+sin.ID+")"; got != want {
		t.Fatalf("first viewer of syd served by %q, want at once by the nearest region's %q", got, want)
	}
	fs = s.waitFleet("a function ready in syd", func(fs []fleet.Info) bool {
		return len(in(fs, "syd", fleet.StateReady)) == 1
	})
	syd := in(fs, "syd", fleet.StateReady)[0]
	y2 := s.viewer("syd")
	if got, want := s.servedBy(y2, 1), "syd ("+syd.ID+")"; got != want {
		t.Fatalf("second viewer of syd served by %q, want its region's new function %q", got, want)
	}

	// 4.
	if err := syscall.Kill(pidOf(t, syd.ID), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	back := s.servedBy(y2, 2)
	t.Logf("the killed function's viewer plays again %v after the kill, served by %s", time.Since(killed).Round(time.Millisecond), back)
	fs = s.waitFleet("a replacement ready in syd", func(fs []fleet.Info) bool {
		r := in(fs, "syd", fleet.StateReady)
		return len(r) == 1 && r[0].ID != syd.ID && !slices.ContainsFunc(fs, func(f fleet.Info) bool { return f.ID == syd.ID })
	})
	t.Logf("syd's function replaced %v after the kill", time.Since(killed).Round(time.Millisecond))

	// 5.
	var running []string
	for _, f := range fs {
		if f.State == fleet.StateReady {
			running = append(running, f.ID)
		}
	}
	slices.Sort(running)
	viewers := []*netns.Process{a1, s1, y1, y2}
	if err := s.gateway.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	s.gateway.Wait()
	restarted := time.Now()
	if _, err := s.fleet.WaitLine(t.Context(), "DOWN 1"); err != nil {
		t.Fatal(err)
	}
	s.startGateway()
	s.waitFleet("the restarted gateway's fleet: the same functions, ready", func(fs []fleet.Info) bool {
		var ids []string
		for _, f := range fs {
			if f.State != fleet.StateReady {
				return false
			}
			ids = append(ids, f.ID)
		}
		slices.Sort(ids)
		return slices.Equal(ids, running)
	})
	t.Logf("%d functions adopted and ready %v after the gateway's restart began", len(running), time.Since(restarted).Round(time.Millisecond))
	var before [4][2]int
	for i, v := range viewers {
		before[i][0], before[i][1] = received(v)
	}
	for i, v := range viewers {
		s.waitFor(fmt.Sprintf("viewer %d playing after the restart", i), func() bool {
			session, n := received(v)
			return session > before[i][0] && n >= 30 || session == before[i][0] && n >= before[i][1]+30
		})
	}

	// 6.
	for _, v := range viewers {
		v.Stop()
	}
	s.waitFleet("every function stopped when idle", func(fs []fleet.Info) bool {
		for _, f := range fs {
			if f.State != fleet.StateStopped {
				return false
			}
		}
		return len(fs) == len(running)
	})
}
