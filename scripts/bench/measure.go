//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is a fan-out under test: the process whose CPU and memory count,
// where viewers ask to watch, and when its input frames were sent.
type target struct {
	stack      string // "lightspeed" or "baseline"
	pid        int    // the fan-out's process; 0 when unknown (attached)
	gatewayPID int    // 0 when there is none or it is unknown
	whep       string
	sent       func() sentFrames
	profile    bool   // signal the process to profile the largest step's window
	metrics    string // the function's /metrics URL; "" when unknown
}

// idleFigures are a target's costs with the stream running and no
// viewers.
type idleFigures struct {
	Cores        float64 // CPU seconds per second
	RSS          int64
	GatewayCores float64  // the gateway's, when it is a process of its own
	Heap         *float64 // Go heap in use at the end; nil when unknown
}

// measureIdle reads the target's CPU and memory, and its gateway's CPU,
// over d with no viewers.
func (b *bench) measureIdle(ctx context.Context, t target, d time.Duration) (idleFigures, error) {
	if t.pid == 0 {
		return idleFigures{}, nil
	}
	var ga, gz procSample
	a, err := readProc(t.pid)
	if err == nil && t.gatewayPID != 0 {
		ga, err = readProc(t.gatewayPID)
	}
	if err != nil {
		return idleFigures{}, err
	}
	start := time.Now()
	if err := sleep(ctx, d); err != nil {
		return idleFigures{}, err
	}
	z, err := readProc(t.pid)
	if err == nil && t.gatewayPID != 0 {
		gz, err = readProc(t.gatewayPID)
	}
	if err != nil {
		return idleFigures{}, err
	}
	secs := time.Since(start).Seconds()
	idle := idleFigures{Cores: (z.CPU - a.CPU).Seconds() / secs, RSS: z.RSS, GatewayCores: (gz.CPU - ga.CPU).Seconds() / secs}
	if f := b.functionMetrics(ctx, t); f != nil && f.mem != nil {
		idle.Heap = &f.mem.HeapInuse
	}
	return idle, nil
}

// reading is everything the bench reads at the start and the end of a
// measurement window.
type reading struct {
	at                     time.Duration // since the epoch
	server, gateway, bench procSample
	machine                machineSample
	udpDrops               uint64
	seq                    [][2]seqReading // per viewer: video, audio
	bytes                  uint64
	flow                   flow // summed over the viewers
}

func (b *bench) read(t target, a *audience) (reading, error) {
	r := reading{at: time.Since(b.epoch)}
	var err error
	if t.pid != 0 {
		if r.server, err = readProc(t.pid); err != nil {
			return r, err
		}
	}
	if t.gatewayPID != 0 {
		if r.gateway, err = readProc(t.gatewayPID); err != nil {
			return r, err
		}
	}
	if r.bench, err = readProc(os.Getpid()); err != nil {
		return r, err
	}
	if r.machine, err = readMachine(); err != nil {
		return r, err
	}
	if r.udpDrops, err = readUDPDrops(); err != nil {
		return r, err
	}
	for _, w := range a.watchers {
		r.seq = append(r.seq, [2]seqReading{w.video.read(), w.audio.read()})
		r.bytes += w.bytes.Load()
		r.flow.RTP += w.wire.rtp.Load()
		r.flow.RTPBytes += w.wire.rtpBytes.Load()
		r.flow.Other += w.wire.other.Load()
		r.flow.OtherBytes += w.wire.otherBytes.Load()
		for k := range 2 {
			r.flow.Media[k] += w.tracks[k].media.Load()
			r.flow.Needed[k] += w.tracks[k].needed.Load()
		}
	}
	return r, nil
}

