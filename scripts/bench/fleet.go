//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pion/webrtc/v3"

	"lightspeed/gateway/scheduler"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/viewer"
)

// The fleet mode's settings that are not flags.
const (
	fleetIdleStop    = 3 * time.Second // LS_FUNCTION_IDLE_STOP
	fleetIdleDestroy = 4 * time.Second // LS_FUNCTION_IDLE_DESTROY: a stopped function lives this long, so the wake comes first
	fleetHome        = "ams"           // region A: the gateway's, and the cold start's and the wake's
	fleetOther       = "sin"           // region B: the new region
	fleetEvery       = 500 * time.Millisecond
	fleetPoll        = 25 * time.Millisecond // the readiness polls
	fleetDuration    = 10 * time.Second      // -fleet's default -duration: each relay window
)

// fleetFlags checks the flags of -fleet; set holds the flags given,
// functions is -fleet-functions.
func fleetFlags(cfg config, set map[string]bool, functions string) (config, error) {
	if !cfg.fleet {
		return cfg, errors.New("-fleet-runs and -fleet-functions need -fleet")
	}
	for _, name := range append([]string{"browser", "browser-viewers", "browsers"}, fanoutFlags...) {
		if set[name] {
			return cfg, fmt.Errorf("-fleet does not go with -%s", name)
		}
	}
	if cfg.ingest != ingestFTL {
		return cfg, errors.New("-fleet publishes over FTL: -ingest whip does not go with it")
	}
	if !set["duration"] {
		cfg.duration = fleetDuration
	}
	if cfg.duration <= 0 {
		return cfg, errors.New("-duration must be positive")
	}
	if cfg.fleetRuns <= 0 {
		return cfg, errors.New("-fleet-runs must be positive")
	}
	var err error
	if cfg.fleetFunctions, err = parseSteps(functions, len(scheduler.Regions())); err != nil {
		return cfg, fmt.Errorf("-fleet-functions: %w", err)
	}
	return cfg, nil
}

// parseSteps reads a comma-separated list of increasing positive
// numbers, none above most.
func parseSteps(s string, most int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		if n > most {
			return nil, fmt.Errorf("%d: at most %d (one region each)", n, most)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, errors.New("numbers must increase (functions are added step by step)")
		}
		out = append(out, n)
	}
	return out, nil
}

// FleetReport is what -fleet measured; -json writes it.
type FleetReport struct {
	Machine  Machine           `json:"machine"`
	Stream   Stream            `json:"stream"`
	IdleStop float64           `json:"idle_stop_seconds"` // LS_FUNCTION_IDLE_STOP
	Home     string            `json:"region_a"`
	Other    string            `json:"region_b"`
	Runs     []FleetRun        `json:"runs"`
	Summary  map[string]Spread `json:"summary"` // by FleetRun field, over the runs
	Relay    []RelayRow        `json:"relay"`
}

// FleetRun is one run of cold start, new region and wake, in milliseconds
// from a viewer's WHEP POST (the new region's: from its first viewer's).
// A zero is a figure not measured.
type FleetRun struct {
	ColdConnectedMs float64 `json:"cold_connected_ms"` // the relay counts the function (lightspeed_relay_functions)
	ColdReadyMs     float64 `json:"cold_ready_ms"`     // GET /api/functions says ready
	ColdAnswerMs    float64 `json:"cold_answer_ms"`    // the WHEP answer came
	ColdFirstMs     float64 `json:"cold_first_frame_ms"`
	ColdStartMs     float64 `json:"cold_start_ms"` // lightspeed_fleet_start_seconds of this start

	RegionServedBy   string  `json:"region_first_served_by"` // the new region's first viewer's Lightspeed-Served-By
	RegionFirstMs    float64 `json:"region_first_frame_ms"`  // that viewer's first frame
	RegionConnected  float64 `json:"region_connected_ms"`    // the new region's function connected to the relay
	RegionReadyMs    float64 `json:"region_ready_ms"`        // … and ready in /api/functions
	RegionStartMs    float64 `json:"region_start_ms"`        // its lightspeed_fleet_start_seconds
	RegionServedMs   float64 `json:"region_served_ms"`       // the POST of the first viewer served there
	RegionServedAtMs float64 `json:"region_served_frame_ms"` // that viewer's first frame
	RegionViewers    int     `json:"region_viewers"`         // viewers opened until one was served there

	WakeConnectedMs float64 `json:"wake_connected_ms"`
	WakeReadyMs     float64 `json:"wake_ready_ms"`
	WakeAnswerMs    float64 `json:"wake_answer_ms"`
	WakeFirstMs     float64 `json:"wake_first_frame_ms"`
	WakeStartMs     float64 `json:"wake_start_ms"`
	StoppedAfterMs  float64 `json:"stopped_after_ms"` // from the last viewer's leaving to both functions stopped
}

