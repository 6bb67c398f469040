//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
)

// -runs N measures the steps N times, each with a fresh stack (and
// baseline), and reports each figure's median and spread over the runs.

// Range is one figure over the runs that measured it: its median, least
// and greatest value (fleet.go's Spread leaves zeros out; this keeps them,
// a per-viewer cost may be 0 or negative).
type Range struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"` // runs that had the figure
}

// Summary is one stack at one number of viewers over the runs.
type Summary struct {
	Stack     string `json:"stack"`
	Viewers   int    `json:"viewers"`
	Runs      int    `json:"runs"`
	Saturated int    `json:"saturated_runs"` // windows marked saturated, not trusted
	// Figures holds every number of the rows under its JSON name, nested
	// ones joined by a dot ("per_viewer.fn_us_per_viewer_second",
	// "latency_ms.p99").
	Figures map[string]Range `json:"figures"`
}

// median is the middle of xs, or the mean of the two middle ones when
// their number is even; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// rangeOf summarizes xs.
func rangeOf(xs []float64) Range {
	if len(xs) == 0 {
		return Range{}
	}
	return Range{Median: median(xs), Min: slices.Min(xs), Max: slices.Max(xs), N: len(xs)}
}

// rowFigures are the numbers of a row by their JSON names, nested ones
// joined by a dot; the row's identity (run, viewers asked for) is left
// out.
func rowFigures(r Row) map[string]float64 {
	b, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	out := map[string]float64{}
	flatten("", m, out)
	delete(out, "run")
	delete(out, "viewers")
	return out
}

// flatten adds the numbers of v under prefix to out.
func flatten(prefix string, v any, out map[string]float64) {
	switch x := v.(type) {
	case float64:
		out[prefix] = x
	case map[string]any:
		for k, e := range x {
			if prefix != "" {
				k = prefix + "." + k
			}
			flatten(k, e, out)
		}
	}
}

// summarize groups the rows by stack and viewers, in the order they came,
// and takes each figure's median over the runs.
func summarize(rows []Row) []Summary {
	type key struct {
		stack   string
		viewers int
	}
	var order []key
	values := map[key]map[string][]float64{}
	sums := map[key]*Summary{}
	for _, r := range rows {
		k := key{r.Stack, r.Viewers}
		s := sums[k]
		if s == nil {
			s = &Summary{Stack: r.Stack, Viewers: r.Viewers}
			sums[k], values[k] = s, map[string][]float64{}
			order = append(order, k)
		}
		s.Runs++
		if r.Saturated {
			s.Saturated++
		}
		for name, x := range rowFigures(r) {
			values[k][name] = append(values[k][name], x)
		}
	}
	out := make([]Summary, 0, len(order))
	for _, k := range order {
		s := sums[k]
		s.Figures = make(map[string]Range, len(values[k]))
		for name, xs := range values[k] {
			s.Figures[name] = rangeOf(xs)
		}
		out = append(out, *s)
	}
	return out
}

