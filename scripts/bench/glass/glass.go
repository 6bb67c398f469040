// Package glass measures glass-to-glass latency in real Chromium: from the
// moment the publisher writes a video frame's first packet to the moment
// a headless Chromium presents that frame on the viewer page.
//
// Run makes two network namespaces joined by a veth pair. In namespace A
// it re-executes the running binary as Role (see ServeStack): a gateway
// with its embedded function, advertising A's veth address, and an FTL
// publisher (a WHIP one with Options.WHIP) streaming the test media in
// real time. In namespace B it
// starts Chromium and opens the viewer page in one or more tabs.
//
// # Pairing frames
//
// The publisher reports each frame's RTP timestamp and the time its first
// packet was written (ftlclient.Config.OnFrame; with WHIP, when the write
// of its first packet returned, from whipclient.Config.OnVideoPacket, the
// stream starting once the hub has the publisher). The hub rewrites
// timestamps by an offset that is constant for a publisher session, and
// the function keeps the hub's timestamps, so the stack subscribes to the
// hub before publishing: the first video packet the hub releases carries
// the publisher's first frame, which gives the offset. The stack writes
// one record per frame (hub timestamp, send time, hub release time) to a
// file that Run reads. In the page, a requestVideoFrameCallback hook
// (installed as soon as the player has made its <video>, before the first
// frame) keeps each presented frame's metadata: rtpTimestamp,
// presentationTime, expectedDisplayTime, receiveTime and presentedFrames.
//
// # Clocks
//
// All namespaces share the kernel's clocks: network namespaces do not
// virtualize time. The stack takes send and release times with Go's
// time.Now, whose wall reading is CLOCK_REALTIME, and records them as Unix
// nanoseconds. The frame metadata are DOMHighResTimeStamps on the page's
// performance.now() timeline, which Chromium derives from CLOCK_MONOTONIC
// and, without cross-origin isolation, coarsens to 100 µs. Adding
// performance.timeOrigin would map them to wall time with one snapshot
// taken at navigation, so any slewing of CLOCK_REALTIME against
// CLOCK_MONOTONIC (NTP may slew up to 500 ppm: 0.3 s over ten minutes)
// would show up as creeping delay. Instead every poll (every 500 ms)
// calibrates the page's clock: it spins until Date.now(), which is
// CLOCK_REALTIME in whole milliseconds, steps to the next millisecond, and
// takes offset = Date.now() − performance.now() at that step. Frames
// collected by a poll are converted with the median offset of the latest
// nine polls, so that a calibration thrown off by a preemption does not
// count. What error remains: the step is located within the 100 µs
// coarsening of performance.now() (a calibration whose readings around the
// step lie more than 0.25 ms apart is repeated); the median lags the
// clocks' relative slew by about 2 s (≤ 1.2 ms at the 500 ppm limit,
// microseconds in practice); and the send time is taken right before the
// write, the packet leaving microseconds later. Result.ClockDrift reports
// how far the offset moved over the run, ClockJitter how far single
// calibrations strayed from the median, and OriginSkew how far the offset
// is from timeOrigin.
//
// # What is counted
//
// Latency is send → presentationTime: when Chromium made the frame the
// video's current frame for its compositor. Display is send →
// expectedDisplayTime: when the compositor expects the frame on screen;
// headless Chromium has no screen, so this is the compositor's estimate,
// one to three 60 Hz refreshes later. receiveTime, when the frame's last
// packet arrived, splits the delay into network plus jitter buffer and
// decode plus render, and the hub's release time shows what ingest adds.
// Frames presented during the warm-up (the fast-start burst of frames sent
// before the viewer joined) are not counted.
//
// # Joining in the middle of a GOP
//
// With Options.JoinAt the stack announces every keyframe the hub releases
// (within a millisecond of the publisher's write), and each viewer page
// is opened JoinAt after one; Options.H264 streams a clip with a longer
// GOP, such as the 4 s GOP of scripts/bench/testdata/gop4.h264. The
// function then holds the keyframe and the frames since in its cache and
// sends them as a burst ahead of the live stream. Viewer.Join says how
// the page started: how long from opening the page and from the WHEP
// offer to the first presented frame; whether that frame came before the
// first keyframe the publisher sent after the page was opened (a start
// from the cached keyframe, not from the next live one); when the burst
// had caught up with the live stream; whether every source frame after
// that was presented, and drawn; and whether the page's framesDecoded
// grew at every poll. Result.Function (the relay's and the fan-out's
// counters) and the namespaces' UDP counters tell where packets were lost
// or late.
package glass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
)

