package glass

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"lightspeed/shared/testkit/browser"
)

// installJS hooks requestVideoFrameCallback on the viewer page's <video>
// and keeps the metadata of every presented frame, with the playback
// quality's frame counts at the callback, and the first time of a few of
// the <video>'s events in window.glassBench, where pollJS picks them up.
// It answers "ok" once the hook is in (also when it was already), or what
// it waits for. The player makes its <video> from a <template> when its
// module runs, so the hook waits for it.
const installJS = `(() => {
  if (window.glassBench) return "ok";
  if (location.pathname !== %q) return "page " + location.href;
  const v = document.querySelector("video");
  if (!v) return "no video element";
  if (!v.requestVideoFrameCallback) throw new Error("no requestVideoFrameCallback");
  // late: the page had a frame before the hook was in.
  const late = v.readyState >= 2 || v.getVideoPlaybackQuality().totalVideoFrames > 0;
  const g = window.glassBench = {frames: [], late, events: {}};
  for (const e of ["loadedmetadata", "loadeddata", "playing"]) {
    v.addEventListener(e, () => { g.events[e] ??= performance.now(); });
  }
  const onFrame = (now, m) => {
    const q = v.getVideoPlaybackQuality();
    g.frames.push([m.rtpTimestamp ?? -1, m.presentationTime, m.expectedDisplayTime,
      m.receiveTime ?? -1, m.presentedFrames, now, q.totalVideoFrames, q.droppedVideoFrames]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  return "ok";
})()`

// pollJS hands over the frames collected since the last poll, the
// playback quality, and one calibration of the page's clock: the
// performance.now() reading at which Date.now() stepped to the next
// millisecond, which ties the page's monotonic timeline (that of the
// frame metadata) to the wall clock. The step lies between two
// performance.now() readings; a calibration whose readings lie further
// apart than 0.25 ms (the thread was preempted) is tried again, up to
// five times, keeping the tightest.
const pollJS = `(() => {
  const g = window.glassBench;
  if (!g) return null;
  const frames = g.frames;
  g.frames = [];
  let best = null;
  for (let i = 0; i < 5 && !(best && best.span <= 0.25); i++) {
    const d0 = Date.now();
    let before = performance.now(), d;
    for (;;) {
      d = Date.now();
      if (d !== d0) break;
      before = performance.now();
    }
    const after = performance.now();
    if (!best || after - before < best.span) best = {wall: d, perf: (before + after) / 2, span: after - before};
  }
  const q = document.querySelector("video").getVideoPlaybackQuality();
  return {frames, late: g.late, events: g.events, tickWall: best.wall, tickPerf: best.perf, tickSpan: best.span,
    timeOrigin: performance.timeOrigin, total: q.totalVideoFrames, dropped: q.droppedVideoFrames};
})()`

// inboundJS reads the video inbound-rtp statistics of the page's
// PeerConnection.
const inboundJS = `(async () => {
  const pc = window.lightspeed && window.lightspeed.pc;
  if (!pc) return null;
  let out = null;
  (await pc.getStats()).forEach(s => {
    if (s.type === "inbound-rtp" && s.kind === "video") out = s;
  });
  return out && {framesReceived: out.framesReceived || 0, framesDecoded: out.framesDecoded || 0,
    framesDropped: out.framesDropped || 0, packetsLost: out.packetsLost || 0, nackCount: out.nackCount || 0,
    pliCount: out.pliCount || 0, firCount: out.firCount || 0, keyFramesDecoded: out.keyFramesDecoded || 0,
    freezeCount: out.freezeCount || 0, totalFreezesDuration: out.totalFreezesDuration || 0,
    jitterBufferDelay: out.jitterBufferDelay || 0, jitterBufferTargetDelay: out.jitterBufferTargetDelay || 0,
    jitterBufferEmittedCount: out.jitterBufferEmittedCount || 0};
})()`

// signalingJS reads, from the page's resource timing, when the first WHEP
// offer was posted and when its answer arrived, in ms since timeOrigin.
const signalingJS = `(() => {
  const e = performance.getEntriesByType("resource").find(e => e.name.includes("/api/whep/"));
  return e ? {offer: e.startTime, answer: e.responseEnd} : null;
})()`

