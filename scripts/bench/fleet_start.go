//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"lightspeed/shared/testkit/ports"
)

// starts measures -fleet-runs runs of a cold start in region A, a first
// viewer from region B while A's function runs, and a wake in A, with a
// gateway whose local provider runs each function as the gateway's own
// binary (gateway function).
func (fb *fleetBench) starts(ctx context.Context, rep *FleetReport) error {
	udpPorts, err := ports.FreeUDPRange(8)
	if err != nil {
		return err
	}
	fb.log.Info("starting a gateway with the local provider")
	g, err := fb.startGateway(ctx, "fleet-gateway", []string{
		"LS_FUNCTION_PROVIDER=local",
		"LS_FUNCTION_UDP_PORTS=" + udpPorts,
		"LS_FUNCTION_IDLE_STOP=" + fleetIdleStop.String(),
		"LS_FUNCTION_IDLE_DESTROY=" + fleetIdleDestroy.String(),
		"LS_FUNCTION_START_WAIT=30s",
		// The functions bind their WebRTC ports on this host and advertise
		// this address: loopback candidates only.
		"LS_WEBRTC_UDP_ADDR=127.0.0.1:0",
		"LS_PUBLIC_IPS=127.0.0.1",
		"LS_LOG_LEVEL=info", // the fleet's decisions, in the log
	})
	if err != nil {
		return err
	}
	defer g.close()
	// Let the gateway measure the stream before it is described.
	if err := sleep(ctx, 2*time.Second); err != nil {
		return err
	}
	rep.Stream = fb.stream(ctx, g)
	for i := range fb.cfg.fleetRuns {
		err := g.waitFunctions(ctx, fb, "all destroyed", time.Minute, func(fs []functionInfo, connected int) bool {
			return len(fs) == 0 && connected == 0
		})
		if err != nil {
			return err
		}
		fb.log.Info("fleet run", "run", i+1, "of", fb.cfg.fleetRuns)
		run, err := fb.run(ctx, g)
		rep.Runs = append(rep.Runs, run)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		fb.log.Info("fleet run done", "cold_ready_ms", run.ColdReadyMs, "cold_first_frame_ms", run.ColdFirstMs,
			"region_served_ms", run.RegionServedMs, "wake_ready_ms", run.WakeReadyMs, "wake_first_frame_ms", run.WakeFirstMs)
	}
	return nil
}

