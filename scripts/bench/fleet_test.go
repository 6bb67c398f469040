//go:build linux

package main

import (
	"fmt"
	"testing"
	"time"
)

func TestFleetFlags(t *testing.T) {
	checkFlags(t, []flagCase{
		{"fleet defaults to 5 runs, 1 to 32 functions, 10 s windows", []string{"-fleet"}, "", func(c config) bool {
			return c.fleet && c.fleetRuns == 5 && fmt.Sprint(c.fleetFunctions) == "[1 4 16 32]" && c.duration == 10*time.Second
		}},
		{"fleet takes its own numbers, -duration and -json", []string{"-fleet", "-fleet-runs", "2", "-fleet-functions", "1, 8", "-duration", "5s", "-json", "f"}, "", func(c config) bool {
			return c.fleetRuns == 2 && fmt.Sprint(c.fleetFunctions) == "[1 8]" && c.duration == 5*time.Second && c.jsonFile == "f"
		}},
		{"fleet takes the pacing", []string{"-fleet", "-peak-kbps", "0"}, "", func(c config) bool { return c.peakKbps == 0 }},
		{"functions must increase", []string{"-fleet", "-fleet-functions", "4,1"}, "must increase", nil},
		{"functions must be positive", []string{"-fleet", "-fleet-functions", "0"}, "not a positive number", nil},
		{"one region each", []string{"-fleet", "-fleet-functions", "100"}, "at most", nil},
		{"runs must be positive", []string{"-fleet", "-fleet-runs", "0"}, "-fleet-runs must be positive", nil},
		{"fleet runs need -fleet", []string{"-fleet-runs", "2"}, "need -fleet", nil},
		{"fleet with the browser", []string{"-fleet", "-browser"}, "-browser", nil},
		{"fleet with fan-out viewers", []string{"-fleet", "-viewers", "10"}, "-viewers", nil},
		{"fleet with attach", []string{"-fleet", "-attach", "h:1", "-key", "77-x"}, "-attach", nil},
	})
}

func TestSpreadIsTheMedianAndMaxOfTheMeasuredRuns(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{0, 0}, Spread{}},
		{[]float64{700}, Spread{N: 1, Median: 700, Max: 700}},
		{[]float64{900, 300, 500}, Spread{N: 3, Median: 500, Max: 900}},
		{[]float64{400, 100, 200, 300}, Spread{N: 4, Median: 250, Max: 400}},
		{[]float64{1200, 0, 800, 1000, 0}, Spread{N: 3, Median: 1000, Max: 1200}}, // zeros: not measured
	} {
		if got := spread(tt.in); got != tt.want {
			t.Errorf("spread(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestServedRegion(t *testing.T) {
	for in, want := range map[string]string{
		"sin (local-sin-0a1b2c3d)": "sin",
		"ams (embedded)":           "ams",
		"ams":                      "ams",
		"":                         "",
	} {
		if got := servedRegion(in); got != want {
			t.Errorf("servedRegion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStartMsIsTheMeanOfTheNewObservations(t *testing.T) {
	a := histogram{sum: 2.5, count: 3}
	if got := startMs(a, histogram{sum: 3.25, count: 4}); got != 750 {
		t.Errorf("one start: %v ms, want 750", got)
	}
	if got := startMs(a, histogram{sum: 4.5, count: 5}); got != 1000 {
		t.Errorf("two starts: %v ms, want their mean, 1000", got)
	}
	if got := startMs(a, a); got != 0 {
		t.Errorf("no start: %v ms, want 0", got)
	}
}

func TestRelayRowFigures(t *testing.T) {
	at := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	r0 := relayReading{at: at(10), machine: machineSample{Busy: 1000, Total: 4000}, sent: 1000, lost: 5}
	r1 := relayReading{
		at:        at(20),
		gateway:   procSample{CPU: at(0.5)},
		functions: at(2),
		bench:     procSample{CPU: at(3)},
		machine:   machineSample{Busy: 1700, Total: 6000},
		sent:      51000, dropped: 4, lost: 8, recovered: 2,
	}
	row := RelayRow{IdleCores: 0.01}
	relayRowFigures(&row, r0, r1, 2)
	want := RelayRow{
		IdleCores: 0.01, WindowSeconds: 10, GatewayCores: 0.05, FunctionCores: 0.2, BenchCores: 0.3,
		MachineBusyCores: 0.7, OtherCores: 0.15,
		Datagrams: 50000, DatagramsPerSecond: 5000, MicrosPerDatagram: 10, MarginalMicros: 8,
		Dropped: 4, Lost: 3, Recovered: 2,
	}
	if row != want {
		t.Errorf("row\n%+v, want\n%+v", row, want)
	}
	busy := r1
	busy.machine = machineSample{Busy: 1000 + 1900, Total: 6000}
	if relayRowFigures(&row, r0, busy, 2); !row.Saturated || row.Note == "" {
		t.Errorf("1.9 of 2 cores busy: %+v, want saturated", row)
	}
}
