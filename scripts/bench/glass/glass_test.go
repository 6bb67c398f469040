package glass

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"lightspeed/shared/browser"
	"lightspeed/shared/netns"
)

// TestMain runs the tests, or the stack when Run has re-executed the test
// binary in namespace A.
func TestMain(m *testing.M) {
	switch role := netns.Role(); role {
	case "":
		os.Exit(m.Run())
	case Role:
		os.Exit(ServeStack())
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		os.Exit(2)
	}
}

// Environment variables that turn TestGlassToGlassShort into a real
// measurement, e.g. LS_GLASS_DURATION=10m LS_GLASS_VIEWERS=2.
const (
	envDuration = "LS_GLASS_DURATION" // Options.Duration; default 8s
	envViewers  = "LS_GLASS_VIEWERS"  // Options.Viewers; default 1
	envBrowsers = "LS_GLASS_BROWSERS" // Options.Browsers; default 1
)

func TestGlassToGlassShort(t *testing.T) {
	netns.Require(t)
	browser.Require(t)
	opt := Options{Duration: 8 * time.Second, Logf: t.Logf}
	if s := os.Getenv(envDuration); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("$%s: %v", envDuration, err)
		}
		opt.Duration = d
	}
	for env, n := range map[string]*int{envViewers: &opt.Viewers, envBrowsers: &opt.Browsers} {
		if s := os.Getenv(env); s != "" {
			var err error
			if *n, err = strconv.Atoi(s); err != nil {
				t.Fatalf("$%s: %v", env, err)
			}
		}
	}
	res, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	res.WriteTable(&table)
	t.Logf("\n%s", &table)
	if !strings.Contains(table.String(), "browser 1 tab 1") || !strings.Contains(table.String(), "creep") {
		t.Errorf("the table lacks the viewer's row or the creep line")
	}

	if want := max(opt.Viewers, 1); len(res.Viewers) != want {
		t.Fatalf("%d viewers measured, want %d", len(res.Viewers), want)
	}
	for _, v := range res.Viewers {
		if len(v.Samples) == 0 {
			t.Errorf("%s: no frame measured: %d callbacks, %d unmatched", v.Name, v.Callbacks, v.Unmatched)
		}
		for _, s := range v.Samples {
			if l := s.Latency(); l <= 0 || l >= 5*time.Second {
				t.Errorf("%s: frame %d: latency %v, want between 0 and 5 s", v.Name, s.RTPTimestamp, l)
			}
		}
		if v.TimeToFirstFrame <= 0 {
			t.Errorf("%s: time to first frame %v", v.Name, v.TimeToFirstFrame)
		}
	}
}

func TestFrameLogPairsTheTwoSidesInEitherOrder(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const offset = 0xfffff000 // the hub's timestamps wrap around
	tests := []struct {
		name   string
		events func(l *frameLog)
	}{
		{"publisher first", func(l *frameLog) {
			l.sent(0, at(0))
			l.released(offset, at(1))
			l.sent(3000, at(33))
			l.released(offset+3000, at(34))
		}},
		{"hub first", func(l *frameLog) {
			l.released(offset, at(1))
			l.released(offset+3000, at(34))
			l.sent(0, at(0))
			l.sent(3000, at(33))
		}},
		{"interleaved before the offset is known", func(l *frameLog) {
			l.sent(0, at(0))
			l.sent(3000, at(33))
			l.released(offset, at(1))
			l.released(offset+3000, at(34))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			l := newFrameLog(&out)
			tt.events(l)
			recs, err := readRecords(&out)
			if err != nil {
				t.Fatal(err)
			}
			want := map[uint32]record{
				offset:        {Timestamp: offset, Sent: at(0), Released: at(1)},
				offset + 3000: {Timestamp: offset + 3000, Sent: at(33), Released: at(34)},
			}
			if len(recs) != len(want) {
				t.Fatalf("records %v, want %v", recs, want)
			}
			for ts, w := range want {
				if r := recs[ts]; r.Timestamp != w.Timestamp || !r.Sent.Equal(w.Sent) || !r.Released.Equal(w.Released) {
					t.Errorf("record of %d: %+v, want %+v", ts, r, w)
				}
			}
			if n := l.unmatched(); n != 0 {
				t.Errorf("%d unmatched", n)
			}
		})
	}
}