// run measures one cold start, new region and wake. It starts with no
// function, and ends when the functions it started are stopped and
// woken, or destroyed.
func (fb *fleetBench) run(ctx context.Context, g *fleetGateway) (FleetRun, error) {
	var (
		run     FleetRun
		viewers []*watcher
	)
	closeAll := func() {
		var wg sync.WaitGroup
		for _, w := range viewers {
			wg.Go(w.close)
		}
		wg.Wait()
		viewers = nil
	}
	defer func() { closeAll() }()

	// A cold start: the first viewer, from A, with no function anywhere.
	if err := fb.somewhereInTheRound(ctx); err != nil {
		return run, err
	}
	h0 := fb.startHistogram(ctx, g)
	a, cold, err := fb.arrive(ctx, g, fleetHome, 0)
	if a != nil {
		viewers = append(viewers, a)
	}
	if err != nil {
		return run, fmt.Errorf("cold start: %w", err)
	}
	run.ColdConnectedMs, run.ColdReadyMs, run.ColdAnswerMs, run.ColdFirstMs = millis(cold.connected), millis(cold.ready), millis(cold.answer), millis(cold.first)
	run.ColdStartMs = startMs(h0, fb.startHistogram(ctx, g))

	// A new region: viewers from B while only A has a function.
	if err := fb.somewhereInTheRound(ctx); err != nil {
		return run, err
	}
	h0 = fb.startHistogram(ctx, g)
	sw := fb.watchStart(ctx, g, fleetOther, 1)
	defer sw.stop()
	first := newWatcher(fb.epoch)
	if err := first.playFrom(ctx, fb.player, g.whep(), fleetOther); err != nil {
		return run, fmt.Errorf("new region: %w", err)
	}
	viewers = append(viewers, first)
	run.RegionServedBy = first.v.ServedBy()
	d, err := firstFrame(ctx, first)
	if err != nil {
		return run, fmt.Errorf("new region: %w", err)
	}
	run.RegionFirstMs = millis(d)
	arrived := time.Duration(first.posted.Load())
	for n := 1; ; n++ {
		if err := sleep(ctx, arrived+time.Duration(n)*fleetEvery-time.Since(fb.epoch)); err != nil {
			return run, err
		}
		if time.Duration(n)*fleetEvery > 30*time.Second {
			return run, fmt.Errorf("new region: no viewer from %s served there after 30 s; the gateway's log:\n%s", fleetOther, g.proc.tail())
		}
		w := newWatcher(fb.epoch)
		if err := w.playFrom(ctx, fb.player, g.whep(), fleetOther); err != nil {
			return run, fmt.Errorf("new region: viewer %d: %w", n+1, err)
		}
		viewers = append(viewers, w)
		if servedRegion(w.v.ServedBy()) != fleetOther {
			continue
		}
		run.RegionViewers = n + 1
		run.RegionServedMs = millis(time.Duration(w.posted.Load()) - arrived)
		if _, err := firstFrame(ctx, w); err != nil {
			return run, fmt.Errorf("new region: %w", err)
		}
		run.RegionServedAtMs = millis(time.Duration(w.firstKey.Load()) - arrived)
		break
	}
	ready, conn, err := sw.wait(ctx)
	if err != nil {
		return run, fmt.Errorf("new region: %w", err)
	}
	run.RegionReadyMs, run.RegionConnected = millis(ready-arrived), millis(conn-arrived)
	run.RegionStartMs = startMs(h0, fb.startHistogram(ctx, g))

	// Idle: every viewer leaves; both functions stop.
	closeAll()
	left := time.Since(fb.epoch)
	err = g.waitFunctions(ctx, fb, "stopped", time.Minute, func(fs []functionInfo, connected int) bool {
		return len(fs) > 0 && connected == 0 && !slices.ContainsFunc(fs, func(f functionInfo) bool { return f.State != "stopped" })
	})
	if err != nil {
		return run, err
	}
	run.StoppedAfterMs = millis(time.Since(fb.epoch) - left)

	// A wake: a viewer from A with A's function stopped.
	if err := fb.somewhereInTheRound(ctx); err != nil {
		return run, err
	}
	h0 = fb.startHistogram(ctx, g)
	w, wake, err := fb.arrive(ctx, g, fleetHome, 0)
	if w != nil {
		viewers = append(viewers, w)
	}
	if err != nil {
		return run, fmt.Errorf("wake: %w", err)
	}
	run.WakeConnectedMs, run.WakeReadyMs, run.WakeAnswerMs, run.WakeFirstMs = millis(wake.connected), millis(wake.ready), millis(wake.answer), millis(wake.first)
	run.WakeStartMs = startMs(h0, fb.startHistogram(ctx, g))
	return run, nil
}

// fleetRound is how often the fleet decides (fleet.Config.Interval's
// default).
const fleetRound = time.Second

// somewhereInTheRound waits a random time up to a fleet round. The
// fleet notices that a started function connected only at its next
// round, so a viewer's wait depends on where in the round it came; the
// bench's waits end just after a round (the states they wait for change
// there), and without this every viewer would come at the same point of
// it, as real viewers do not.
func (fb *fleetBench) somewhereInTheRound(ctx context.Context) error {
	return sleep(ctx, rand.N(fleetRound))
}

// startFigures are the times from a viewer's WHEP POST to a function
// starting for it: connected to the relay, ready in /api/functions, the
// answer, the viewer's first frame.
type startFigures struct {
	connected, ready, answer, first time.Duration
}

