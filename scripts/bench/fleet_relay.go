//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"lightspeed/gateway/scheduler"
)

// relayFunction is a function process the bench started for the relay's
// cost, in its own region, with its metrics on loopback.
type relayFunction struct {
	proc    *child
	region  string
	metrics string
}

// relayReading is what the bench reads at the start and the end of a
// relay window.
type relayReading struct {
	at              time.Duration
	gateway, bench  procSample
	functions       time.Duration // CPU of all functions
	machine         machineSample
	sent, dropped   float64 // the relay's counters
	retransmitted   float64
	lost, recovered float64 // summed over the functions
	late            float64
	seq             [][2]seqReading // per viewer: video, audio
}

// relayCost measures the gateway's CPU per datagram its relay sends with
// each number of functions of -fleet-functions: function processes
// started by hand, each in its own region, each subscribed to the one
// channel by one viewer from its region.
func (fb *fleetBench) relayCost(ctx context.Context, rep *FleetReport) error {
	fb.log.Info("starting a gateway for the relay's cost")
	g, err := fb.startGateway(ctx, "relay-gateway", []string{"LS_LOG_LEVEL=warn"})
	if err != nil {
		return err
	}
	defer g.close()
	var (
		fns     []*relayFunction
		viewers []*watcher
	)
	defer func() {
		var wg sync.WaitGroup
		for _, w := range viewers {
			wg.Go(w.close)
		}
		for _, f := range fns {
			wg.Go(f.proc.stop)
		}
		wg.Wait()
	}()
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	idleFor := max(fb.cfg.duration/2, 3*time.Second)
	fb.log.Info("measuring the gateway with the stream and no function", "for", idleFor)
	idle, err := (&bench{log: fb.log}).measureIdle(ctx, target{pid: g.proc.pid()}, idleFor)
	if err != nil {
		return err
	}
	regions := scheduler.Regions()
	for _, n := range fb.cfg.fleetFunctions {
		fb.log.Info("starting functions", "functions", n)
		tcp, _, err := loopbackPorts(n-len(fns), 0)
		if err != nil {
			return err
		}
		for _, port := range tcp {
			region := regions[len(fns)].Code
			f := &relayFunction{region: region, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", port)}
			f.proc, err = startChild("function-"+region, fb.dir, filepath.Join(fb.dir, "function"), []string{
				"LS_GATEWAY_ADDR=" + g.relayAddr,
				"LS_DATA_DIR=" + g.data,
				"LS_WEBRTC_UDP_ADDR=127.0.0.1:0",
				"LS_PUBLIC_IPS=127.0.0.1",
				"LS_REGION=" + region,
				"LS_MACHINE_ID=bench-" + region,
				"LS_CAPACITY=10",
				fmt.Sprintf("LS_METRICS_ADDR=127.0.0.1:%d", port),
				"LS_LOG_LEVEL=warn",
			}, nil)
			if err != nil {
				return err
			}
			fns = append(fns, f)
		}
		if err := waitHTTP(ctx, g.proc, g.metrics, fmt.Sprintf("\nlightspeed_relay_functions %d\n", n)); err != nil {
			return err
		}
		if viewers, err = fb.openViewers(ctx, g, viewers, fns); err != nil {
			return err
		}
		row, err := fb.relayWindow(ctx, g, fns, viewers, idle)
		if err != nil {
			return err
		}
		fb.log.Info("relay window done", "functions", n, "us_per_datagram", row.MicrosPerDatagram,
			"marginal", row.MarginalMicros, "dropped", row.Dropped, "busy_cores", row.MachineBusyCores)
		rep.Relay = append(rep.Relay, row)
	}
	return nil
}

// openViewers opens one viewer for each function that has none yet, from
// its region, eight at a time, and returns all the viewers.
func (fb *fleetBench) openViewers(ctx context.Context, g *fleetGateway, viewers []*watcher, fns []*relayFunction) ([]*watcher, error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, 8)
		add  = make([]*watcher, len(fns)-len(viewers))
	)
	for i := range add {
		region := fns[len(viewers)+i].region
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w := newWatcher(fb.epoch)
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := w.playFrom(cctx, fb.player, g.whep(), region); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("viewer from %s: %w", region, err))
				mu.Unlock()
				return
			}
			add[i] = w
		})
	}
	wg.Wait()
	for _, w := range add {
		if w != nil {
			viewers = append(viewers, w)
		}
	}
	return viewers, errors.Join(errs...)
}

