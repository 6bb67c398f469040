//go:build linux

// Command bench measures what Lightspeed costs and how fast it is: it
// starts a gateway and a function as child processes on loopback (or
// attaches to a running gateway), publishes the test media over FTL, opens
// N pion WHEP viewers and reports, for each N. The publisher paces video
// as OBS's FTL SDK does (1.2 times the media's bitrate after a 100 ms
// burst); -peak-kbps sets another pace, 0 none.
//
//	go run ./scripts/bench                                  10, 50, 100 viewers
//	go run ./scripts/bench -viewers 10,50,100 -baseline -json /tmp/bench.json
//
// What it measures, and how:
//
//   - CPU per delivered packet: the function process's CPU time (utime +
//     stime of /proc/<pid>/stat, all threads) over a window, divided by the
//     RTP packets the viewers received in it. The marginal figure first
//     subtracts the function's CPU with the stream running and no viewers,
//     measured before the first step. Viewers per core is N divided by the
//     cores the function used. Memory per viewer is the function's RSS at
//     the end of the window minus its idle RSS, divided by N (Go's heap
//     target makes it a high-water mark, not the live size).
//   - Server-added latency: from the gateway receiving a packet to a viewer
//     receiving it, over the first and the last packet of every video frame
//     received in the window. The gateway announces to the publisher the
//     port of a tap in this process, which forwards each FTL packet to the
//     gateway's media socket and notes the time the write returned: on
//     loopback the gateway's socket has the packet then, so that is its
//     receive time. A viewer's socket has SO_TIMESTAMPNS on and notes, from
//     the unencrypted SRTP header, the kernel's receive time of each video
//     packet, before pion decrypts it; so the time the viewers' goroutines
//     wait for a CPU is not counted (it is reported apart as the "reader"
//     latency). Frames are matched by RTP timestamp: the hub adds a constant
//     offset per publisher session, learned as the most frequent difference
//     between each keyframe a viewer received and the keyframe the
//     publisher sent last before it (live keyframes outvote a late
//     joiner's cached one). When attached to a gateway the bench did not
//     start there is no tap: a frame's send time is then its due time in
//     the publisher's real-time schedule (so the publisher's pacing counts;
//     use -peak-kbps 0 there).
//   - Time to first frame: from the start of the WHEP POST to the marker
//     packet of the first whole keyframe (SPS, PPS and IDR with consecutive
//     sequence numbers), for the viewers of each step (all joining at once)
//     and, with -keyint-test, for viewers joining one at a time at random
//     points of the GOP with keyframe intervals of 1 s (the committed test
//     media) and 4 s (testdata/gop4.h264); then, -cold-runs times, the
//     publisher restarts in the middle of a GOP (frames spread over it)
//     once the function has dropped the channel, and one viewer POSTs as
//     soon as the channel is live: its time to first frame, and when the
//     publisher sent its first keyframe.
//   - Per viewer, per second of stream: the marginal CPU of the function,
//     of the gateway and of both (µs per viewer-second; with -embedded the
//     gateway's one process), viewers per core from it, heap and RSS per
//     added viewer, the bytes the viewers' sockets received (SRTP plus 28
//     bytes of IPv4 and UDP a datagram) against the media they carried,
//     and the RTP packets against those the media needs at 1,200 bytes
//     (per track, each frame's bytes ÷ 1,188, rounded up).
//   - Loss: sequence numbers never received during the window, per viewer
//     and track.
//   - Saturation: the machine's busy CPU time (/proc/stat) over the window;
//     at 90 % of all cores or more the row is marked "saturated, not
//     trusted". The bench's own CPU (its viewers) is reported beside the
//     function's and the gateway's, to show which one fills the machine.
//
// The viewers are as light as pion allows: one pion PeerConnection each
// with no interceptors (no NACKs, no receiver reports), no mDNS, no
// decoding, 1 MB socket receive buffers (the default overflows when a
// keyframe reaches a hundred viewers at once in one busy process, and
// these viewers cannot NACK); per packet they parse the RTP header,
// count, follow sequence numbers and check keyframes, without
// allocating. Still, a pion viewer costs nearly as much CPU per packet as
// the server, so on a small machine the viewers and the server fill it
// together; the report's last line says at about how many viewers.
//
// -clip 2.5m plays a 2.5 Mbit/s clip instead of the committed test media
// (both 720p30, a keyframe every second); -runs N measures the steps N
// times, each with a fresh stack, and prints each figure's median and
// range; -embedded runs the function inside the gateway.
//
//	go run ./scripts/bench -viewers 50,100 -keyint-test=false -runs 3 -clip 2.5m -baseline
//
// -ingest whip publishes over WHIP instead (shared/testkit/whipclient,
// as OBS's WHIP output: POST /api/whip with the stream key as Bearer
// token, each frame's packets at once), everything else the same. The
// publisher answers a keyframe request (PLI, FIR) at once with the clip's
// next keyframe, the frames between skipped, as an encoder would;
// -whip-pli=false keeps the clip's keyframes where they are. Latency is
// then measured from the publisher's write of each packet (whipclient's
// OnVideoPacket), there being no FTL socket for the tap.
//
//	go run ./scripts/bench -ingest whip
//
// -baseline runs the same fan-out the way the original Lightspeed relay
// did, in a child process (this binary, re-executed): one
// TrackLocalStaticRTP per track, pion's default interceptors, each packet
// written to every viewer in one loop. It is fed the normalized stream by
// one viewer of the function that forwards what it receives as plain RTP;
// its latency is measured from that forward. The ratio of the marginal
// costs is printed.
//
// -cpuprofile FILE runs the function from this binary (the same
// function/app, the same settings) so that it writes a CPU profile of the
// largest step's window, and a heap profile at its end to FILE.heap; read
// them with `go tool pprof FILE`.
//
// -browser measures something else: glass-to-glass latency in headless
// Chromium (package glass), from the publisher writing a video frame's
// first packet to Chromium presenting the frame, with -browser-viewers
// pages in -browsers Chromium processes, for -duration (60 s by default
// in this mode). It prints the per-viewer table and says whether the
// median is within 150 ms and whether it creeps by more than 20 ms from
// the first minute to the last (half the run when it is shorter than two
// minutes); these are statements, not the exit code.
//
//	go run ./scripts/bench -browser
//	go run ./scripts/bench -browser -duration 10m -browser-viewers 2 -json /tmp/glass.json
//
// -fleet measures the fleet instead (fleet.go): with the local provider,
// the time from a viewer's WHEP POST to its function being ready and to
// its first frame, cold and woken, and how soon a new region's viewers
// are served there; then the gateway's CPU per datagram its relay sends,
// with 1, 4, 16 and 32 functions.
//
//	go run ./scripts/bench -fleet -json /tmp/fleet.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/rtp"

	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
)

