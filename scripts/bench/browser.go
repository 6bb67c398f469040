//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"lightspeed/scripts/bench/glass"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/testmedia"
)

// The project's targets for glass-to-glass latency, and the shortest
// measurement they are judged on.
const (
	targetP50      = 150 * time.Millisecond // median send → presented
	targetCreep    = 20 * time.Millisecond  // first-window median vs last-window median
	targetDuration = time.Minute            // also -browser's default -duration
)

// playGlassRole plays glass.Role when glass.Run re-executed this binary
// for its stack, and reports whether it did and the exit code. It must
// come before flag parsing: the re-executed binary gets arguments the
// bench's flags do not know.
func playGlassRole() (code int, played bool) {
	if netns.Role() != glass.Role {
		return 0, false
	}
	return glass.ServeStack(), true
}

// creepWindow is the length of the first and of the last stretch of a
// run of length d whose medians are compared: a minute, or half of a
// shorter run, so that the two stretches do not overlap.
func creepWindow(d time.Duration) time.Duration {
	return min(time.Minute, d/2)
}

// runBrowser measures glass-to-glass latency as -browser asks. The report
// holds what was measured even when an error (a cleanup failure) comes
// with it.
func runBrowser(ctx context.Context, cfg config, log *slog.Logger) (*BrowserReport, error) {
	peak := cfg.peakKbps
	if cfg.ingest == ingestWHIP {
		peak = 0 // whipclient sends each frame's packets at once
	} else if peak < 0 { // OBS's, for the test media the stack streams
		nals, err := testmedia.NALUnits()
		if err != nil {
			return nil, fmt.Errorf("bench: test media: %w", err)
		}
		peak = ftlclient.PeakKbps(nals)
	}
	opt := glass.Options{
		Duration: cfg.duration,
		Viewers:  cfg.browserViewers,
		Browsers: cfg.browsers,
		Window:   creepWindow(cfg.duration),
		PeakKbps: peak,
		WHIP:     cfg.ingest == ingestWHIP,
		Logf:     func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) },
	}
	log.Info("glass-to-glass in Chromium", "viewers", opt.Viewers, "browsers", opt.Browsers,
		"duration", opt.Duration, "creep_window", opt.Window, "peak_kbps", opt.PeakKbps, "ingest", cfg.ingest)
	res, err := glass.Run(ctx, opt)
	if res == nil {
		return nil, err
	}
	return newBrowserReport(machine(), res), err
}

// BrowserReport is what -browser measured; -json writes it. Delays are in
// milliseconds.
type BrowserReport struct {
	Machine         Machine   `json:"machine"`
	Start           time.Time `json:"start"` // frames presented in [start, end) count
	End             time.Time `json:"end"`
	DurationSeconds float64   `json:"duration_seconds"`
	WarmupSeconds   float64   `json:"warmup_seconds"`
	WindowSeconds   float64   `json:"window_seconds"` // the first and last stretch compared for creep
	Viewers         int       `json:"viewers"`
	Browsers        int       `json:"browsers"`
	PeakKbps        int       `json:"peak_kbps"` // the publisher's video pacing; 0: none
	Ingest          string    `json:"ingest"`    // how the publisher published: "ftl" or "whip"

	// Send → presented and send → expected display, over every viewer.
	LatencyMs GlassDelay `json:"latency_ms"`
	DisplayMs GlassDelay `json:"display_ms"`

	// The pages' clocks: how far the wall-clock offset moved over the run,
	// how far single calibrations strayed from the median, and how far the
	// offset is from performance.timeOrigin.
	ClockDriftMs  float64 `json:"clock_drift_ms"`
	ClockJitterMs float64 `json:"clock_jitter_ms"`
	OriginSkewMs  float64 `json:"origin_skew_ms"`

	Targets   Targets       `json:"targets"`
	PerViewer []GlassViewer `json:"per_viewer"`

	res *glass.Result
}

// Targets compares the run with the project's targets. A verdict is null
// when the run did not measure it.
type Targets struct {
	P50Ms           float64  `json:"p50_ms"`
	P50Within       *bool    `json:"p50_within"`
	CreepMs         float64  `json:"creep_ms"`
	CreepWithin     *bool    `json:"creep_within"`
	MinDurationSecs float64  `json:"min_duration_seconds"`
	LongEnough      bool     `json:"long_enough"`
	Statements      []string `json:"statements"`
}

