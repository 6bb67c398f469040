package app

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFunctionExitsByItselfWhenIdle(t *testing.T) {
	// A gateway address nobody answers at: the function keeps trying to
	// connect, has no viewers, and leaves after IdleExit.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	f, err := New(Config{
		GatewayAddr:      addr,
		RelaySecret:      "secret",
		RelayFingerprint: strings.Repeat("ab", 32),
		WebRTCUDPAddr:    "127.0.0.1:0",
		Capacity:         10,
		IdleExit:         100 * time.Millisecond,
		Loopback:         true,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
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
