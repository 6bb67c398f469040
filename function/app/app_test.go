package app

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// unansweredConfig is a function's configuration with a gateway address
// nobody answers at: the function keeps trying to connect.
func unansweredConfig(t *testing.T) Config {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return Config{
		GatewayAddr:      addr,
		RelaySecret:      "secret",
		RelayFingerprint: strings.Repeat("ab", 32),
		WebRTCUDPAddr:    "127.0.0.1:0",
		Capacity:         10,
	}
}

func TestFunctionExitsByItselfWhenIdle(t *testing.T) {
	// A gateway address nobody answers at: the function keeps trying to
	// connect, has no viewers, and leaves after IdleExit.
	cfg := unansweredConfig(t)
	cfg.IdleExit = 100 * time.Millisecond
	f, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the idle function did not exit by itself")
	}
}

func TestFunctionNeedsRelaySettings(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), WebRTCUDPAddr: "127.0.0.1:0"}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil {
		t.Fatal("a function without a secret and without local relay settings started")
	}
}

func TestFunctionServesItsMetrics(t *testing.T) {
	cfg := unansweredConfig(t)
	cfg.MetricsAddr = "127.0.0.1:0"
	f, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	resp, err := http.Get("http://" + f.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nlightspeed_function_viewers 0\n", "\nlightspeed_function_sendmmsg_calls_total 0\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", strings.TrimSpace(want), body)
		}
	}
}

func TestFunctionMetricsNeedAGatherer(t *testing.T) {
	_, err := New(Config{
		RelaySecret:      "secret",
		RelayFingerprint: strings.Repeat("ab", 32),
		WebRTCUDPAddr:    "127.0.0.1:0",
		MetricsAddr:      "127.0.0.1:0",
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
		t.Fatalf("New with metrics and no registry: %v", err)
	}
}

func TestTuneGCKeepsAnOperatorsGOGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	TuneGC()
	if got := debug.SetGCPercent(100); got != GCPercent {
		t.Fatalf("GC percent %d without GOGC, want %d", got, GCPercent)
	}
	t.Setenv("GOGC", "200")
	TuneGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GC percent %d with GOGC set, want it left alone (100)", got)
	}
}