// Spread is a figure over the runs: how many runs measured it, its
// median and its maximum.
type Spread struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// spread summarizes xs, leaving out zeros (not measured). The median of
// an even count is the mean of the middle two.
func spread(xs []float64) Spread {
	var v []float64
	for _, x := range xs {
		if x != 0 {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{}
	}
	slices.Sort(v)
	m := v[len(v)/2]
	if len(v)%2 == 0 {
		m = (v[len(v)/2-1] + m) / 2
	}
	return Spread{N: len(v), Median: round(m, 1), Max: round(v[len(v)-1], 1)}
}

// fleetFigures are the figures of FleetRun summarized, in the order
// printed, with their JSON names.
var fleetFigures = []struct {
	name, label string
	get         func(FleetRun) float64
}{
	{"cold_connected_ms", "cold start: POST → function connected to the relay", func(r FleetRun) float64 { return r.ColdConnectedMs }},
	{"cold_ready_ms", "cold start: POST → ready in /api/functions", func(r FleetRun) float64 { return r.ColdReadyMs }},
	{"cold_answer_ms", "cold start: POST → WHEP answer", func(r FleetRun) float64 { return r.ColdAnswerMs }},
	{"cold_first_frame_ms", "cold start: POST → first frame", func(r FleetRun) float64 { return r.ColdFirstMs }},
	{"cold_start_ms", "cold start: lightspeed_fleet_start_seconds", func(r FleetRun) float64 { return r.ColdStartMs }},
	{"region_first_frame_ms", "new region: first viewer's first frame (from region A)", func(r FleetRun) float64 { return r.RegionFirstMs }},
	{"region_connected_ms", "new region: arrival → its function connected to the relay", func(r FleetRun) float64 { return r.RegionConnected }},
	{"region_ready_ms", "new region: arrival → its function ready in /api/functions", func(r FleetRun) float64 { return r.RegionReadyMs }},
	{"region_start_ms", "new region: lightspeed_fleet_start_seconds", func(r FleetRun) float64 { return r.RegionStartMs }},
	{"region_served_ms", "new region: arrival → first viewer served there", func(r FleetRun) float64 { return r.RegionServedMs }},
	{"region_served_frame_ms", "new region: arrival → that viewer's first frame", func(r FleetRun) float64 { return r.RegionServedAtMs }},
	{"stopped_after_ms", "idle: last viewer gone → functions stopped", func(r FleetRun) float64 { return r.StoppedAfterMs }},
	{"wake_connected_ms", "wake: POST → function connected to the relay", func(r FleetRun) float64 { return r.WakeConnectedMs }},
	{"wake_ready_ms", "wake: POST → ready in /api/functions", func(r FleetRun) float64 { return r.WakeReadyMs }},
	{"wake_answer_ms", "wake: POST → WHEP answer", func(r FleetRun) float64 { return r.WakeAnswerMs }},
	{"wake_first_frame_ms", "wake: POST → first frame", func(r FleetRun) float64 { return r.WakeFirstMs }},
	{"wake_start_ms", "wake: lightspeed_fleet_start_seconds", func(r FleetRun) float64 { return r.WakeStartMs }},
}

// summarize sets r.Summary from its runs.
func (r *FleetReport) summarize() {
	r.Summary = make(map[string]Spread, len(fleetFigures))
	for _, f := range fleetFigures {
		var xs []float64
		for _, run := range r.Runs {
			xs = append(xs, f.get(run))
		}
		r.Summary[f.name] = spread(xs)
	}
}

// RelayRow is one window of the relay's cost with a number of functions,
// each serving one viewer of the one channel.
type RelayRow struct {
	Functions int `json:"functions"`
	Viewers   int `json:"viewers"`     // playing during the window
	Elsewhere int `json:"elsewhere"`   // viewers served by another region's function than theirs
	NoKey     int `json:"no_keyframe"` // viewers without a whole keyframe before the window

	WindowSeconds      float64 `json:"window_seconds"`
	Datagrams          uint64  `json:"datagrams"` // lightspeed_relay_datagrams_sent_total in the window
	DatagramsPerSecond float64 `json:"datagrams_per_second"`
	GatewayCores       float64 `json:"gateway_cores"`
	IdleCores          float64 `json:"idle_cores"` // the gateway with the stream and no function subscribed
	MicrosPerDatagram  float64 `json:"us_per_datagram"`
	MarginalMicros     float64 `json:"marginal_us_per_datagram"` // minus the idle CPU

	Dropped       uint64 `json:"dropped"`       // lightspeed_relay_dropped_total: a subscription's queue was full
	Retransmitted uint64 `json:"retransmitted"` // lightspeed_relay_retransmitted_total
	Lost          uint64 `json:"lost"`          // the functions' lightspeed_relay_client_lost_total
	Recovered     uint64 `json:"recovered"`
	Late          uint64 `json:"late"`
	ViewerLost    int64  `json:"viewer_lost"` // sequence numbers the viewers never got

	FunctionCores    float64 `json:"function_cores"` // all functions
	BenchCores       float64 `json:"bench_cores"`    // the viewers and the publisher
	OtherCores       float64 `json:"other_cores"`
	MachineBusyCores float64 `json:"machine_busy_cores"`
	Saturated        bool    `json:"saturated"`
	Note             string  `json:"note,omitempty"`
}

// mainFleet measures the fleet and prints and writes its report.
func mainFleet(ctx context.Context, cfg config, log *slog.Logger) error {
	rep, err := runFleet(ctx, cfg, log)
	if rep == nil {
		return err
	}
	return emit(rep, cfg.jsonFile, err)
}

// fleetBench is one -fleet run.
type fleetBench struct {
	cfg    config
	epoch  time.Time
	log    *slog.Logger
	player *player
	dir    string
	clip   clip
}

// runFleet measures cold starts, wakes and new regions with the local
// provider, then the relay's cost as functions grow. The report holds
// what was measured even when an error ends the run early.
func runFleet(ctx context.Context, cfg config, log *slog.Logger) (_ *FleetReport, err error) {
	fb := &fleetBench{cfg: cfg, epoch: time.Now(), log: log}
	if fb.player, err = newPlayer(fb.epoch); err != nil {
		return nil, err
	}
	if fb.clip, _, err = loadClips("2m"); err != nil {
		return nil, err
	}
	if fb.dir, err = os.MkdirTemp("", "lightspeed-bench-"); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(fb.dir)
	log.Info("building gateway and function")
	if err := build(ctx, fb.dir, "./gateway", "./function"); err != nil {
		return nil, err
	}
	rep := &FleetReport{Machine: machine(), IdleStop: fleetIdleStop.Seconds(), Home: fleetHome, Other: fleetOther}
	err = fb.starts(ctx, rep)
	rep.summarize()
	if err != nil {
		return rep, err
	}
	return rep, fb.relayCost(ctx, rep)
}

// peakKbps is the pace of the publisher's video.
func (fb *fleetBench) peakKbps() int {
	if fb.cfg.peakKbps < 0 {
		return ftlclient.PeakKbps(fb.clip.nals)
	}
	return fb.cfg.peakKbps
}

// fleetGateway is a gateway child process on loopback, publishing.
type fleetGateway struct {
	proc           *child
	httpAddr       string
	relayAddr      string
	data           string
	pub            *publisher
	channel        uint32
	metrics, funcs string // its /metrics and /api/functions
}

// startGateway starts the built gateway with env added to the loopback
// settings, publishes the test media to it and waits until the channel
// is live.
func (fb *fleetBench) startGateway(ctx context.Context, name string, env []string) (_ *fleetGateway, err error) {
	tcp, udp, err := loopbackPorts(2, 2)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 20)
	rand.Read(secret)
	g := &fleetGateway{
		httpAddr:  fmt.Sprintf("127.0.0.1:%d", tcp[0]),
		relayAddr: fmt.Sprintf("127.0.0.1:%d", udp[1]),
		data:      filepath.Join(fb.dir, name),
		channel:   77,
	}
	g.metrics, g.funcs = "http://"+g.httpAddr+"/metrics", "http://"+g.httpAddr+"/api/functions"
	ftlAddr := fmt.Sprintf("127.0.0.1:%d", tcp[1])
	key := fmt.Sprintf("%d-%s", g.channel, hex.EncodeToString(secret))
	g.proc, err = startChild(name, fb.dir, filepath.Join(fb.dir, "gateway"), append([]string{
		"LS_FTL_ADDR=" + ftlAddr,
		fmt.Sprintf("LS_FTL_MEDIA_ADDR=127.0.0.1:%d", udp[0]),
		"LS_WHIP_UDP_ADDR=127.0.0.1:0", // not the default :8085, which another gateway may hold
		"LS_HTTP_ADDR=" + g.httpAddr,
		"LS_RELAY_ADDR=" + g.relayAddr,
		"LS_DATA_DIR=" + g.data,
		"LS_STREAM_KEY=" + key,
		"LS_EMBEDDED_FUNCTION=false",
		"LS_REGION=" + fleetHome,
	}, env...), nil)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	if err := waitHTTP(ctx, g.proc, "http://"+g.httpAddr+"/healthz", "ok"); err != nil {
		return nil, err
	}
	if g.pub, err = publish(ctx, ftlAddr, key, fb.clip, fb.peakKbps(), nil); err != nil {
		return nil, err
	}
	err = waitChannel(ctx, g.httpAddr, g.channel, "went live", func(c channelInfo) bool {
		return c.Live && c.Video != nil && c.PacketsOut > 0
	})
	return g, err
}

