// Package browser drives a headless Chromium, optionally inside a network
// namespace, for tests that watch a page play video over WebRTC.
//
// Chromium runs in the namespace through `ip netns exec`, and the test
// talks to it over the DevTools pipe (--remote-debugging-pipe, file
// descriptors 3 and 4), not over a TCP port. The pipe crosses namespace
// boundaries as any inherited file does, so the test process stays in the
// root namespace, needs no route into the namespace and no forwarder, and
// chromedp's ExecAllocator works unchanged.
//
// A test of a page that the stack serves from namespace A, watched from
// namespace B, reads like this (error checks left out). Cleanups run last
// registered first, so the browser closes before the server stops, and the
// server stops before its namespace goes:
//
//	browser.Require(t)
//	pair, err := netns.New(ctx)
//	t.Cleanup(func() { pair.Close() })
//	cmd := pair.SelfCommand(ctx, pair.A, "stack") // TestMain dispatches on netns.Role()
//	cmd.Env = append(cmd.Env, "LS_PUBLIC_IP="+pair.AddrA.String())
//	stack := &netns.Process{Cmd: cmd, Name: "stack", Logf: t.Logf}
//	err = stack.Start()
//	t.Cleanup(func() { stack.Stop() })
//	_, err = stack.WaitLine(ctx, "listening")
//	b, err := browser.Start(ctx, browser.Options{Netns: pair.B})
//	t.Cleanup(func() { b.Close() })
//	tab, err := b.Open(ctx, "http://"+pair.AddrA.String()+":8080/watch/77")
//	err = tab.WaitFor(ctx, "window.lightspeed.framesDecoded() > 30")
package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"lightspeed/shared/testkit/netns"
)

// pollInterval is how often WaitFor evaluates its expression.
const pollInterval = 100 * time.Millisecond

// closeTimeout bounds a graceful close of the browser.
const closeTimeout = 10 * time.Second

// Options configures Start.
type Options struct {
	// Netns is the network namespace to run Chromium in; empty means the
	// namespace of this process.
	Netns string
	// UserDataDir is the profile directory. Empty means a fresh temporary
	// directory, removed by Close.
	UserDataDir string
	// Extra holds more command-line flags, as "--name=value" or "--name".
	// A flag that Start sets too is replaced, except --disable-features
	// and --enable-features, whose lists are joined.
	Extra []string
	// Output receives Chromium's stdout and stderr; nil discards them.
	Output io.Writer
}

// defaultFlags are the flags every browser gets. Candidates must be IP
// addresses, not mDNS names, for a test to check them.
var defaultFlags = []string{
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--no-default-browser-check",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--disable-dev-shm-usage",
	"--disable-background-timer-throttling",
	"--disable-renderer-backgrounding",
	"--disable-backgrounding-occluded-windows",
	"--hide-scrollbars",
	"--mute-audio",
	"--autoplay-policy=no-user-gesture-required",
	"--disable-features=WebRtcHideLocalIpsWithMdns",
}

// Chromium returns the path of the Chromium executable: chromium or
// chromium-browser in PATH, else /usr/bin/chromium.
func Chromium() (path string, err error) {
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", errors.New("browser: chromium not found in PATH or /usr/bin")
}

// TB is the part of testing.TB that Require uses.
type TB interface {
	netns.TB
	netns.ExclusiveTB
}

// Require skips the test, saying why, when namespaces cannot be made here
// or Chromium is missing. When the environment variable CI is "true" it
// fails the test instead. A test that runs holds the machine: Chromium
// tests run one at a time (netns.Exclusive).
func Require(t TB) {
	t.Helper()
	netns.Require(t)
	if _, err := Chromium(); err != nil {
		netns.Unavailable(t, err)
	}
	netns.Exclusive(t)
}

// Browser is a running headless Chromium. Its methods are safe to call
// from several goroutines; each Tab belongs to one goroutine at a time.
type Browser struct {
	ctx         context.Context // the first tab; running actions here starts the browser
	cancel      context.CancelFunc
	cancelAlloc context.CancelFunc
	closeOnce   sync.Once
	closeErr    error
}

