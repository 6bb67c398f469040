// Package netns makes pairs of Linux network namespaces joined by a veth
// pair, for tests and tools that need two hosts on one machine.
//
// A browser gathers no loopback ICE candidates, so a test that puts the
// stack in namespace A and a browser in namespace B gets a real network
// path between them: B's veth address is a host candidate, and every byte
// crosses the veth. Nothing is routed to or from the root namespace.
//
// The package shells out to ip(8) and tc(8) from iproute2 and needs root.
// Every failure names the command and its output.
package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// maxPairs bounds the search for free names; it also keeps veth names
// within the 15 bytes Linux allows.
const maxPairs = 1000

// Pair is two network namespaces, A and B, joined by a veth pair with one
// end in each. Each side has lo up, its veth address in a /24 and a default
// route via the other side.
type Pair struct {
	// A and B are the namespace names, as `ip netns list` shows them.
	A, B string
	// AddrA and AddrB are the veth addresses in A and in B.
	AddrA, AddrB netip.Addr
	// VethA and VethB are the interface names of the veth ends in A and B.
	VethA, VethB string

	ip     string // path of ip(8)
	closed bool
}

// Available reports whether namespaces can be made here: it returns nil
// when the process runs as root, ip(8) is installed and `ip netns add`
// works, and otherwise an error saying why not.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("netns: not running as root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("netns: ip (iproute2) not found: %w", err)
	}
	ctx := context.Background()
	name, _, err := addFree(ctx, ip, "p")
	if err != nil {
		return err
	}
	return run(ctx, ip, "netns", "del", name)
}

// New creates a Pair: namespaces A and B, a veth pair between them, an
// address on each end, the links and lo up, and a default route via the
// other side in each. Names are unique per process and per call, so tests
// in parallel do not collide. On error New removes whatever it made.
func New(ctx context.Context) (*Pair, error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netns: ip (iproute2) not found: %w", err)
	}
	a, i, err := addFree(ctx, ip, "a")
	if err != nil {
		return nil, err
	}
	p := &Pair{A: a, ip: ip}
	if err := p.setUp(ctx, i); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

