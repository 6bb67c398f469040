//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func TestMediaBytesLeavesThePayloadFormatOut(t *testing.T) {
	for _, tt := range []struct {
		name    string
		video   bool
		payload []byte
		want    int
	}{
		{"opus is the whole payload", false, make([]byte, 160), 160},
		{"a single NAL unit is the whole payload", true, append([]byte{0x65}, make([]byte, 99)...), 100},
		{"the first FU-A fragment gets the NAL header back", true, append([]byte{0x7c, 0x85}, make([]byte, 1186)...), 1187},
		{"a middle FU-A fragment", true, append([]byte{0x7c, 0x05}, make([]byte, 1186)...), 1186},
		{"the last FU-A fragment", true, append([]byte{0x7c, 0x45}, make([]byte, 10)...), 10},
		{"a cut FU-A", true, []byte{0x7c}, 0},
		{"STAP-A: its units without their sizes", true, []byte{0x78, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 1}, 5},
		{"STAP-A: a unit cut short is left out", true, []byte{0x78, 0, 3, 0x67, 1, 2, 0, 9, 0x68}, 3},
		{"empty", true, nil, 0},
	} {
		if got := mediaBytes(tt.video, tt.payload); got != tt.want {
			t.Errorf("%s: %d bytes, want %d", tt.name, got, tt.want)
		}
	}
}

