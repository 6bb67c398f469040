package main

import "testing"

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
