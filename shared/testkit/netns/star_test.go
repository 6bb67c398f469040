package netns

import (
	"slices"
	"testing"
)

// TestAStarsLeavesReachOneAnotherThroughTheCenter: a process in one leaf
// connects to a listener in another leaf, through the center, and sees
// the dialer's own leaf address; the center reaches a leaf directly.
// Close removes every namespace.
func TestAStarsLeavesReachOneAnotherThroughTheCenter(t *testing.T) {
	Require(t)
	ctx := t.Context()
	s, err := NewStar(ctx, "ams", "sin")
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})
	ams, _ := s.Leaf("ams")
	sin, ok := s.Leaf("sin")
	if !ok || ams.Addr == sin.Addr || ams.NS == sin.NS {
		t.Fatalf("leaves %+v", s.Leaves)
	}

	for _, from := range []string{ams.NS, s.Center} {
		listen := s.SelfCommand(ctx, sin.NS, roleListen)
		listen.Env = append(listen.Env, "LISTEN="+sin.Addr.String()+":7000")
		server := start(t, &Process{Cmd: listen, Name: "listen"})
		if _, err := server.WaitLine(ctx, "listening on"); err != nil {
			t.Fatal(err)
		}
		dial := s.SelfCommand(ctx, from, roleDial)
		dial.Env = append(dial.Env, "DIAL="+sin.Addr.String()+":7000")
		client := start(t, &Process{Cmd: dial, Name: "dial"})
		if _, err := client.WaitLine(ctx, "got: hello from "+sin.Addr.String()); err != nil {
			t.Fatal(err)
		}
		want := ams.Addr.String()
		if from == s.Center {
			want = sin.CenterAddr.String()
		}
		if _, err := server.WaitLine(ctx, "accepted from "+want+":"); err != nil {
			t.Errorf("from %s: %v", from, err)
		}
		server.Stop()
		client.Stop()
	}

	if cmd := s.Command(ctx, "elsewhere", "true"); cmd.Err == nil {
		t.Error("Command took a namespace outside the star")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	names := namespaces(t)
	for _, ns := range append([]string{s.Center}, leafNames(s.Leaves)...) {
		if slices.Contains(names, ns) {
			t.Errorf("namespace %s still listed after Close", ns)
		}
	}
}