// step grows the audience to n viewers, waits until they play, and
// measures one window of b.cfg.duration.
func (b *bench) step(ctx context.Context, t target, a *audience, n int, idle idleFigures) (Row, error) {
	row := Row{Stack: t.stack, Viewers: n}
	before := len(a.watchers)
	b.log.Info("opening viewers", "stack", t.stack, "viewers", n)
	failed, err := a.grow(ctx, n)
	if err != nil {
		return row, err
	}
	row.Failed = failed
	row.NoKeyframe = a.waitKeyframes(ctx, 20*time.Second)
	var ttff []time.Duration
	for _, w := range a.watchers[before:] {
		if d, ok := w.ttff(); ok {
			ttff = append(ttff, d)
		}
		p := w.posted.Load()
		b.log.Debug("join", "answer", time.Duration(w.answered.Load()-p), "connected", time.Duration(w.connected.Load()-p),
			"first_packet", time.Duration(w.firstPkt.Load()-p), "first_key", time.Duration(w.firstKey.Load()-p))
	}
	row.TTFFMs = percentiles(ttff)
	if err := sleep(ctx, b.cfg.settle); err != nil {
		return row, err
	}
	for _, w := range a.watchers {
		w.frames.take() // what came before the window
		w.arrivals.take()
	}

	profiling := t.profile && n == slices.Max(b.cfg.viewers)
	if profiling {
		b.signal(t.pid, syscall.SIGUSR1)
	}
	f0 := b.functionMetrics(ctx, t)
	r0, err := b.read(t, a)
	if err != nil {
		return row, err
	}
	b.log.Info("measuring", "stack", t.stack, "viewers", len(a.watchers), "for", b.cfg.duration)
	if err := sleep(ctx, b.cfg.duration); err != nil {
		return row, err
	}
	r1, err := b.read(t, a)
	if err != nil {
		return row, err
	}
	if f1 := b.functionMetrics(ctx, t); f0 != nil && f1 != nil {
		if f0.send != nil && f1.send != nil {
			row.Send = f1.send.since(f0.send)
		}
		row.Memory, row.Relay = f1.mem, f1.relay
	}
	if profiling {
		b.signal(t.pid, syscall.SIGUSR2)
	}
	b.figures(&row, t, a, r0, r1, idle)
	return row, nil
}

// signal sends sig to pid, logging a failure.
func (b *bench) signal(pid int, sig syscall.Signal) {
	if err := syscall.Kill(pid, sig); err != nil {
		b.log.Warn("signal", "pid", pid, "signal", sig.String(), "err", err)
	}
}

