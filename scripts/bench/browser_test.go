//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lightspeed/scripts/bench/glass"
	"lightspeed/shared/testkit/browser"
)

func TestCreepWindowIsAMinuteOrHalfTheRun(t *testing.T) {
	for d, want := range map[time.Duration]time.Duration{
		20 * time.Second: 10 * time.Second,
		time.Minute:      30 * time.Second,
		2 * time.Minute:  time.Minute,
		10 * time.Minute: time.Minute,
		90 * time.Second: 45 * time.Second,
		time.Second:      500 * time.Millisecond,
	} {
		if got := creepWindow(d); got != want {
			t.Errorf("creepWindow(%v) = %v, want %v", d, got, want)
		}
	}
}

// delay makes a glass.Delay from first-window, last-window and overall
// medians, in milliseconds.
func delay(first, last, all float64) glass.Delay {
	s := func(p50 float64) glass.Summary {
		d := time.Duration(p50 * float64(time.Millisecond))
		return glass.Summary{Frames: 10, P50: d, P95: d + time.Millisecond, Max: d + 2*time.Millisecond}
	}
	return glass.Delay{All: s(all), First: s(first), Last: s(last)}
}

func TestTargetsAreStatedPlainly(t *testing.T) {
	long := glass.Options{Duration: 10 * time.Minute, Window: time.Minute}
	tests := []struct {
		name               string
		res                glass.Result
		p50Within, creepOK string // "true", "false" or "null"
		longEnough         bool
		statements         []string
	}{
		{"both within", glass.Result{Options: long, Latency: delay(80, 95, 90)}, "true", "true", true, []string{
			"p50 send→presented is 90.0ms over 10 frames: within the 150ms target",
			"creep of the send→presented median from the first 1m0s to the last 1m0s is +15.0ms (80.0ms → 95.0ms): within the 20ms target",
		}},
		{"median above, creeping", glass.Result{Options: long, Latency: delay(120, 160.5, 151)}, "false", "false", true, []string{
			"p50 send→presented is 151.0ms over 10 frames: above the 150ms target",
			"creep of the send→presented median from the first 1m0s to the last 1m0s is +40.5ms (120.0ms → 160.5ms): beyond the 20ms target",
		}},
		{"a fall counts as creep too", glass.Result{Options: long, Latency: delay(100, 75, 90)}, "true", "false", true, []string{
			"p50 send→presented is 90.0ms over 10 frames: within the 150ms target",
			"creep of the send→presented median from the first 1m0s to the last 1m0s is -25.0ms (100.0ms → 75.0ms): beyond the 20ms target",
		}},
		{"nothing measured in a short run", glass.Result{Options: glass.Options{Duration: 20 * time.Second, Window: 10 * time.Second}}, "null", "null", false, []string{
			"no frame was measured: the 150ms p50 target is not judged",
			"creep is not measured: no frame in the first or the last 10s",
			"the run measured 20s, shorter than the 60s the targets are judged on",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := targets(&tt.res)
			if strings.Join(got.Statements, "\n") != strings.Join(tt.statements, "\n") {
				t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(got.Statements, "\n"), strings.Join(tt.statements, "\n"))
			}
			str := func(b *bool) string {
				if b == nil {
					return "null"
				}
				if *b {
					return "true"
				}
				return "false"
			}
			if str(got.P50Within) != tt.p50Within || str(got.CreepWithin) != tt.creepOK || got.LongEnough != tt.longEnough {
				t.Errorf("p50 within %s, creep within %s, long enough %v; want %s, %s, %v",
					str(got.P50Within), str(got.CreepWithin), got.LongEnough, tt.p50Within, tt.creepOK, tt.longEnough)
			}
			if got.P50Ms != 150 || got.CreepMs != 20 || got.MinDurationSecs != 60 {
				t.Errorf("targets %+v", got)
			}
		})
	}
}

