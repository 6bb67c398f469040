//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"lightspeed/shared/testkit/viewer"
)

// TTFF is the time to first frame of viewers joining one at a time at
// random points of the GOP: from the WHEP POST to the first whole
// keyframe (SPS … IDR with the marker bit) received.
type TTFF struct {
	Stack         string      `json:"stack"`
	KeyintSeconds float64     `json:"keyint_seconds"`
	Joins         int         `json:"joins"`
	Failed        int         `json:"failed"` // no connection, or no keyframe within keyint + 10 s
	Ms            Percentiles `json:"ms"`
}

// slowJoin is a time to first frame worth a line in the log.
const slowJoin = 300 * time.Millisecond

// joins lets n viewers join url at uniformly random times over
// max(keyint, n × 250 ms), so they land at every point of the GOP and
// seldom at once, and measures each one's time to first frame.
func (b *bench) joins(ctx context.Context, stack, url string, keyint time.Duration, n int) TTFF {
	res := TTFF{Stack: stack, KeyintSeconds: keyint.Seconds(), Joins: n}
	spread := max(keyint, time.Duration(n)*250*time.Millisecond)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
		d  []time.Duration
	)
	for range n {
		at := rand.N(spread)
		wg.Go(func() {
			ok := false
			defer func() {
				if !ok {
					mu.Lock()
					res.Failed++
					mu.Unlock()
				}
			}()
			if sleep(ctx, at) != nil {
				return
			}
			w := newWatcher(b.epoch)
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := w.play(cctx, b.player, url); err != nil {
				b.log.Warn("join failed", "err", err)
				return
			}
			defer w.close()
			select {
			case <-w.gotKey:
			case <-time.After(keyint + 10*time.Second):
				return
			case <-ctx.Done():
				return
			}
			p := w.posted.Load()
			level := slog.LevelDebug
			if t, _ := w.ttff(); t > slowJoin {
				level = slog.LevelInfo // where the time went: the connection, the first packet, or a broken keyframe
			}
			b.log.Log(ctx, level, "join", "keyint", keyint, "answer", time.Duration(w.answered.Load()-p),
				"ice_connected", w.sincePost(w.v.ICEConnected()), "pair", w.v.SelectedPair(), "connected", time.Duration(w.connected.Load()-p),
				"first_packet", time.Duration(w.firstPkt.Load()-p), "first_key", time.Duration(w.firstKey.Load()-p),
				"broken_keyframes", w.broken.Load())
			if t, got := w.ttff(); got {
				ok = true
				mu.Lock()
				d = append(d, t)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.Ms = percentiles(d)
	return res
}

// Cold is the time to first frame of a viewer that joins as soon as the
// channel is live, its publisher just started in the middle of a GOP: no
// keyframe is cached, so the viewer waits for the publisher's next one,
// which a WHIP publisher is asked for (PLI) and an FTL publisher cannot
// be.
type Cold struct {
	Ingest        string      `json:"ingest"`
	KeyintSeconds float64     `json:"keyint_seconds"`
	Runs          []ColdRun   `json:"runs"`
	Failed        int         `json:"failed"`
	Ms            Percentiles `json:"ms"`            // the viewer's WHEP POST → its first whole keyframe
	FromStartMs   Percentiles `json:"from_start_ms"` // the publisher's first frame → the viewer's first whole keyframe
}

// ColdRun is one publisher start of Cold.
type ColdRun struct {
	StartFrame  int     `json:"start_frame"`       // the clip's frame the publisher started at
	WaitFrames  int     `json:"wait_frames"`       // frames from there to the clip's next keyframe
	PostMs      float64 `json:"post_ms"`           // the publisher's first frame → the viewer's WHEP POST that was answered
	Ms          float64 `json:"ms"`                // that POST → the first whole keyframe
	FromStartMs float64 `json:"from_start_ms"`     // the publisher's first frame → the first whole keyframe
	SentKeyMs   float64 `json:"sent_key_ms"`       // the publisher's first frame → the first keyframe it sent (at the gateway's input with FTL)
	Requests    int64   `json:"keyframe_requests"` // PLIs and FIRs the WHIP publisher got
	Error       string  `json:"error,omitempty"`
}

// coldStarts starts a publisher of c runs times, each from a P frame
// spread evenly over the GOP, without waiting for the channel to go
// live, once t's function has dropped the channel; one viewer POSTs to
// t's WHEP URL until the channel is live (every 5 ms), and its time to
// first frame is measured, with when the publisher sent its first
// keyframe (t's sent frames); then the viewer and the publisher stop.
func (b *bench) coldStarts(ctx context.Context, t target, c clip, runs int,
	start func(clip, bool) (*publisher, error), stop func(*publisher) error) (Cold, error) {
	res := Cold{Ingest: b.cfg.ingest, KeyintSeconds: c.keyint.Seconds()}
	gop := int(c.keyint.Seconds() * 30) // frames per GOP at 30 fps
	var ms, from []time.Duration
	for i := range runs {
		k := min(max((2*i+1)*gop/(2*runs), 1), gop-1)
		run := ColdRun{StartFrame: k, WaitFrames: gop - k}
		// The first viewer of the channel: the function subscribes at its
		// join, to a hub whose cache the restart emptied. (A function
		// still subscribed keeps what it had of the previous session.)
		if err := b.waitUnsubscribed(ctx, t); err != nil {
			return res, err
		}
		p, err := start(fromFrame(c, k), false)
		if err != nil {
			return res, err
		}
		began := p.began.Sub(b.epoch)
		w, err := b.joinLive(ctx, t.whep, 5*time.Second)
		if err == nil {
			select {
			case <-w.gotKey:
			case <-time.After(c.keyint + 10*time.Second):
				err = errors.New("no whole keyframe")
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if err == nil {
			d, _ := w.ttff()
			fs := time.Duration(w.firstKey.Load()) - began
			run.PostMs = toMs(time.Duration(w.posted.Load()) - began)
			run.Ms, run.FromStartMs = toMs(d), toMs(fs)
			ms, from = append(ms, d), append(from, fs)
		} else {
			res.Failed++
			run.Error = err.Error()
			b.log.Warn("cold join failed", "err", err)
		}
		if w != nil {
			w.close()
		}
		run.Requests = p.keyframeRequests()
		run.SentKeyMs = b.firstSentKey(ctx, t.sent, began, c.keyint+2*time.Second)
		b.log.Info("cold join", "start_frame", k, "wait_frames", run.WaitFrames, "post_ms", run.PostMs,
			"ttff_ms", run.Ms, "from_start_ms", run.FromStartMs, "sent_key_ms", run.SentKeyMs, "keyframe_requests", run.Requests)
		res.Runs = append(res.Runs, run)
		if err := stop(p); err != nil {
			return res, err
		}
	}
	res.Ms, res.FromStartMs = percentiles(ms), percentiles(from)
	return res, nil
}

// unsubscribeGrace is how long a function stays subscribed to a channel
// after its last viewer left (function/fanout's default).
const unsubscribeGrace = 10 * time.Second

// waitUnsubscribed waits until t's function has no channel subscribed
// (its lightspeed_function_channels metric), at most twice its grace;
// without its metrics, the grace and a second.
func (b *bench) waitUnsubscribed(ctx context.Context, t target) error {
	if t.metrics == "" {
		return sleep(ctx, unsubscribeGrace+time.Second)
	}
	deadline := time.Now().Add(2 * unsubscribeGrace)
	for {
		m := b.scrape(ctx, t, "lightspeed_function_channels")
		if n, ok := m["lightspeed_function_channels"]; ok && n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: the function still has %v channels subscribed after %s", m["lightspeed_function_channels"], 2*unsubscribeGrace)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// firstSentKey waits until sent holds a keyframe sent after began, at
// most wait, and returns how long after began it was sent; 0 if none.
func (b *bench) firstSentKey(ctx context.Context, sent func() sentFrames, began time.Duration, wait time.Duration) float64 {
	deadline := time.Now().Add(wait)
	for {
		for _, f := range sent() {
			if f.Key && f.First >= began {
				return toMs(f.First - began)
			}
		}
		if time.Now().After(deadline) || sleep(ctx, 20*time.Millisecond) != nil {
			return 0
		}
	}
}

// joinLive opens a viewer on url, POSTing again every 5 ms while the
// gateway answers that the channel is not live (404), for at most wait.
func (b *bench) joinLive(ctx context.Context, url string, wait time.Duration) (*watcher, error) {
	deadline := time.Now().Add(wait)
	for {
		w := newWatcher(b.epoch)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := w.play(cctx, b.player, url)
		cancel()
		if err == nil {
			return w, nil
		}
		var herr *viewer.HTTPError
		if !errors.As(err, &herr) || herr.Status != http.StatusNotFound || time.Now().After(deadline) {
			return nil, err
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return nil, err
		}
	}
}
