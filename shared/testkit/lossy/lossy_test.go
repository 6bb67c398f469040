package lossy

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// echo serves a UDP echo on loopback until the test ends and returns its
// address and a channel of what it received.
func echo(t *testing.T) (string, <-chan []byte) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			got <- bytes.Clone(buf[:n])
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().String(), got
}

// start runs a forwarder to server with rule until the test ends.
func start(t *testing.T, server string, rule Rule) *Forwarder {
	t.Helper()
	f, err := New(server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.SetRule(rule)
	return f
}

// dial opens a client socket towards the forwarder.
func dial(t *testing.T, f *Forwarder) *net.UDPConn {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// marker ends a run of packets; the tests' rules pass it.
var marker = []byte("end")

// passMarker wraps r so that the marker always passes.
func passMarker(r Rule) Rule {
	return func(p []byte) bool { return !bytes.Equal(p, marker) && r(p) }
}

// exchange sends packets then the marker through c and returns the
// replies that came back before the marker's.
func exchange(t *testing.T, c *net.UDPConn, packets [][]byte) [][]byte {
	t.Helper()
	for _, p := range append(packets, marker) {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	var replies [][]byte
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d replies: %v", len(replies), err)
		}
		if bytes.Equal(buf[:n], marker) {
			return replies
		}
		replies = append(replies, bytes.Clone(buf[:n]))
	}
}

// numbered returns n packets of size bytes, the ith starting with byte i.
func numbered(n, size int) [][]byte {
	var ps [][]byte
	for i := range n {
		p := make([]byte, size)
		p[0] = byte(i)
		ps = append(ps, p)
	}
	return ps
}

// firstBytes lists the first byte of each packet.
func firstBytes(ps [][]byte) []byte {
	var b []byte
	for _, p := range ps {
		b = append(b, p[0])
	}
	return b
}

func TestEveryNthServerPacketIsDroppedAndCounted(t *testing.T) {
	server, received := echo(t)
	f := start(t, server, passMarker(EveryNth(3)))
	c := dial(t, f)

	replies := exchange(t, c, numbered(12, 20))
	if got, want := firstBytes(replies), []byte{0, 1, 3, 4, 6, 7, 9, 10}; !slices.Equal(got, want) {
		t.Errorf("replies %v, want %v (every 3rd dropped)", got, want)
	}
	if got := len(received); got != 13 {
		t.Errorf("server received %d packets, want all 13: the client's packets are never dropped", got)
	}
	if st := f.Stats(); st != (Stats{Passed: 9, Dropped: 4}) {
		t.Errorf("stats %+v, want 9 passed (the marker too) and 4 dropped", st)
	}
}

func TestSizedAsksItsRuleOnlyAboutPacketsInItsBand(t *testing.T) {
	server, _ := echo(t)
	f := start(t, server, Sized(100, 200, First(2)))
	c := dial(t, f)

	// Small and in-band packets alternate: the first two in-band ones go.
	var packets [][]byte
	for i := range 8 {
		p := make([]byte, 50+100*(i%2))
		p[0] = byte(i)
		packets = append(packets, p)
	}
	replies := exchange(t, c, packets)
	if got, want := firstBytes(replies), []byte{0, 2, 4, 5, 6, 7}; !slices.Equal(got, want) {
		t.Errorf("replies %v, want %v", got, want)
	}
	if st := f.Stats(); st.Dropped != 2 {
		t.Errorf("dropped %d, want 2", st.Dropped)
	}
}

func TestEachClientGetsItsOwnRepliesAndNilRulePassesAll(t *testing.T) {
	server, _ := echo(t)
	f := start(t, server, nil)
	a, b := dial(t, f), dial(t, f)

	if got := firstBytes(exchange(t, a, numbered(3, 10))); !slices.Equal(got, []byte{0, 1, 2}) {
		t.Errorf("client a got %v", got)
	}
	if got := firstBytes(exchange(t, b, numbered(2, 10))); !slices.Equal(got, []byte{0, 1}) {
		t.Errorf("client b got %v", got)
	}
	f.SetRule(passMarker(First(1)))
	if got := firstBytes(exchange(t, a, numbered(3, 10))); !slices.Equal(got, []byte{1, 2}) {
		t.Errorf("client a got %v after SetRule", got)
	}
	if st := f.Stats(); st != (Stats{Passed: 10, Dropped: 1}) {
		t.Errorf("stats %+v", st)
	}
}

func TestCloseReturnsOnceItsGoroutinesEnd(t *testing.T) {
	server, _ := echo(t)
	f, err := New(server)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, f)
	exchange(t, c, nil) // a client's socket towards the server is open
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesABadServerAddress(t *testing.T) {
	if _, err := New("no such host:port"); err == nil {
		t.Error("New with a bad server address succeeded")
	}
}

// TestDelayHoldsEveryPacketBothWaysInOrder: with a delay, every packet
// arrives, in order, and a round trip takes at least the delay twice.
func TestDelayHoldsEveryPacketBothWaysInOrder(t *testing.T) {
	server, received := echo(t)
	f := start(t, server, nil)
	const delay = 40 * time.Millisecond
	f.SetDelay(delay)
	c := dial(t, f)
	began := time.Now()
	replies := exchange(t, c, numbered(50, 100))
	if rtt := time.Since(began); rtt < 2*delay {
		t.Errorf("round trip %v, want at least %v", rtt, 2*delay)
	}
	want := firstBytes(numbered(50, 100))
	if got := firstBytes(replies); !slices.Equal(got, want) {
		t.Errorf("replies %v, want %v in order", got, want)
	}
	if got := len(received); got != 51 {
		t.Errorf("server received %d packets, want 51", got)
	}
	if st := f.Stats(); st != (Stats{Passed: 51}) {
		t.Errorf("stats %+v", st)
	}
}
