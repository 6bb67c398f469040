package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
)

// maxLeaves bounds a Star: leaf j's subnet is 10.98.j.0/24.
const maxLeaves = 250

// Star is a center namespace joined to each of its leaves by a veth pair,
// like a hub site and the regions around it. Leaf j has 10.98.j.2/24 and
// the center 10.98.j.1 on their link; each leaf's default route is the
// center, which forwards between leaves, so every namespace reaches every
// other. Nothing is routed to or from the root namespace.
type Star struct {
	// Center is the center namespace's name.
	Center string
	// Leaves are the leaves, in the order of their labels.
	Leaves []Leaf

	ip     string
	closed bool
}

// Leaf is one leaf of a Star.
type Leaf struct {
	// Label is the caller's name for the leaf (a region, say).
	Label string
	// NS is the namespace's name, as `ip netns list` shows it.
	NS string
	// Addr is the leaf's veth address; CenterAddr is the center's address
	// on the same link.
	Addr, CenterAddr netip.Addr
}

// NewStar makes a center namespace and one leaf per label, joined as Star
// says. Names are unique per process and per call. On error NewStar
// removes whatever it made.
func NewStar(ctx context.Context, labels ...string) (*Star, error) {
	if len(labels) == 0 || len(labels) > maxLeaves {
		return nil, fmt.Errorf("netns: a star has 1 to %d leaves, not %d", maxLeaves, len(labels))
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netns: ip (iproute2) not found: %w", err)
	}
	center, i, err := addFree(ctx, ip, "c")
	if err != nil {
		return nil, err
	}
	s := &Star{Center: center, ip: ip}
	if err := s.setUp(ctx, i, labels); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// setUp makes the leaves of a Star whose center is made, with index i of
// its name, and turns on forwarding in the center.
func (s *Star) setUp(ctx context.Context, i int, labels []string) error {
	pid := os.Getpid()
	steps := [][]string{{"-n", s.Center, "link", "set", "lo", "up"}}
	for j, label := range labels {
		leaf := Leaf{
			Label:      label,
			NS:         fmt.Sprintf("ls%d-%dl%d", pid, i, j),
			Addr:       netip.AddrFrom4([4]byte{10, 98, byte(j), 2}),
			CenterAddr: netip.AddrFrom4([4]byte{10, 98, byte(j), 1}),
		}
		if err := run(ctx, s.ip, "netns", "add", leaf.NS); err != nil {
			return err
		}
		s.Leaves = append(s.Leaves, leaf)
		vc, vl := fmt.Sprintf("lsv%d-%dc%d", pid, i, j), fmt.Sprintf("lsv%d-%dl%d", pid, i, j)
		steps = append(steps,
			[]string{"link", "add", vc, "netns", s.Center, "type", "veth", "peer", "name", vl, "netns", leaf.NS},
			[]string{"-n", s.Center, "addr", "add", leaf.CenterAddr.String() + "/24", "dev", vc},
			[]string{"-n", leaf.NS, "addr", "add", leaf.Addr.String() + "/24", "dev", vl},
			[]string{"-n", leaf.NS, "link", "set", "lo", "up"},
			// No IPv6 link-local address (see Pair.setUp).
			[]string{"-n", s.Center, "link", "set", vc, "addrgenmode", "none"},
			[]string{"-n", leaf.NS, "link", "set", vl, "addrgenmode", "none"},
			[]string{"-n", s.Center, "link", "set", vc, "up"},
			[]string{"-n", leaf.NS, "link", "set", vl, "up"},
			[]string{"-n", leaf.NS, "route", "add", "default", "via", leaf.CenterAddr.String()},
		)
	}
	for _, args := range steps {
		if err := run(ctx, s.ip, args...); err != nil {
			return err
		}
	}
	// The sysctl is per namespace; sh is everywhere, sysctl(8) is not.
	return run(ctx, s.ip, "netns", "exec", s.Center, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
}

// Leaf returns the leaf labelled label, or false.
func (s *Star) Leaf(label string) (Leaf, bool) {
	i := slices.IndexFunc(s.Leaves, func(l Leaf) bool { return l.Label == label })
	if i < 0 {
		return Leaf{}, false
	}
	return s.Leaves[i], true
}

// Command returns the command `ip netns exec <ns> name args...` for ns,
// the center or a leaf's NS, as Pair.Command does.
func (s *Star) Command(ctx context.Context, ns string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, s.ip, append([]string{"netns", "exec", ns, name}, args...)...)
	if ns != s.Center && !slices.ContainsFunc(s.Leaves, func(l Leaf) bool { return l.NS == ns }) {
		cmd.Err = fmt.Errorf("netns: %q is not a namespace of star %s", ns, s.Center)
	}
	return cmd
}

// SelfCommand re-executes the running test binary in ns with RoleEnv set
// to role, as Pair.SelfCommand does.
func (s *Star) SelfCommand(ctx context.Context, ns, role string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := s.Command(ctx, ns, exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), RoleEnv+"="+role)
	return cmd
}

// Close deletes every namespace of the star, which deletes the veth
// pairs; stop the processes in them first. Calling it again does nothing.
func (s *Star) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	ctx := context.Background()
	var errs []error
	for _, ns := range append([]string{s.Center}, leafNames(s.Leaves)...) {
		if err := run(ctx, s.ip, "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func leafNames(leaves []Leaf) []string {
	names := make([]string, len(leaves))
	for i, l := range leaves {
		names[i] = l.NS
	}
	return names
}