// whep is the channel's WHEP URL.
func (g *fleetGateway) whep() string {
	return fmt.Sprintf("http://%s/api/whep/%d", g.httpAddr, g.channel)
}

// close stops the publisher and the gateway (and with it the functions
// its local provider runs).
func (g *fleetGateway) close() {
	if g.pub != nil {
		g.pub.stop()
	}
	g.proc.stop()
}

// stream reads what the gateway says of the published stream.
func (fb *fleetBench) stream(ctx context.Context, g *fleetGateway) Stream {
	c, err := readChannel(ctx, g.httpAddr, g.channel)
	if err != nil || c.Video == nil {
		return Stream{}
	}
	return Stream{BitrateBps: c.Video.BitrateBps, KeyframeIntervalMs: c.Video.KeyframeIntervalMs, PeakKbps: fb.peakKbps()}
}

// scrape reads the named unlabelled samples of the metrics at url; nil
// when they cannot be read.
func (fb *fleetBench) scrape(ctx context.Context, url string, names ...string) map[string]float64 {
	return (&bench{log: fb.log}).scrape(ctx, target{metrics: url}, names...)
}

// functionInfo is what the bench reads of a function from GET
// /api/functions.
type functionInfo struct {
	ID      string `json:"id"`
	Region  string `json:"region"`
	State   string `json:"state"`
	Viewers int    `json:"viewers"`
}