// Start launches Chromium with opts and waits until it answers. ctx bounds
// the start only; the browser runs until Close.
func Start(ctx context.Context, opts Options) (*Browser, error) {
	path, err := Chromium()
	if err != nil {
		return nil, err
	}
	flags, err := mergeFlags(defaultFlags, opts.Extra)
	if err != nil {
		return nil, err
	}
	allocOpts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(path)}
	for _, f := range flags {
		allocOpts = append(allocOpts, chromedp.Flag(f.name, f.value))
	}
	if opts.UserDataDir != "" {
		allocOpts = append(allocOpts, chromedp.UserDataDir(opts.UserDataDir))
	}
	if opts.Output != nil {
		allocOpts = append(allocOpts, chromedp.CombinedOutput(opts.Output))
	}
	allocOpts = append(allocOpts, chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
		if opts.Netns != "" {
			inNetns(cmd, opts.Netns)
		}
		// The kernel kills the browser if the test process dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}))

	long := context.WithoutCancel(ctx)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(long, allocOpts...)
	bctx, cancel := chromedp.NewContext(allocCtx)
	b := &Browser{ctx: bctx, cancel: cancel, cancelAlloc: cancelAlloc}

	// The first action starts the browser and binds it to bctx, so it
	// must run on bctx itself; ctx ending meanwhile stops everything.
	stop := context.AfterFunc(ctx, cancel)
	err = chromedp.Do(bctx)
	if !stop() || err != nil {
		b.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("browser: start %s in namespace %q: %w", path, opts.Netns, err)
	}
	return b, nil
}

// inNetns rewrites cmd, made by chromedp, to run through
// `ip netns exec ns`. ip(8) execs Chromium in place and keeps the
// DevTools pipe on file descriptors 3 and 4.
func inNetns(cmd *exec.Cmd, ns string) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		cmd.Err = fmt.Errorf("browser: ip (iproute2) not found: %w", err)
		return
	}
	cmd.Args = append([]string{"ip", "netns", "exec", ns, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = ip
}

// Close closes every tab and the browser, and removes a temporary profile.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(b.ctx, closeTimeout)
		defer cancel()
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			b.closeErr = fmt.Errorf("browser: close: %w", err)
		}
		b.cancel()
		b.cancelAlloc()
	})
	return b.closeErr
}

// flag is one command-line flag; value is a string or true.
type flag struct {
	name  string
	value any
}

// mergeFlags parses base and extra and lets extra override base, joining
// the feature lists.
func mergeFlags(base, extra []string) ([]flag, error) {
	var out []flag
	for _, s := range append(append([]string(nil), base...), extra...) {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(s, "--"), "=")
		if !strings.HasPrefix(s, "--") || name == "" {
			return nil, fmt.Errorf("browser: flag %q: want --name or --name=value", s)
		}
		f := flag{name: name, value: true}
		if hasValue {
			f.value = value
		}
		i := indexFlag(out, name)
		switch {
		case i < 0:
			out = append(out, f)
		case hasValue && (name == "disable-features" || name == "enable-features"):
			if old, ok := out[i].value.(string); ok && old != "" {
				f.value = old + "," + value
			}
			out[i] = f
		default:
			out[i] = f
		}
	}
	return out, nil
}

func indexFlag(flags []flag, name string) int {
	for i, f := range flags {
		if f.name == name {
			return i
		}
	}
	return -1
}

// Tab is one page of a Browser.
type Tab struct {
	ctx    context.Context
	cancel context.CancelFunc
	url    string

	consoleDone chan struct{}
	mu          sync.Mutex
	console     []chromedp.ConsoleMessage
}