// Options configure Run.
type Options struct {
	// Duration is how long latency is measured, after Warmup. Default 60 s.
	Duration time.Duration
	// Warmup is how long to wait after every viewer's first frame before
	// measuring, so that the fast-start burst (frames sent before the
	// viewer joined) is not counted. Default 3 s.
	Warmup time.Duration
	// Viewers is the number of viewer pages. Default 1.
	Viewers int
	// Browsers is the number of Chromium processes the viewers are spread
	// over, round robin; several viewers in one browser are tabs. Default
	// 1, at most Viewers.
	Browsers int
	// Window is the length of the first and last stretch of the run whose
	// medians are compared to see whether delay creeps. Default 1 minute,
	// at most Duration.
	Window time.Duration
	// H264 is an H.264 Annex B file (constrained baseline, 30 fps, SPS and
	// PPS before every IDR, as the test media) that the publisher streams
	// in a loop instead of the test media's video, with the test media's
	// audio repeated to last as long. Empty streams the test media, with a
	// keyframe every second.
	H264 string
	// PeakKbps paces the publisher's video as the FTL SDK does
	// (ftlclient.Config.PeakKbps; ftlclient.PeakKbps gives OBS's); 0: not
	// paced, each frame's packets at once.
	PeakKbps int
	// WHIP publishes over WHIP (shared/testkit/whipclient, as OBS's WHIP
	// output does: each frame's packets at once, a keyframe request
	// answered with the next keyframe at once) instead of FTL; PeakKbps
	// does not apply. The frame's send time is when the write of its first
	// packet returned, before the network, as with FTL.
	WHIP bool
	// JoinAt, if positive, opens each viewer page JoinAt after the
	// publisher sent a keyframe, in the middle of a GOP longer than
	// JoinAt, and fills Viewer.Join. Zero opens the pages at once.
	JoinAt time.Duration
	// Logf receives the stack's output and progress; nil drops them.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Warmup <= 0 {
		o.Warmup = 3 * time.Second
	}
	if o.Viewers <= 0 {
		o.Viewers = 1
	}
	if o.Browsers <= 0 {
		o.Browsers = 1
	}
	o.Browsers = min(o.Browsers, o.Viewers)
	if o.Window <= 0 {
		o.Window = time.Minute
	}
	o.Window = min(o.Window, o.Duration)
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Result is what Run measured.
type Result struct {
	// Options are the options of the run, defaults filled in.
	Options Options
	// Start and End bound the measurement on the wall clock: frames
	// presented in [Start, End) count.
	Start, End time.Time
	// Viewers holds each page's measurement.
	Viewers []Viewer
	// Latency is send → presentation over the frames of every viewer,
	// Display send → expected display.
	Latency, Display Delay
	// ClockDrift is the largest change of a page's wall-clock offset
	// (Date.now() − performance.now(), the median of 9 calibrations) from
	// the start of the run to its end; ClockJitter the largest difference
	// of one calibration from the page's median; OriginSkew the largest
	// difference between the median offset and performance.timeOrigin.
	ClockDrift, ClockJitter, OriginSkew time.Duration
	// With Options.JoinAt: Function is the embedded function's
	// statistics at the end of the measurement (within a second), nil if
	// the stack printed none; StackUDP and BrowserUDP are the UDP
	// statistics of the stack's and the browsers' namespaces then.
	Function             *FunctionStats
	StackUDP, BrowserUDP UDPStats
}