// arrive opens a viewer from region, which no running function serves,
// and measures the start of its function: the relay counting more than
// connected functions, and a function of region ready. The viewer is
// returned open.
func (fb *fleetBench) arrive(ctx context.Context, g *fleetGateway, region string, connected int) (*watcher, startFigures, error) {
	var f startFigures
	sw := fb.watchStart(ctx, g, region, connected)
	defer sw.stop()
	w := newWatcher(fb.epoch)
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := w.playFrom(pctx, fb.player, g.whep(), region); err != nil {
		return nil, f, err
	}
	posted := time.Duration(w.posted.Load())
	if got := servedRegion(w.v.ServedBy()); got != region {
		fb.log.Warn("viewer served elsewhere", "region", region, "served_by", w.v.ServedBy())
	}
	f.answer = time.Duration(w.answered.Load()) - posted
	var err error
	if f.first, err = firstFrame(ctx, w); err != nil {
		return w, f, err
	}
	ready, conn, err := sw.wait(ctx)
	if err != nil {
		return w, f, err
	}
	f.ready, f.connected = ready-posted, conn-posted
	return w, f, nil
}

// firstFrame waits for w's first whole keyframe, 20 s at most, and
// returns its time from the WHEP POST.
func firstFrame(ctx context.Context, w *watcher) (time.Duration, error) {
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-w.gotKey:
		d, _ := w.ttff()
		return d, nil
	case <-t.C:
		return 0, errors.New("bench: no whole keyframe within 20 s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// startWatch polls the gateway, every fleetPoll, for a function of a
// region to be ready in /api/functions and for the relay to count more
// functions than it did. Its times are since the epoch, when a poll's
// answer said so (up to fleetPoll and a request late).
type startWatch struct {
	cancel           context.CancelFunc
	done             chan struct{}
	ready, connected time.Duration // set before done closes
	err              error
}

// watchStart starts polling for region's function.
func (fb *fleetBench) watchStart(ctx context.Context, g *fleetGateway, region string, connected int) *startWatch {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	s := &startWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(fleetPoll)
		defer t.Stop()
		for s.ready == 0 || s.connected == 0 {
			if s.connected == 0 {
				if m := fb.scrape(ctx, g.metrics, "lightspeed_relay_functions"); m != nil && int(m["lightspeed_relay_functions"]) > connected {
					s.connected = time.Since(fb.epoch)
				}
			}
			if s.ready == 0 {
				fs, _ := g.functions(ctx)
				if slices.ContainsFunc(fs, func(f functionInfo) bool { return f.Region == region && f.State == "ready" }) {
					s.ready = time.Since(fb.epoch)
				}
			}
			select {
			case <-ctx.Done():
				s.err = fmt.Errorf("bench: no function ready in %s within a minute (%w)", region, ctx.Err())
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// wait waits until the function is ready and connected and returns when
// each was seen.
func (s *startWatch) wait(ctx context.Context) (ready, connected time.Duration, err error) {
	select {
	case <-s.done:
		return s.ready, s.connected, s.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// stop ends the polling; it may be called more than once.
func (s *startWatch) stop() {
	s.cancel()
	<-s.done
}

// histogram is the sum and count of the gateway's
// lightspeed_fleet_start_seconds.
type histogram struct{ sum, count float64 }

// startHistogram reads lightspeed_fleet_start_seconds.
func (fb *fleetBench) startHistogram(ctx context.Context, g *fleetGateway) histogram {
	m := fb.scrape(ctx, g.metrics, "lightspeed_fleet_start_seconds_sum", "lightspeed_fleet_start_seconds_count")
	return histogram{m["lightspeed_fleet_start_seconds_sum"], m["lightspeed_fleet_start_seconds_count"]}
}

// startMs is the mean of the observations made between two readings of
// the histogram, in milliseconds; 0 when there were none.
func startMs(a, b histogram) float64 {
	n := b.count - a.count
	if n <= 0 {
		return 0
	}
	return round((b.sum-a.sum)/n*1000, 1)
}
