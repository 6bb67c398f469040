//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/testmedia"
)

// TestMain runs the tests, or plays the role this binary was re-executed
// for (the baseline server, or glass's stack).
func TestMain(m *testing.M) {
	if code, played := playGlassRole(); played {
		os.Exit(code)
	}
	if played, err := playRole(); played {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmallRunMeasuresEveryFigure runs the whole tool with tiny numbers,
// so that it cannot rot: a real gateway and function, two viewers, the
// baseline, and joins with both keyframe intervals. It checks that every
// figure was measured, not what the figures are.
func TestSmallRunMeasuresEveryFigure(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway, a function and the baseline")
	}
	netns.Exclusive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config{
		viewers:    []int{2},
		duration:   3 * time.Second,
		settle:     time.Second,
		keyintTest: true,
		joins:      2,
		baseline:   true,
		parallel:   2,
		peakKbps:   -1, // as OBS
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rep, err := run(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 2 {
		t.Fatalf("%d rows, want one per stack: %+v", len(rep.Rows), rep.Rows)
	}
	for _, r := range rep.Rows {
		name := r.Stack
		if r.Playing != 2 || r.Failed != 0 || r.NoKeyframe != 0 {
			t.Errorf("%s: %d playing, %d failed, %d without a keyframe; want 2, 0, 0", name, r.Playing, r.Failed, r.NoKeyframe)
		}
		if r.Delivered == 0 || r.ServerCores == 0 || r.MicrosPerPacket == 0 || r.RSSBytes == 0 {
			t.Errorf("%s: delivered %d, cores %v, µs/packet %v, rss %d: want all measured", name, r.Delivered, r.ServerCores, r.MicrosPerPacket, r.RSSBytes)
		}
		if r.FramesMatched == 0 || r.LatencyMs.N == 0 || r.ReaderLatencyMs.N == 0 {
			t.Errorf("%s: %d of %d frames matched, %d kernel and %d reader latency samples", name, r.FramesMatched, r.FramesReceived, r.LatencyMs.N, r.ReaderLatencyMs.N)
		}
		if r.TTFFMs.N != 2 {
			t.Errorf("%s: time to first frame of %d viewers, want 2", name, r.TTFFMs.N)
		}
	}
	if r := rep.Rows[0]; r.Stack != "lightspeed" || r.GatewayCores == 0 {
		t.Errorf("first row: stack %q, gateway cores %v; want lightspeed with its gateway measured", r.Stack, r.GatewayCores)
	}
	// The function's own figures, from its metrics: sends in the window,
	// its Go memory (two viewers: at least their 2×13 pion goroutines) and
	// its relay counters.
	if r := rep.Rows[0]; r.Send == nil || r.Send.Datagrams == 0 || r.Memory == nil || r.Memory.HeapInuse == 0 ||
		r.Memory.StackInuse == 0 || r.Memory.Goroutines < 26 || r.Relay == nil {
		t.Errorf("lightspeed's function figures: send %+v, memory %+v, relay %+v; want them read", r.Send, r.Memory, r.Relay)
	}
	// The baseline serves its Go runtime's metrics only.
	if r := rep.Rows[1]; r.Send != nil || r.Memory == nil || r.Memory.HeapInuse == 0 || r.Relay != nil {
		t.Errorf("the baseline's metrics: send %+v, memory %+v, relay %+v; want its memory only", r.Send, r.Memory, r.Relay)
	}
	// The per-viewer figures, both stacks; the gateway's only for
	// lightspeed's.
	for i, r := range rep.Rows {
		p := r.PerViewer
		if p.WireBytes <= p.MediaBytes || p.MediaBytes == 0 || p.OverheadPercent <= 0 || p.Needed == 0 || p.PacketsPerNeeded == 0 ||
			p.Packets == 0 || p.HeapKB == nil || p.TotalMicros == 0 || p.ControlBytes == 0 {
			t.Errorf("%s: per-viewer figures %+v: want them measured", r.Stack, p)
		}
		if (p.GatewayMicros != nil) != (i == 0) {
			t.Errorf("%s: gateway per viewer %v", r.Stack, p.GatewayMicros)
		}
	}
	if rep.Clip.Name != "2m" || rep.Clip.Width != 1280 || rep.Processes == "" || rep.Runs != 1 || len(rep.Medians) != 2 {
		t.Errorf("clip %+v, processes %q, %d runs, %d medians", rep.Clip, rep.Processes, rep.Runs, len(rep.Medians))
	}
	if len(rep.Ratios) != 1 {
		t.Errorf("%d ratios, want 1", len(rep.Ratios))
	}
	if len(rep.TTFF) != 2 || rep.TTFF[0].KeyintSeconds != 1 || rep.TTFF[1].KeyintSeconds != 4 {
		t.Fatalf("joins: %+v, want keyframe intervals 1 s and 4 s", rep.TTFF)
	}
	for _, j := range rep.TTFF {
		if j.Failed != 0 || j.Ms.N != 2 {
			t.Errorf("keyint %v s: %d failed, %d measured; want 0 and 2", j.KeyintSeconds, j.Failed, j.Ms.N)
		}
	}
	if rep.Stream.BitrateBps == 0 {
		t.Error("the stream's bitrate was not read")
	}
	// Paced as OBS paces the test media: 1.2 times its video bitrate.
	if lo, hi := int(1.1*rep.Stream.BitrateBps/1000), int(1.4*rep.Stream.BitrateBps/1000); rep.Stream.PeakKbps < lo || rep.Stream.PeakKbps > hi {
		t.Errorf("video paced at %d kbit/s, want OBS's 1.2 times the stream's %.0f kbit/s", rep.Stream.PeakKbps, rep.Stream.BitrateBps/1000)
	}
}

// TestSmallWHIPRun runs the fan-out step, the joins and one cold start
// with the publisher on WHIP: the latency is matched against what the
// WHIP publisher wrote, and the cold start's keyframe answers the
// gateway's keyframe request.
func TestSmallWHIPRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a gateway and a function")
	}
	netns.Exclusive(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config{
		viewers:    []int{2},
		duration:   2 * time.Second,
		settle:     time.Second,
		keyintTest: true,
		joins:      2,
		parallel:   2,
		peakKbps:   -1,
		ingest:     ingestWHIP,
		whipPLI:    true,
		coldRuns:   1,
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	rep, err := run(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ingest != ingestWHIP || rep.WHIPAnswersPLI == nil || !*rep.WHIPAnswersPLI || rep.Stream.PeakKbps != 0 {
		t.Errorf("report: ingest %q, answers PLI %v, peak %d kbit/s; want whip, true, 0 (unpaced)", rep.Ingest, rep.WHIPAnswersPLI, rep.Stream.PeakKbps)
	}
	if len(rep.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(rep.Rows))
	}
	if r := rep.Rows[0]; r.Playing != 2 || r.Delivered == 0 || r.FramesMatched == 0 || r.LatencyMs.N == 0 {
		t.Errorf("%d playing, %d delivered, %d of %d frames matched, %d latency samples: want every figure measured",
			r.Playing, r.Delivered, r.FramesMatched, r.FramesReceived, r.LatencyMs.N)
	}
	if len(rep.TTFF) != 2 {
		t.Fatalf("joins: %+v, want keyframe intervals 1 s and 4 s", rep.TTFF)
	}
	for _, j := range rep.TTFF {
		if j.Failed != 0 || j.Ms.N != 2 {
			t.Errorf("keyint %v s: %d failed, %d measured; want 0 and 2", j.KeyintSeconds, j.Failed, j.Ms.N)
		}
	}
	c := rep.Cold
	if c == nil || len(c.Runs) != 1 || c.Failed != 0 || c.Ms.N != 1 {
		t.Fatalf("cold starts: %+v, want one measured", c)
	}
	// The clip starts mid-GOP; the publisher was asked for a keyframe
	// when it connected and sent one at once, not after the clip's own
	// next one (frames later).
	if r := c.Runs[0]; r.Requests < 1 || r.SentKeyMs <= 0 || r.SentKeyMs >= float64(r.WaitFrames)*1000/30 {
		t.Errorf("cold start %+v: want a keyframe request answered before the clip's next keyframe", r)
	}
}

// TestStackThatFailsToStartIsCleanedUp starts a stack whose gateway exits
// at once (channel 0 is not a valid stream key): startStack returns the
// gateway's error, having stopped what it started.
func TestStackThatFailsToStartIsCleanedUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway and the function")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	st, err := startStack(ctx, log, stackOptions{dir: t.TempDir(), epoch: time.Now(), capacity: 10, channel: 0})
	if err == nil {
		st.close()
		t.Fatal("a stack with channel 0 started")
	}
	if !strings.Contains(err.Error(), "channel id 0") {
		t.Errorf("error %q does not give the gateway's reason", err)
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

func TestParseFlags(t *testing.T) {
	tests := []flagCase{
		{"defaults measure 10, 50 and 100 viewers for 20 s", nil, "", func(c config) bool {
			return fmt.Sprint(c.viewers) == "[10 50 100]" && c.duration == 20*time.Second && c.keyintTest && !c.baseline && !c.browser && c.peakKbps < 0
		}},
		{"the publisher's pacing is taken", []string{"-peak-kbps", "0"}, "", func(c config) bool { return c.peakKbps == 0 }},
		{"viewers are parsed", []string{"-viewers", "2, 5"}, "", func(c config) bool { return fmt.Sprint(c.viewers) == "[2 5]" }},
		{"viewers must increase", []string{"-viewers", "50,10"}, "must increase", nil},
		{"viewers must be positive", []string{"-viewers", "0"}, "not a positive number", nil},
		{"attach needs a key", []string{"-attach", "127.0.0.1:8080"}, "-attach needs -key", nil},
		{"attach defaults the FTL port", []string{"-attach", "127.0.0.1:8080", "-key", "77-x"}, "", func(c config) bool { return c.ftlAddr == "127.0.0.1:8084" }},
		{"profiling needs the started stack", []string{"-attach", "h:1", "-key", "77-x", "-cpuprofile", "f"}, "-cpuprofile needs the stack", nil},
		{"no arguments", []string{"extra"}, "unexpected argument", nil},
		{"the committed test media and one run by default", nil, "", func(c config) bool { return c.clip == "2m" && c.runs == 1 }},
		{"-clip 2.5m and -runs are taken", []string{"-clip", "2.5m", "-runs", "3"}, "", func(c config) bool { return c.clip == "2.5m" && c.runs == 3 }},
		{"an unknown clip", []string{"-clip", "4k"}, `-clip: "4k" is none of 2.5m, 2m`, nil},
		{"at least one run", []string{"-runs", "0"}, "-runs must be at least 1", nil},
		{"browser plays its own media", []string{"-browser", "-clip", "2.5m"}, "-clip does not go with it", nil},
		{"browser has no runs", []string{"-browser", "-runs", "2"}, "-runs does not go with it", nil},
		{"-embedded runs the function in the gateway", []string{"-embedded"}, "", func(c config) bool { return c.embedded }},
		{"an embedded function is not profiled", []string{"-embedded", "-cpuprofile", "f"}, "does not go with -embedded", nil},
		{"attached, embedded is said with pids", []string{"-embedded", "-attach", "h:1", "-key", "77-x"}, "same pid to -function-pid and -gateway-pid", nil},
		{"fleet has no -runs of the steps", []string{"-fleet", "-runs", "2"}, "-fleet does not go with -runs", nil},

		{"the publisher uses FTL by default, with cold starts", nil, "", func(c config) bool {
			return c.ingest == ingestFTL && c.coldRuns == 5
		}},
		{"-ingest whip publishes over WHIP, answering keyframe requests", []string{"-ingest", "whip"}, "", func(c config) bool {
			return c.ingest == ingestWHIP && c.whipPLI
		}},
		{"-ingest ftl is taken", []string{"-ingest", "ftl"}, "", func(c config) bool { return c.ingest == ingestFTL }},
		{"-whip-pli=false keeps the clip's keyframes", []string{"-ingest", "whip", "-whip-pli=false"}, "", func(c config) bool {
			return c.ingest == ingestWHIP && !c.whipPLI
		}},
		{"an unknown ingest", []string{"-ingest", "rtmp"}, `-ingest: "rtmp" is neither ftl nor whip`, nil},
		{"the ingest is case-sensitive", []string{"-ingest", "WHIP"}, "is neither ftl nor whip", nil},
		{"-whip-pli needs -ingest whip", []string{"-whip-pli=false"}, "-whip-pli needs -ingest whip", nil},
		{"-whip-pli with FTL", []string{"-ingest", "ftl", "-whip-pli"}, "-whip-pli needs -ingest whip", nil},
		{"cold runs are taken", []string{"-cold-runs", "3"}, "", func(c config) bool { return c.coldRuns == 3 }},
		{"no cold runs", []string{"-cold-runs", "0"}, "", func(c config) bool { return c.coldRuns == 0 }},
		{"cold runs must not be negative", []string{"-cold-runs", "-1"}, "-cold-runs must not be negative", nil},
		{"attached WHIP", []string{"-ingest", "whip", "-attach", "127.0.0.1:8080", "-key", "77-x"}, "", func(c config) bool {
			return c.ingest == ingestWHIP && c.attach == "127.0.0.1:8080"
		}},
		{"attached WHIP has no FTL address", []string{"-ingest", "whip", "-attach", "127.0.0.1:8080", "-key", "77-x", "-ftl", "h:8084"}, "-ftl does not go with -ingest whip", nil},
		{"browser takes -ingest whip", []string{"-browser", "-ingest", "whip"}, "", func(c config) bool { return c.browser && c.ingest == ingestWHIP && c.whipPLI }},
		{"browser's WHIP is not paced", []string{"-browser", "-ingest", "whip", "-peak-kbps", "3000"}, "-peak-kbps paces FTL", nil},
		{"browser's WHIP publisher answers keyframe requests", []string{"-browser", "-ingest", "whip", "-whip-pli=false"}, "-whip-pli=false does not go with it", nil},
		{"browser takes -ingest ftl", []string{"-browser", "-ingest", "ftl"}, "", func(c config) bool { return c.browser && c.ingest == ingestFTL }},
		{"browser has no cold runs", []string{"-browser", "-cold-runs", "2"}, "-cold-runs does not go with it", nil},
		{"fleet publishes over FTL", []string{"-fleet", "-ingest", "whip"}, "-ingest whip does not go with it", nil},
		{"faults soak 30 minutes by default", []string{"-faults"}, "", func(c config) bool { return c.faults && c.soak == 30*time.Minute }},
		{"faults take a soak", []string{"-faults", "-soak", "5m"}, "", func(c config) bool { return c.faults && c.soak == 5*time.Minute }},
		{"a soak needs faults", []string{"-soak", "5m"}, "-soak needs -faults", nil},
		{"a soak of at least two minutes", []string{"-faults", "-soak", "1m"}, "-soak must be at least 2m", nil},
		{"faults run nothing else", []string{"-faults", "-viewers", "10"}, "-viewers does not go with it", nil},

		{"browser defaults to one viewer in one browser for 60 s", []string{"-browser"}, "", func(c config) bool {
			return c.browser && c.browserViewers == 1 && c.browsers == 1 && c.duration == time.Minute
		}},
		{"browser takes -duration, -json and its own viewers", []string{"-browser", "-duration", "10m", "-browser-viewers", "4", "-browsers", "2", "-json", "f", "-v"}, "", func(c config) bool {
			return c.duration == 10*time.Minute && c.browserViewers == 4 && c.browsers == 2 && c.jsonFile == "f" && c.verbose
		}},
		{"browser with fan-out viewers", []string{"-browser", "-viewers", "10"}, "-viewers does not go with it", nil},
		{"browser with the baseline", []string{"-browser", "-baseline"}, "-baseline does not go with it", nil},
		{"browser with attach", []string{"-browser", "-attach", "127.0.0.1:8080", "-key", "77-x"}, "-attach does not go with it", nil},
		{"browser with a profile", []string{"-browser", "-cpuprofile", "f"}, "-cpuprofile does not go with it", nil},
		{"browser with the joins", []string{"-browser", "-keyint-test=false"}, "-keyint-test does not go with it", nil},
		{"browser takes the pacing", []string{"-browser", "-peak-kbps", "3000"}, "", func(c config) bool { return c.browser && c.peakKbps == 3000 }},
		{"browser viewers must be positive", []string{"-browser", "-browser-viewers", "0"}, "-browser-viewers must be positive", nil},
		{"more browsers than viewers", []string{"-browser", "-browsers", "2"}, "-browsers must be between 1 and -browser-viewers (1)", nil},
		{"browser duration must be positive", []string{"-browser", "-duration", "0s"}, "-duration must be positive", nil},
		{"browser viewers need -browser", []string{"-browser-viewers", "2"}, "-browser-viewers needs -browser", nil},
		{"browsers need -browser", []string{"-browsers", "1"}, "-browsers needs -browser", nil},
	}
	checkFlags(t, tests)
}

// flagCase is a command line and what parseFlags must make of it.
type flagCase struct {
	name    string
	args    []string
	wantErr string // a part of the error; "" for none
	check   func(config) bool
}

// checkFlags runs parseFlags on each case.
func checkFlags(t *testing.T, tests []flagCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one that says %q", err, tt.wantErr)
			}
			if tt.check != nil && !tt.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

func TestProcParsers(t *testing.T) {
	stat := []byte("1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 12 0 100 0 0\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 2*time.Second {
		t.Errorf("stat cpu = %v, %v; want 2s (200 ticks)", cpu, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1 2")); err == nil {
		t.Error("a short stat line parsed")
	}
	rss, err := parseStatusRSS([]byte("Name:\tx\nVmPeak:\t 10 kB\nVmRSS:\t    2048 kB\n"))
	if err != nil || rss != 2048*1024 {
		t.Errorf("rss = %d, %v", rss, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("status without VmRSS parsed")
	}
	m, err := parseMachine([]byte("cpu  100 5 50 1000 10 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil || m.Busy != 161 || m.Total != 1171 {
		t.Errorf("machine = %+v, %v; want busy 161, total 1171", m, err)
	}
	if got := busyCores(machineSample{0, 0}, machineSample{50, 100}, 2); got != 1 {
		t.Errorf("busy cores = %v, want 1", got)
	}
	drops, err := parseUDPDrops([]byte("Ip: a b\nIp: 1 2\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 10 0 3 7 3\nUdpLite: x\n"))
	if err != nil || drops != 3 {
		t.Errorf("udp drops = %d, %v", drops, err)
	}
}

func TestParseRTP(t *testing.T) {
	tests := []struct {
		name        string
		pkt         []byte
		ok          bool
		payload     string
		marker      bool
		pt, seq, ts uint32
	}{
		{"plain header", []byte{0x80, 0xe0, 0, 7, 0, 0, 1, 0, 0, 0, 0, 1, 'a', 'b'}, true, "ab", true, 96, 7, 256},
		{"CSRC and extension skipped", []byte{0x91, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 'x'}, true, "x", false, 96, 1, 9},
		{"padding stripped", []byte{0xa0, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 'x', 0, 2}, true, "x", false, 96, 1, 9},
		{"padding longer than the packet", []byte{0xa0, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 9}, false, "", false, 0, 0, 0},
		{"extension cut", []byte{0x90, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0xbe}, false, "", false, 0, 0, 0},
		{"version 1", []byte{0x40, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1}, false, "", false, 0, 0, 0},
		{"short", []byte{0x80, 0x60}, false, "", false, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, ok := parseRTP(tt.pkt)
			if ok != tt.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if string(h.payload) != tt.payload || h.marker != tt.marker || uint32(h.pt) != tt.pt || uint32(h.seq) != tt.seq || h.ts != tt.ts {
				t.Fatalf("got %+v", h)
			}
		})
	}
}

func TestFrameLogRecordsEachFrameOnce(t *testing.T) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f}
	slice := []byte{0x41, 0x9a}
	l := newFrameLog(0)
	l.note(1000, false, sps, 1)
	l.note(1000, false, slice, 2)
	l.note(1000, true, slice, 3)
	l.note(1000, true, slice, 4) // the marker again: a retransmission
	l.note(4000, true, slice, 5)
	l.note(1000, false, sps, 6) // an older frame again
	got := l.take()
	want := []frameTimes{{TS: 1000, First: 1, Last: 3, Key: true}, {TS: 4000, First: 5, Last: 5}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if rest := l.take(); len(rest) != 0 {
		t.Fatalf("take after take: %v", rest)
	}
}

func TestFrameLogAcrossTimestampWrap(t *testing.T) {
	l := newFrameLog(0)
	for i, ts := range []uint32{0xffffe000, 0xfffff000, 0x100, 0x1100} {
		l.note(ts, true, nil, time.Duration(i))
	}
	s := sentFrames(l.snapshot())
	if len(s) != 4 {
		t.Fatalf("%d frames across the wrap, want 4", len(s))
	}
	for _, ts := range []uint32{0xffffe000, 0x100, 0x1100} {
		if _, ok := s.find(ts); !ok {
			t.Errorf("frame %#x not found", ts)
		}
	}
	if _, ok := s.find(0x200); ok {
		t.Error("a frame never sent was found")
	}
}

func TestLearnOffsetOutvotesTheCachedKeyframe(t *testing.T) {
	// Keyframes sent every 30 frames (3000 ticks, 33 ms apart); the hub
	// adds 5000 to every timestamp; viewers receive live frames 2 ms
	// after they were sent.
	var sent sentFrames
	for i := range 120 {
		sent = append(sent, frameTimes{TS: uint32(i * 3000), First: time.Duration(i) * 33 * time.Millisecond, Key: i%30 == 0})
	}
	const offset = 5000
	live := func(i int) frameTimes {
		f := sent[i]
		return frameTimes{TS: f.TS + offset, First: f.First + 2*time.Millisecond, Key: f.Key}
	}
	// A late joiner gets keyframe 30 from the cache long after keyframe
	// 60 was sent, then the live keyframes 90.
	cached := frameTimes{TS: sent[30].TS + offset, First: sent[61].First, Key: true}
	got, votes, ok := learnOffset(sent, [][]frameTimes{{cached, live(90)}, {live(60), live(90)}})
	if !ok || got != offset || votes != 3 {
		t.Fatalf("offset %d (%d votes, %v), want %d with 3 votes", got, votes, ok, offset)
	}
	if _, _, ok := learnOffset(sent, [][]frameTimes{{live(5)}}); ok {
		t.Fatal("an offset learned without keyframes")
	}
}

func TestKeyCheck(t *testing.T) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f}
	pps := []byte{0x68, 0xce}
	idrStart := []byte{0x7c, 0x85, 1}
	idrMid := []byte{0x7c, 0x05, 2}
	idrEnd := []byte{0x7c, 0x45, 3}
	slice := []byte{0x41, 0x9a}
	type pkt struct {
		seq     uint16
		ts      uint32
		marker  bool
		payload []byte
	}
	tests := []struct {
		name     string
		pkts     []pkt
		complete int // index of the packet that completes a keyframe, -1 none
		broken   int // keyframes begun and not completed
	}{
		{"whole keyframe", []pkt{{1, 9, false, sps}, {2, 9, false, pps}, {3, 9, false, idrStart}, {4, 9, false, idrMid}, {5, 9, true, idrEnd}}, 4, 0},
		{"a packet missing", []pkt{{1, 9, false, sps}, {2, 9, false, pps}, {4, 9, false, idrMid}, {5, 9, true, idrEnd}}, -1, 1},
		{"no IDR slice", []pkt{{1, 9, false, sps}, {2, 9, true, pps}}, -1, 1},
		{"starts without SPS", []pkt{{1, 9, false, idrStart}, {2, 9, true, idrEnd}}, -1, 0},
		{"frame ends without marker", []pkt{{1, 9, false, sps}, {2, 9, false, idrStart}, {3, 12, true, slice}}, -1, 1},
		{"a new keyframe before the marker", []pkt{{1, 9, false, sps}, {2, 12, false, sps}, {3, 12, false, idrStart}, {4, 12, true, idrEnd}}, 3, 1},
		{"broken, then whole", []pkt{{1, 9, false, sps}, {3, 9, true, idrEnd}, {4, 12, false, sps}, {5, 12, false, idrStart}, {6, 12, true, idrEnd}}, 4, 1},
		{"sequence wraps", []pkt{{65535, 9, false, sps}, {0, 9, false, idrStart}, {1, 9, true, idrEnd}}, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var k keyCheck
			got, broken := -1, 0
			for i, p := range tt.pkts {
				whole, br := k.packet(rtpHeader{seq: p.seq, ts: p.ts, marker: p.marker, payload: p.payload})
				if whole {
					got = i
				}
				if br {
					broken++
				}
			}
			if got != tt.complete || broken != tt.broken {
				t.Fatalf("completed at packet %d, %d broken; want %d, %d", got, broken, tt.complete, tt.broken)
			}
		})
	}
}

func TestSeqCountLoss(t *testing.T) {
	var s seqCount
	s.add(65530)
	a := s.read()
	for _, seq := range []uint16{65531, 65533, 65535, 0, 3, 2, 2} {
		s.add(seq)
	}
	b := s.read()
	// From 65530 to 3 across the wrap: 9 numbers, 7 packets received;
	// 65532, 65534 and 1 missing, 2 twice.
	if got := lost(a, b); got != 2 {
		t.Fatalf("lost %d, want 2", got)
	}
	if b.High != 1<<16|3 {
		t.Fatalf("high %#x, want the wrap counted", b.High)
	}
}

func TestKernelTime(t *testing.T) {
	msg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, 16, 16+len(data)+8)
		binary.NativeEndian.PutUint64(b[0:8], uint64(16+len(data)))
		binary.NativeEndian.PutUint32(b[8:12], uint32(level))
		binary.NativeEndian.PutUint32(b[12:16], uint32(typ))
		b = append(b, data...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
		return b
	}
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts[0:8], 12)
	binary.NativeEndian.PutUint64(ts[8:16], 345)
	oob := append(msg(0, 1, []byte{1, 2, 3}), msg(syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, ts)...)
	if at, ok := kernelTime(oob); !ok || at != 12e9+345 {
		t.Fatalf("kernel time %d, %v", at, ok)
	}
	if _, ok := kernelTime(oob[:20]); ok {
		t.Fatal("a cut control message gave a time")
	}
}