// functions reads GET /api/functions.
func (g *fleetGateway) functions(ctx context.Context) ([]functionInfo, error) {
	body, err := get(ctx, g.funcs)
	if err != nil {
		return nil, err
	}
	var out []functionInfo
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("bench: functions: %w", err)
	}
	return out, nil
}

// waitFunctions polls GET /api/functions and the relay's count of
// connected functions until cond holds, for timeout at most.
func (g *fleetGateway) waitFunctions(ctx context.Context, fb *fleetBench, what string, timeout time.Duration, cond func(fs []functionInfo, connected int) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := g.proc.alive(); err != nil {
			return err
		}
		fs, err := g.functions(ctx)
		m := fb.scrape(ctx, g.metrics, "lightspeed_relay_functions")
		if err == nil && m != nil && cond(fs, int(m["lightspeed_relay_functions"])) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: functions never %s (last: %+v, %v); the gateway's log:\n%s", what, fs, err, g.proc.tail())
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// servedRegion is the region of a Lightspeed-Served-By header,
// "<region> (<id>)".
func servedRegion(servedBy string) string {
	region, _, _ := strings.Cut(servedBy, " (")
	return strings.TrimSpace(region)
}

// playFrom opens w on url (WHEP) as a viewer from region (X-LS-Region)
// and waits until it is connected: watcher.play with a region.
func (w *watcher) playFrom(ctx context.Context, p *player, url, region string) error {
	v, err := viewer.WHEP(ctx, url, viewer.Options{
		Loopback:     true,
		Region:       region,
		Net:          p.net,
		NoMDNS:       true,
		ReplayWindow: srtpWindow,
		BeforePost:   func() { w.posted.Store(int64(time.Since(w.epoch))) },
		OnPacket: func(kind webrtc.RTPCodecType, b []byte) {
			if h, ok := parseRTP(b); ok {
				w.packet(kind == webrtc.RTPCodecTypeVideo, h)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("player: %w", err)
	}
	w.v = v
	w.answered.Store(int64(time.Since(w.epoch)))
	if err := v.WaitConnected(ctx); err != nil {
		v.Close()
		return err
	}
	w.connected.Store(int64(time.Since(w.epoch)))
	return nil
}

// millis is d in milliseconds, rounded to 0.1.
func millis(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 1) }

// print writes the report as tables.
func (r *FleetReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nmachine: %d cores, %s, %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion)
	fmt.Fprintf(w, "stream: %.2f Mbit/s, keyframe every %d ms\n", r.Stream.BitrateBps/1e6, r.Stream.KeyframeIntervalMs)
	if len(r.Runs) > 0 {
		fmt.Fprintf(w, "\nfunctions started by the local provider, LS_FUNCTION_IDLE_STOP=%gs; region A %s, region B %s; %d runs (ms):\n\n",
			r.IdleStop, r.Home, r.Other, len(r.Runs))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tmedian\tmax\truns\t")
		for _, f := range fleetFigures {
			s := r.Summary[f.name]
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%d\t\n", f.label, s.Median, s.Max, s.N)
		}
		tw.Flush()
		views := make([]float64, 0, len(r.Runs))
		fromHome := 0
		for _, x := range r.Runs {
			views = append(views, float64(x.RegionViewers))
			if servedRegion(x.RegionServedBy) == r.Home {
				fromHome++
			}
		}
		fmt.Fprintf(w, "new region: the first viewer from %s was served from %s in %d of %d runs; viewers opened every %v until one was served in %s: median %.0f\n",
			r.Other, r.Home, fromHome, len(r.Runs), fleetEvery, r.Other, spread(views).Median)
	}
	if len(r.Relay) > 0 {
		fmt.Fprintln(w, "\nthe gateway's cost of the relay: one channel, one viewer per function, each function in its own region:")
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "functions\tdatagrams/s\tgw cores\tµs/datagram\tmarginal µs/datagram\tdropped\tretransmitted\tfn lost/recovered/late\tviewer loss\tbusy cores (gw/fns/viewers/other)\tnote\t")
		for _, x := range r.Relay {
			note := x.Note
			if x.Elsewhere > 0 {
				note = strings.TrimPrefix(fmt.Sprintf("%s; %d viewers served from another region", note, x.Elsewhere), "; ")
			}
			if x.NoKey > 0 {
				note = strings.TrimPrefix(fmt.Sprintf("%s; %d viewers without a keyframe", note, x.NoKey), "; ")
			}
			fmt.Fprintf(tw, "%d\t%.0f\t%.3f\t%.2f\t%.2f\t%d\t%d\t%d / %d / %d\t%d\t%.2f (%.2f/%.2f/%.2f/%.2f)\t%s\t\n",
				x.Functions, x.DatagramsPerSecond, x.GatewayCores, x.MicrosPerDatagram, x.MarginalMicros,
				x.Dropped, x.Retransmitted, x.Lost, x.Recovered, x.Late, x.ViewerLost,
				x.MachineBusyCores, x.GatewayCores, x.FunctionCores, x.BenchCores, x.OtherCores, note)
		}
		tw.Flush()
		fmt.Fprintf(w, "idle: the gateway used %.3f cores with the stream and no function subscribed\n", r.Relay[0].IdleCores)
	}
}

// saturationNote is the note of a window with the machine busy on
// busy of cpus cores.
func saturationNote(busy float64, cpus int) (bool, string) {
	if busy >= saturation*float64(cpus) {
		return true, "saturated, not trusted"
	}
	return false, ""
}

// perMicros is cores over window seconds per n events, in µs; 0 when
// there were none.
func perMicros(cores, window float64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return round(cores*window/float64(n)*1e6, 2)
}
