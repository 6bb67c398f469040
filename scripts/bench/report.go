//go:build linux

package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Report is everything one run measured; -json writes it.
type Report struct {
	Machine Machine `json:"machine"`
	Mode    string  `json:"mode"`   // "started": the bench started the stack; "attached"
	Ingest  string  `json:"ingest"` // how the publisher published: "ftl" or "whip"
	// WHIPAnswersPLI says whether the WHIP publisher answered keyframe
	// requests at once (-whip-pli); nil with FTL.
	WHIPAnswersPLI *bool `json:"whip_answers_pli,omitempty"`
	// Clip is what the publisher played, to both stacks: the baseline is
	// fed the function's output of it.
	Clip   ClipInfo `json:"clip"`
	Stream Stream   `json:"stream"`
	// Processes says how the measured stack runs, and so what the
	// per-viewer CPU figures add up.
	Processes string `json:"processes"`
	// Runs is how many times the steps were measured (-runs); Rows holds
	// every run's rows, Medians each figure's median over the runs.
	Runs    int       `json:"runs"`
	Rows    []Row     `json:"rows"`
	Medians []Summary `json:"medians,omitempty"`
	Ratios  []Ratio   `json:"ratios,omitempty"`
	TTFF    []TTFF    `json:"ttff,omitempty"`
	Cold    *Cold     `json:"cold,omitempty"`
	Limits  string    `json:"limits,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
}

// Stream is the published stream as the gateway describes it.
type Stream struct {
	BitrateBps         float64 `json:"bitrate_bps"`
	KeyframeIntervalMs int64   `json:"keyframe_interval_ms"`
	PeakKbps           int     `json:"peak_kbps"` // the publisher's video pacing (FTL SDK peak_kbps); 0: none
}

// Row is one measurement window: one stack with a number of viewers.
type Row struct {
	Run        int    `json:"run"`     // 1, 2, … of -runs
	Stack      string `json:"stack"`   // "lightspeed" or "baseline"
	Viewers    int    `json:"viewers"` // asked for
	Playing    int    `json:"playing"` // connected during the window
	Failed     int    `json:"failed"`  // could not connect
	NoKeyframe int    `json:"no_keyframe"`

	WindowSeconds          float64 `json:"window_seconds"`
	Delivered              uint64  `json:"delivered"` // RTP packets the viewers received
	Lost                   uint64  `json:"lost"`      // sequence numbers that never came
	LossPercent            float64 `json:"loss_percent"`
	PacketsPerViewerSecond float64 `json:"packets_per_viewer_second"`
	MbpsPerViewer          float64 `json:"mbps_per_viewer"`
	UDPDrops               uint64  `json:"udp_rcvbuf_drops"` // datagrams any socket of the machine's network namespace dropped

	// The fan-out process: the function, or the baseline child.
	ServerCores             float64 `json:"server_cores"`
	IdleCores               float64 `json:"idle_cores"` // with the stream and no viewers
	MicrosPerPacket         float64 `json:"us_per_packet"`
	MarginalMicrosPerPacket float64 `json:"marginal_us_per_packet"` // minus the idle CPU
	StepMicrosPerPacket     float64 `json:"step_us_per_packet"`     // the slope from the previous row: extra CPU per extra packet
	ViewersPerCore          float64 `json:"viewers_per_core"`
	RSSBytes                int64   `json:"rss_bytes"`
	IdleRSSBytes            int64   `json:"idle_rss_bytes"`
	KBPerViewer             float64 `json:"kb_per_viewer"`
	StepKBPerViewer         float64 `json:"step_kb_per_viewer"` // the slope from the previous row

	// The rest of the machine.
	GatewayCores          float64 `json:"gateway_cores"`
	BenchCores            float64 `json:"bench_cores"` // this process: the viewers, the tap, the publisher
	ViewerMicrosPerPacket float64 `json:"viewer_us_per_packet"`
	OtherCores            float64 `json:"other_cores"` // everything else on the machine
	MachineBusyCores      float64 `json:"machine_busy_cores"`
	Saturated             bool    `json:"saturated"`
	Note                  string  `json:"note,omitempty"`

	// The function's batched sends in the window (nil for the baseline).
	Send *sendFigures `json:"send,omitempty"`
	// The function's Go heap and goroutine stacks at the window's end.
	Memory *memFigures `json:"memory,omitempty"`
	// The function's relay losses since it started, at the window's end.
	Relay *relayFigures `json:"relay,omitempty"`

	// Delay from the sender (the gateway's input, or the baseline's feed)
	// to the viewers' sockets (the kernel's receive time), over the first
	// and the last packet of every video frame received in the window;
	// and the same to the viewers' reader goroutines, which adds the
	// bench's own processing.
	LatencyMs       Percentiles `json:"latency_ms"`
	ReaderLatencyMs Percentiles `json:"reader_latency_ms"`
	FramesReceived  int         `json:"frames_received"`
	FramesMatched   int         `json:"frames_matched"`
	TimestampOffset uint32      `json:"timestamp_offset"`
	OffsetVotes     int         `json:"offset_votes"`

	// Time to first frame of the viewers that joined for this row, all at
	// once (keyframe interval of the running stream).
	TTFFMs Percentiles `json:"ttff_ms"`

	// What one viewer costs, per second of stream.
	PerViewer PerViewer `json:"per_viewer"`
}

// Ratio compares the marginal CPU of the two stacks at one number of
// viewers in one run: per delivered packet and per viewer-second (the
// fan-out process's).
type Ratio struct {
	Run                 int     `json:"run"`
	Viewers             int     `json:"viewers"`
	Lightspeed          float64 `json:"lightspeed_us_per_packet"`
	Baseline            float64 `json:"baseline_us_per_packet"`
	LightspeedPerBase   float64 `json:"lightspeed_per_baseline"`
	LightspeedPerViewer float64 `json:"lightspeed_us_per_viewer_second"`
	BaselinePerViewer   float64 `json:"baseline_us_per_viewer_second"`
	PerViewerRatio      float64 `json:"lightspeed_per_baseline_per_viewer"`
	Trusted             bool    `json:"trusted"` // neither window was saturated
}

// machine describes this machine.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// ratios pairs the rows of the two stacks by run and viewers.
func ratios(rows []Row) []Ratio {
	var out []Ratio
	for _, a := range rows {
		if a.Stack != "lightspeed" {
			continue
		}
		for _, b := range rows {
			if b.Stack == "baseline" && b.Run == a.Run && b.Viewers == a.Viewers && b.MarginalMicrosPerPacket > 0 {
				r := Ratio{
					Run:                 a.Run,
					Viewers:             a.Viewers,
					Lightspeed:          a.MarginalMicrosPerPacket,
					Baseline:            b.MarginalMicrosPerPacket,
					LightspeedPerBase:   round(a.MarginalMicrosPerPacket/b.MarginalMicrosPerPacket, 3),
					LightspeedPerViewer: a.PerViewer.FunctionMicros,
					BaselinePerViewer:   b.PerViewer.FunctionMicros,
					Trusted:             !a.Saturated && !b.Saturated,
				}
				if b.PerViewer.FunctionMicros > 0 {
					r.PerViewerRatio = round(a.PerViewer.FunctionMicros/b.PerViewer.FunctionMicros, 3)
				}
				out = append(out, r)
			}
		}
	}
	return out
}

// limits says how many viewers this machine can measure: from the row
// with the most viewers, the CPU each viewer costs the fan-out, the
// gateway and the bench's own viewers, against saturation.
func limits(rows []Row, cpus int) string {
	var top *Row
	for i := range rows {
		if rows[i].Stack == "lightspeed" && (top == nil || rows[i].Playing > top.Playing) {
			top = &rows[i]
		}
	}
	if top == nil || top.Playing == 0 || top.ServerCores == 0 {
		return ""
	}
	n := float64(top.Playing)
	perViewer := (top.ServerCores + top.BenchCores + top.GatewayCores) / n
	budget := saturation*float64(cpus) - top.OtherCores
	return fmt.Sprintf("at %d viewers the function used %.2f cores, the gateway %.2f, the bench's viewers %.2f "+
		"(%.1f µs per delivered packet against the function's %.1f) and the rest of the machine %.2f; "+
		"at that cost per viewer the machine saturates (%.0f%% of %d cores) at about %.0f viewers, "+
		"%.0f%% of it taken by the viewers themselves",
		top.Playing, top.ServerCores, top.GatewayCores, top.BenchCores,
		top.ViewerMicrosPerPacket, top.MicrosPerPacket, top.OtherCores,
		saturation*100, cpus, math.Floor(budget/perViewer), 100*top.BenchCores/n/perViewer)
}

// runRows are the rows of one run (1, 2, …); a report without runs
// counts as one.
func (r *Report) runRows(run int) []Row {
	var out []Row
	for _, x := range r.Rows {
		if x.Run == run || (run == 1 && x.Run == 0) {
			out = append(out, x)
		}
	}
	return out
}

// printRows writes one run's rows: the per-packet table, the function's
// sends and memory.
func printRows(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stack\tviewers\tpkt/s/viewer\tµs/pkt\tmarginal µs/pkt\tviewers/core\tKB/viewer\tlatency p50/p95/p99 ms\t(reader p99)\tttff p50/p95 ms\tloss\tbusy cores (fn/gw/viewers/other)\tnote\t")
	for _, x := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.0f\t%.0f\t%.2f / %.2f / %.2f\t(%.2f)\t%.0f / %.0f\t%d (%.2f%%)\t%.2f (%.2f/%.2f/%.2f/%.2f)\t%s\t\n",
			x.Stack, x.Playing, x.PacketsPerViewerSecond, x.MicrosPerPacket, x.MarginalMicrosPerPacket,
			x.ViewersPerCore, x.KBPerViewer, x.LatencyMs.P50, x.LatencyMs.P95, x.LatencyMs.P99, x.ReaderLatencyMs.P99,
			x.TTFFMs.P50, x.TTFFMs.P95, x.Lost, x.LossPercent,
			x.MachineBusyCores, x.ServerCores, x.GatewayCores, x.BenchCores, x.OtherCores, x.Note)
	}
	tw.Flush()
	for _, x := range rows {
		if x.Send == nil || x.Send.Calls == 0 {
			continue
		}
		fmt.Fprintf(w, "%s, %d viewers: %.1f datagrams per sendmmsg call, %.0f%% of them in segmented runs to one viewer (UDP GSO), %d send errors\n",
			x.Stack, x.Playing, float64(x.Send.Datagrams)/float64(x.Send.Calls),
			100*float64(x.Send.Segmented)/float64(max(x.Send.Datagrams, 1)), x.Send.Errors)
	}
	var prev *Row
	for i := range rows {
		x := &rows[i]
		if x.Memory == nil {
			continue
		}
		m := x.Memory
		fmt.Fprintf(w, "%s, %d viewers: Go heap in use %.1f MB, goroutine stacks %.1f MB, %.0f goroutines",
			x.Stack, x.Playing, m.HeapInuse/1e6, m.StackInuse/1e6, m.Goroutines)
		if prev != nil && prev.Stack == x.Stack && x.Playing > prev.Playing {
			n := float64(x.Playing - prev.Playing)
			p := prev.Memory
			fmt.Fprintf(w, "; per added viewer: heap %.0f KB, stacks %.0f KB, %.1f goroutines",
				(m.HeapInuse-p.HeapInuse)/n/1e3, (m.StackInuse-p.StackInuse)/n/1e3, (m.Goroutines-p.Goroutines)/n)
		}
		if x.Relay != nil {
			fmt.Fprintf(w, "; relay since start: %d lost, %d recovered, %d late", x.Relay.Lost, x.Relay.Recovered, x.Relay.Late)
		}
		fmt.Fprintln(w)
		prev = x
	}
}

// print writes the report as tables.
func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "\nmachine: %d cores, %s, %s; stack %s\n", r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Mode)
	pace := "video unpaced (every packet sent at once)"
	if r.Stream.PeakKbps > 0 {
		pace = fmt.Sprintf("video paced at %d kbit/s after a 100 ms burst, as OBS's FTL SDK does", r.Stream.PeakKbps)
	}
	if r.Ingest == ingestWHIP {
		pace = "published over WHIP (whipclient), each frame's packets at once"
		if r.WHIPAnswersPLI != nil && *r.WHIPAnswersPLI {
			pace += ", a keyframe request answered with the next keyframe at once"
		} else {
			pace += ", keyframes only where the clip has them"
		}
	}
	fmt.Fprintf(w, "stream: %.2f Mbit/s, keyframe every %d ms, %s\n", r.Stream.BitrateBps/1e6, r.Stream.KeyframeIntervalMs, pace)
	if c := r.Clip; c.Name != "" {
		fmt.Fprintf(w, "clip: %s (%s), %dx%d at %d fps, %.0f s looped, H.264 %.2f Mbit/s + Opus %.0f kbit/s, a keyframe every %d ms; played to every stack measured\n",
			c.Name, c.File, c.Width, c.Height, c.FPS, c.Seconds, c.VideoBitrateBps/1e6, c.AudioBitrateBps/1e3, c.KeyframeIntervalMs)
	}
	if r.Processes != "" {
		fmt.Fprintf(w, "processes: %s\n", r.Processes)
	}
	runs := max(r.Runs, 1)
	for run := 1; run <= runs; run++ {
		rows := r.runRows(run)
		if len(rows) == 0 {
			continue
		}
		if runs > 1 {
			fmt.Fprintf(w, "\nrun %d of %d:\n", run, runs)
		}
		fmt.Fprintln(w)
		printRows(w, rows)
	}
	if runs > 1 {
		printMedians(w, r.Medians, runs)
	}
	printPerViewer(w, r.Medians, runs)
	printRatios(w, r.Medians, runs)
	if len(r.TTFF) > 0 {
		fmt.Fprintln(w, "\ntime to first frame, joins at random points of the GOP (WHEP POST → whole keyframe):")
		for _, x := range r.TTFF {
			fmt.Fprintf(w, "  %s, keyframe every %.0f s: p50 %.0f ms, p95 %.0f ms, max %.0f ms (%d joins, %d failed)\n",
				x.Stack, x.KeyintSeconds, x.Ms.P50, x.Ms.P95, x.Ms.Max, x.Joins, x.Failed)
		}
	}
	if c := r.Cold; c != nil && len(c.Runs) > 0 {
		fmt.Fprintf(w, "\ntime to first frame, publisher (%s) restarted in the middle of a GOP, one viewer joining as soon as the channel is live:\n", c.Ingest)
		fmt.Fprintf(w, "  WHEP POST → whole keyframe p50 %.0f ms, max %.0f ms; publisher's first frame → viewer's keyframe p50 %.0f ms, max %.0f ms (%d runs, %d failed)\n",
			c.Ms.P50, c.Ms.Max, c.FromStartMs.P50, c.FromStartMs.Max, len(c.Runs), c.Failed)
		for _, x := range c.Runs {
			fmt.Fprintf(w, "    from frame %2d (clip's next keyframe %4.0f ms later): keyframe sent at %4.0f ms, POST at %4.0f ms, first frame %4.0f ms after it, %4.0f ms after the start; %d keyframe requests%s\n",
				x.StartFrame, float64(x.WaitFrames)*1000/30, x.SentKeyMs, x.PostMs, x.Ms, x.FromStartMs, x.Requests, errNote(x.Error))
		}
	}
	if r.Limits != "" {
		fmt.Fprintf(w, "\nlimits: %s\n", r.Limits)
	}
}

// errNote is ", " and err, or nothing.
func errNote(err string) string {
	if err == "" {
		return ""
	}
	return ", " + err
}
