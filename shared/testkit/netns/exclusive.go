package netns

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// ExclusiveTB is the part of testing.TB that Exclusive uses.
type ExclusiveTB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Exclusive makes the tests that load the whole machine (Chromium, real
// benches) run one at a time, also across the packages `go test ./...`
// runs in parallel: it waits for a lock on a file in the temporary
// directory and holds it until the test ends. Run side by side, two such
// tests starve each other's real-time media of CPU, and what they check
// (a viewer that never freezes, a stream without loss) stops being about
// the code.
//
// A test that holds the lock already (a helper took it before) goes on:
// flock would otherwise wait for the test itself.
func Exclusive(t ExclusiveTB) {
	t.Helper()
	heldMu.Lock()
	again := held[t]
	heldMu.Unlock()
	if again {
		return
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "lightspeed-exclusive-tests.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("exclusive test lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("exclusive test lock: %v", err)
	}
	heldMu.Lock()
	held[t] = true
	heldMu.Unlock()
	t.Cleanup(func() {
		heldMu.Lock()
		delete(held, t)
		heldMu.Unlock()
		f.Close() // closing releases the lock
	})
}

// held are the tests holding the lock, in this process.
var (
	heldMu sync.Mutex
	held   = map[ExclusiveTB]bool{}
)