// cell formats one figure of s with digits decimals: the median, and the
// range when the runs differ; "–" when no run had it.
func (s Summary) cell(name string, digits int) string {
	f, ok := s.Figures[name]
	if !ok || f.N == 0 {
		return "–"
	}
	if f.Min == f.Max {
		return fmt.Sprintf("%.*f", digits, f.Median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", digits, f.Median, digits, f.Min, digits, f.Max)
}

// kbps is cell for a figure in bytes per second, as kbit/s.
func (s Summary) kbps(name string) string {
	f, ok := s.Figures[name]
	if !ok || f.N == 0 {
		return "–"
	}
	k := Summary{Figures: map[string]Range{name: {Median: f.Median * 8 / 1000, Min: f.Min * 8 / 1000, Max: f.Max * 8 / 1000, N: f.N}}}
	return k.cell(name, 0)
}

// printPerViewer writes the per-viewer table: one line per stack and
// viewers, medians over the runs with their range.
func printPerViewer(w io.Writer, sums []Summary, runs int) {
	if len(sums) == 0 {
		return
	}
	title := "per viewer, per second of stream"
	if runs > 1 {
		title += fmt.Sprintf(" (medians of %d runs, min–max)", runs)
	}
	fmt.Fprintf(w, "\n%s; CPU marginal over no viewer, fn = the fan-out process, gw = the gateway:\n", title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stack\tviewers\tfn µs CPU\tgw µs CPU\tfn+gw µs CPU\tviewers/core fn\tfn+gw\theap KB\tRSS KB\twire kbit/s\tmedia kbit/s\toverhead %\tpkt/s\tneeded pkt/s\tpkt/needed\t")
	for _, s := range sums {
		const p = "per_viewer."
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			s.Stack, s.Viewers,
			s.cell(p+"fn_us_per_viewer_second", 0), s.cell(p+"gateway_us_per_viewer_second", 0), s.cell(p+"total_us_per_viewer_second", 0),
			s.cell(p+"viewers_per_core", 0), s.cell(p+"total_viewers_per_core", 0),
			s.cell(p+"heap_kb_per_viewer", 0), s.cell(p+"rss_kb_per_viewer", 0),
			s.kbps(p+"wire_bytes_per_second"), s.kbps(p+"media_bytes_per_second"), s.cell(p+"overhead_percent", 1),
			s.cell(p+"pkts_per_second", 0), s.cell(p+"needed_pkts_per_second", 0), s.cell(p+"pkts_per_needed", 2))
	}
	tw.Flush()
}

// printMedians writes the per-packet table's medians over the runs.
func printMedians(w io.Writer, sums []Summary, runs int) {
	fmt.Fprintf(w, "\nmedians of %d runs (min–max):\n", runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stack\tviewers\tpkt/s/viewer\tµs/pkt\tmarginal µs/pkt\tlatency p50\tp95\tp99 ms\tloss %\tbusy cores\tsaturated runs\t")
	for _, s := range sums {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d of %d\t\n",
			s.Stack, s.Viewers, s.cell("packets_per_viewer_second", 0), s.cell("us_per_packet", 2), s.cell("marginal_us_per_packet", 2),
			s.cell("latency_ms.p50", 2), s.cell("latency_ms.p95", 2), s.cell("latency_ms.p99", 2),
			s.cell("loss_percent", 2), s.cell("machine_busy_cores", 2), s.Saturated, s.Runs)
	}
	tw.Flush()
}

// printRatios compares the stacks' medians at each number of viewers both
// measured.
func printRatios(w io.Writer, sums []Summary, runs int) {
	var lines []string
	for _, a := range sums {
		if a.Stack != "lightspeed" {
			continue
		}
		for _, b := range sums {
			if b.Stack != "baseline" || b.Viewers != a.Viewers {
				continue
			}
			ap, bp := a.Figures["marginal_us_per_packet"].Median, b.Figures["marginal_us_per_packet"].Median
			av, bv := a.Figures["per_viewer.fn_us_per_viewer_second"].Median, b.Figures["per_viewer.fn_us_per_viewer_second"].Median
			if bp <= 0 || bv <= 0 {
				continue
			}
			trust := ""
			if a.Saturated+b.Saturated > 0 {
				trust = " (a window saturated, not trusted)"
			}
			lines = append(lines, fmt.Sprintf("  %4d viewers: %.0f vs %.0f µs per viewer-second = %.2f× the baseline's (%.1f× cheaper); per packet %.2f vs %.2f µs = %.2f×%s",
				a.Viewers, av, bv, av/bv, bv/av, ap, bp, ap/bp, trust))
		}
	}
	if len(lines) == 0 {
		return
	}
	what := "marginal CPU of the fan-out process"
	if runs > 1 {
		what += fmt.Sprintf(", medians of %d runs", runs)
	}
	fmt.Fprintf(w, "\nlightspeed vs baseline (%s):\n", what)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