func TestBrowserReportPrintsAndWritesJSON(t *testing.T) {
	t0 := time.Unix(1700000000, 0).UTC()
	ms := func(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }
	res := &glass.Result{
		Options: glass.Options{Duration: 2 * time.Minute, Warmup: 3 * time.Second, Window: time.Minute, Viewers: 1, Browsers: 1},
		Start:   t0,
		End:     t0.Add(2 * time.Minute),
		Latency: delay(80, 82, 81),
		Display: delay(100, 102, 101),
		Viewers: []glass.Viewer{{
			Name:             "browser 1 tab 1",
			TimeToFirstFrame: ms(900.5),
			FirstFrameSeen:   true,
			Callbacks:        2,
			Presented:        2,
			Latency:          delay(80, 82, 81),
			Display:          delay(100, 102, 101),
			Inbound:          glass.InboundStats{FramesReceived: 7, NACKs: 1, JitterBuffer: ms(12.25)},
			Samples: []glass.Sample{
				{RTPTimestamp: 3000, Sent: t0, Released: t0.Add(ms(0.5)), Received: t0.Add(ms(20)), Presented: t0.Add(ms(80)), ExpectedDisplay: t0.Add(ms(100))},
				{RTPTimestamp: 6000, Sent: t0.Add(ms(33)), Released: t0.Add(ms(34)), Presented: t0.Add(ms(115)), ExpectedDisplay: t0.Add(ms(135))},
			},
		}},
		ClockDrift: ms(0.2),
	}
	rep := newBrowserReport(Machine{CPUs: 2}, res)

	var out bytes.Buffer
	rep.print(&out)
	for _, want := range []string{"browser 1 tab 1", "creep of send→present", "page clock",
		"targets (statements, not a pass/fail):\n  p50 send→presented is 81.0ms over 10 frames: within the 150ms target\n  creep of"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output lacks %q:\n%s", want, &out)
		}
	}

	path := filepath.Join(t.TempDir(), "glass.json")
	if err := writeJSON(path, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got BrowserReport
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Start.Equal(t0) || got.DurationSeconds != 120 || got.WarmupSeconds != 3 || got.WindowSeconds != 60 || got.Viewers != 1 || got.Browsers != 1 {
		t.Errorf("run: %+v", got)
	}
	if got.LatencyMs.All.P50 != 81 || got.LatencyMs.All.N != 10 || got.LatencyMs.Creep != 2 || got.DisplayMs.First.P95 != 101 || got.ClockDriftMs != 0.2 {
		t.Errorf("latency %+v, display %+v, drift %v", got.LatencyMs, got.DisplayMs, got.ClockDriftMs)
	}
	if got.Targets.P50Within == nil || !*got.Targets.P50Within || got.Targets.CreepWithin == nil || !*got.Targets.CreepWithin || len(got.Targets.Statements) != 2 {
		t.Errorf("targets %+v", got.Targets)
	}
	if len(got.PerViewer) != 1 {
		t.Fatalf("%d viewers", len(got.PerViewer))
	}
	v := got.PerViewer[0]
	if v.Name != "browser 1 tab 1" || v.TimeToFirstFrameMs != 900.5 || !v.FirstFrameSeen || v.Inbound.NACKs != 1 || v.Inbound.JitterBufferMs != 12.25 {
		t.Errorf("viewer %+v", v)
	}
	if len(v.Samples) != 2 {
		t.Fatalf("%d samples, want 2", len(v.Samples))
	}
	s0, s1 := v.Samples[0], v.Samples[1]
	if s0.RTPTimestamp != 3000 || !s0.Sent.Equal(t0) || s0.HubMs != 0.5 || s0.ReceiveMs == nil || *s0.ReceiveMs != 20 || s0.PresentMs != 80 || s0.DisplayMs != 100 {
		t.Errorf("first sample %+v", s0)
	}
	if s1.ReceiveMs != nil || s1.HubMs != 1 || s1.PresentMs != 82 || s1.DisplayMs != 102 {
		t.Errorf("second sample %+v: want no receive time, hub 1, present 82, display 102 ms", s1)
	}
	if !bytes.Contains(b, []byte(`"receive_ms": null`)) {
		t.Error("an unknown receive time is not null in the JSON")
	}
}

// TestBrowserModeMeasuresInChromium runs -browser for a few seconds: this
// binary plays glass's stack (TestMain dispatches its role as main does),
// and the report has frames from the page.
func TestBrowserModeMeasuresInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a stack in a network namespace and Chromium")
	}
	browser.Require(t)
	cfg, err := parseFlags([]string{"-browser", "-duration", "3s"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := runBrowser(t.Context(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.print(&out)
	t.Logf("\n%s", &out)
	if rep.Viewers != 1 || len(rep.PerViewer) != 1 || rep.WindowSeconds != 1.5 {
		t.Fatalf("%d viewers, window %v s; want 1 viewer and a 1.5 s window", rep.Viewers, rep.WindowSeconds)
	}
	v := rep.PerViewer[0]
	if len(v.Samples) == 0 || rep.LatencyMs.All.N != len(v.Samples) {
		t.Fatalf("%d samples, %d frames in the latency; want some, the same", len(v.Samples), rep.LatencyMs.All.N)
	}
	// The page's clock is the test's within what its calibration says
	// (jitter and drift, a few ms on loopback, more on a busy machine):
	// a frame presented "before" it was sent by less than that is in
	// order; one paired with the wrong record is off by a frame (33 ms)
	// or more.
	slack := rep.ClockJitterMs + rep.ClockDriftMs + 1
	for _, s := range v.Samples {
		// Order, which a frame paired with the wrong record breaks: sent,
		// received, presented (the last two on the page's clock).
		if s.PresentMs <= -slack || (s.ReceiveMs != nil && *s.ReceiveMs > s.PresentMs) {
			recv := "unknown"
			if s.ReceiveMs != nil {
				recv = fmt.Sprint(*s.ReceiveMs)
			}
			t.Errorf("frame %d: received %s ms and presented %v ms after it was sent (the page's clock within %.1f ms): out of order", s.RTPTimestamp, recv, s.PresentMs, slack)
		}
	}
	if rep.Targets.P50Within == nil || len(rep.Targets.Statements) != 3 {
		t.Errorf("targets %+v: want the p50 judged and three statements", rep.Targets)
	}
}
