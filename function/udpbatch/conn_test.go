//go:build linux

package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"
)

// listenLoopback opens n UDP sockets on 127.0.0.1.
func listenLoopback(t *testing.T, n int) []*net.UDPConn {
	t.Helper()
	out := make([]*net.UDPConn, n)
	for i := range out {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadBuffer(1 << 20); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out[i] = c
	}
	return out
}

// readAll reads want datagrams from c, failing after a generous deadline.
func readAll(t *testing.T, c *net.UDPConn, want int) [][]byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	buf := make([]byte, 2048)
	for len(got) < want {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%s: %d of %d datagrams: %v", c.LocalAddr(), len(got), want, err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	return got
}

// datagram is the test payload i to receiver r: size bytes of a pattern
// that names both.
func datagram(r, i, size int) []byte {
	b := bytes.Repeat([]byte{byte(r), byte(i)}, size/2+1)[:size]
	copy(b, fmt.Sprintf("%d/%d", r, i))
	return b
}

func TestConnBatchesARoundAndKeepsEachReceiversOrder(t *testing.T) {
	for _, tt := range []struct {
		name  string
		local string // the socket's address: IPv4, or dual-stack sending to IPv4
	}{
		{"ipv4 socket", "127.0.0.1:0"},
		{"dual-stack socket", "[::]:0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			laddr, err := net.ResolveUDPAddr("udp", tt.local)
			if err != nil {
				t.Fatal(err)
			}
			sock, err := net.ListenUDP("udp", laddr)
			if err != nil {
				t.Skipf("no %s: %v", tt.name, err)
			}
			c := New(sock)
			defer c.Close()
			rx := listenLoopback(t, 3)
			routed := c.NewBatch()
			for _, r := range rx[:2] { // the third receiver has no route
				key, _ := addrKey(r.LocalAddr())
				c.Route(key, routed)
			}

			// A round: per receiver, runs of full-size datagrams with a
			// shorter one at the end of each frame, interleaved the way a
			// writer serves viewer after viewer; more than one batch.
			const frames, perFrame = 40, 8
			sizes := func(i int) int {
				if i%perFrame == perFrame-1 {
					return 300 + i
				}
				return 1200
			}
			routed.BeginRound()
			for f := range frames {
				for r, conn := range rx {
					for k := range perFrame {
						i := f*perFrame + k
						if _, err := c.WriteTo(datagram(r, i, sizes(i)), conn.LocalAddr()); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			if c.Stats().Calls == 0 {
				t.Fatalf("no batch was sent while the round was open, though it held more than %d datagrams", batchSize)
			}
			routed.EndRound()

			for r, conn := range rx {
				got := readAll(t, conn, frames*perFrame)
				for i, d := range got {
					if want := datagram(r, i, sizes(i)); !bytes.Equal(d, want) {
						t.Fatalf("receiver %d datagram %d: %d bytes %q…, want %d bytes %q…", r, i, len(d), d[:8], len(want), want[:8])
					}
				}
			}
			s := c.Stats()
			if s.Errors != 0 || s.Datagrams != 2*frames*perFrame {
				t.Fatalf("batched %d datagrams with %d errors, want %d and none", s.Datagrams, s.Errors, 2*frames*perFrame)
			}
			if c.noGSO.Load() {
				t.Logf("this kernel refused UDP GSO: %d datagrams in %d calls, one by one", s.Datagrams, s.Calls)
			} else if s.Segmented != s.Datagrams {
				t.Fatalf("%d of %d datagrams went in segmented runs, want all (every run is one frame to one receiver)", s.Segmented, s.Datagrams)
			}
			if s.Calls >= s.Datagrams/4 {
				t.Fatalf("%d sendmmsg calls for %d datagrams", s.Calls, s.Datagrams)
			}
		})
	}
}

func TestConnSendsAtOnceOutsideRounds(t *testing.T) {
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := New(sock)
	defer c.Close()
	rx := listenLoopback(t, 1)[0]
	b := c.NewBatch()
	key, _ := addrKey(rx.LocalAddr())
	c.Route(key, b)

	// Routed, but the batch is not in a round: the datagram leaves in
	// the call, so it can be read without ending anything.
	if _, err := c.WriteTo([]byte("now"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rx, 1); string(got[0]) != "now" {
		t.Fatalf("got %q", got[0])
	}
	// A round that ends empty sends nothing; a removed route is direct.
	b.BeginRound()
	b.EndRound()
	c.Route(key, nil)
	b.BeginRound()
	if _, err := c.WriteTo([]byte("unrouted"), rx.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rx, 1); string(got[0]) != "unrouted" {
		t.Fatalf("got %q", got[0])
	}
	b.EndRound()
	if s := c.Stats(); s.Calls != 0 || s.Datagrams != 0 {
		t.Fatalf("%d batched calls for %d datagrams, want none", s.Calls, s.Datagrams)
	}
}

// BenchmarkConn measures the socket's cost per datagram (user and
// kernel, with the loopback delivery the kernel does in the sender's
// call) for 50 receivers, with runs of 1 and 8 datagrams to each
// receiver per round. The receivers' sockets are drained by goroutines.
// ns/op is the sender's wall time per datagram, cpu-ns/datagram its
// thread's CPU time (which the receivers' goroutines, on other threads,
// do not take from).
func BenchmarkConn(b *testing.B) {
	for _, run := range []int{1, 8} {
		for _, direct := range []bool{true, false} {
			if direct && run > 1 {
				continue
			}
			name := fmt.Sprintf("run=%d/batched", run)
			if direct {
				name = "run=1/sendto"
			}
			b.Run(name, func(b *testing.B) {
				sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				c := New(sock)
				defer c.Close()
				const receivers = 50
				batch := c.NewBatch()
				var addrs []net.Addr
				for range receivers {
					r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
					if err != nil {
						b.Fatal(err)
					}
					defer r.Close()
					go func() {
						buf := make([]byte, 2048)
						for {
							if _, err := r.Read(buf); err != nil {
								return
							}
						}
					}()
					addrs = append(addrs, r.LocalAddr())
					if !direct {
						key, _ := addrKey(r.LocalAddr())
						c.Route(key, batch)
					}
				}
				p := make([]byte, 1200)
				b.SetBytes(int64(len(p)))
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				cpu0 := threadCPU()
				b.ResetTimer()
				for i := 0; i < b.N; {
					batch.BeginRound()
					for _, a := range addrs {
						for range run {
							if _, err := c.WriteTo(p, a); err != nil {
								b.Fatal(err)
							}
							i++
						}
					}
					batch.EndRound()
				}
				b.StopTimer()
				b.ReportMetric(float64(threadCPU()-cpu0)/float64(b.N), "cpu-ns/datagram")
			})
		}
	}
}

func TestConnSkipsAFailedDatagram(t *testing.T) {
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := New(sock)
	defer c.Close()
	rx := listenLoopback(t, 2)
	b := c.NewBatch()
	bad := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0} // the kernel refuses port 0
	for _, a := range []net.Addr{rx[0].LocalAddr(), bad, rx[1].LocalAddr()} {
		key, _ := addrKey(a)
		c.Route(key, b)
	}

	// The refused datagram sits between two good ones in one sendmmsg.
	b.BeginRound()
	for _, a := range []net.Addr{rx[0].LocalAddr(), bad, rx[1].LocalAddr()} {
		if _, err := c.WriteTo([]byte("x"), a); err != nil {
			t.Fatal(err)
		}
	}
	b.EndRound()
	for _, r := range rx {
		if got := readAll(t, r, 1); string(got[0]) != "x" {
			t.Fatalf("got %q", got[0])
		}
	}
	if s := c.Stats(); s.Datagrams != 2 || s.Errors == 0 {
		t.Fatalf("%d datagrams sent, %d errors; want 2 and the refused one counted", s.Datagrams, s.Errors)
	}
}