// Viewer is the measurement of one page.
type Viewer struct {
	// Name says which browser and tab.
	Name string
	// TimeToFirstFrame is from navigation start (performance.timeOrigin)
	// to the first requestVideoFrameCallback: the first rendering of the
	// page that shows video. Its presentedFrames may be above 1, as the
	// fast-start burst comes faster than the page renders.
	TimeToFirstFrame time.Duration
	// FirstFrameSeen is false when the hook came in after the page had a
	// frame already: then TimeToFirstFrame is too late.
	FirstFrameSeen bool
	// OfferSent and AnswerReceived are from navigation start to the WHEP
	// offer's POST (the page posts it at once, without waiting for ICE
	// gathering) and to its answer; zero when the page's resource timing
	// did not say.
	OfferSent, AnswerReceived time.Duration
	// Samples are the frames presented in the measurement, in order, that
	// the stack has a record of.
	Samples []Sample
	// Callbacks counts the rVFC callbacks in the measurement; Presented
	// the frames presented meanwhile (metadata.presentedFrames), which is
	// more when callbacks were skipped.
	Callbacks, Presented int
	// Unmatched counts callbacks without an rtpTimestamp or whose
	// timestamp the stack has no record of.
	Unmatched int
	// Decoded and Dropped are getVideoPlaybackQuality's totalVideoFrames
	// and droppedVideoFrames during the measurement.
	Decoded, Dropped int
	// Inbound are the page's video inbound-rtp statistics at the end.
	Inbound InboundStats
	// Join is how the page started when Options.JoinAt is set; nil
	// otherwise.
	Join *Join
	// Latency is send → presentation; Display send → expected display.
	Latency, Display Delay
	// Receive is send → last packet received; Render last packet received
	// → presentation; Hub send → release by the hub.
	Receive, Render, Hub Summary
}

// Delay describes one delay over a run: over all of it, and over its
// first and last Options.Window, to see whether it creeps.
type Delay struct {
	All, First, Last Summary
}

// Creep is how much the median grew from the first window to the last.
func (d Delay) Creep() time.Duration { return d.Last.P50 - d.First.P50 }

// delays collects one delay of many frames.
type delays struct {
	all, first, last []time.Duration
}

// add takes the delay d of a frame presented at at.
func (ds *delays) add(d time.Duration, at, firstEnd, lastStart time.Time) {
	ds.all = append(ds.all, d)
	if at.Before(firstEnd) {
		ds.first = append(ds.first, d)
	}
	if !at.Before(lastStart) {
		ds.last = append(ds.last, d)
	}
}

// merge adds o's delays to ds.
func (ds *delays) merge(o delays) {
	ds.all = append(ds.all, o.all...)
	ds.first = append(ds.first, o.first...)
	ds.last = append(ds.last, o.last...)
}

// summary summarizes ds, sorting its slices.
func (ds *delays) summary() Delay {
	return Delay{All: summarize(ds.all), First: summarize(ds.first), Last: summarize(ds.last)}
}

// InboundStats are a page's video inbound-rtp statistics (whole session).
type InboundStats struct {
	FramesReceived, FramesDecoded, FramesDropped int
	PacketsLost, NACKs, PLIs, FIRs               int
	KeyFramesDecoded                             int
	Freezes                                      int
	FreezesDuration                              time.Duration
	// JitterBuffer is the mean time a frame spent in the jitter buffer,
	// JitterTarget the mean delay the jitter buffer aimed at (zero when
	// the playout delay is held at 0).
	JitterBuffer, JitterTarget time.Duration
}

// Sample is one presented frame with its times on the wall clock.
type Sample struct {
	RTPTimestamp    uint32
	Sent            time.Time // the publisher wrote the frame's first packet
	Released        time.Time // the hub released the frame's first packet
	Received        time.Time // the page received the frame's last packet; zero if unknown
	Presented       time.Time // presentationTime: handed to the compositor
	ExpectedDisplay time.Time // expectedDisplayTime
}

// Latency is the glass-to-glass delay of the frame: send → presentation.
func (s Sample) Latency() time.Duration { return s.Presented.Sub(s.Sent) }

// DisplayLatency is send → expected display.
func (s Sample) DisplayLatency() time.Duration { return s.ExpectedDisplay.Sub(s.Sent) }

// Summary describes a set of delays.
type Summary struct {
	Frames        int
	P50, P95, Max time.Duration
}

