//go:build linux

package udpbatch

import (
	"bytes"
	"math/rand/v2"
	"net"
	"testing"
)

// newRoutedConn returns a Conn on loopback with n receivers, all routed
// to one batch.
func newRoutedConn(t *testing.T, n int) (*Conn, *Batch, []*net.UDPConn) {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := New(sock)
	t.Cleanup(func() { c.Close() })
	rx := listenLoopback(t, n)
	b := c.NewBatch()
	for _, r := range rx {
		key, _ := addrKey(r.LocalAddr())
		c.Route(key, b)
	}
	return c, b, rx
}

// write is one datagram of a test: datagram(r, i, size) to receiver r.
type write struct{ r, i, size int }

// roundOf writes ws in one round of b and checks that every receiver
// got its datagrams, in order and intact.
func roundOf(t *testing.T, c *Conn, b *Batch, rx []*net.UDPConn, ws []write) {
	t.Helper()
	b.BeginRound()
	for _, w := range ws {
		if _, err := c.WriteTo(datagram(w.r, w.i, w.size), rx[w.r].LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	b.EndRound()
	want := make([][]write, len(rx))
	for _, w := range ws {
		want[w.r] = append(want[w.r], w)
	}
	for r, conn := range rx {
		got := readAll(t, conn, len(want[r]))
		for k, d := range got {
			w := want[r][k]
			if exp := datagram(w.r, w.i, w.size); !bytes.Equal(d, exp) {
				t.Fatalf("receiver %d datagram %d: %d bytes %q…, want %d bytes %q…", r, k, len(d), d[:min(8, len(d))], len(exp), exp[:min(8, len(exp))])
			}
		}
	}
}

// frameOf is n datagrams to receiver r numbered from i, all of size
// bytes but the last, which has last.
func frameOf(r, i, n, size, last int) []write {
	ws := make([]write, n)
	for k := range ws {
		ws[k] = write{r, i + k, size}
	}
	ws[n-1].size = last
	return ws
}

func skipWithoutGSO(t *testing.T, c *Conn) {
	t.Helper()
	if c.noGSO.Load() {
		t.Skip("this kernel refused UDP GSO")
	}
}

func TestBatchSendsEachAddressTogether(t *testing.T) {
	c, b, rx := newRoutedConn(t, 3)
	// Two receivers' frames interleaved datagram by datagram, as when
	// another goroutine writes to the batch during a writer's round, and
	// a third receiver's frame between them.
	a, bb := frameOf(0, 0, 6, 1200, 400), frameOf(1, 0, 5, 1200, 300)
	var ws []write
	for k := range 6 {
		ws = append(ws, a[k])
		if k == 2 {
			ws = append(ws, frameOf(2, 0, 3, 1000, 1000)...)
		}
		if k < len(bb) {
			ws = append(ws, bb[k])
		}
	}
	roundOf(t, c, b, rx, ws)
	skipWithoutGSO(t, c)
	if s := c.Stats(); s.Calls != 1 || s.Messages != 3 || s.Segmented != 14 {
		t.Fatalf("%d calls, %d messages, %d of %d datagrams segmented; want 1 call of 3 messages, all segmented", s.Calls, s.Messages, s.Segmented, s.Datagrams)
	}
}

func TestBatchKeepsTheRunBeingWrittenWhenFull(t *testing.T) {
	c, b, rx := newRoutedConn(t, 6)
	// Six receivers' frames of 50 full-size datagrams, one after the
	// other: the batch fills in the fifth receiver's frame, whose run so
	// far waits for the next call instead of being cut there.
	var ws []write
	for r := range rx {
		ws = append(ws, frameOf(r, 0, 50, 1200, 1200)...)
	}
	roundOf(t, c, b, rx, ws)
	skipWithoutGSO(t, c)
	if s := c.Stats(); s.Calls != 2 || s.Messages != 6 || s.Segmented != 300 {
		t.Fatalf("%d calls, %d messages, %d of %d datagrams segmented; want 2 calls of 6 messages in all, all segmented", s.Calls, s.Messages, s.Segmented, s.Datagrams)
	}
}

func TestBatchCutsRunsAsTheKernelTakesThem(t *testing.T) {
	c, b, rx := newRoutedConn(t, 2)
	// 100 datagrams of 100 bytes: at most 64 segments a send. 60 of
	// 1,200 bytes: at most 65,000 bytes (54 segments).
	ws := append(frameOf(0, 0, 100, 100, 100), frameOf(1, 0, 60, 1200, 1200)...)
	roundOf(t, c, b, rx, ws)
	skipWithoutGSO(t, c)
	if s := c.Stats(); s.Messages != 4 || s.Segmented != 160 || s.Errors != 0 {
		t.Fatalf("%d messages, %d of %d datagrams segmented, %d errors; want 4 messages (64+36, 54+6), all segmented", s.Messages, s.Segmented, s.Datagrams, s.Errors)
	}
}

func TestBatchKeepsGSOForARefusedAddress(t *testing.T) {
	c, b, rx := newRoutedConn(t, 1)
	roundOf(t, c, b, rx, frameOf(0, 0, 4, 1200, 500))
	skipWithoutGSO(t, c)
	// A run to an address the kernel refuses (EINVAL, as it answers a
	// kernel without UDP GSO): its datagrams fail one by one too, so the
	// refusal was not of the segmented send.
	bad := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}
	key, _ := addrKey(bad)
	c.Route(key, b)
	b.BeginRound()
	for range 3 {
		if _, err := c.WriteTo(make([]byte, 1200), bad); err != nil {
			t.Fatal(err)
		}
	}
	b.EndRound()
	if c.noGSO.Load() {
		t.Fatal("a refused address turned UDP GSO off")
	}
	roundOf(t, c, b, rx, frameOf(0, 4, 4, 1200, 500))
	if s := c.Stats(); s.Errors != 3 || s.Segmented != 8 {
		t.Fatalf("%d errors, %d segmented datagrams; want the 3 refused ones counted and the runs segmented", s.Errors, s.Segmented)
	}
}

// TestBatchRandomRounds writes random frames of random receivers,
// interleaved at random, in rounds that fill the batch several times,
// and checks that every receiver gets its datagrams in order and intact.
func TestBatchRandomRounds(t *testing.T) {
	c, b, rx := newRoutedConn(t, 8)
	rnd := rand.New(rand.NewPCG(1, 2))
	next := make([]int, len(rx))
	for range 20 {
		var frames [][]write
		for range 1 + rnd.IntN(60) {
			r := rnd.IntN(len(rx))
			n := 1 + rnd.IntN(70)
			size := []int{1200, 1216, 100, 1500}[rnd.IntN(4)]
			frames = append(frames, frameOf(r, next[r], n, size, 1+rnd.IntN(size)))
			next[r] += n
		}
		// Interleave the frames, each one's datagrams in order; a
		// receiver's frames stay in the order they were made.
		var ws []write
		for len(frames) > 0 {
			k := 0
			if rnd.IntN(4) == 0 {
				k = rnd.IntN(len(frames))
			}
			f := frames[k]
			if earlier := firstOf(frames, f[0].r); earlier < k {
				f, k = frames[earlier], earlier
			}
			ws = append(ws, f[0])
			if frames[k] = f[1:]; len(frames[k]) == 0 {
				frames = append(frames[:k], frames[k+1:]...)
			}
		}
		for i := range next {
			next[i] = 0 // readAll reads each round's own datagrams
		}
		roundOf(t, c, b, rx, ws)
	}
	if s := c.Stats(); s.Errors != 0 || c.noGSO.Load() {
		t.Fatalf("%d errors, GSO off %v", s.Errors, c.noGSO.Load())
	}
}

// firstOf is the index of the first frame of receiver r.
func firstOf(frames [][]write, r int) int {
	for k, f := range frames {
		if f[0].r == r {
			return k
		}
	}
	return len(frames)
}
