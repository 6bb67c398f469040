//go:build linux

package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
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