// summarize returns the summary of d, which it sorts.
func summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d)) + 0.999999) // nearest rank
		return d[min(max(i, 1), len(d))-1]
	}
	return Summary{Frames: len(d), P50: rank(0.50), P95: rank(0.95), Max: d[len(d)-1]}
}

// Run measures glass-to-glass latency as the package describes. It needs
// root, ip(8) and Chromium, and the running binary must hand Role to
// ServeStack. It cleans up every namespace, process and file it made; a
// cleanup failure is returned joined to the result's error.
func Run(ctx context.Context, opt Options) (res *Result, err error) {
	opt = opt.withDefaults()
	if err := netns.Available(); err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	if _, err := browser.Chromium(); err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	cleanup := func(what string, f func() error) {
		if cerr := f(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("glass: %s: %w", what, cerr))
		}
	}

	pair, err := netns.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	defer cleanup("namespaces", pair.Close)
	dir, err := os.MkdirTemp("", "glass-")
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	defer cleanup("temporary directory", func() error { return os.RemoveAll(dir) })
	framesPath := filepath.Join(dir, "frames")

	env := []string{envFrames + "=" + framesPath}
	if opt.H264 != "" {
		path, err := filepath.Abs(opt.H264)
		if err != nil {
			return nil, fmt.Errorf("glass: %w", err)
		}
		env = append(env, envH264+"="+path)
	}
	if opt.JoinAt > 0 {
		env = append(env, envKeyframes+"=1")
	}
	if opt.PeakKbps > 0 {
		env = append(env, envPeakKbps+"="+strconv.Itoa(opt.PeakKbps))
	}
	if opt.WHIP {
		env = append(env, envWHIP+"=1")
	}
	stack, err := stackRole.Start(pair, dir, env, opt.Logf)
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	defer cleanup("stack", stack.Stop)
	base, err := stackrole.WaitReady(ctx, stack)
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	opt.Logf("glass: stack serves %s", base)

	var browsers []*browser.Browser
	defer func() {
		for _, b := range browsers {
			cleanup("browser", b.Close)
		}
	}()
	for range opt.Browsers {
		b, err := browser.Start(ctx, browser.Options{Netns: pair.B, Extra: []string{"--window-size=1280,900"}})
		if err != nil {
			return nil, fmt.Errorf("glass: %w", err)
		}
		browsers = append(browsers, b)
	}

	watchers, err := openViewers(ctx, opt, browsers, base, stack)
	if err != nil {
		return nil, err
	}
	start, end, err := collect(ctx, opt, watchers)
	if err != nil {
		return nil, err
	}
	var udp [2]UDPStats // at the end of the measurement, in A and B
	if opt.JoinAt > 0 {
		for i, ns := range []string{pair.A, pair.B} {
			out, err := pair.Command(ctx, ns, "cat", "/proc/net/snmp").Output()
			if err != nil {
				return nil, fmt.Errorf("glass: reading UDP statistics: %w", err)
			}
			if udp[i], err = parseUDPStats(string(out)); err != nil {
				return nil, err
			}
		}
	}

	f, err := os.Open(framesPath)
	if err != nil {
		return nil, fmt.Errorf("glass: %w", err)
	}
	records, err := readRecords(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	keyframes, err := parseKeyframes(stack.Lines())
	if err != nil {
		return nil, err
	}
	res = analyze(opt, start, end, watchers, records, keyframes)
	if opt.JoinAt > 0 {
		res.StackUDP, res.BrowserUDP = udp[0], udp[1]
		if res.Function, err = readFunction(filepath.Join(dir, functionFile)); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// watchPath is the viewer page of the stack's channel (77).
const watchPath = "/watch/77"

// openViewers opens the viewer page in opt.Viewers tabs and hooks each
// page's video before its first frame. With opt.JoinAt it opens each page
// JoinAt after a keyframe that the stack announces.
func openViewers(ctx context.Context, opt Options, browsers []*browser.Browser, base string, stack *netns.Process) ([]*watcher, error) {
	var watchers []*watcher
	for i := range opt.Viewers {
		b := browsers[i%len(browsers)]
		name := fmt.Sprintf("browser %d tab %d", i%len(browsers)+1, i/len(browsers)+1)
		if opt.JoinAt > 0 {
			k, err := awaitJoin(ctx, stack, opt.JoinAt)
			if err != nil {
				return nil, fmt.Errorf("glass: %s: %w", name, err)
			}
			opt.Logf("glass: %s: opening %s after keyframe %d", name, time.Since(k.Released).Round(time.Millisecond), k.N)
		}
		opened := time.Now()
		tab, err := b.Open(ctx, base+watchPath)
		if err != nil {
			return nil, fmt.Errorf("glass: %s: %w", name, err)
		}
		w := &watcher{name: name, tab: tab, opened: opened}
		if err := w.install(ctx, watchPath); err != nil {
			return nil, err
		}
		watchers = append(watchers, w)
	}
	return watchers, nil
}

// keyframe is a keyframe the stack announced.
type keyframe struct {
	N         int       // counted from 1
	Timestamp uint32    // RTP timestamp as viewers see it
	Released  time.Time // the hub released its first packet
}

// parseKeyframes reads the stack's keyframe lines among its output.
func parseKeyframes(lines []string) ([]keyframe, error) {
	var out []keyframe
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, keyframePrefix)
		if !ok {
			continue
		}
		var (
			k  keyframe
			ns int64
		)
		if _, err := fmt.Sscanf(rest, "%d %d %d", &k.N, &k.Timestamp, &ns); err != nil {
			return nil, fmt.Errorf("glass: stack line %q: %w", l, err)
		}
		k.Released = time.Unix(0, ns)
		out = append(out, k)
	}
	return out, nil
}