// GlassDelay is a delay over the whole run and over its first and last
// window; Creep is last median − first median.
type GlassDelay struct {
	All   GlassSummary `json:"all"`
	First GlassSummary `json:"first"`
	Last  GlassSummary `json:"last"`
	Creep float64      `json:"creep"`
}

// GlassSummary summarizes a delay over N frames, in milliseconds.
type GlassSummary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

// GlassViewer is one page's measurement.
type GlassViewer struct {
	Name               string  `json:"name"`
	OfferSentMs        float64 `json:"offer_sent_ms"`          // from navigation start
	AnswerReceivedMs   float64 `json:"answer_received_ms"`     // from navigation start
	TimeToFirstFrameMs float64 `json:"time_to_first_frame_ms"` // from navigation start
	FirstFrameSeen     bool    `json:"first_frame_seen"`       // false: the time to first frame is an upper bound
	Callbacks          int     `json:"callbacks"`
	Presented          int     `json:"presented"`
	Unmatched          int     `json:"unmatched"`
	Decoded            int     `json:"decoded"`
	Dropped            int     `json:"dropped"`

	LatencyMs GlassDelay   `json:"latency_ms"` // send → presented
	DisplayMs GlassDelay   `json:"display_ms"` // send → expected display
	HubMs     GlassSummary `json:"hub_ms"`     // send → released by the hub
	ReceiveMs GlassSummary `json:"receive_ms"` // send → last packet received
	RenderMs  GlassSummary `json:"render_ms"`  // last packet received → presented

	Inbound GlassInbound  `json:"inbound"`
	Samples []GlassSample `json:"samples"`
}

// GlassInbound are the page's video inbound-rtp statistics (whole session).
type GlassInbound struct {
	FramesReceived int     `json:"frames_received"`
	FramesDecoded  int     `json:"frames_decoded"`
	FramesDropped  int     `json:"frames_dropped"`
	PacketsLost    int     `json:"packets_lost"`
	NACKs          int     `json:"nacks"`
	Freezes        int     `json:"freezes"`
	FreezesMs      float64 `json:"freezes_ms"`
	JitterBufferMs float64 `json:"jitter_buffer_ms"` // mean per frame
}

// GlassSample is one presented frame: when its first packet was sent, and
// the delays from then.
type GlassSample struct {
	RTPTimestamp uint32    `json:"rtp_ts"`
	Sent         time.Time `json:"sent"`
	HubMs        float64   `json:"hub_ms"`
	ReceiveMs    *float64  `json:"receive_ms"` // null when the page did not say
	PresentMs    float64   `json:"present_ms"`
	DisplayMs    float64   `json:"display_ms"`
}