func TestFrameLogDropsHalvesThatNeverPair(t *testing.T) {
	var out bytes.Buffer
	l := newFrameLog(&out)
	t0 := time.Unix(1700000000, 0)
	l.sent(0, t0)
	l.released(100, t0)
	for i := range uint32(maxWaiting + 10) {
		l.released(100+3000*(i+1)+1, t0.Add(time.Duration(i)*time.Millisecond)) // never sent
	}
	if n := l.unmatched(); n != maxWaiting+10 {
		t.Errorf("unmatched %d, want %d", n, maxWaiting+10)
	}
	if len(l.releases) > maxWaiting {
		t.Errorf("%d releases kept, want at most %d", len(l.releases), maxWaiting)
	}
}

func TestParseRecordRejectsMalformedLines(t *testing.T) {
	for _, line := range []string{"", "1 2", "1 2 3 4", "x 2 3", "4294967296 2 3", "1 x 3", "1 2 x"} {
		if _, err := parseRecord(line); err == nil {
			t.Errorf("parseRecord(%q) succeeded", line)
		}
	}
	r := record{Timestamp: 4294967295, Sent: time.Unix(1, 5), Released: time.Unix(2, 7)}
	got, err := parseRecord(string(r.appendTo(nil)))
	if err != nil || got.Timestamp != r.Timestamp || !got.Sent.Equal(r.Sent) || !got.Released.Equal(r.Released) {
		t.Errorf("round trip: %+v, %v; want %+v", got, err, r)
	}
}

func TestSummarizeTakesNearestRanks(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := summarize(d)
	if s != (Summary{Frames: 100, P50: 50 * time.Millisecond, P95: 95 * time.Millisecond, Max: 100 * time.Millisecond}) {
		t.Errorf("summary %+v", s)
	}
	if s := summarize(nil); s != (Summary{}) {
		t.Errorf("empty summary %+v", s)
	}
	if s := summarize([]time.Duration{7}); s.P50 != 7 || s.P95 != 7 || s.Max != 7 {
		t.Errorf("one-element summary %+v", s)
	}
}

func TestWallAddsTheOffsetExactly(t *testing.T) {
	// A page timestamp of 1234.5678 ms with the wall clock 1.7e12 ms ahead.
	got := wall(1234.5678, 1.7e12)
	want := time.UnixMilli(1.7e12).Add(1234567800 * time.Nanosecond)
	if d := got.Sub(want); d < -time.Microsecond || d > time.Microsecond {
		t.Errorf("wall = %v, want %v (off by %v)", got, want, d)
	}
}

func TestAnalyzeCountsOnlyTheMeasurementWindow(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	start, end := t0.Add(time.Second), t0.Add(3*time.Second)
	records := map[uint32]record{}
	w := &watcher{name: "browser 1 tab 1", late: false}
	for i := range 100 { // 30 fps from t0, each presented 40 ms after sending
		ts := uint32(1000 + 3000*i)
		sent := t0.Add(time.Duration(i) * time.Second / 30)
		records[ts] = record{Timestamp: ts, Sent: sent, Released: sent.Add(time.Millisecond)}
		w.frames = append(w.frames, presented{RTPTimestamp: ts, HasTimestamp: true,
			Presentation: sent.Add(40 * time.Millisecond), ExpectedDisplay: sent.Add(50 * time.Millisecond),
			Received: sent.Add(20 * time.Millisecond), PresentedFrames: i + 1, Callback: 500 + float64(i)*33})
	}
	w.frames = append(w.frames, presented{HasTimestamp: false, Presentation: start.Add(time.Millisecond), PresentedFrames: 200})
	res := analyze(Options{Window: time.Second}.withDefaults(), start, end, []*watcher{w}, records)
	v := res.Viewers[0]
	if v.Latency.All.Frames != 60 || v.Latency.All.P50 != 40*time.Millisecond || v.Display.All.P95 != 50*time.Millisecond ||
		v.Receive.P50 != 20*time.Millisecond || v.Render.P50 != 20*time.Millisecond || v.Hub.P50 != time.Millisecond {
		t.Errorf("viewer summaries %+v", v)
	}
	if v.Unmatched != 1 || v.Callbacks != 61 {
		t.Errorf("callbacks %d, unmatched %d; want 61 and 1", v.Callbacks, v.Unmatched)
	}
	if !v.FirstFrameSeen || v.TimeToFirstFrame != 500*time.Millisecond {
		t.Errorf("first frame %v (seen %v), want 500ms", v.TimeToFirstFrame, v.FirstFrameSeen)
	}
	if l := res.Latency; l.First.Frames != 30 || l.Last.Frames != 30 || l.All.Frames != 60 || l.Creep() != 0 {
		t.Errorf("first %d, last %d, all %d frames, creep %v; want 30, 30, 60, 0", l.First.Frames, l.Last.Frames, l.All.Frames, l.Creep())
	}
}