// figures fills row from the readings at the window's start and end.
func (b *bench) figures(row *Row, t target, a *audience, r0, r1 reading, idle idleFigures) {
	window := (r1.at - r0.at).Seconds()
	row.Playing = len(a.watchers)
	row.WindowSeconds = round(window, 2)
	var lostPkts int64
	for i := range r1.seq {
		for k := range 2 {
			row.Delivered += r1.seq[i][k].Recv - r0.seq[i][k].Recv
			lostPkts += max(0, lost(r0.seq[i][k], r1.seq[i][k]))
		}
	}
	row.Lost = uint64(lostPkts)
	row.UDPDrops = r1.udpDrops - r0.udpDrops
	if row.Delivered+row.Lost > 0 {
		row.LossPercent = round(100*float64(row.Lost)/float64(row.Delivered+row.Lost), 3)
	}
	if row.Playing > 0 && window > 0 {
		row.PacketsPerViewerSecond = round(float64(row.Delivered)/float64(row.Playing)/window, 1)
		row.MbpsPerViewer = round(float64(r1.bytes-r0.bytes)*8/float64(row.Playing)/window/1e6, 3)
	}
	cpus := runtime.NumCPU()
	row.MachineBusyCores = round(busyCores(r0.machine, r1.machine, cpus), 2)
	row.Saturated = row.MachineBusyCores >= saturation*float64(cpus)
	bench := (r1.bench.CPU - r0.bench.CPU).Seconds()
	row.BenchCores = round(bench/window, 3)
	accounted := bench
	if t.pid != 0 && row.Delivered > 0 {
		cpu := (r1.server.CPU - r0.server.CPU).Seconds()
		accounted += cpu
		row.ServerCores = round(cpu/window, 3)
		row.MicrosPerPacket = round(cpu/float64(row.Delivered)*1e6, 2)
		row.MarginalMicrosPerPacket = round((cpu-idle.Cores*window)/float64(row.Delivered)*1e6, 2)
		row.IdleCores = round(idle.Cores, 4)
		if cpu > 0 {
			row.ViewersPerCore = math.Round(float64(row.Playing) / (cpu / window))
		}
		row.RSSBytes = r1.server.RSS
		row.IdleRSSBytes = idle.RSS
		if row.Playing > 0 {
			row.KBPerViewer = round(float64(r1.server.RSS-idle.RSS)/float64(row.Playing)/1024, 1)
		}
	}
	if t.gatewayPID != 0 {
		gw := (r1.gateway.CPU - r0.gateway.CPU).Seconds()
		accounted += gw
		row.GatewayCores = round(gw/window, 3)
	}
	if row.Delivered > 0 {
		row.ViewerMicrosPerPacket = round(bench/float64(row.Delivered)*1e6, 2)
	}
	row.OtherCores = round(max(0, row.MachineBusyCores-accounted/window), 2)
	if row.Saturated {
		row.Note = "saturated, not trusted"
	}
	if t.pid != 0 {
		c := windowCounts{
			viewers: row.Playing, seconds: window,
			cpu: (r1.server.CPU - r0.server.CPU).Seconds(), idleCores: idle.Cores,
			hasGateway: t.gatewayPID != 0, gatewayCPU: (r1.gateway.CPU - r0.gateway.CPU).Seconds(), gatewayIdle: idle.GatewayCores,
			rss: r1.server.RSS, idleRSS: idle.RSS,
			delivered: row.Delivered, flow: r1.flow.sub(r0.flow),
		}
		if row.Memory != nil && idle.Heap != nil {
			c.hasHeap, c.heap, c.idleHeap = true, row.Memory.HeapInuse, *idle.Heap
		}
		row.PerViewer = perViewer(c)
	}

	// Latency: each frame a viewer received in the window against the
	// frame the sender sent; at the viewer, the kernel's receive time of
	// its packets, and the time the viewer's reader got them.
	sent := t.sent()
	var received [][]frameTimes
	var arrived []sentFrames
	for _, w := range a.watchers {
		var in []frameTimes
		for _, f := range w.frames.take() {
			if f.First >= r0.at && f.First < r1.at {
				in = append(in, f)
			}
		}
		received = append(received, in)
		arrived = append(arrived, sentFrames(w.arrivals.take()))
	}
	offset, votes, ok := learnOffset(sent, received)
	if !ok {
		return
	}
	row.TimestampOffset, row.OffsetVotes = offset, votes
	var kernel, reader []time.Duration
	for i, in := range received {
		for _, f := range in {
			row.FramesReceived++
			s, found := sent.find(f.TS - offset)
			if !found {
				continue
			}
			row.FramesMatched++
			reader = append(reader, f.First-s.First)
			if f.Last != 0 && s.Last != 0 {
				reader = append(reader, f.Last-s.Last)
			}
			if k, found := arrived[i].find(f.TS); found {
				kernel = append(kernel, k.First-s.First)
				if k.Last != 0 && s.Last != 0 {
					kernel = append(kernel, k.Last-s.Last)
				}
			}
		}
	}
	row.LatencyMs = percentiles(kernel)
	row.ReaderLatencyMs = percentiles(reader)
}

// saturation is the share of the machine's CPUs above which a window is
// not trusted: the processes measured then wait for a CPU.
const saturation = 0.9

// Percentiles summarize durations, in milliseconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	d = slices.Clone(d)
	slices.Sort(d)
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(d)))) - 1
		return round(float64(d[max(0, i)])/float64(time.Millisecond), 3)
	}
	return Percentiles{N: len(d), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: at(1)}
}