func TestKeyframesOfTheClips(t *testing.T) {
	gop1, gop4, err := loadClips("2m")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		clip         clip
		frames, keys int
	}{{gop1, 4 * testmedia.FrameRate, 4}, {gop4, 8 * testmedia.FrameRate, 2}} {
		k := keyframes(c.clip.nals)
		n := 0
		for i, key := range k {
			if key {
				n++
				if i%int(c.clip.keyint.Seconds()*testmedia.FrameRate) != 0 {
					t.Errorf("%s: keyframe at frame %d", c.clip.name, i)
				}
			}
		}
		if len(k) != c.frames || n != c.keys {
			t.Errorf("%s: %d frames with %d keyframes, want %d with %d", c.clip.name, len(k), n, c.frames, c.keys)
		}
		if len(c.clip.opus)*20 < len(k)*1000/testmedia.FrameRate {
			t.Errorf("%s: %d Opus packets are shorter than the video", c.clip.name, len(c.clip.opus))
		}
	}
}

func TestPercentiles(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	p := percentiles(d)
	if p.N != 100 || p.P50 != 50 || p.P95 != 95 || p.P99 != 99 || p.Max != 100 {
		t.Fatalf("%+v", p)
	}
	if p := percentiles(nil); p.N != 0 {
		t.Fatalf("%+v", p)
	}
}

