//go:build linux

package udpbatch

import (
	"net"
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// drainedReceivers opens n loopback UDP sockets, each read by a goroutine
// until the test ends, and returns their addresses.
func drainedReceivers(tb testing.TB, n int) []netip.AddrPort {
	tb.Helper()
	addrs := make([]netip.AddrPort, n)
	for i := range addrs {
		r, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		_ = r.SetReadBuffer(4 << 20)
		tb.Cleanup(func() { r.Close() })
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, err := r.Read(buf); err != nil {
					return
				}
			}
		}()
		addrs[i] = r.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return addrs
}

// floorMsg is a message of a floor benchmark: datagrams of the given
// sizes to one receiver, a segmented send if more than one.
type floorMsg struct {
	to    int
	sizes []int
}

// frameMsgs is a call with a message per receiver of n: each msg's sizes.
func frameMsgs(n int, msgs ...[]int) []floorMsg {
	var out []floorMsg
	for r := range n {
		for _, sizes := range msgs {
			out = append(out, floorMsg{r, sizes})
		}
	}
	return out
}

// sizes is n datagrams of size bytes, then those of more.
func sizes(n, size int, more ...int) []int {
	out := make([]int, n, n+len(more))
	for i := range out {
		out[i] = size
	}
	return append(out, more...)
}

// streamCalls is a second of a stream to n viewers as the writers send
// it, in SRTP sizes (AES-GCM): 30 frames, a keyframe (SPS and PPS, one
// run, then 40 packets) and 29 of 7 packets (6 full-size), each a call
// with a run per viewer, and 50 audio packets, each a call of one
// datagram per viewer: 295 datagrams and 81 messages a viewer.
func streamCalls(n int) [][]floorMsg {
	var calls [][]floorMsg
	for v, a := 0, 0; v < 30 || a < 50; {
		if v < 30 && (a == 50 || v*50 <= a*30) {
			if v == 0 {
				calls = append(calls, frameMsgs(n, []int{38, 32}, sizes(39, 1216, 816)))
			} else {
				calls = append(calls, frameMsgs(n, sizes(6, 1216, 530)))
			}
			v++
		} else {
			calls = append(calls, frameMsgs(n, []int{148}))
			a++
		}
	}
	return calls
}

// BenchmarkFloorSendmmsg is the kernel's floor for what a batch sends:
// sendmmsg calls of messages built once, from one thread, without the
// copy into slots or anything else of the Batch. Each case is calls of
// messages to 64 loopback receivers (viewers):
//
//   - gso=true/run=8: a frame of 8 datagrams of 1,200 bytes to each
//     viewer, one segmented send (UDP GSO) each; viewers=8 sends it in
//     calls of 8 viewers (64 datagrams, the batch's size before).
//   - gso=false/run=1: one datagram per viewer (audio).
//   - gso=false/run=8: the frame as 512 messages of one datagram.
//   - stream: a second of a stream as the writers send it (streamCalls).
//
// ns/op is per datagram (wall time of the sending goroutine),
// cpu-ns/datagram the sending thread's CPU time. On loopback both
// include the kernel's delivery into the receivers' sockets, which runs
// in the sender's call; the receivers' reads run on other threads.
func BenchmarkFloorSendmmsg(b *testing.B) {
	for _, bc := range []struct {
		name  string
		calls [][]floorMsg
	}{
		{"gso=true/run=8/viewers=64", [][]floorMsg{frameMsgs(64, sizes(8, 1200))}},
		{"gso=true/run=8/viewers=8", [][]floorMsg{frameMsgs(8, sizes(8, 1200))}},
		{"gso=false/run=1/viewers=64", [][]floorMsg{frameMsgs(64, sizes(1, 1200))}},
		{"gso=false/run=8/viewers=64", [][]floorMsg{frameMsgs(64, sizes(1, 1200), sizes(1, 1200), sizes(1, 1200), sizes(1, 1200),
			sizes(1, 1200), sizes(1, 1200), sizes(1, 1200), sizes(1, 1200))}},
		{"stream/viewers=64", streamCalls(64)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer sock.Close()
			fd := openSendSocket(sock).fd
			if fd < 0 {
				b.Skip("no file descriptor")
			}
			viewers := 0
			for _, call := range bc.calls {
				for _, m := range call {
					viewers = max(viewers, m.to+1)
				}
			}
			addrs := drainedReceivers(b, viewers)
			payload := make([]byte, slotSize)
			hdrs := make([][]mmsghdr, len(bc.calls))
			datagrams := make([]int, len(bc.calls))
			var all, segs int
			for c, call := range bc.calls {
				hdrs[c] = make([]mmsghdr, len(call))
				for k, m := range call {
					iovs := make([]unix.Iovec, len(m.sizes))
					for j, size := range m.sizes {
						iovs[j].Base = &payload[0]
						iovs[j].SetLen(size)
					}
					h := &hdrs[c][k].hdr
					h.Iov = &iovs[0]
					h.SetIovlen(len(iovs))
					h.Name, h.Namelen = putSockaddr(new(unix.RawSockaddrInet6), addrs[m.to])
					if len(m.sizes) > 1 {
						oob := gsoCmsg(make([]byte, cmsgMax), m.sizes[0])
						h.Control = &oob[0]
						h.SetControllen(len(oob))
						segs += len(m.sizes)
					}
					datagrams[c] += len(m.sizes)
				}
				all += datagrams[c]
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu0 := threadCPU()
			b.ResetTimer()
			sent := 0
			for c := 0; sent < b.N; c = (c + 1) % len(hdrs) {
				for first := 0; first < len(hdrs[c]); {
					n, err := sendmmsg(fd, hdrs[c][first:])
					if err != nil {
						if err == unix.EAGAIN {
							continue
						}
						if segs > 0 && (err == unix.EIO || err == unix.EINVAL || err == unix.EOPNOTSUPP) {
							b.Skipf("no UDP GSO here: %v", err)
						}
						b.Fatal(err)
					}
					first += n
				}
				sent += datagrams[c]
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent), "ns/op")
			b.ReportMetric(float64(threadCPU()-cpu0)/float64(sent), "cpu-ns/datagram")
			b.ReportMetric(float64(all)/float64(len(hdrs)), "datagrams/call")
			b.ReportMetric(100*float64(segs)/float64(all), "%segmented")
		})
	}
}

// threadCPU is the calling thread's CPU time (user and system) in ns.
func threadCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
