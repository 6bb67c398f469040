package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestAnAddressWithoutAPortGetsTheFTLPort(t *testing.T) {
	tests := []struct{ in, want string }{
		{"127.0.0.1", "127.0.0.1:8084"},
		{"127.0.0.1:9000", "127.0.0.1:9000"},
		{"ingest.example", "ingest.example:8084"},
		{"::1", "[::1]:8084"},
		{"[::1]", "[::1]:8084"},
		{"[::1]:9000", "[::1]:9000"},
	}
	for _, tt := range tests {
		if got := withDefaultPort(tt.in, "8084"); got != tt.want {
			t.Errorf("withDefaultPort(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFlagsWithoutMeaningAreRefused(t *testing.T) {
	if err := checkFlags(0, 1, time.Second); err != nil {
		t.Errorf("the defaults: %v", err)
	}
	if err := checkFlags(3, 0.5, 0); err != nil {
		t.Errorf("3 loops at half speed, no speed test: %v", err)
	}
	for _, tc := range []struct {
		loops     int
		rate      float64
		speedTest time.Duration
		want      string
	}{
		{-1, 1, time.Second, "-loops -1"},
		{0, 0, time.Second, "-rate 0"},
		{0, -2, time.Second, "-rate -2"},
		{0, math.NaN(), time.Second, "-rate NaN"},
		{0, math.Inf(1), time.Second, "-rate +Inf"},
		{0, 1, -time.Second, "-speedtest -1s"},
	} {
		err := checkFlags(tc.loops, tc.rate, tc.speedTest)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkFlags(%d, %v, %v) = %v, want an error about %q", tc.loops, tc.rate, tc.speedTest, err, tc.want)
		}
	}
}