func TestRatiosAndLimits(t *testing.T) {
	rows := []Row{
		{Stack: "lightspeed", Viewers: 10, Playing: 10, MarginalMicrosPerPacket: 5, ServerCores: 0.2, BenchCores: 0.2, MicrosPerPacket: 6},
		{Stack: "baseline", Viewers: 10, Playing: 10, MarginalMicrosPerPacket: 20, Saturated: true},
	}
	r := ratios(rows)
	if len(r) != 1 || r[0].LightspeedPerBase != 0.25 || r[0].Trusted {
		t.Fatalf("%+v", r)
	}
	if l := limits(rows, 2); l == "" {
		t.Fatal("no limit stated")
	}
}

// TestFromFrameStartsInTheMiddleOfTheGOP checks the clip of the cold
// starts: it begins at the frame asked for and holds every frame once.
func TestFromFrameStartsInTheMiddleOfTheGOP(t *testing.T) {
	gop1, gop4, err := loadClips("2m")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []clip{gop1, gop4} {
		all := keyframes(c.nals)
		gop := int(c.keyint.Seconds() * 30)
		for _, k := range []int{0, 1, gop / 2, gop - 1} {
			r := fromFrame(c, k)
			got := keyframes(r.nals)
			if len(got) != len(all) || len(r.nals) != len(c.nals) {
				t.Fatalf("%s from frame %d: %d frames and %d NAL units, want %d and %d", c.name, k, len(got), len(r.nals), len(all), len(c.nals))
			}
			for i := range got {
				if got[i] != all[(k+i)%len(all)] {
					t.Fatalf("%s from frame %d: frame %d is a keyframe: %v, want %v", c.name, k, i, got[i], !got[i])
				}
			}
			if first := slices.Index(got, true); k > 0 && first != gop-k {
				t.Errorf("%s from frame %d: first keyframe at %d, want %d", c.name, k, first, gop-k)
			}
		}
	}
}

