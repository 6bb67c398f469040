// Package stackrole runs "the stack" of a browser test or bench: a gateway
// with its embedded function and an FTL publisher streaming to it in real
// time, in a process of its own, in namespace A of a netns.Pair. The
// running test or bench binary is re-executed there to play a Role, and a
// browser in namespace B watches what the stack serves.
//
// Both sides of that are here. The parent starts the role and waits for
// the stack to be ready:
//
//	stack, err := role.Start(pair, dataDir, nil, logf)
//	defer stack.Stop()
//	base, err := stackrole.WaitReady(ctx, stack) // "http://<addr>:<port>"
//
// or, in a test, all of that with the namespaces in one call:
//
//	pair, stack, base := role.StartForTest(t, ctx, t.TempDir(), nil)
//
// and the re-executed binary, dispatching on the role first thing (see
// Role.Main), serves:
//
//	role.Serve(slog.LevelInfo, func(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
//		g, err := app.New(app.Config{HTTPAddr: net.JoinHostPort(p.Addr.String(), "0"), ...}, store, log)
//		return stackrole.Stack{Gateway: g, StreamKey: key, Live: live}.Run(ctx)
//	})
//
// The package knows the gateway only by the Gateway interface, so the
// caller builds it with the configuration it needs.
package stackrole

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/testmedia"
)

// readyPrefix starts the line the stack prints, followed by the page's
// base URL, once its channel is live.
const readyPrefix = "READY "

// readyTimeout bounds WaitReady.
const readyTimeout = time.Minute

// liveEvery is how often the stack checks whether its channel is live.
const liveEvery = 10 * time.Millisecond

// Role is a stack role: the name the binary is re-executed under (see
// netns.Role) and the environment variables that carry the stack's
// parameters to it.
type Role struct {
	// Name is the role, as netns.Role returns it in the re-executed binary.
	Name string
	// AddrVar names the variable that holds the veth address of namespace
	// A, where the stack serves HTTP and WebRTC.
	AddrVar string
	// DataDirVar names the variable that holds the gateway's data
	// directory.
	DataDirVar string
}

// Params are the parameters every stack gets, as the re-executed binary
// reads them.
type Params struct {
	// Addr is the veth address of namespace A.
	Addr netip.Addr
	// DataDir is the gateway's data directory.
	DataDir string
}

// Start re-executes the running binary as r in namespace A of pair, with
// A's veth address and dataDir in r's variables and env ("NAME=value")
// added to its environment. The process, named "stack", hands its output
// to logf (nil drops it) and runs until its Stop, which ends it with
// SIGTERM so that its shutdown is part of the caller's work; the kernel
// kills it if this process dies first.
func (r Role) Start(pair *netns.Pair, dataDir string, env []string, logf func(format string, args ...any)) (*netns.Process, error) {
	cmd := pair.SelfCommand(context.Background(), pair.A, r.Name)
	cmd.Env = append(cmd.Env, r.AddrVar+"="+pair.AddrA.String(), r.DataDirVar+"="+dataDir)
	cmd.Env = append(cmd.Env, env...)
	stack := &netns.Process{Cmd: cmd, Name: "stack", Logf: logf}
	if err := stack.Start(); err != nil {
		return nil, err
	}
	return stack, nil
}

// WaitReady waits, at most a minute, until the stack started by Start has
// a live channel, and returns the base URL of its pages,
// "http://<addr>:<port>".
func WaitReady(ctx context.Context, stack *netns.Process) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	line, err := stack.WaitLine(ctx, readyPrefix+"http://")
	if err != nil {
		return "", fmt.Errorf("the stack never became ready: %w", err)
	}
	_, base, _ := strings.Cut(line, readyPrefix)
	return strings.TrimSpace(base), nil
}

// TB is the part of testing.TB that StartForTest uses.
type TB interface {
	Helper()
	Cleanup(func())
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
}

// StartForTest is Start and WaitReady for the test t: it makes a pair of
// namespaces, starts r in A with t's log, and waits for the stack to be
// ready, failing t if any of that fails. When t ends it stops the stack
// and then removes the namespaces. It returns the pair, the stack and the
// base URL of its pages.
func (r Role) StartForTest(t TB, ctx context.Context, dataDir string, env []string) (*netns.Pair, *netns.Process, string) {
	t.Helper()
	pair, err := netns.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("namespaces: %v", err)
		}
	})
	stack, err := r.Start(pair, dataDir, env, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stack.Stop(); err != nil {
			t.Errorf("stack: %v", err)
		}
	})
	base, err := WaitReady(ctx, stack)
	if err != nil {
		t.Fatal(err)
	}
	return pair, stack, base
}