// poll is pollJS's answer.
type poll struct {
	Frames [][8]float64 `json:"frames"`
	Late   bool         `json:"late"`
	// Events holds the first time (ms since timeOrigin) the <video> fired
	// loadedmetadata (it has the first frame's size), loadeddata (it has
	// a frame) and playing.
	Events     map[string]float64 `json:"events"`
	TickWall   float64            `json:"tickWall"` // ms since the Unix epoch
	TickPerf   float64            `json:"tickPerf"` // ms since timeOrigin
	TickSpan   float64            `json:"tickSpan"` // ms between the readings around the step
	TimeOrigin float64            `json:"timeOrigin"`
	Total      int                `json:"total"`
	Dropped    int                `json:"dropped"`
}

// inbound is inboundJS's answer.
type inbound struct {
	FramesReceived           int     `json:"framesReceived"`
	FramesDecoded            int     `json:"framesDecoded"`
	FramesDropped            int     `json:"framesDropped"`
	PacketsLost              int     `json:"packetsLost"`
	NACKCount                int     `json:"nackCount"`
	PLICount                 int     `json:"pliCount"`
	FIRCount                 int     `json:"firCount"`
	KeyFramesDecoded         int     `json:"keyFramesDecoded"`
	FreezeCount              int     `json:"freezeCount"`
	TotalFreezesDuration     float64 `json:"totalFreezesDuration"`     // seconds
	JitterBufferDelay        float64 `json:"jitterBufferDelay"`        // seconds, summed over frames
	JitterBufferTargetDelay  float64 `json:"jitterBufferTargetDelay"`  // seconds, summed over frames
	JitterBufferEmittedCount int     `json:"jitterBufferEmittedCount"` // frames
}

// presented is one rVFC callback, its times on the wall clock.
type presented struct {
	RTPTimestamp    uint32
	HasTimestamp    bool // the metadata carried an rtpTimestamp
	Presentation    time.Time
	ExpectedDisplay time.Time
	Received        time.Time // zero when the metadata had no receiveTime
	PresentedFrames int
	Callback        float64   // the callback's now, ms since timeOrigin
	CallbackAt      time.Time // the same on the wall clock
	// Total and Dropped are getVideoPlaybackQuality's totalVideoFrames
	// and droppedVideoFrames (frames the renderer replaced before they
	// were shown) when the callback ran.
	Total, Dropped int
}

// clockSample is one calibration: the page's wall clock minus its
// monotonic timeline, in ms, at Perf (ms since timeOrigin), found with
// readings Span ms apart.
type clockSample struct {
	Perf, Offset, Span float64
}

// smoothing is how many of the latest calibrations offset takes the
// median of.
const smoothing = 9

// offset is the median of the latest calibrations: one calibration thrown
// off by a preemption does not move it, and over smoothing polls (4.5 s)
// the clocks drift by microseconds at most.
func (w *watcher) offset() float64 {
	last := w.clock[max(0, len(w.clock)-smoothing):]
	o := make([]float64, len(last))
	for i, c := range last {
		o[i] = c.Offset
	}
	slices.Sort(o)
	return o[len(o)/2]
}

// watcher follows one tab: it collects the presented frames and the
// calibrations of its clock. It belongs to one goroutine.
type watcher struct {
	name    string
	tab     *browser.Tab
	frames  []presented
	clock   []clockSample
	origin  float64 // performance.timeOrigin
	late    bool    // the hook came in after the page's first frame
	quality []qualitySample
	inbound *inbound
	offer   float64   // the WHEP offer was posted, ms since timeOrigin; 0 if unknown
	answer  float64   // its answer arrived
	opened  time.Time // the tab was opened (Browser.Open called)
	// events are the first times of the <video>'s events, on the wall
	// clock.
	events map[string]time.Time
	// decoding samples the video inbound-rtp statistics at every poll
	// from the first frame on, when Options.JoinAt is set.
	decoding []inboundSample
}

// inboundSample is the video inbound-rtp statistics at a wall-clock time.
type inboundSample struct {
	At time.Time
	inbound
}