// relayWindow waits until every viewer has a whole keyframe, then 2 s
// more (past the keyframe caches the subscriptions started with), and
// measures one window of -duration.
func (fb *fleetBench) relayWindow(ctx context.Context, g *fleetGateway, fns []*relayFunction, viewers []*watcher, idle idleFigures) (RelayRow, error) {
	row := RelayRow{Functions: len(fns), Viewers: len(viewers), IdleCores: round(idle.Cores, 4)}
	for i, w := range viewers {
		if servedRegion(w.v.ServedBy()) != fns[i].region {
			row.Elsewhere++
		}
	}
	a := &audience{watchers: viewers}
	row.NoKey = a.waitKeyframes(ctx, 20*time.Second)
	if err := sleep(ctx, 2*time.Second); err != nil {
		return row, err
	}
	for _, w := range viewers {
		w.frames.take()
		w.arrivals.take()
	}
	r0, err := fb.readRelay(ctx, g, fns, viewers)
	if err != nil {
		return row, err
	}
	fb.log.Info("measuring the relay", "functions", len(fns), "for", fb.cfg.duration)
	if err := sleep(ctx, fb.cfg.duration); err != nil {
		return row, err
	}
	r1, err := fb.readRelay(ctx, g, fns, viewers)
	if err != nil {
		return row, err
	}
	relayRowFigures(&row, r0, r1, runtime.NumCPU())
	return row, nil
}

// relayRowFigures fills row from the readings at a window's start and end.
func relayRowFigures(row *RelayRow, r0, r1 relayReading, cpus int) {
	window := (r1.at - r0.at).Seconds()
	row.WindowSeconds = round(window, 2)
	cores := func(a, b time.Duration) float64 { return round((b-a).Seconds()/window, 4) }
	row.GatewayCores = cores(r0.gateway.CPU, r1.gateway.CPU)
	row.FunctionCores = cores(r0.functions, r1.functions)
	row.BenchCores = cores(r0.bench.CPU, r1.bench.CPU)
	row.MachineBusyCores = round(busyCores(r0.machine, r1.machine, cpus), 3)
	row.OtherCores = round(max(0, row.MachineBusyCores-row.GatewayCores-row.FunctionCores-row.BenchCores), 3)
	row.Saturated, row.Note = saturationNote(row.MachineBusyCores, cpus)
	row.Datagrams = uint64(r1.sent - r0.sent)
	row.DatagramsPerSecond = round(float64(row.Datagrams)/window, 1)
	row.MicrosPerDatagram = perMicros(row.GatewayCores, window, row.Datagrams)
	row.MarginalMicros = perMicros(max(0, row.GatewayCores-row.IdleCores), window, row.Datagrams)
	row.Dropped = uint64(r1.dropped - r0.dropped)
	row.Retransmitted = uint64(r1.retransmitted - r0.retransmitted)
	row.Lost = uint64(r1.lost - r0.lost)
	row.Recovered = uint64(r1.recovered - r0.recovered)
	row.Late = uint64(r1.late - r0.late)
	for i := range min(len(r0.seq), len(r1.seq)) {
		for t := range 2 {
			row.ViewerLost += lost(r0.seq[i][t], r1.seq[i][t])
		}
	}
}

// readRelay reads the processes' CPU, the machine's, and the relay's and
// the functions' counters.
func (fb *fleetBench) readRelay(ctx context.Context, g *fleetGateway, fns []*relayFunction, viewers []*watcher) (relayReading, error) {
	var (
		r   relayReading
		err error
	)
	m := fb.scrape(ctx, g.metrics, "lightspeed_relay_datagrams_sent_total", "lightspeed_relay_dropped_total", "lightspeed_relay_retransmitted_total")
	if m == nil {
		return r, errors.New("bench: the gateway's metrics cannot be read")
	}
	r.sent, r.dropped, r.retransmitted = m["lightspeed_relay_datagrams_sent_total"], m["lightspeed_relay_dropped_total"], m["lightspeed_relay_retransmitted_total"]
	for _, f := range fns {
		fm := fb.scrape(ctx, f.metrics, "lightspeed_relay_client_lost_total", "lightspeed_relay_client_recovered_total", "lightspeed_relay_client_late_total")
		r.lost += fm["lightspeed_relay_client_lost_total"]
		r.recovered += fm["lightspeed_relay_client_recovered_total"]
		r.late += fm["lightspeed_relay_client_late_total"]
	}
	r.at = time.Since(fb.epoch)
	if r.gateway, err = readProc(g.proc.pid()); err != nil {
		return r, err
	}
	for _, f := range fns {
		p, err := readProc(f.proc.pid())
		if err != nil {
			return r, fmt.Errorf("%w; its log:\n%s", err, f.proc.tail())
		}
		r.functions += p.CPU
	}
	if r.bench, err = readProc(os.Getpid()); err != nil {
		return r, err
	}
	if r.machine, err = readMachine(); err != nil {
		return r, err
	}
	for _, w := range viewers {
		r.seq = append(r.seq, [2]seqReading{w.video.read(), w.audio.read()})
	}
	return r, nil
}