func TestPacketsForFullSizePackets(t *testing.T) {
	for n, want := range map[int]uint64{0: 0, 1: 1, 1188: 1, 1189: 2, 2376: 2, 2377: 3, 100000: 85} {
		if got := packetsFor(n); got != want {
			t.Errorf("packetsFor(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestTrackCountNeedsWholeFramesOfFullPackets: a frame's packets need
// ceil(bytes / 1188) full-size packets however its bytes were cut; every
// Opus packet is a frame of its own; the count grows as the bytes come,
// so a frame cut by a window's edge counts on each side what came there.
func TestTrackCountNeedsWholeFramesOfFullPackets(t *testing.T) {
	var video trackCount
	// A 2,500-byte frame sent as five 500-byte packets: 3 needed.
	for range 5 {
		video.add(3000, 500)
	}
	if n := video.needed.Load(); n != 3 {
		t.Fatalf("needed %d after a 2,500-byte frame, want 3", n)
	}
	// The next frame, 1,188 bytes in two packets: one more.
	video.add(6000, 600)
	video.add(6000, 588)
	if n, m := video.needed.Load(), video.media.Load(); n != 4 || m != 3688 {
		t.Fatalf("needed %d, media %d; want 4 and 3688", n, m)
	}
	// A window's edge inside a frame: what came before it counts before.
	before := video.needed.Load()
	video.add(9000, 1000)
	mid := video.needed.Load()
	video.add(9000, 1000)
	if mid-before != 1 || video.needed.Load()-mid != 1 {
		t.Fatalf("a 2,000-byte frame across an edge: %d before, %d after; want 1 and 1", mid-before, video.needed.Load()-mid)
	}

	var audio trackCount
	for i := range 50 {
		audio.add(uint32(i)*960, 160)
	}
	if n := audio.needed.Load(); n != 50 {
		t.Fatalf("50 Opus packets need %d, want 50", n)
	}
}

func TestWireCountDemultiplexes(t *testing.T) {
	var w wireCount
	w.datagram(append([]byte{0x80, 0x60}, make([]byte, 98)...))   // SRTP, PT 96
	w.datagram(append([]byte{0x80, 0xe0}, make([]byte, 1198)...)) // SRTP, marker and PT 96
	w.datagram(append([]byte{0x80, 0xc8}, make([]byte, 50)...))   // SRTCP sender report (200)
	w.datagram(append([]byte{0x00, 0x01}, make([]byte, 18)...))   // STUN binding request
	w.datagram(append([]byte{0x17, 0xfe}, make([]byte, 8)...))    // DTLS application data
	if w.rtp.Load() != 2 || w.rtpBytes.Load() != 1300 || w.other.Load() != 3 || w.otherBytes.Load() != 82 {
		t.Fatalf("rtp %d (%d bytes), other %d (%d bytes); want 2 (1300) and 3 (82)",
			w.rtp.Load(), w.rtpBytes.Load(), w.other.Load(), w.otherBytes.Load())
	}
	var none *wireCount
	none.datagram([]byte{0x80, 0x60}) // not counted, no panic
}

func TestOverheadPercent(t *testing.T) {
	if got := overheadPercent(1058, 1000); got != 5.8 {
		t.Errorf("1,058 wire bytes for 1,000 of media: %v %%, want 5.8", got)
	}
	if got := overheadPercent(100, 0); got != 0 {
		t.Errorf("no media: %v %%, want 0", got)
	}
}

// TestPerViewerFigures computes one window by hand: 100 viewers for
// 10 s, the function 0.5 cores (0.1 idle), the gateway 0.06 (0.05
// idle), 300 packets a viewer a second of which the media needs 290.
func TestPerViewerFigures(t *testing.T) {
	const viewers, secs = 100, 10.0
	vs := uint64(viewers * secs)
	c := windowCounts{
		viewers: viewers, seconds: secs,
		cpu: 5, idleCores: 0.1,
		hasGateway: true, gatewayCPU: 0.6, gatewayIdle: 0.05,
		rss: 40 << 20, idleRSS: 20 << 20,
		hasHeap: true, heap: 30 << 20, idleHeap: 10 << 20,
		delivered: 300 * vs,
		flow: flow{
			RTP: 300 * vs, RTPBytes: 300 * vs * 1100,
			Other: 2 * vs, OtherBytes: 2 * vs * 72,
			Media:  [2]uint64{vs * 310000, vs * 8000},
			Needed: [2]uint64{240 * vs, 50 * vs},
		},
	}
	p := perViewer(c)
	// (5 − 0.1×10) s ÷ 1,000 viewer-seconds = 4 ms.
	if p.FunctionMicros != 4000 || p.ViewersPerCore != 250 {
		t.Errorf("function: %v µs per viewer-second, %v viewers per core; want 4000 and 250", p.FunctionMicros, p.ViewersPerCore)
	}
	if p.GatewayMicros == nil || *p.GatewayMicros != 100 || p.TotalMicros != 4100 || p.TotalViewersPerCore != 244 {
		t.Errorf("gateway %v, total %v µs, %v viewers per core; want 100, 4100 and 244", p.GatewayMicros, p.TotalMicros, p.TotalViewersPerCore)
	}
	if p.RSSKB != 204.8 || p.HeapKB == nil || *p.HeapKB != 204.8 {
		t.Errorf("RSS %v KB, heap %v KB per viewer; want 204.8 each", p.RSSKB, p.HeapKB)
	}
	// 300 × (1,100 + 28) bytes of wire for 318,000 of media.
	if p.WireBytes != 338400 || p.MediaBytes != 318000 || p.OverheadPercent != 6.42 || p.OverheadPerPacket != 68.0 {
		t.Errorf("wire %v, media %v bytes/s, overhead %v %% and %v bytes a packet; want 338400, 318000, 6.42 and 68",
			p.WireBytes, p.MediaBytes, p.OverheadPercent, p.OverheadPerPacket)
	}
	if p.ControlBytes != 200 {
		t.Errorf("control %v bytes/s, want 200", p.ControlBytes)
	}
	if p.Packets != 300 || p.NeededVideo != 240 || p.NeededAudio != 50 || p.Needed != 290 || p.PacketsPerNeeded != 1.034 {
		t.Errorf("packets %v, needed %v + %v = %v, ratio %v; want 300, 240 + 50 = 290, 1.034",
			p.Packets, p.NeededVideo, p.NeededAudio, p.Needed, p.PacketsPerNeeded)
	}
	if want := round(318000.0/fullPayload, 1); p.MediaAtFullSize != want {
		t.Errorf("media ÷ 1188: %v, want %v", p.MediaAtFullSize, want)
	}

	// The baseline: no gateway of its own, no heap read.
	c.hasGateway, c.hasHeap = false, false
	p = perViewer(c)
	if p.GatewayMicros != nil || p.TotalMicros != p.FunctionMicros || p.HeapKB != nil {
		t.Errorf("without a gateway or heap: gateway %v, total %v (fn %v), heap %v", p.GatewayMicros, p.TotalMicros, p.FunctionMicros, p.HeapKB)
	}
	// Less CPU than idle (noise): the cost is negative, viewers per core
	// not stated.
	c.cpu = 0.5
	if p := perViewer(c); p.FunctionMicros >= 0 || p.ViewersPerCore != 0 {
		t.Errorf("below idle: %v µs, %v viewers per core; want negative and 0", p.FunctionMicros, p.ViewersPerCore)
	}
	if p := perViewer(windowCounts{}); p != (PerViewer{}) {
		t.Errorf("no viewers: %+v, want nothing", p)
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{-1, 5}, 2},
	} {
		in := append([]float64(nil), tt.xs...)
		if got := median(tt.xs); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.xs[i] {
				t.Fatalf("median reordered its input: %v", tt.xs)
			}
		}
	}
}

// TestSummarizeTakesEachFiguresMedianOverTheRuns: three runs of two
// stacks; every figure of a row, nested ones too, gets its median and
// range per stack and viewers; a figure one run lacks counts the others.
func TestSummarizeTakesEachFiguresMedianOverTheRuns(t *testing.T) {
	heap := func(x float64) *float64 { return &x }
	var rows []Row
	for run, us := range []float64{5, 3, 4} {
		pv := PerViewer{FunctionMicros: us * 300, HeapKB: heap(100 + us)}
		if run == 1 {
			pv.HeapKB = nil
		}
		rows = append(rows,
			Row{Run: run + 1, Stack: "lightspeed", Viewers: 50, MarginalMicrosPerPacket: us, Saturated: run == 2, PerViewer: pv,
				LatencyMs: Percentiles{P99: us}},
			Row{Run: run + 1, Stack: "baseline", Viewers: 50, MarginalMicrosPerPacket: 4 * us})
	}
	sums := summarize(rows)
	if len(sums) != 2 || sums[0].Stack != "lightspeed" || sums[1].Stack != "baseline" {
		t.Fatalf("%d summaries: %+v", len(sums), sums)
	}
	ls := sums[0]
	if ls.Runs != 3 || ls.Saturated != 1 || ls.Viewers != 50 {
		t.Errorf("lightspeed: %d runs, %d saturated, %d viewers; want 3, 1, 50", ls.Runs, ls.Saturated, ls.Viewers)
	}
	for name, want := range map[string]Range{
		"marginal_us_per_packet":             {Median: 4, Min: 3, Max: 5, N: 3},
		"per_viewer.fn_us_per_viewer_second": {Median: 1200, Min: 900, Max: 1500, N: 3},
		"per_viewer.heap_kb_per_viewer":      {Median: 104.5, Min: 104, Max: 105, N: 2},
		"latency_ms.p99":                     {Median: 4, Min: 3, Max: 5, N: 3},
	} {
		if got := ls.Figures[name]; got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
	if _, ok := ls.Figures["run"]; ok {
		t.Error("the run number was summarized")
	}
	if got := sums[1].Figures["marginal_us_per_packet"]; got.Median != 16 {
		t.Errorf("baseline: %+v, want a median of 16", got)
	}
	if c := ls.cell("marginal_us_per_packet", 2); c != "4.00 (3.00–5.00)" {
		t.Errorf("cell %q", c)
	}
	if c := ls.cell("per_viewer.gateway_us_per_viewer_second", 0); c != "–" {
		t.Errorf("a figure no run had: %q", c)
	}
}

// TestReportPrintsPerViewerFiguresAndMedians prints a two-run report and
// reads the JSON back: the clip, the medians and the per-viewer table.
func TestReportPrintsPerViewerFiguresAndMedians(t *testing.T) {
	gw := 100.0
	var rows []Row
	for run := 1; run <= 2; run++ {
		us := 3000 + 200*float64(run)
		rows = append(rows,
			Row{Run: run, Stack: "lightspeed", Viewers: 100, Playing: 100, MarginalMicrosPerPacket: us / 300,
				PerViewer: PerViewer{FunctionMicros: us, GatewayMicros: &gw, TotalMicros: us + gw, WireBytes: 338400, MediaBytes: 318000,
					OverheadPercent: 6.42, Packets: 300, Needed: 290, PacketsPerNeeded: 1.034}},
			Row{Run: run, Stack: "baseline", Viewers: 100, Playing: 100, MarginalMicrosPerPacket: 3 * us / 300,
				PerViewer: PerViewer{FunctionMicros: 3 * us, TotalMicros: 3 * us}})
	}
	rep := &Report{Runs: 2, Rows: rows, Clip: ClipInfo{Name: "2.5m", File: "f.h264", Width: 1280, Height: 720, FPS: 30, Seconds: 4,
		VideoBitrateBps: 2.5e6, AudioBitrateBps: 64e3, KeyframeIntervalMs: 1000}}
	rep.Medians = summarize(rep.Rows)
	var out bytes.Buffer
	rep.print(&out)
	text := out.String()
	for _, want := range []string{
		"clip: 2.5m (f.h264), 1280x720 at 30 fps",
		"keyframe every 1000 ms",
		"run 2 of 2:",
		"medians of 2 runs (min–max):",
		"per viewer, per second of stream (medians of 2 runs, min–max)",
		"3300 (3200–3400)",
		"2707", // 338,400 bytes/s as kbit/s
		"6.4",
		"1.03",
		"3300 vs 9900 µs per viewer-second",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report does not say %q:\n%s", want, text)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Runs    int `json:"runs"`
		Clip    ClipInfo
		Medians []struct {
			Stack   string           `json:"stack"`
			Figures map[string]Range `json:"figures"`
		} `json:"medians"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Runs != 2 || back.Clip.Name != "2.5m" || len(back.Medians) != 2 ||
		back.Medians[0].Figures["per_viewer.fn_us_per_viewer_second"].Median != 3300 {
		t.Errorf("JSON: %s", b)
	}
}

// TestClipsDescribeThemselves: both clips the steps can play are 720p30,
// 4 s, a keyframe every second, at their bitrates.
func TestClipsDescribeThemselves(t *testing.T) {
	for name, mbps := range map[string]float64{"2m": 2, "2.5m": 2.5} {
		c, _, err := loadClips(name)
		if err != nil {
			t.Fatal(err)
		}
		d := c.describe()
		if d.Name != name || d.File != clipFiles[name] || d.Width != 1280 || d.Height != 720 || d.FPS != 30 || d.Seconds != 4 || d.KeyframeIntervalMs != 1000 {
			t.Errorf("%s: %+v", name, d)
		}
		if got := d.VideoBitrateBps / 1e6; math.Abs(got-mbps) > 0.15*mbps {
			t.Errorf("%s: video at %.2f Mbit/s, want about %v", name, got, mbps)
		}
		if d.AudioBitrateBps < 32e3 || d.AudioBitrateBps > 128e3 {
			t.Errorf("%s: audio at %.0f bit/s", name, d.AudioBitrateBps)
		}
	}
	if _, _, err := loadClips("9m"); err == nil {
		t.Error("an unknown clip loaded")
	}
}

// TestProcessesSaysWhatTheCPUAddsUp: one process when the function is
// embedded (its gateway then not counted twice), two otherwise.
func TestProcessesSaysWhatTheCPUAddsUp(t *testing.T) {
	for _, tt := range []struct {
		t       target
		started bool
		want    string
		gateway int
	}{
		{target{pid: 5, gatewayPID: 5}, true, "embedded function (LS_EMBEDDED_FUNCTION=true), one process", 0},
		{target{pid: 6, gatewayPID: 5}, true, "separate processes", 5},
		{target{pid: 5, gatewayPID: 5}, false, "attached: the function embedded in the gateway, one process (pid 5)", 0},
		{target{pid: 6, gatewayPID: 5}, false, "the function (pid 6) and the gateway (pid 5), separate processes", 5},
		{target{pid: 6}, false, "the gateway's CPU unknown", 0},
		{target{}, false, "no CPU or memory figures", 0},
	} {
		tgt := tt.t
		if got := processes(&tgt, tt.started); !strings.Contains(got, tt.want) || tgt.gatewayPID != tt.gateway {
			t.Errorf("%+v started %v: %q, gateway pid %d; want %q and %d", tt.t, tt.started, got, tgt.gatewayPID, tt.want, tt.gateway)
		}
	}
}