func main() {
	// glass.Run re-executes this binary in a network namespace for its
	// stack, with arguments the flags below do not know.
	if code, played := playGlassRole(); played {
		os.Exit(code)
	}
	if played, err := playRole(); played {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if cfg.faults {
		if err := mainFaults(ctx, cfg, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	release, err := exclusive(ctx, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer release()
	if cfg.browser {
		err = mainBrowser(ctx, cfg, log)
	} else if cfg.fleet {
		err = mainFleet(ctx, cfg, log)
	} else {
		err = mainFanout(ctx, cfg, log)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// exclusive takes the lock that the tests which load the whole machine
// take (netns.Exclusive), so that the bench and they run one at a time,
// waiting for it as long as another holds it. release gives it back;
// exiting does too.
func exclusive(ctx context.Context, log *slog.Logger) (release func(), err error) {
	h := &lockHolder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		netns.Exclusive(h)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		log.Info("waiting for the lock of the tests that load the whole machine")
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if h.err != nil {
		return nil, h.err
	}
	return h.release, nil
}

// lockHolder holds netns.Exclusive's lock for the bench, as a test would.
type lockHolder struct {
	err      error
	cleanups []func() // they close the lock's file, so they are kept until release
}

func (*lockHolder) Helper() {}

func (h *lockHolder) Fatalf(format string, args ...any) {
	h.err = fmt.Errorf(format, args...)
	runtime.Goexit() // as testing's Fatalf: Exclusive does not go on
}

func (h *lockHolder) Cleanup(f func()) { h.cleanups = append(h.cleanups, f) }

func (h *lockHolder) release() {
	for _, f := range slices.Backward(h.cleanups) {
		f()
	}
	h.cleanups = nil
}

// mainFanout runs the fan-out steps and prints and writes their report.
func mainFanout(ctx context.Context, cfg config, log *slog.Logger) error {
	rep, err := run(ctx, cfg, log)
	if rep == nil {
		return err
	}
	return emit(rep, cfg.jsonFile, err)
}

// mainBrowser measures glass-to-glass latency and prints and writes its
// report.
func mainBrowser(ctx context.Context, cfg config, log *slog.Logger) error {
	rep, err := runBrowser(ctx, cfg, log)
	if rep == nil {
		return err
	}
	return emit(rep, cfg.jsonFile, err)
}

// emit prints rep and writes it as JSON to jsonFile, if set; it returns
// err, or the JSON's error when there was none.
func emit(rep interface{ print(io.Writer) }, jsonFile string, err error) error {
	rep.print(os.Stdout)
	if jsonFile != "" {
		if jerr := writeJSON(jsonFile, rep); jerr != nil && err == nil {
			err = jerr
		}
	}
	return err
}

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: json: %w", err)
	}
	return nil
}

// config is the bench's flags.
type config struct {
	viewers    []int
	duration   time.Duration
	settle     time.Duration
	keyintTest bool
	joins      int
	baseline   bool
	jsonFile   string
	parallel   int
	cpuProfile string
	verbose    bool
	peakKbps   int    // the publisher's video pacing; < 0: OBS's for each clip
	ingest     string // ingestFTL or ingestWHIP
	whipPLI    bool   // the WHIP publisher answers keyframe requests
	coldRuns   int    // publisher restarts with a viewer joining at once
	clip       string // the clip the steps play: a key of clipFiles
	runs       int    // times the steps are measured, each with a fresh stack
	embedded   bool   // the function runs inside the gateway, one process

	browser        bool // glass-to-glass in Chromium instead of the fan-out steps
	browserViewers int
	browsers       int

	faults bool          // the fault suite's long form instead of the fan-out steps
	soak   time.Duration // with faults: how long the soak runs

	fleet          bool // cold start, wake, new regions and the relay's cost instead of the fan-out steps
	fleetRuns      int
	fleetFunctions []int

	attach      string // the gateway's HTTP address
	ftlAddr     string
	streamKey   string
	functionPID int
	gatewayPID  int
}

func parseFlags(args []string) (config, error) {
	var (
		cfg       config
		viewers   string
		functions string
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&viewers, "viewers", "10,50,100", "numbers of viewers to measure, comma-separated, increasing")
	fs.DurationVar(&cfg.duration, "duration", 20*time.Second, "measurement window of each step (with -browser: of the whole measurement, 60s unless set)")
	fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait after every viewer has its first keyframe, before a window")
	fs.BoolVar(&cfg.keyintTest, "keyint-test", true, "measure time to first frame with keyframe intervals of 1 s and 4 s")
	fs.IntVar(&cfg.joins, "joins", 20, "viewers that join, one by one, for each keyframe interval of -keyint-test")
	fs.BoolVar(&cfg.baseline, "baseline", false, "also measure the original Lightspeed relay's fan-out, in the same run")
	fs.StringVar(&cfg.jsonFile, "json", "", "write the results as JSON to this file")
	fs.IntVar(&cfg.parallel, "parallel", 8, "viewers connecting at the same time")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the function during the largest step to this file, and its heap profile at the end of the step to FILE.heap")
	fs.BoolVar(&cfg.verbose, "v", false, "log every viewer's join times")
	fs.IntVar(&cfg.peakKbps, "peak-kbps", -1, "pace the publisher's video to this many kbit/s after a 100 ms burst, as the FTL SDK does; -1: as OBS, 1.2 times each clip's video bitrate; 0: no pacing, every frame's packets at once")
	fs.StringVar(&cfg.ingest, "ingest", ingestFTL, "how the bench's publisher publishes: ftl, or whip (POST /api/whip, as OBS 30+ does)")
	fs.BoolVar(&cfg.whipPLI, "whip-pli", true, "with -ingest whip: the publisher answers a keyframe request at once with the clip's next keyframe, as an encoder would; false: keyframes only where the clip has them")
	fs.IntVar(&cfg.coldRuns, "cold-runs", 5, "with -keyint-test: times the publisher restarts in the middle of a GOP and one viewer joins as soon as the channel is live (0: none)")
	fs.StringVar(&cfg.clip, "clip", "2m", "the clip the publisher plays, 720p30 with a keyframe every second: 2m (the committed test media, ~2 Mbit/s) or 2.5m (scripts/bench/testdata/video-2.5m.h264)")
	fs.IntVar(&cfg.runs, "runs", 1, "measure the steps this many times, each with a fresh stack and baseline, and report the median of each figure and its range")
	fs.BoolVar(&cfg.embedded, "embedded", false, "run the function inside the gateway (LS_EMBEDDED_FUNCTION=true, one process) instead of as a process of its own")
	fs.StringVar(&cfg.attach, "attach", "", "use the running gateway at this HTTP address (host:port) instead of starting one")
	fs.StringVar(&cfg.ftlAddr, "ftl", "", "with -attach: the gateway's FTL control address (default: the -attach host, port 8084)")
	fs.StringVar(&cfg.streamKey, "key", "", "with -attach: the stream key to publish with, <channel>-<secret>")
	fs.IntVar(&cfg.functionPID, "function-pid", 0, "with -attach: the function's process id, for its CPU and memory (only one function should serve the channel)")
	fs.IntVar(&cfg.gatewayPID, "gateway-pid", 0, "with -attach: the gateway's process id, for its CPU")
	fs.BoolVar(&cfg.browser, "browser", false, "measure glass-to-glass latency in headless Chromium instead (needs root, ip and chromium)")
	fs.IntVar(&cfg.browserViewers, "browser-viewers", 1, "with -browser: viewer pages")
	fs.IntVar(&cfg.browsers, "browsers", 1, "with -browser: Chromium processes the pages are spread over (several pages in one are tabs)")
	fs.BoolVar(&cfg.fleet, "fleet", false, "measure the fleet instead: cold start, wake and a new region's first viewer with the local provider, and the gateway's CPU per relayed datagram as functions grow")
	fs.IntVar(&cfg.fleetRuns, "fleet-runs", 5, "with -fleet: runs of cold start, new region and wake")
	fs.BoolVar(&cfg.faults, "faults", false, "run the fault suite's long form instead (the TestFault cases of gateway/simulation and gateway/app, the soak for -soak) and print each case's figures; needs root, ip and the go command")
	fs.DurationVar(&cfg.soak, "soak", 30*time.Minute, "with -faults: how long the soak runs")
	fs.StringVar(&functions, "fleet-functions", "1,4,16,32", "with -fleet: numbers of functions the relay feeds, comma-separated, increasing")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.ingest != ingestFTL && cfg.ingest != ingestWHIP {
		return cfg, fmt.Errorf("-ingest: %q is neither ftl nor whip", cfg.ingest)
	}
	if set["whip-pli"] && cfg.ingest != ingestWHIP {
		return cfg, errors.New("-whip-pli needs -ingest whip")
	}
	if cfg.coldRuns < 0 {
		return cfg, errors.New("-cold-runs must not be negative")
	}
	if cfg.faults || set["soak"] {
		if !cfg.faults {
			return cfg, errors.New("-soak needs -faults")
		}
		return faultsFlags(cfg, set)
	}
	if cfg.fleet || set["fleet-runs"] || set["fleet-functions"] {
		return fleetFlags(cfg, set, functions)
	}
	if cfg.browser {
		return browserFlags(cfg, set)
	}
	for _, name := range []string{"browser-viewers", "browsers"} {
		if set[name] {
			return cfg, fmt.Errorf("-%s needs -browser", name)
		}
	}
	for f := range strings.SplitSeq(viewers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return cfg, fmt.Errorf("-viewers: %q is not a positive number", f)
		}
		cfg.viewers = append(cfg.viewers, n)
	}
	if !slices.IsSorted(cfg.viewers) {
		return cfg, errors.New("-viewers: numbers must increase (viewers are added step by step)")
	}
	if cfg.duration <= 0 {
		return cfg, errors.New("-duration must be positive")
	}
	if _, ok := clipFiles[cfg.clip]; !ok {
		return cfg, fmt.Errorf("-clip: %q is none of %s", cfg.clip, strings.Join(clipNames(), ", "))
	}
	if cfg.runs < 1 {
		return cfg, errors.New("-runs must be at least 1")
	}
	if cfg.embedded && cfg.cpuProfile != "" {
		return cfg, errors.New("-cpuprofile runs the function as a process of its own: it does not go with -embedded")
	}
	if cfg.embedded && cfg.attach != "" {
		return cfg, errors.New("-embedded starts the stack: with -attach give the same pid to -function-pid and -gateway-pid")
	}
	if cfg.attach != "" {
		if cfg.streamKey == "" {
			return cfg, errors.New("-attach needs -key")
		}
		if cfg.ftlAddr == "" {
			host, _, err := net.SplitHostPort(cfg.attach)
			if err != nil {
				return cfg, fmt.Errorf("-attach: %w", err)
			}
			cfg.ftlAddr = net.JoinHostPort(host, "8084")
		}
		if cfg.cpuProfile != "" {
			return cfg, errors.New("-cpuprofile needs the stack the bench starts (no -attach)")
		}
		if set["ftl"] && cfg.ingest == ingestWHIP {
			return cfg, errors.New("-ftl does not go with -ingest whip: the publisher POSTs to the -attach address")
		}
	}
	return cfg, nil
}

// fanoutFlags are the flags of the fan-out steps, which -browser does not
// run.
var fanoutFlags = []string{"viewers", "settle", "keyint-test", "joins", "baseline", "parallel", "cpuprofile",
	"attach", "ftl", "key", "function-pid", "gateway-pid", "cold-runs", "clip", "runs", "embedded"}

// browserFlags checks the flags of -browser; set holds the flags given.
func browserFlags(cfg config, set map[string]bool) (config, error) {
	for _, name := range fanoutFlags {
		if set[name] {
			return cfg, fmt.Errorf("-browser does not run the fan-out steps: -%s does not go with it", name)
		}
	}
	if cfg.ingest == ingestWHIP && set["peak-kbps"] {
		return cfg, errors.New("-peak-kbps paces FTL: it does not go with -browser -ingest whip")
	}
	if cfg.ingest == ingestWHIP && !cfg.whipPLI {
		return cfg, errors.New("-browser's WHIP publisher answers keyframe requests: -whip-pli=false does not go with it")
	}
	if !set["duration"] {
		cfg.duration = targetDuration
	}
	if cfg.duration <= 0 {
		return cfg, errors.New("-duration must be positive")
	}
	if cfg.browserViewers <= 0 {
		return cfg, errors.New("-browser-viewers must be positive")
	}
	if cfg.browsers <= 0 || cfg.browsers > cfg.browserViewers {
		return cfg, fmt.Errorf("-browsers must be between 1 and -browser-viewers (%d)", cfg.browserViewers)
	}
	return cfg, nil
}

// bench is one run.
type bench struct {
	cfg    config
	epoch  time.Time // every time the bench notes is relative to this
	log    *slog.Logger
	player *player
}

// frameCapacity is how many frames a publisher session's log holds
// before it grows: an hour at 30 fps.
const frameCapacity = 30 * 3600

// run measures everything cfg asks for: the steps -runs times, each
// with a fresh stack, and the joins and cold starts once, in the last
// run. The report holds what was measured even when an error ends the
// run early.
func run(ctx context.Context, cfg config, log *slog.Logger) (_ *Report, err error) {
	b := &bench{cfg: cfg, epoch: time.Now(), log: log}
	if b.player, err = newPlayer(b.epoch); err != nil {
		return nil, err
	}
	rep := &Report{Machine: machine(), Mode: "started", Ingest: cfg.ingest, Runs: max(cfg.runs, 1)}
	if cfg.ingest == ingestWHIP {
		rep.WHIPAnswersPLI = &cfg.whipPLI
	}
	gop1, gop4, err := loadClips(cfg.clip)
	if err != nil {
		return nil, err
	}
	rep.Clip = gop1.describe()
	dir, err := os.MkdirTemp("", "lightspeed-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	defer func() {
		rep.Medians = summarize(rep.Rows)
		rep.Ratios = ratios(rep.Rows)
		rep.Limits = limits(rep.runRows(rep.Runs), rep.Machine.CPUs)
	}()
	if cfg.attach == "" {
		log.Info("building gateway and function")
		if err := build(ctx, dir, "./gateway", "./function"); err != nil {
			return rep, err
		}
	}
	for i := 1; i <= rep.Runs; i++ {
		if rep.Runs > 1 {
			log.Info("run", "run", i, "of", rep.Runs)
		}
		runDir := filepath.Join(dir, fmt.Sprintf("run%d", i))
		if err := os.Mkdir(runDir, 0o755); err != nil {
			return rep, fmt.Errorf("bench: %w", err)
		}
		if err := b.runOnce(ctx, rep, dir, runDir, i, i == rep.Runs, gop1, gop4); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// runOnce measures the steps once (run of rep.Runs) with a stack of its
// own, binaries from bin, its data and logs in dir; the last run also
// measures the joins and cold starts.
func (b *bench) runOnce(ctx context.Context, rep *Report, bin, dir string, run int, last bool, gop1, gop4 clip) (err error) {
	cfg, log := b.cfg, b.log
	var (
		httpAddr, ftlAddr, key = cfg.attach, cfg.ftlAddr, cfg.streamKey
		channel                = uint32(77)
		st                     *stack
		sent                   atomic.Pointer[frameLog] // the publisher session's frames
		ours                   = target{stack: "lightspeed", pid: cfg.functionPID, gatewayPID: cfg.gatewayPID}
	)
	if cfg.attach == "" {
		profile := ""
		if cfg.cpuProfile != "" {
			if profile, err = filepath.Abs(cfg.cpuProfile); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
		}
		st, err = startStack(ctx, log, stackOptions{
			dir:       dir,
			bin:       bin,
			epoch:     b.epoch,
			capacity:  slices.Max(cfg.viewers) + cfg.joins + 10,
			profileFn: profile,
			channel:   channel,
			embedded:  cfg.embedded,
		})
		if err != nil {
			return err
		}
		defer st.close()
		httpAddr, ftlAddr, key = st.httpAddr, st.ftlAddr, st.key
		ours.pid, ours.gatewayPID, ours.profile = st.gateway.pid(), st.gateway.pid(), profile != ""
		if st.function != nil {
			ours.pid = st.function.pid()
		}
		ours.metrics = st.metricsURL
	} else {
		rep.Mode = "attached"
		c, _, _ := strings.Cut(key, "-")
		n, err := strconv.ParseUint(c, 10, 32)
		if err != nil {
			return fmt.Errorf("bench: -key: channel %q: %w", c, err)
		}
		channel = uint32(n)
	}
	rep.Processes = processes(&ours, st != nil)
	ours.whep = fmt.Sprintf("http://%s/api/whep/%d", httpAddr, channel)
	ours.sent = func() sentFrames { return sentFrames(sent.Load().snapshot()) }

	// peakKbps is the pace of c's video.
	peakKbps := func(c clip) int {
		if cfg.peakKbps < 0 {
			return ftlclient.PeakKbps(c.nals)
		}
		return cfg.peakKbps
	}
	// startPublisher streams c, with a fresh log of sent frames: from the
	// tap (FTL), from the WHIP publisher's own writes, or from the
	// schedule when attached with FTL. With wait it returns once the
	// channel is live and released packets.
	stopSchedule := func() {}
	startPublisher := func(c clip, wait bool) (*publisher, error) {
		var (
			p   *publisher
			err error
		)
		if cfg.ingest == ingestWHIP {
			l := newFrameLog(frameCapacity)
			sent.Store(l)
			note := func(h *rtp.Header, payload []byte, at time.Time) {
				l.note(h.Timestamp, h.Marker, payload, at.Sub(b.epoch))
			}
			p, err = publishWHIP(ctx, "http://"+httpAddr+"/api/whip", key, c, cfg.whipPLI, loopbackHost(httpAddr), note)
		} else {
			var started func(time.Time)
			if st != nil {
				sent.Store(st.tap.startSession(frameCapacity))
			} else {
				l := newFrameLog(frameCapacity)
				sent.Store(l)
				sctx, cancel := context.WithCancel(ctx)
				stopSchedule = cancel
				started = func(at time.Time) { go schedule(sctx, l, b.epoch, at, c) }
			}
			p, err = publish(ctx, ftlAddr, key, c, peakKbps(c), started)
		}
		if err != nil || !wait {
			return p, err
		}
		err = waitChannel(ctx, httpAddr, channel, "went live", func(c channelInfo) bool {
			return c.Live && c.Video != nil && c.PacketsOut > 0
		})
		if err != nil {
			p.stop()
			return nil, err
		}
		return p, nil
	}
	stopPublisher := func(p *publisher) error {
		err := p.stop()
		stopSchedule()
		if werr := waitChannel(ctx, httpAddr, channel, "went offline", func(c channelInfo) bool { return !c.Live }); err == nil {
			err = werr
		}
		return err
	}

	log.Info("publishing", "clip", gop1.name, "channel", channel, "gateway", httpAddr, "ingest", cfg.ingest)
	pub, err := startPublisher(gop1, true)
	if err != nil {
		return err
	}
	defer func() {
		if pub != nil {
			pub.stop()
			stopSchedule()
		}
	}()
	// Let the gateway measure the stream before it is described.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	if c, err := readChannel(ctx, httpAddr, channel); err == nil && c.Video != nil {
		rep.Stream = Stream{BitrateBps: c.Video.BitrateBps, KeyframeIntervalMs: c.Video.KeyframeIntervalMs, PeakKbps: peakKbps(gop1)}
		if cfg.ingest == ingestWHIP {
			rep.Stream.PeakKbps = 0 // whipclient sends each frame's packets at once
		}
	}

	idleFor := max(cfg.duration/2, 2*time.Second)
	log.Info("measuring the function with no viewers", "for", idleFor)
	idle, err := b.measureIdle(ctx, ours, idleFor)
	if err != nil {
		return err
	}
	if err := b.steps(ctx, rep, ours, idle, run); err != nil {
		return err
	}

	if cfg.baseline {
		if err := b.runBaseline(ctx, rep, dir, ours.whep, idleFor, run); err != nil {
			return err
		}
	}
	if !last {
		return nil
	}

	if cfg.keyintTest {
		for i, c := range []clip{gop1, gop4} {
			if i > 0 {
				log.Info("publishing", "clip", c.name)
				err := stopPublisher(pub)
				pub = nil
				if err != nil {
					return err
				}
				if pub, err = startPublisher(c, true); err != nil {
					return err
				}
				// Let the first keyframe of the new stream reach the
				// caches.
				if err := sleep(ctx, time.Second); err != nil {
					return err
				}
			}
			log.Info("joins at random points of the GOP", "keyint", c.keyint, "joins", cfg.joins)
			rep.TTFF = append(rep.TTFF, b.joins(ctx, "lightspeed", ours.whep, c.keyint, cfg.joins))
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	if cfg.keyintTest && cfg.coldRuns > 0 {
		err := stopPublisher(pub)
		pub = nil
		if err != nil {
			return err
		}
		log.Info("publisher restarts in the middle of a GOP, a viewer joining at once", "runs", cfg.coldRuns)
		cold, err := b.coldStarts(ctx, ours, gop1, cfg.coldRuns, startPublisher, stopPublisher)
		rep.Cold = &cold
		if err != nil {
			return err
		}
	}
	return nil
}

// processes says how the stack t runs, for the report; a function
// embedded in its gateway (attached with the same pid for both) is one
// process, so t's gateway is then dropped, not counted twice.
func processes(t *target, started bool) string {
	switch {
	case started && t.pid == t.gatewayPID:
		t.gatewayPID = 0
		return "the gateway with its embedded function (LS_EMBEDDED_FUNCTION=true), one process; fn is the whole process, gateway and function"
	case started:
		return "the gateway (LS_EMBEDDED_FUNCTION=false) and one function, separate processes; fn is the function, fn+gw the two together " +
			"(an embedded function does the same work in the gateway's process, the relay between them still on loopback)"
	case t.pid != 0 && t.pid == t.gatewayPID:
		t.gatewayPID = 0
		return fmt.Sprintf("attached: the function embedded in the gateway, one process (pid %d); fn is the whole process", t.pid)
	case t.pid != 0 && t.gatewayPID != 0:
		return fmt.Sprintf("attached: the function (pid %d) and the gateway (pid %d), separate processes; fn+gw is the two together", t.pid, t.gatewayPID)
	case t.pid != 0:
		return fmt.Sprintf("attached: the function (pid %d); the gateway's CPU unknown (-gateway-pid)", t.pid)
	}
	return "attached: no process given (-function-pid), so no CPU or memory figures"
}

// loopbackHost reports whether the host of addr (host:port) is a
// loopback address or localhost.
func loopbackHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// steps measures t with each number of viewers, adding viewers from one
// step to the next, and closes them at the end.
func (b *bench) steps(ctx context.Context, rep *Report, t target, idle idleFigures, run int) error {
	a := &audience{epoch: b.epoch, player: b.player, url: t.whep, parallel: b.cfg.parallel}
	defer a.close()
	var prev *Row
	for _, n := range b.cfg.viewers {
		row, err := b.step(ctx, t, a, n, idle)
		if err != nil {
			return err
		}
		row.Run = run
		if prev != nil {
			slopes(&row, prev)
		}
		prev = &row
		b.log.Info("step done", "stack", row.Stack, "viewers", row.Playing,
			"us_per_packet", row.MicrosPerPacket, "marginal", row.MarginalMicrosPerPacket,
			"latency_p99_ms", row.LatencyMs.P99, "busy_cores", row.MachineBusyCores)
		rep.Rows = append(rep.Rows, row)
	}
	return nil
}

// slopes sets the row's figures relative to the previous row of the same
// stack: the CPU and memory the added viewers cost.
func slopes(row, prev *Row) {
	if dp := row.PacketsPerViewerSecond*float64(row.Playing) - prev.PacketsPerViewerSecond*float64(prev.Playing); dp > 0 {
		row.StepMicrosPerPacket = round((row.ServerCores-prev.ServerCores)/dp*1e6, 2)
	}
	if dn := row.Playing - prev.Playing; dn > 0 {
		row.StepKBPerViewer = round(float64(row.RSSBytes-prev.RSSBytes)/float64(dn)/1024, 1)
	}
}

// runBaseline starts the baseline, measures it like the function, and
// stops it.
func (b *bench) runBaseline(ctx context.Context, rep *Report, dir, whep string, idleFor time.Duration, run int) error {
	b.log.Info("starting the baseline")
	bl, err := startBaseline(ctx, dir, b.epoch, whep)
	if err != nil {
		return err
	}
	defer bl.close()
	t := target{
		stack:   "baseline",
		pid:     bl.proc.pid(),
		whep:    bl.addrs.WHEP,
		metrics: bl.addrs.Metrics,
		sent:    func() sentFrames { return sentFrames(bl.feed.frames.snapshot()) },
	}
	b.log.Info("measuring the baseline with no viewers", "for", idleFor)
	idle, err := b.measureIdle(ctx, t, idleFor)
	if err != nil {
		return err
	}
	return b.steps(ctx, rep, t, idle, run)
}