// round rounds x to digits decimals.
func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bench: %w", ctx.Err())
	}
}

// sendFigures are the function's batched-send counters (its metrics).
type sendFigures struct {
	Calls     uint64 `json:"sendmmsg_calls"`
	Datagrams uint64 `json:"batched_datagrams"`
	Segmented uint64 `json:"segmented_datagrams"`
	Errors    uint64 `json:"send_errors"`
}

func (s *sendFigures) since(o *sendFigures) *sendFigures {
	return &sendFigures{s.Calls - o.Calls, s.Datagrams - o.Datagrams, s.Segmented - o.Segmented, s.Errors - o.Errors}
}

// memFigures is where the function's memory is, from its Go runtime.
type memFigures struct {
	HeapInuse  float64 `json:"heap_inuse_bytes"`
	StackInuse float64 `json:"stack_inuse_bytes"`
	Goroutines float64 `json:"goroutines"`
}

// relayFigures are the function's relay losses since it started: the
// datagrams from the gateway found missing, recovered by NACK, or come
// after their NACKs were given up. Most come with the keyframe cache a
// subscription starts with.
type relayFigures struct {
	Lost      uint64 `json:"lost"`
	Recovered uint64 `json:"recovered"`
	Late      uint64 `json:"late"`
}

// functionFigures are what the bench reads from the function's metrics.
type functionFigures struct {
	send  *sendFigures
	mem   *memFigures
	relay *relayFigures
}

// functionMetrics reads the target's metrics once; nil when it has none
// or they cannot be read. What the target does not export is nil.
func (b *bench) functionMetrics(ctx context.Context, t target) *functionFigures {
	m := b.scrape(ctx, t,
		"lightspeed_function_sendmmsg_calls_total", "lightspeed_function_batched_datagrams_total",
		"lightspeed_function_segmented_datagrams_total", "lightspeed_function_send_errors_total",
		"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines",
		"lightspeed_relay_client_lost_total", "lightspeed_relay_client_recovered_total", "lightspeed_relay_client_late_total")
	if m == nil {
		return nil
	}
	// The baseline has the Go runtime's metrics only.
	f := &functionFigures{}
	if _, ok := m["lightspeed_function_sendmmsg_calls_total"]; ok {
		f.send = &sendFigures{
			Calls:     uint64(m["lightspeed_function_sendmmsg_calls_total"]),
			Datagrams: uint64(m["lightspeed_function_batched_datagrams_total"]),
			Segmented: uint64(m["lightspeed_function_segmented_datagrams_total"]),
			Errors:    uint64(m["lightspeed_function_send_errors_total"]),
		}
	}
	if _, ok := m["go_memstats_heap_inuse_bytes"]; ok {
		f.mem = &memFigures{m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"], m["go_goroutines"]}
	}
	if _, ok := m["lightspeed_relay_client_lost_total"]; ok {
		f.relay = &relayFigures{
			Lost:      uint64(m["lightspeed_relay_client_lost_total"]),
			Recovered: uint64(m["lightspeed_relay_client_recovered_total"]),
			Late:      uint64(m["lightspeed_relay_client_late_total"]),
		}
	}
	return f
}

// scrape reads the named unlabelled samples of the target's metrics (or
// labelled function="embedded", an embedded function's); nil when it has
// none or they cannot be read.
func (b *bench) scrape(ctx context.Context, t target, names ...string) map[string]float64 {
	if t.metrics == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.metrics, nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.log.Warn("function metrics", "err", err)
		return nil
	}
	defer resp.Body.Close()
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		// A function embedded in the gateway labels its own.
		name = strings.TrimSuffix(name, `{function="embedded"}`)
		if !ok || !slices.Contains(names, name) {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	if sc.Err() != nil {
		return nil
	}
	return out
}