// Open opens a new tab and starts loading url in it. It returns once the
// browser has committed to the navigation (the server answered), without
// waiting for the load event: a page whose <video> never gets a frame
// never fires it. ctx bounds the opening only; the tab stays open until
// Tab.Close or Browser.Close. Console messages are recorded from before
// the navigation.
func (b *Browser) Open(ctx context.Context, url string) (*Tab, error) {
	tctx, cancel := chromedp.NewContext(b.ctx)
	t := &Tab{ctx: tctx, cancel: cancel, url: url, consoleDone: make(chan struct{})}

	// The first action creates the tab and binds it to tctx.
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	if err := chromedp.Do(tctx); err != nil {
		cancel()
		close(t.consoleDone)
		return nil, t.fail(ctx, "open", err)
	}
	messages := chromedp.Console(tctx)
	go func() {
		defer close(t.consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			t.mu.Lock()
			t.console = append(t.console, m)
			t.mu.Unlock()
		}
	}()
	if err := t.Navigate(ctx, url); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Navigate loads url in the tab without waiting for the load event, as
// Open does.
func (t *Tab) Navigate(ctx context.Context, url string) error {
	t.url = url
	err := t.do(ctx, func(ctx context.Context) error {
		res, err := chromedp.Call(ctx, page.Navigate, page.NavigateParams{URL: url})
		if err == nil && res.ErrorText != "" {
			err = &chromedp.LoadError{ErrorText: res.ErrorText}
		}
		return err
	})
	if err != nil {
		return t.fail(ctx, "navigate", err)
	}
	return nil
}

// Eval evaluates the JavaScript expression in the page, awaiting it if it
// is a promise, and decodes its JSON value into out; out may be nil to
// ignore the value. An exception is an error.
func (t *Tab) Eval(ctx context.Context, expr string, out any) error {
	if err := t.eval(ctx, expr, out); err != nil {
		return t.fail(ctx, "eval "+expr, err)
	}
	return nil
}

func (t *Tab) eval(ctx context.Context, expr string, out any) error {
	return t.do(ctx, func(ctx context.Context) error {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
		if err != nil || out == nil {
			return err
		}
		if len(raw) == 0 {
			return errors.New("result is undefined")
		}
		return json.Unmarshal(raw, out)
	})
}

// WaitFor evaluates the JavaScript expression every 100 ms until its value
// is truthy, and fails when ctx ends first, with the last value or error.
// Exceptions count as not yet, so the expression may run before the page
// has defined what it reads. Give ctx a deadline.
func (t *Tab) WaitFor(ctx context.Context, expr string) error {
	check := "(async () => !!(await (" + expr + ")))()"
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		var ok bool
		err := t.eval(ctx, check, &ok)
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			last = errors.New("value is falsy")
		case ctx.Err() == nil:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("browser: %s: waiting for %s: %w (last: %v)", t.url, expr, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Screenshot returns a PNG of the tab's viewport.
func (t *Tab) Screenshot(ctx context.Context) ([]byte, error) {
	var png []byte
	err := t.do(ctx, func(ctx context.Context) error {
		var err error
		png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
		return err
	})
	if err != nil {
		return nil, t.fail(ctx, "screenshot", err)
	}
	return png, nil
}

// Console returns the console messages, uncaught exceptions and browser
// log entries of the tab so far, as "type: text".
func (t *Tab) Console() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.console))
	for _, m := range t.console {
		out = append(out, m.String())
	}
	return out
}

// ConsoleErrors returns the messages of Console that are errors or
// uncaught exceptions, with their source location.
func (t *Tab) ConsoleErrors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, m := range t.console {
		if m.Type == chromedp.ConsoleError || m.IsException() {
			s := m.String()
			if m.URL != "" {
				s += fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
			}
			out = append(out, s)
		}
	}
	return out
}

// Close closes the tab. Calling it again returns the same result.
func (t *Tab) Close() error {
	err := chromedp.Cancel(t.ctx)
	t.cancel()
	<-t.consoleDone
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("browser: %s: close: %w", t.url, err)
	}
	return nil
}

// do runs f on a context of the tab that also ends when ctx ends. The
// tab's own context must not end with ctx, or the tab would close.
func (t *Tab) do(ctx context.Context, f func(context.Context) error) error {
	rctx, cancel := context.WithCancel(t.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	return f(rctx)
}

// fail wraps err with the tab and the step, preferring ctx's own error.
func (t *Tab) fail(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return fmt.Errorf("browser: %s: %s: %w", t.url, what, err)
}
