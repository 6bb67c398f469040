package glass

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/testmedia"
)

// TestMain runs the tests, or the stack when Run has re-executed the test
// binary in namespace A.
func TestMain(m *testing.M) {
	stackRole.Main(m, ServeStack)
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
	res, table := runLogged(t, opt)
	if !strings.Contains(table, "browser 1 tab 1") || !strings.Contains(table, "creep") {
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
	res := analyze(Options{Window: time.Second}.withDefaults(), start, end, []*watcher{w}, records, nil)
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

// runLogged runs the measurement and logs its table, which it returns.
func runLogged(t *testing.T, opt Options) (*Result, string) {
	t.Helper()
	res, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	res.WriteTable(&table)
	t.Logf("\n%s", &table)
	return res, table.String()
}

// gop4 is the fan-out bench's clip with a keyframe every 4 s.
const gop4 = "../testdata/gop4.h264"

// TestLateJoinStartsFromTheCachedKeyframe opens the page 2 s into a 4 s
// GOP: the page must start from the keyframe the function cached (before
// the next live keyframe), then decode at every poll without a freeze and
// present every frame of the source once the burst caught up.
func TestLateJoinStartsFromTheCachedKeyframe(t *testing.T) {
	netns.Require(t)
	browser.Require(t)
	opt := Options{H264: gop4, JoinAt: 2 * time.Second, Warmup: 2 * time.Second, Duration: 6 * time.Second, Logf: t.Logf}
	res, _ := runLogged(t, opt)
	if len(res.Viewers) != 1 {
		t.Fatalf("%d viewers measured, want 1", len(res.Viewers))
	}
	v := res.Viewers[0]
	j := v.Join
	if j == nil {
		t.Fatal("no join measured")
	}
	if len(j.Hitches) > 0 {
		t.Logf("hitches after catch-up: %+v", j.Hitches)
	}
	if !j.HasNextKeyframe {
		t.Fatalf("no keyframe sent after the page opened: cannot tell a cached start from a live one")
	}
	if j.FirstFrameIndex < 0 {
		t.Errorf("first presented frame %d is no frame sent from keyframe %d on", j.FirstFrame, j.Keyframe)
	}
	if !j.Cached {
		t.Errorf("first presented frame %d (frame #%d from keyframe %d) is not before the next live keyframe %d: the page did not start from the cached keyframe",
			j.FirstFrame, j.FirstFrameIndex, j.Keyframe, j.NextKeyframe)
	}
	if j.DecodeSamples < 2 || j.DecodeStalls > 0 || j.FramesDecoded <= 0 {
		t.Errorf("framesDecoded did not grow at every poll: %d of %d samples without growth, %d frames decoded",
			j.DecodeStalls, j.DecodeSamples, j.FramesDecoded)
	}
	if v.Inbound.Freezes != 0 {
		t.Errorf("%d freezes (%v) reported", v.Inbound.Freezes, v.Inbound.FreezesDuration)
	}
	if !j.CaughtUp {
		t.Fatalf("the burst never caught up with the live stream")
	}
	// Every source frame from the catch-up on reached the page's renderer,
	// in order. Whether the compositor drew each (j.Dropped) depends on
	// timing, as two frames that arrive within one refresh show only the
	// second: it is reported, not asserted.
	if j.Presented == 0 || j.Skipped != 0 || j.Unknown != 0 || j.Backwards != 0 {
		t.Errorf("after catch-up %d frames presented: %d source frames never presented, %d unknown, %d out of order; hitches %+v",
			j.Presented, j.Skipped, j.Unknown, j.Backwards, j.Hitches)
	}
}

func TestParseKeyframesReadsOnlyKeyframeLines(t *testing.T) {
	got, err := parseKeyframes([]string{
		"READY http://10.0.0.1:80",
		"KEYFRAME 1 4294967295 1700000000000000000",
		"time=x level=WARN msg=KEYFRAME",
		"KEYFRAME 2 359999 1700000004000000001",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []keyframe{
		{N: 1, Timestamp: 4294967295, Released: time.Unix(0, 1700000000000000000)},
		{N: 2, Timestamp: 359999, Released: time.Unix(0, 1700000004000000001)},
	}
	if len(got) != len(want) {
		t.Fatalf("keyframes %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].N != want[i].N || got[i].Timestamp != want[i].Timestamp || !got[i].Released.Equal(want[i].Released) {
			t.Errorf("keyframe %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := parseKeyframes([]string{"KEYFRAME 1 x 2"}); err == nil {
		t.Error("a malformed keyframe line was accepted")
	}
}

func TestLoadMediaStreamsTheClipWithAudioAsLong(t *testing.T) {
	nals, opus, err := loadMedia(gop4)
	if err != nil {
		t.Fatal(err)
	}
	// 8 s at 30 fps, and 8 s of 20 ms Opus packets: the test media's
	// (4.02 s) once, then cut.
	if n := countFrames(nals); n != 240 {
		t.Errorf("%d frames, want 240", n)
	}
	audio, err := testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	if len(opus) != 400 || !bytes.Equal(opus[0], audio[0]) || !bytes.Equal(opus[len(audio)], audio[0]) || !bytes.Equal(opus[399], audio[399-len(audio)]) {
		t.Errorf("%d Opus packets, want 400 looping the test media's %d", len(opus), len(audio))
	}
	if _, _, err := loadMedia(filepath.Join(t.TempDir(), "missing.h264")); err == nil {
		t.Error("a missing clip was accepted")
	}
	nals, _, err = loadMedia("")
	if err != nil {
		t.Fatal(err)
	}
	if n := countFrames(nals); n != 4*testmedia.FrameRate {
		t.Errorf("test media: %d frames, want %d", n, 4*testmedia.FrameRate)
	}
}

// joinFixture is a stream of 240 frames at 30 fps with keyframes at
// frames 0 and 120, and a page opened 2 s (60 frames) after the first.
type joinFixture struct {
	t0      time.Time
	records map[uint32]record
	keys    []keyframe
	w       *watcher
}

const fixtureTS = 0xfffe0000 // the timestamps wrap around during the stream

func newJoinFixture() *joinFixture {
	fx := &joinFixture{t0: time.Unix(1700000000, 0), records: map[uint32]record{}}
	for i := range 240 {
		ts := fx.ts(i)
		sent := fx.sent(i)
		fx.records[ts] = record{Timestamp: ts, Sent: sent, Released: sent.Add(time.Millisecond)}
	}
	for _, i := range []int{0, 120} {
		fx.keys = append(fx.keys, keyframe{N: len(fx.keys) + 1, Timestamp: fx.ts(i), Released: fx.sent(i).Add(time.Millisecond)})
	}
	fx.w = &watcher{name: "browser 1 tab 1", opened: fx.sent(60)}
	return fx
}

func (fx *joinFixture) ts(i int) uint32 { return fixtureTS + uint32(3000*i) }

func (fx *joinFixture) sent(i int) time.Time {
	return fx.t0.Add(time.Duration(i) * time.Second / 30)
}

// present adds a callback for frame i presented at the given delay after
// its sending, with presentedFrames pf and dropped frames dropped.
func (fx *joinFixture) present(i int, delay time.Duration, pf, dropped int) {
	fx.w.frames = append(fx.w.frames, presented{RTPTimestamp: fx.ts(i), HasTimestamp: true,
		Presentation: fx.sent(i).Add(delay), Received: fx.sent(i).Add(delay - time.Millisecond),
		PresentedFrames: pf, Dropped: dropped})
}

func TestJoinFindsCachedStartCatchUpAndHitches(t *testing.T) {
	fx := newJoinFixture()
	// The burst: frames 0 to 69 arrive from 0.3 s after opening, fast;
	// the page presents frames 20 to 70 (its first callback sees frame
	// 20 as the 21st presented), dropping 30 of them.
	opened := fx.w.opened
	for _, i := range []int{20, 40, 60} {
		at := opened.Add(300*time.Millisecond + time.Duration(i)*time.Millisecond)
		fx.present(i, at.Sub(fx.sent(i)), i+1, i/2)
	}
	// Frame 70 is the first at the live delay (5 ms): the catch-up.
	fx.present(70, 5*time.Millisecond, 71, 30)
	// Then: 71 (its drop is frame 70's, part of the catch-up), 72, a
	// missed callback for 73 (presented, not dropped), 74, 75, frame 76
	// never presented, 77, frame 78 dropped by the compositor, 79 … 99.
	fx.present(71, 5*time.Millisecond, 72, 31)
	fx.present(72, 5*time.Millisecond, 73, 31)
	fx.present(74, 5*time.Millisecond, 75, 31)
	fx.present(75, 5*time.Millisecond, 76, 31)
	fx.present(77, 5*time.Millisecond, 77, 31)
	fx.present(79, 5*time.Millisecond, 79, 32)
	for i := 80; i < 100; i++ {
		fx.present(i, 5*time.Millisecond, i, 32)
	}
	fx.w.decoding = []inboundSample{
		{inbound: inbound{FramesDecoded: 80}}, {inbound: inbound{FramesDecoded: 95}},
		{inbound: inbound{FramesDecoded: 95}}, {inbound: inbound{FramesDecoded: 100, FreezeCount: 1}},
	}
	src := newSource(fx.records, fx.keys)
	j := src.join(fx.w, Summary{Frames: 30, P50: 5 * time.Millisecond})

	if j.Keyframe != fx.ts(0) || j.AfterKeyframe != 2*time.Second || !j.HasNextKeyframe || j.NextKeyframe != fx.ts(120) ||
		j.NextKeyframeAfter != 2*time.Second {
		t.Errorf("keyframes: %+v", j)
	}
	if !j.Cached || j.FirstFrame != fx.ts(20) || j.FirstFrameIndex != 20 || j.FirstPresentedFrames != 21 {
		t.Errorf("first frame %d (#%d, presented %d), cached %v; want frame #20, presented 21, cached",
			j.FirstFrame, j.FirstFrameIndex, j.FirstPresentedFrames, j.Cached)
	}
	if j.FromOpen != 320*time.Millisecond {
		t.Errorf("open → first frame %v, want 320ms", j.FromOpen)
	}
	if !j.CaughtUp || j.CatchUpFrame != fx.ts(70) || j.BurstFrames != 50 || j.BurstDropped != 31 {
		t.Errorf("catch-up %v at %d, burst %d frames, %d dropped; want frame 70, 50 frames, 31 dropped",
			j.CaughtUp, j.CatchUpFrame, j.BurstFrames, j.BurstDropped)
	}
	if j.Callbacks != 27 || j.Presented != 29 || j.Jumps != 3 || j.Skipped != 1 || j.Dropped != 1 || j.Unknown != 0 || j.Backwards != 0 {
		t.Errorf("after catch-up: %d callbacks, %d presented, %d jumps, %d skipped, %d dropped, %d unknown, %d backwards; want 27, 29, 3, 1, 1, 0, 0",
			j.Callbacks, j.Presented, j.Jumps, j.Skipped, j.Dropped, j.Unknown, j.Backwards)
	}
	want := []Hitch{
		{Callback: 3, After: fx.ts(72), Frames: 1},
		{Callback: 5, After: fx.ts(75), Frames: 1, Skipped: 1},
		{Callback: 6, After: fx.ts(77), Frames: 1, Dropped: 1},
	}
	if len(j.Hitches) != len(want) {
		t.Fatalf("hitches %+v, want %+v", j.Hitches, want)
	}
	for i, h := range j.Hitches {
		h.At = time.Time{}
		if h != want[i] {
			t.Errorf("hitch %d: %+v, want %+v", i, h, want[i])
		}
	}
	if j.DecodeSamples != 4 || j.DecodeStalls != 1 || j.FramesDecoded != 20 || j.FreezesAfterFirst != 1 {
		t.Errorf("decoding: %d samples, %d stalls, %d decoded, %d freezes; want 4, 1, 20, 1",
			j.DecodeSamples, j.DecodeStalls, j.FramesDecoded, j.FreezesAfterFirst)
	}
}

func TestJoinFromTheNextLiveKeyframeIsNotCached(t *testing.T) {
	fx := newJoinFixture()
	for i := 120; i < 130; i++ {
		fx.present(i, 5*time.Millisecond, i-119, 0)
	}
	j := newSource(fx.records, fx.keys).join(fx.w, Summary{Frames: 10, P50: 5 * time.Millisecond})
	if j.Cached || j.FirstFrameIndex != 120 {
		t.Errorf("first frame #%d, cached %v; want #120, not cached", j.FirstFrameIndex, j.Cached)
	}
	if !j.CaughtUp || j.CatchUp != 0 || j.Jumps != 0 || j.Skipped != 0 || len(j.Hitches) != 0 {
		t.Errorf("catch-up %v after %v, %d jumps, %d skipped, hitches %v; want at once, none", j.CaughtUp, j.CatchUp, j.Jumps, j.Skipped, j.Hitches)
	}
}

func TestParseUDPStatsReadsTheUdpLines(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 4936 1 7 70 6 2 0 0 3\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"UdpLite: 0 0 0 0 0 0 0 0 0\n"
	got, err := parseUDPStats(snmp)
	if err != nil {
		t.Fatal(err)
	}
	want := UDPStats{InDatagrams: 4936, NoPorts: 1, InErrors: 7, OutDatagrams: 70, RcvbufErrors: 6, SndbufErrors: 2, MemErrors: 3}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := parseUDPStats("Ip: Forwarding\nIp: 1\n"); err == nil {
		t.Error("statistics without Udp lines were accepted")
	}
}