// awaitJoin waits until joinAt after a keyframe the stack announced: the
// latest one if that is still ahead, else the next one. It returns that
// keyframe.
func awaitJoin(ctx context.Context, stack *netns.Process, joinAt time.Duration) (keyframe, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ks, err := parseKeyframes(stack.Lines())
		if err != nil {
			return keyframe{}, err
		}
		var last keyframe
		if len(ks) > 0 {
			last = ks[len(ks)-1]
			if wait := time.Until(last.Released.Add(joinAt)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
					return last, nil
				case <-ctx.Done():
					return keyframe{}, fmt.Errorf("waiting to join: %w", ctx.Err())
				}
			}
		}
		if _, err := stack.WaitLine(ctx, fmt.Sprintf("%s%d ", keyframePrefix, last.N+1)); err != nil {
			return keyframe{}, fmt.Errorf("waiting for keyframe %d: %w", last.N+1, err)
		}
	}
}

// pollEvery is how often each page is polled for frames.
const pollEvery = 500 * time.Millisecond

// collect polls every page until all have presented a frame, then for
// Warmup and Duration more, and returns the measurement's bounds.
func collect(ctx context.Context, opt Options, watchers []*watcher) (start, end time.Time, err error) {
	var (
		mu      sync.Mutex
		waiting = len(watchers)
		begun   = make(chan struct{}) // start and end are set
	)
	first, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	eg, gctx := errgroup.WithContext(ctx)
	for _, w := range watchers {
		eg.Go(func() error {
			tick := time.NewTicker(pollEvery)
			defer tick.Stop()
			for len(w.frames) == 0 {
				select {
				case <-first.Done():
					return fmt.Errorf("glass: %s: no frame presented: %w", w.name, first.Err())
				case <-gctx.Done():
					return gctx.Err()
				case <-tick.C:
				}
				if err := w.poll(gctx); err != nil {
					return err
				}
			}
			if err := w.readSignaling(gctx); err != nil {
				return err
			}
			if opt.JoinAt > 0 {
				if err := w.sampleInbound(gctx); err != nil {
					return err
				}
			}
			mu.Lock()
			waiting--
			if waiting == 0 {
				start = time.Now().Add(opt.Warmup)
				end = start.Add(opt.Duration)
				opt.Logf("glass: every page plays; measuring from %s for %s", start.Format(time.TimeOnly), opt.Duration)
				close(begun)
			}
			mu.Unlock()
			select {
			case <-begun:
			case <-gctx.Done():
				return gctx.Err()
			}
			// Poll past the end, so the frames presented up to it are in.
			for time.Now().Before(end.Add(pollEvery)) {
				select {
				case <-gctx.Done():
					return gctx.Err()
				case <-tick.C:
				}
				if err := w.poll(gctx); err != nil {
					return err
				}
				if opt.JoinAt > 0 {
					if err := w.sampleInbound(gctx); err != nil {
						return err
					}
				}
			}
			return w.readInbound(gctx)
		})
	}
	if err := eg.Wait(); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return start, end, nil
}

