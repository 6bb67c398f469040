package flyprovider

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"lightspeed/gateway/fleet"
)

// maxFuzzInput bounds the inputs: the decoders' cost is linear, and
// longer inputs only slow the fuzzer down.
const maxFuzzInput = 64 << 10

// FuzzDecodeMachines feeds the decoders of the API's answers (a machine
// list, a machine, an error) with arbitrary bytes; its seed corpus
// (testdata/fuzz/FuzzDecodeMachines) holds answers as the reference shows
// them and broken ones.
func FuzzDecodeMachines(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		if ms, err := decodeMachines(data); err == nil {
			for _, m := range ms {
				checkDecoded(t, m)
			}
		} else if ms != nil {
			t.Fatalf("decodeMachines failed (%v) and returned machines", err)
		}
		if m, err := decodeMachine(data); err == nil {
			checkDecoded(t, m)
		}
		msg := errorMessage(bytes.NewReader(data))
		if len(msg) > maxMessage+len("…") || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r\t") {
			t.Fatalf("errorMessage = %q: want one valid line of at most %d bytes", msg, maxMessage)
		}
	})
}

// checkDecoded checks what the provider makes of a decoded machine.
func checkDecoded(t *testing.T, m machine) {
	t.Helper()
	if m.ID == "" {
		t.Fatal("decoded a machine without id")
	}
	fm := m.fleetMachine()
	if fm.ID != m.ID || fm.Region != m.Region || fm.Image != m.Config.Image {
		t.Fatalf("fleetMachine(%+v) = %+v", m, fm)
	}
	if fm.Port < 0 || fm.Port > 65535 {
		t.Fatalf("port %d out of range", fm.Port)
	}
	switch fm.State {
	case fleet.Starting, fleet.Started, fleet.Stopping, fleet.Stopped, fleet.Destroyed, fleet.Failed:
	default:
		t.Fatalf("state %q (Fly's %q) is no fleet state", fm.State, m.State)
	}
	_ = m.ours(testGateway)
}

// FuzzRetryAfter checks that any Retry-After header gives no wait, or one
// between zero and maxRetryAfter.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "3", "-1", "1e3", "Tue, 04 Mar 2025 05:06:17 GMT", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	f.Fuzz(func(t *testing.T, h string) {
		if d := retryAfter(h, now); d != -1 && (d < 0 || d > maxRetryAfter) {
			t.Fatalf("retryAfter(%q) = %v", h, d)
		}
	})
}
