//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"lightspeed/shared/h264"
	"lightspeed/shared/testkit/viewer"
)

// watcher is one light viewer: a pion WHEP viewer without interceptors
// (no NACKs, no receiver reports) that decodes nothing (see player). Per
// packet it counts, follows the sequence numbers and checks that
// keyframes arrive whole; per video frame it notes when the frame's first
// and last packet arrived.
type watcher struct {
	epoch time.Time
	v     *viewer.Viewer

	posted    atomic.Int64 // when the WHEP POST began, ns since epoch
	answered  atomic.Int64 // when the answer was applied
	connected atomic.Int64 // when the PeerConnection was connected
	firstPkt  atomic.Int64 // when the first video packet came
	firstKey  atomic.Int64 // when the first whole keyframe was in; 0 before
	bytes     atomic.Uint64
	keys      atomic.Uint64 // whole keyframes received
	broken    atomic.Uint64 // keyframes begun but not received whole (a packet missing)
	gotKey    chan struct{} // closed at the first whole keyframe

	video, audio seqCount
	tracks       [2]trackCount // video, audio: media bytes and the packets they need
	wire         wireCount     // the datagrams the viewer's socket received
	frames       *frameLog     // as the viewer's reader got them
	arrivals     *frameLog     // as the kernel queued them on the socket
	key          keyCheck      // owned by the video reader goroutine
}

// newWatcher returns a watcher that is not playing yet.
func newWatcher(epoch time.Time) *watcher {
	return &watcher{epoch: epoch, frames: newFrameLog(256), arrivals: newFrameLog(256), gotKey: make(chan struct{})}
}

// play opens the viewer on url (WHEP) and waits until it is connected.
func (w *watcher) play(ctx context.Context, p *player, url string) error {
	posted := func() { w.posted.Store(int64(time.Since(w.epoch))) }
	v, err := p.play(ctx, url, posted, w.packet, w.arrivals, &w.wire)
	if err != nil {
		return err
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

// sincePost returns how long after the WHEP POST t was, 0 for a zero t.
func (w *watcher) sincePost(t time.Time) time.Duration {
	if t.IsZero() {
		return 0
	}
	return t.Sub(w.epoch) - time.Duration(w.posted.Load())
}

// close ends the viewer.
func (w *watcher) close() {
	if w.v != nil {
		w.v.Close()
	}
}

// ttff is the time from the WHEP POST to the first whole keyframe, or
// false if none came yet.
func (w *watcher) ttff() (time.Duration, bool) {
	k, p := w.firstKey.Load(), w.posted.Load()
	if k == 0 || p == 0 {
		return 0, false
	}
	return time.Duration(k - p), true
}

// packet is the viewer's per-packet callback, called on the reader
// goroutine of each track. It does not allocate.
func (w *watcher) packet(video bool, h rtpHeader) {
	w.bytes.Add(uint64(12 + len(h.payload)))
	if !video {
		w.audio.add(h.seq)
		w.tracks[1].add(h.ts, mediaBytes(false, h.payload))
		return
	}
	w.tracks[0].add(h.ts, mediaBytes(true, h.payload))
	now := time.Since(w.epoch)
	w.firstPkt.CompareAndSwap(0, int64(now))
	w.video.add(h.seq)
	w.frames.note(h.ts, h.marker, h.payload, now)
	whole, broken := w.key.packet(h)
	if broken {
		w.broken.Add(1)
	}
	if whole {
		w.keys.Add(1)
		if w.firstKey.CompareAndSwap(0, int64(now)) {
			close(w.gotKey)
		}
	}
}

// seqCount follows one track's sequence numbers: how many packets came
// and the highest extended (wrap-counted) sequence number. add runs on
// one goroutine; the counts may be read from any.
type seqCount struct {
	started bool
	last    uint16
	cycles  int64
	high    atomic.Int64
	recv    atomic.Uint64
}

func (s *seqCount) add(seq uint16) {
	s.recv.Add(1)
	if !s.started {
		s.started, s.last = true, seq
		s.high.Store(int64(seq))
		return
	}
	if d := int16(seq - s.last); d > 0 {
		if seq < s.last {
			s.cycles++
		}
		s.last = seq
		s.high.Store(s.cycles<<16 | int64(seq))
	}
}

// seqReading is a seqCount read at one moment.
type seqReading struct {
	High int64
	Recv uint64
}

func (s *seqCount) read() seqReading { return seqReading{High: s.high.Load(), Recv: s.recv.Load()} }

// lost is how many packets between two readings never came: the span of
// sequence numbers minus the packets received (duplicates make it
// smaller, as in RFC 3550's cumulative loss).
func lost(a, b seqReading) int64 {
	return (b.High - a.High) - int64(b.Recv-a.Recv)
}

// keyCheck tells when a keyframe has arrived whole: a packet carrying an
// SPS starts it, the following packets must carry the same timestamp with
// consecutive sequence numbers, an IDR slice must be among them, and the
// marker packet ends it.
type keyCheck struct {
	active bool
	idr    bool
	ts     uint32
	next   uint16
}

// packet takes the next video packet and reports whether it completed a
// keyframe, or broke the one begun (a gap, or a new frame before its
// marker).
func (k *keyCheck) packet(h rtpHeader) (whole, broken bool) {
	info, err := h264.Inspect(h.payload)
	switch {
	case err == nil && info.Start && info.HasSPS && (!k.active || h.ts != k.ts):
		broken = k.active
		*k = keyCheck{active: true, ts: h.ts}
	case !k.active:
		return false, false
	case h.ts != k.ts || h.seq != k.next:
		k.active = false
		return false, true
	}
	k.next = h.seq + 1
	if err == nil && info.NALType == h264.NALIDR {
		k.idr = true
	}
	if h.marker {
		k.active = false
		return k.idr, !k.idr
	}
	return false, broken
}

// audience is the viewers of one stack.
type audience struct {
	epoch    time.Time
	player   *player
	url      string
	parallel int
	watchers []*watcher
}

// grow opens viewers until there are n, parallel at a time, and waits
// until each is connected. Viewers that fail are closed and counted.
func (a *audience) grow(ctx context.Context, n int) (failed int, err error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, max(1, a.parallel))
	)
	for range n - len(a.watchers) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w := newWatcher(a.epoch)
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			err := w.play(cctx, a.player, a.url)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			a.watchers = append(a.watchers, w)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return len(errs), ctx.Err()
	}
	if len(errs) > 0 && len(a.watchers) == 0 {
		return len(errs), fmt.Errorf("bench: no viewer could play %s: %w", a.url, errors.Join(errs...))
	}
	return len(errs), nil
}

// waitKeyframes waits until every viewer has had a whole keyframe, or
// until timeout; it returns how many have not.
func (a *audience) waitKeyframes(ctx context.Context, timeout time.Duration) int {
	t := time.NewTimer(timeout)
	defer t.Stop()
wait:
	for _, w := range a.watchers {
		select {
		case <-w.gotKey:
		case <-t.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	missing := 0
	for _, w := range a.watchers {
		if w.firstKey.Load() == 0 {
			missing++
		}
	}
	return missing
}

// close ends every viewer.
func (a *audience) close() {
	var wg sync.WaitGroup
	for _, w := range a.watchers {
		wg.Go(w.close)
	}
	wg.Wait()
	a.watchers = nil
}