// setUp makes B and the veth pair for a Pair whose A is made, with index i
// of its name.
func (p *Pair) setUp(ctx context.Context, i int) error {
	pid := os.Getpid()
	b := fmt.Sprintf("ls%d-%db", pid, i)
	if err := run(ctx, p.ip, "netns", "add", b); err != nil {
		return err
	}
	p.B = b
	p.VethA = fmt.Sprintf("lsv%d-%da", pid, i)
	p.VethB = fmt.Sprintf("lsv%d-%db", pid, i)
	// Namespaces are isolated from one another, so a subnet shared by two
	// pairs clashes with nothing; deriving it from the pid still makes a
	// packet capture easy to attribute.
	third := byte((pid + i) % 256)
	p.AddrA = netip.AddrFrom4([4]byte{10, 99, third, 1})
	p.AddrB = netip.AddrFrom4([4]byte{10, 99, third, 2})

	// Both ends are created inside their namespaces, so nothing ever
	// appears in the root namespace.
	steps := [][]string{
		{"link", "add", p.VethA, "netns", p.A, "type", "veth", "peer", "name", p.VethB, "netns", p.B},
		{"-n", p.A, "addr", "add", p.AddrA.String() + "/24", "dev", p.VethA},
		{"-n", p.B, "addr", "add", p.AddrB.String() + "/24", "dev", p.VethB},
		{"-n", p.A, "link", "set", "lo", "up"},
		{"-n", p.B, "link", "set", "lo", "up"},
		// No IPv6 link-local address: it would stay tentative for a
		// second after the link is up, and its coming valid is a network
		// change that makes Chromium fail the requests it has in flight
		// (ERR_NETWORK_CHANGED).
		{"-n", p.A, "link", "set", p.VethA, "addrgenmode", "none"},
		{"-n", p.B, "link", "set", p.VethB, "addrgenmode", "none"},
		{"-n", p.A, "link", "set", p.VethA, "up"},
		{"-n", p.B, "link", "set", p.VethB, "up"},
		{"-n", p.A, "route", "add", "default", "via", p.AddrB.String()},
		{"-n", p.B, "route", "add", "default", "via", p.AddrA.String()},
	}
	for _, args := range steps {
		if err := run(ctx, p.ip, args...); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes both namespaces, which also deletes the veth pair. A
// process still running in a namespace keeps that namespace alive without
// its name, so stop processes before Close. Calling Close again does
// nothing.
func (p *Pair) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	ctx := context.Background()
	var errs []error
	for _, ns := range []string{p.A, p.B} {
		if ns == "" {
			continue
		}
		if err := run(ctx, p.ip, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Command returns the command `ip netns exec <ns> name args...`, which runs
// name in namespace ns of the pair (p.A or p.B). ip(8) execs name in
// place, so the process of the command is name itself, and canceling ctx
// kills it. For another ns, starting the command fails.
func (p *Pair) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.ip, append([]string{"netns", "exec", ns, name}, args...)...)
	if ns != p.A && ns != p.B {
		cmd.Err = fmt.Errorf("netns: %q is not a namespace of pair %s/%s", ns, p.A, p.B)
	}
	return cmd
}

// Netem sets a netem queueing discipline on the veth end in ns (p.A or
// p.B): every packet leaving that side is delayed by delay, and the
// fraction loss of them (0 to 1) is dropped. Calling it again replaces the
// settings. When tc(8) is missing or the kernel has no netem, the error
// wraps errors.ErrUnsupported.
func (p *Pair) Netem(ns string, delay time.Duration, loss float64) error {
	var dev string
	switch ns {
	case p.A:
		dev = p.VethA
	case p.B:
		dev = p.VethB
	default:
		return fmt.Errorf("netns: netem: %q is not a namespace of pair %s/%s", ns, p.A, p.B)
	}
	if delay < 0 || loss < 0 || loss > 1 {
		return fmt.Errorf("netns: netem on %s: delay %v, loss %v out of range", ns, delay, loss)
	}
	tc, err := exec.LookPath("tc")
	if err != nil {
		return fmt.Errorf("netns: netem on %s: tc (iproute2) not found: %w", ns, errors.ErrUnsupported)
	}
	err = run(context.Background(), tc, "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem",
		"delay", fmt.Sprintf("%dus", delay.Microseconds()),
		"loss", fmt.Sprintf("%g%%", loss*100))
	if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
		return fmt.Errorf("%w: kernel has no netem: %w", err, errors.ErrUnsupported)
	}
	return err
}

// addFree adds the namespace ls<pid>-<i><suffix> for the lowest free i and
// returns its name and i. A name can be taken by another Pair of this
// process or by one left behind by an earlier process with the same pid.
func addFree(ctx context.Context, ip, suffix string) (name string, i int, err error) {
	pid := os.Getpid()
	for i := range maxPairs {
		name := fmt.Sprintf("ls%d-%d%s", pid, i, suffix)
		err := run(ctx, ip, "netns", "add", name)
		if err == nil {
			return name, i, nil
		}
		if !strings.Contains(err.Error(), "File exists") {
			return "", 0, err
		}
	}
	return "", 0, fmt.Errorf("netns: no free namespace name for pid %d", pid)
}

// run runs a command and returns an error naming it and its output when
// it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// TB is the part of testing.TB that Require uses.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Require skips the test when namespaces cannot be made here, saying why.
// When the environment variable CI is "true" it fails the test instead,
// so continuous integration never skips it silently.
func Require(t TB) {
	t.Helper()
	if err := Available(); err != nil {
		Unavailable(t, err)
	}
}

// Unavailable skips the test because of err, or fails it when the
// environment variable CI is "true".
func Unavailable(t TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, so this test must run: %v", err)
	}
	t.Skipf("skipping: %v", err)
}
