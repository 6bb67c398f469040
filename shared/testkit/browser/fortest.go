package browser

import (
	"bytes"
	"context"
	"sync"
)

// StartTB is the part of testing.TB that StartForTest uses.
type StartTB interface {
	Helper()
	Cleanup(func())
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
}

// StartForTest starts a browser with opts for the test t, which it fails
// if Chromium does not start, and closes the browser when t ends. It
// collects Chromium's output in place of opts.Output and logs it then if
// t has failed.
func StartForTest(t StartTB, ctx context.Context, opts Options) *Browser {
	t.Helper()
	out := new(syncBuffer)
	opts.Output = out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", out)
		}
	})
	b, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// syncBuffer collects the browser's output from its goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