// analyze pairs the pages' frames with the stack's records.
func analyze(opt Options, start, end time.Time, watchers []*watcher, records map[uint32]record, keyframes []keyframe) *Result {
	res := &Result{Options: opt, Start: start, End: end}
	var src *source
	if opt.JoinAt > 0 {
		src = newSource(records, keyframes)
	}
	var allLat, allDisp delays
	firstEnd, lastStart := start.Add(opt.Window), end.Add(-opt.Window)
	for _, w := range watchers {
		v := Viewer{Name: w.name}
		if len(w.frames) > 0 {
			v.TimeToFirstFrame = time.Duration(w.frames[0].Callback * float64(time.Millisecond))
			v.FirstFrameSeen = !w.late
			v.OfferSent, v.AnswerReceived = millis(w.offer), millis(w.answer)
		}
		var (
			lat, disp       delays
			recv, rend, hub []time.Duration
		)
		minPresented, maxPresented := -1, -1
		for _, f := range w.frames {
			if f.Presentation.Before(start) || !f.Presentation.Before(end) {
				continue
			}
			v.Callbacks++
			if minPresented < 0 {
				minPresented = f.PresentedFrames
			}
			maxPresented = f.PresentedFrames
			r, ok := records[f.RTPTimestamp]
			if !f.HasTimestamp || !ok {
				v.Unmatched++
				continue
			}
			s := Sample{RTPTimestamp: f.RTPTimestamp, Sent: r.Sent, Released: r.Released, Received: f.Received,
				Presented: f.Presentation, ExpectedDisplay: f.ExpectedDisplay}
			v.Samples = append(v.Samples, s)
			lat.add(s.Latency(), s.Presented, firstEnd, lastStart)
			disp.add(s.DisplayLatency(), s.Presented, firstEnd, lastStart)
			hub = append(hub, s.Released.Sub(s.Sent))
			if !s.Received.IsZero() {
				recv = append(recv, s.Received.Sub(s.Sent))
				rend = append(rend, s.Presented.Sub(s.Received))
			}
		}
		if minPresented >= 0 {
			v.Presented = maxPresented - minPresented + 1
		}
		allLat.merge(lat)
		allDisp.merge(disp)
		v.Latency, v.Display = lat.summary(), disp.summary()
		v.Receive, v.Render, v.Hub = summarize(recv), summarize(rend), summarize(hub)

		// Playback quality over the measurement: the samples nearest its
		// bounds.
		var q0, q1 *qualitySample
		for i := range w.quality {
			q := &w.quality[i]
			if q0 == nil && !q.At.Before(start) {
				q0 = q
			}
			if q.At.Before(end.Add(pollEvery)) {
				q1 = q
			}
		}
		if q0 != nil && q1 != nil {
			v.Decoded, v.Dropped = q1.Total-q0.Total, q1.Dropped-q0.Dropped
		}
		if in := w.inbound; in != nil {
			v.Inbound = InboundStats{
				FramesReceived: in.FramesReceived, FramesDecoded: in.FramesDecoded, FramesDropped: in.FramesDropped,
				PacketsLost: in.PacketsLost, NACKs: in.NACKCount, PLIs: in.PLICount, FIRs: in.FIRCount,
				KeyFramesDecoded: in.KeyFramesDecoded, Freezes: in.FreezeCount,
				FreezesDuration: seconds(in.TotalFreezesDuration),
			}
			if in.JitterBufferEmittedCount > 0 {
				v.Inbound.JitterBuffer = seconds(in.JitterBufferDelay / float64(in.JitterBufferEmittedCount))
				v.Inbound.JitterTarget = seconds(in.JitterBufferTargetDelay / float64(in.JitterBufferEmittedCount))
			}
		}

		// The clock calibrations, against the median of all.
		if len(w.clock) > 0 {
			offsets := make([]float64, len(w.clock))
			for i, c := range w.clock {
				offsets[i] = c.Offset
			}
			slices.Sort(offsets)
			median := offsets[len(offsets)/2]
			for _, c := range w.clock {
				res.ClockJitter = max(res.ClockJitter, millis(abs(c.Offset-median)))
			}
			res.OriginSkew = max(res.OriginSkew, millis(abs(median-w.origin)))
			// Drift: the median of the first calibrations against that of
			// the last.
			first := &watcher{clock: w.clock[:min(len(w.clock), smoothing)]}
			res.ClockDrift = max(res.ClockDrift, millis(abs(w.offset()-first.offset())))
		}
		if src != nil {
			v.Join = src.join(w, v.Latency.All)
		}
		res.Viewers = append(res.Viewers, v)
	}
	res.Latency, res.Display = allLat.summary(), allDisp.summary()
	return res
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
func millis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// WriteTable writes the result as a table for people: one row per viewer
// and one for all, then whether delay creeps, and the clock's quality;
// with Options.JoinAt, then a row per viewer on how it joined.
func (r *Result) WriteTable(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "glass-to-glass latency: %d viewer(s) in %d browser(s), %s measured after a %s warm-up\n",
		len(r.Viewers), o.Browsers, o.Duration, o.Warmup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "viewer\toffer/answer/first frame\tframes\tpresented\tdropped\tunmatched\tsend→present p50/p95/max\tsend→display p50/p95/max\tsend→hub p50/p95\tsend→receive p50/p95\treceive→present p50/p95\tjitter buffer\tfreezes\t")
	for _, v := range r.Viewers {
		ttff := ms(v.TimeToFirstFrame)
		if !v.FirstFrameSeen {
			ttff = "≥" + ttff
		}
		ttff = ms(v.OfferSent) + "/" + ms(v.AnswerReceived) + "/" + ttff
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", v.Name, ttff,
			v.Latency.All.Frames, v.Presented, v.Dropped, v.Unmatched,
			triple(v.Latency.All), triple(v.Display.All), pair(v.Hub), pair(v.Receive), pair(v.Render),
			ms(v.Inbound.JitterBuffer), v.Inbound.Freezes)
	}
	if len(r.Viewers) > 1 {
		fmt.Fprintf(tw, "all\t\t%d\t\t\t\t%s\t%s\t\t\t\t\t\t\n", r.Latency.All.Frames, triple(r.Latency.All), triple(r.Display.All))
	}
	tw.Flush()
	for _, d := range []struct {
		name string
		d    Delay
	}{{"send→present", r.Latency}, {"send→display", r.Display}} {
		verdict := "within"
		if c := d.d.Creep(); c > creepTarget || c < -creepTarget {
			verdict = "beyond"
		}
		fmt.Fprintf(w, "creep of %s: p50 %s over the first %s (%d frames), %s over the last (%d frames): %+.1fms, %s the %s target\n",
			d.name, ms(d.d.First.P50), o.Window, d.d.First.Frames, ms(d.d.Last.P50), d.d.Last.Frames,
			float64(d.d.Creep())/float64(time.Millisecond), verdict, creepTarget)
	}
	fmt.Fprintf(w, "page clock: offset drift %s, calibration jitter %s, offset vs timeOrigin %s\n",
		ms(r.ClockDrift), ms(r.ClockJitter), ms(r.OriginSkew))
	if o.JoinAt > 0 {
		r.writeJoins(w)
	}
}

// creepTarget is how far the median may move from the first window of a
// run to the last.
const creepTarget = 20 * time.Millisecond

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func triple(s Summary) string {
	if s.Frames == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%s/%s", ms(s.P50), ms(s.P95), ms(s.Max))
}

func pair(s Summary) string {
	if s.Frames == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%s", ms(s.P50), ms(s.P95))
}