// toMs is d in milliseconds, to the microsecond.
func toMs(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func glassSummary(s glass.Summary) GlassSummary {
	return GlassSummary{N: s.Frames, P50: toMs(s.P50), P95: toMs(s.P95), Max: toMs(s.Max)}
}

func glassDelay(d glass.Delay) GlassDelay {
	return GlassDelay{All: glassSummary(d.All), First: glassSummary(d.First), Last: glassSummary(d.Last), Creep: toMs(d.Creep())}
}

// newBrowserReport turns glass's result into the report.
func newBrowserReport(m Machine, res *glass.Result) *BrowserReport {
	o := res.Options
	r := &BrowserReport{
		Machine:         m,
		Start:           res.Start,
		End:             res.End,
		DurationSeconds: o.Duration.Seconds(),
		WarmupSeconds:   o.Warmup.Seconds(),
		WindowSeconds:   o.Window.Seconds(),
		Viewers:         len(res.Viewers),
		Browsers:        o.Browsers,
		PeakKbps:        o.PeakKbps,
		Ingest:          ingestFTL,
		LatencyMs:       glassDelay(res.Latency),
		DisplayMs:       glassDelay(res.Display),
		ClockDriftMs:    toMs(res.ClockDrift),
		ClockJitterMs:   toMs(res.ClockJitter),
		OriginSkewMs:    toMs(res.OriginSkew),
		Targets:         targets(res),
		res:             res,
	}
	if o.WHIP {
		r.Ingest = ingestWHIP
	}
	for _, v := range res.Viewers {
		gv := GlassViewer{
			Name:               v.Name,
			OfferSentMs:        toMs(v.OfferSent),
			AnswerReceivedMs:   toMs(v.AnswerReceived),
			TimeToFirstFrameMs: toMs(v.TimeToFirstFrame),
			FirstFrameSeen:     v.FirstFrameSeen,
			Callbacks:          v.Callbacks,
			Presented:          v.Presented,
			Unmatched:          v.Unmatched,
			Decoded:            v.Decoded,
			Dropped:            v.Dropped,
			LatencyMs:          glassDelay(v.Latency),
			DisplayMs:          glassDelay(v.Display),
			HubMs:              glassSummary(v.Hub),
			ReceiveMs:          glassSummary(v.Receive),
			RenderMs:           glassSummary(v.Render),
			Inbound: GlassInbound{
				FramesReceived: v.Inbound.FramesReceived,
				FramesDecoded:  v.Inbound.FramesDecoded,
				FramesDropped:  v.Inbound.FramesDropped,
				PacketsLost:    v.Inbound.PacketsLost,
				NACKs:          v.Inbound.NACKs,
				Freezes:        v.Inbound.Freezes,
				FreezesMs:      toMs(v.Inbound.FreezesDuration),
				JitterBufferMs: toMs(v.Inbound.JitterBuffer),
			},
			Samples: make([]GlassSample, 0, len(v.Samples)),
		}
		for _, s := range v.Samples {
			gs := GlassSample{
				RTPTimestamp: s.RTPTimestamp,
				Sent:         s.Sent,
				HubMs:        toMs(s.Released.Sub(s.Sent)),
				PresentMs:    toMs(s.Latency()),
				DisplayMs:    toMs(s.DisplayLatency()),
			}
			if !s.Received.IsZero() {
				recv := toMs(s.Received.Sub(s.Sent))
				gs.ReceiveMs = &recv
			}
			gv.Samples = append(gv.Samples, gs)
		}
		r.PerViewer = append(r.PerViewer, gv)
	}
	return r
}

// targets compares res with the project's targets and says how, in plain
// statements.
func targets(res *glass.Result) Targets {
	t := Targets{
		P50Ms:           toMs(targetP50),
		CreepMs:         toMs(targetCreep),
		MinDurationSecs: targetDuration.Seconds(),
		LongEnough:      res.Options.Duration >= targetDuration,
	}
	say := func(format string, args ...any) { t.Statements = append(t.Statements, fmt.Sprintf(format, args...)) }
	lat := res.Latency
	if lat.All.Frames == 0 {
		say("no frame was measured: the %s p50 target is not judged", targetP50)
	} else {
		within := lat.All.P50 <= targetP50
		t.P50Within = &within
		say("p50 send→presented is %s over %d frames: %s the %s target", ms(lat.All.P50), lat.All.Frames,
			verdict(within, "within", "above"), targetP50)
	}
	w := res.Options.Window
	if lat.First.Frames == 0 || lat.Last.Frames == 0 {
		say("creep is not measured: no frame in the first or the last %s", w)
	} else {
		c := lat.Creep()
		within := c.Abs() <= targetCreep
		t.CreepWithin = &within
		say("creep of the send→presented median from the first %s to the last %s is %+.1fms (%s → %s): %s the %s target",
			w, w, float64(c)/float64(time.Millisecond), ms(lat.First.P50), ms(lat.Last.P50),
			verdict(within, "within", "beyond"), targetCreep)
	}
	if !t.LongEnough {
		say("the run measured %s, shorter than the %.0fs the targets are judged on", res.Options.Duration, targetDuration.Seconds())
	}
	return t
}

func verdict(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// ms formats d in milliseconds with one decimal.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", math.Round(float64(d)/float64(time.Millisecond)*10)/10)
}

// print writes glass's table, then the statements on the targets.
func (r *BrowserReport) print(w io.Writer) {
	fmt.Fprintf(w, "\nmachine: %d cores, %s, %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion)
	if r.Ingest == ingestWHIP {
		fmt.Fprintln(w, "publisher: WHIP (whipclient), every frame's packets at once, keyframe requests answered at once")
	} else if r.PeakKbps > 0 {
		fmt.Fprintf(w, "publisher: video paced at %d kbit/s after a 100 ms burst, as OBS's FTL SDK does\n", r.PeakKbps)
	} else {
		fmt.Fprintln(w, "publisher: video unpaced (every frame's packets at once)")
	}
	if r.res != nil {
		r.res.WriteTable(w)
	}
	fmt.Fprintln(w, "\ntargets (statements, not a pass/fail):")
	for _, s := range r.Targets.Statements {
		fmt.Fprintf(w, "  %s\n", s)
	}
}