// qualitySample is getVideoPlaybackQuality at a wall-clock time.
type qualitySample struct {
	At             time.Time
	Total, Dropped int
}

// install puts the rVFC hook into the page at path, retrying while the
// page is still loading, for at most a minute.
func (w *watcher) install(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		var state string
		err := w.tab.Eval(ctx, fmt.Sprintf(installJS, path), &state)
		switch {
		case err == nil && state == "ok":
			return nil
		case err == nil:
			last = state
		case ctx.Err() == nil:
			last = err.Error() // the page may be between documents
		}
		select {
		case <-ctx.Done():
			if errs := w.tab.ConsoleErrors(); len(errs) > 0 {
				last += " (console: " + strings.Join(errs, "; ") + ")"
			}
			return fmt.Errorf("glass: %s: hooking the video: %s: %w", w.name, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// poll collects the frames presented since the last poll.
func (w *watcher) poll(ctx context.Context) error {
	var p *poll
	if err := w.tab.Eval(ctx, pollJS, &p); err != nil {
		return fmt.Errorf("glass: %s: %w", w.name, err)
	}
	if p == nil {
		return fmt.Errorf("glass: %s: the video hook is gone (the page reloaded?)", w.name)
	}
	w.origin, w.late = p.TimeOrigin, p.Late
	w.clock = append(w.clock, clockSample{Perf: p.TickPerf, Offset: p.TickWall - p.TickPerf, Span: p.TickSpan})
	offset := w.offset()
	for e, at := range p.Events {
		if _, ok := w.events[e]; !ok {
			if w.events == nil {
				w.events = map[string]time.Time{}
			}
			w.events[e] = wall(at, offset)
		}
	}
	for _, f := range p.Frames {
		pf := presented{
			HasTimestamp:    f[0] >= 0,
			Presentation:    wall(f[1], offset),
			ExpectedDisplay: wall(f[2], offset),
			PresentedFrames: int(f[4]),
			Callback:        f[5],
			CallbackAt:      wall(f[5], offset),
			Total:           int(f[6]),
			Dropped:         int(f[7]),
		}
		if pf.HasTimestamp {
			pf.RTPTimestamp = uint32(uint64(f[0]))
		}
		if f[3] >= 0 {
			pf.Received = wall(f[3], offset)
		}
		w.frames = append(w.frames, pf)
	}
	return nil
}

// readSignaling reads when the page posted its WHEP offer and got the
// answer.
func (w *watcher) readSignaling(ctx context.Context) error {
	var s *struct{ Offer, Answer float64 }
	if err := w.tab.Eval(ctx, signalingJS, &s); err != nil {
		return fmt.Errorf("glass: %s: %w", w.name, err)
	}
	if s != nil {
		w.offer, w.answer = s.Offer, s.Answer
	}
	return nil
}

// readInbound reads the PeerConnection's video statistics.
func (w *watcher) readInbound(ctx context.Context) error {
	if err := w.tab.Eval(ctx, inboundJS, &w.inbound); err != nil {
		return fmt.Errorf("glass: %s: %w", w.name, err)
	}
	if w.inbound == nil {
		return errors.New("glass: " + w.name + ": no video inbound-rtp statistics")
	}
	return nil
}

// sampleInbound appends the PeerConnection's video statistics now to
// w.decoding.
func (w *watcher) sampleInbound(ctx context.Context) error {
	var in *inbound
	if err := w.tab.Eval(ctx, inboundJS, &in); err != nil {
		return fmt.Errorf("glass: %s: %w", w.name, err)
	}
	if in == nil {
		return errors.New("glass: " + w.name + ": no video inbound-rtp statistics")
	}
	w.decoding = append(w.decoding, inboundSample{At: time.Now(), inbound: *in})
	return nil
}

// wall converts a page timestamp (ms on the page's monotonic timeline) to
// the wall clock, with offset from the nearest calibration.
func wall(perf, offset float64) time.Time {
	ms := perf + offset
	sec := math.Floor(ms / 1000)
	return time.Unix(int64(sec), int64(math.Round((ms-sec*1000)*1e6)))
}