// TestFaultLinesPicksFiguresAndFailures: the bench prints the figure lines
// of the fault suite's output and the failures, and names the failed cases.
func TestFaultLinesPicksFiguresAndFailures(t *testing.T) {
	in := strings.Join([]string{
		"=== RUN   TestFaultSoak",
		"    process.go:260: viewers-ams: RECEIVED 3 1 31818 0",
		"    faults_test.go:413: FAULT soak 2m0s: 8 swaps",
		"    faults_test.go:331: 2 samples after the warm-up",
		"    ingest_test.go:32: time=2026-12-08T01:00:35.425Z level=INFO msg=\"whip: listening\"",
		"--- FAIL: TestFaultSoak (120.0s)",
		"FAULT slowloris relay: deadline 5s",
		"--- PASS: TestFaultSlowloris (35.8s)",
		"FAIL",
	}, "\n")
	var out strings.Builder
	failed := faultLines(strings.NewReader(in), &out, false)
	want := "FAULT soak 2m0s: 8 swaps\nfaults_test.go:331: 2 samples after the warm-up\n--- FAIL: TestFaultSoak (120.0s)\nFAULT slowloris relay: deadline 5s\nFAIL\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	if len(failed) != 1 || failed[0] != "TestFaultSoak" {
		t.Errorf("failed %q", failed)
	}
}