// Main is the TestMain of a test binary that starts r: it runs the tests,
// or, when the binary was re-executed as r, runs serve (which typically
// calls Serve), and exits with the code it returns. A binary re-executed
// for another role says so and exits with 2.
func (r Role) Main(m interface{ Run() int }, serve func() int) {
	os.Exit(r.dispatch(m, serve))
}

func (r Role) dispatch(m interface{ Run() int }, serve func() int) int {
	switch role := netns.Role(); role {
	case "":
		return m.Run()
	case r.Name:
		return serve()
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
		return 2
	}
}

// Serve plays r in the re-executed binary: it reads the Params from r's
// variables and calls run with them, a context that ends on SIGTERM or an
// interrupt, and a logger that writes text to stderr from level on. It
// logs the error that reading or run returns, and returns the process's
// exit code: 0 when run returned nil.
func (r Role) Serve(level slog.Level, run func(ctx context.Context, log *slog.Logger, p Params) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	p, err := r.params()
	if err == nil {
		err = run(ctx, log, p)
	}
	if err != nil {
		log.Error(err.Error())
		return 1
	}
	return 0
}

// params reads the Params from r's variables.
func (r Role) params() (Params, error) {
	addr, err := netip.ParseAddr(os.Getenv(r.AddrVar))
	if err != nil {
		return Params{}, fmt.Errorf("stackrole: $%s: %w", r.AddrVar, err)
	}
	dir := os.Getenv(r.DataDirVar)
	if dir == "" {
		return Params{}, fmt.Errorf("stackrole: $%s is empty", r.DataDirVar)
	}
	return Params{Addr: addr, DataDir: dir}, nil
}

// Gateway is what Stack uses of a gateway (lightspeed/gateway/app's).
type Gateway interface {
	// Run serves until ctx ends.
	Run(ctx context.Context) error
	// FTLAddr is the address of the FTL ingest's control connection.
	FTLAddr() net.Addr
	// HTTPAddr is the address of the pages and the API.
	HTTPAddr() net.Addr
}

// Stack is a gateway and a publisher streaming to it in real time, in a
// loop.
type Stack struct {
	// Gateway is the gateway, with its sockets bound, not yet running.
	Gateway Gateway
	// StreamKey is the key the publisher streams with.
	StreamKey string
	// NALs and Opus are the media the publisher streams; nil for both
	// streams the test media (lightspeed/shared/testkit/testmedia).
	NALs, Opus [][]byte
	// OnFrame, if set, is the publisher's ftlclient.Config.OnFrame.
	OnFrame func(rtpTimestamp uint32, firstPacketSent time.Time)
	// PeakKbps is the publisher's ftlclient.Config.PeakKbps: 0 sends each
	// frame's packets at once.
	PeakKbps int
	// Live reports whether the gateway has the stream key's channel live.
	Live func() bool
}

// Run serves until ctx ends or a part fails, and returns the first error:
// the gateway, the publisher, and each of more, which gets a context that
// ends then too. Once Live reports true it prints the line that WaitReady
// waits for, with the gateway's HTTP address, to stdout.
func (s Stack) Run(ctx context.Context, more ...func(ctx context.Context) error) error {
	nals, opus := s.NALs, s.Opus
	if nals == nil && opus == nil {
		var err error
		if nals, err = testmedia.NALUnits(); err != nil {
			return err
		}
		if opus, err = testmedia.OpusPackets(); err != nil {
			return err
		}
	}

	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return s.Gateway.Run(ctx) })
	eg.Go(func() error {
		conn, err := ftlclient.Dial(ctx, ftlclient.Config{
			Addr: s.Gateway.FTLAddr().String(), StreamKey: s.StreamKey, Rate: 1,
			OnFrame: s.OnFrame, PeakKbps: s.PeakKbps,
		})
		if err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		defer conn.Close()
		if err := conn.Stream(ctx, nals, opus, 0); ctx.Err() == nil {
			return fmt.Errorf("publisher: stream ended: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		announce(ctx, os.Stdout, s.Live, s.Gateway.HTTPAddr())
		return nil
	})
	for _, f := range more {
		eg.Go(func() error { return f(ctx) })
	}
	return eg.Wait()
}

// announce writes the ready line with base address addr to w once live
// reports true, checking every liveEvery, or returns when ctx ends first.
func announce(ctx context.Context, w io.Writer, live func() bool, addr net.Addr) {
	tick := time.NewTicker(liveEvery)
	defer tick.Stop()
	for {
		if live() {
			fmt.Fprintf(w, "%shttp://%s\n", readyPrefix, addr)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
