//go:build linux

package fanout

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/function/relay"
	"lightspeed/function/udpbatch"
	"lightspeed/shared/relaywire"
)

// sockWriter stands in for pion's SRTP writer of one viewer down to the
// socket, without its ICE and mux layers: it marshals the packet, adds
// the 16 bytes of an AES-GCM tag (zeros) and writes it to the fan-out's
// socket, addressed to the viewer, as pion's ICE UDP mux does.
type sockWriter struct {
	conn *udpbatch.Conn
	addr *net.UDPAddr
	buf  [1500]byte
}

func (w *sockWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	n, err := h.MarshalTo(w.buf[:])
	if err != nil {
		return 0, err
	}
	n += copy(w.buf[n:], payload)
	clear(w.buf[n : n+16])
	return w.conn.WriteTo(w.buf[:n+16], w.addr)
}

// Write takes the viewer's RTCP (none is sent here).
func (w *sockWriter) Write(b []byte) (int, error) { return len(b), nil }

// receiver is a viewer's end of the loopback: a socket whose datagrams a
// goroutine counts.
type receiver struct {
	conn *net.UDPConn
	got  atomic.Uint64
}

func newReceiver(tb testing.TB) *receiver {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	r := &receiver{conn: c}
	tb.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			r.got.Add(1)
		}
	}()
	return r
}

// socketViewers adds n viewers of testChannel whose packets go through
// the fan-out's writers and socket to loopback receivers, each address
// routed to its viewer's writer, and waits until every writer serves its
// viewers.
func socketViewers(tb testing.TB, f *Fanout, n int) []*receiver {
	tb.Helper()
	rx := make([]*receiver, n)
	for i := range rx {
		rx[i] = newReceiver(tb)
		addr := rx[i].conn.LocalAddr().(*net.UDPAddr)
		v := addFakeViewer(tb, f, "v"+string(rune('A'+i%26))+string(rune('a'+i/26)), &sockWriter{conn: f.conn, addr: addr})
		f.conn.Route(addr.AddrPort(), v.w.batch)
	}
	awaitWriters(tb, f, n)
	return rx
}

// awaitWriters waits until the writers serve n viewers.
func awaitWriters(tb testing.TB, f *Fanout, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for served := 0; served < n; {
		served = 0
		for _, w := range f.writers {
			w.mu.Lock()
			served += len(w.viewers)
			w.mu.Unlock()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d viewers handed to a writer", served, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// received is the number of datagrams the receivers got.
func received(rx []*receiver) uint64 {
	var n uint64
	for _, r := range rx {
		n += r.got.Load()
	}
	return n
}

// awaitReceived waits until the receivers got want datagrams.
func awaitReceived(tb testing.TB, rx []*receiver, want uint64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for received(rx) < want {
		if time.Now().After(deadline) {
			tb.Fatalf("receivers got %d datagrams, want %d", received(rx), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// burstSource makes a channel's packets as the gateway's hub releases
// them: a NAL unit of n bytes as ceil(n/1186) FU-A packets of 1,188
// bytes of payload (1,200 with the RTP header), only the last short.
type burstSource struct {
	vseq, aseq uint16
	vts, ats   uint32
}

// nal returns the packets of one NAL unit of n data bytes of frame ts.
func (s *burstSource) nal(n int, key, last bool) []*relay.Packet {
	var out []*relay.Packet
	for first := true; n > 0; first = false {
		k := min(n, 1186)
		n -= k
		marks := ""
		if key && first {
			marks = "key"
		}
		p := relayedVideo(s.vseq, s.vts, last && n == 0, marks, make([]byte, 2+k)...)
		p.Payload[0], p.Payload[1] = 0x7c, 0x05 // FU-A of an IDR slice
		out = append(out, p)
		s.vseq++
	}
	return out
}

// frame returns a frame's packets: an SPS and a PPS first if key, then
// a slice of size bytes.
func (s *burstSource) frame(size int, key bool) []*relay.Packet {
	var out []*relay.Packet
	if key {
		sps := relayedVideo(s.vseq, s.vts, false, "key", 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40)
		pps := relayedVideo(s.vseq+1, s.vts, false, "", 0x68, 0xce, 0x3c, 0x80)
		s.vseq += 2
		out = append(out, sps, pps)
	}
	out = append(out, s.nal(size, false, true)...)
	s.vts += 3000
	return out
}

// audio returns one audio packet of 120 bytes of payload.
func (s *burstSource) audio() *relay.Packet {
	p := &relay.Packet{Channel: testChannel, Track: relaywire.Audio, Seq: s.aseq, Timestamp: s.ats, Payload: make([]byte, 120)}
	s.aseq++
	s.ats += 960
	return p
}

// holdWriters waits until no writer is in a round and keeps them from
// starting one until the returned function is called, so that a burst
// written meanwhile is queued whole before any writer takes it (a writer
// takes its viewers under its lock at the start of each round).
func holdWriters(f *Fanout) (release func()) {
	for _, w := range f.writers {
		for {
			w.mu.Lock()
			if !w.busy {
				break
			}
			w.mu.Unlock()
			time.Sleep(50 * time.Microsecond)
		}
	}
	return func() {
		for _, w := range f.writers {
			w.mu.Unlock()
		}
	}
}

// burstCounts are the socket's counts of one burst, and how many
// sendmmsg messages (a datagram, or a segmented run of them) it would
// take at best: one per run the kernel takes.
type burstCounts struct {
	udpbatch.Stats
	best uint64
}

func (c *burstCounts) add(o burstCounts) {
	c.Calls += o.Calls
	c.Messages += o.Messages
	c.Datagrams += o.Datagrams
	c.Segmented += o.Segmented
	c.Errors += o.Errors
	c.best += o.best
}

func (c burstCounts) String() string {
	return fmt.Sprintf("%d datagrams in %d sendmmsg calls (%.1f a call), %d messages (fewest possible %d), %.0f %% of the datagrams in segmented runs",
		c.Datagrams, c.Calls, float64(c.Datagrams)/float64(max(c.Calls, 1)), c.Messages, c.best,
		100*float64(c.Segmented)/float64(max(c.Datagrams, 1)))
}

// TestWriterSendsEachViewersFrameAsOneRun follows bursts through the
// writers and the socket: each viewer's packets of a frame (full-size
// ones and a short last one) leave as one segmented send, as far as the
// kernel takes (64 KiB, 64 segments), and a burst to many viewers in a
// few sendmmsg calls.
func TestWriterSendsEachViewersFrameAsOneRun(t *testing.T) {
	f, err := New(Config{UDPAddr: "127.0.0.1:0", Logger: testLogger()}, newFakeUpstream())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const viewers = 40
	rx := socketViewers(t, f, viewers)
	src := &burstSource{vseq: 1000, vts: 90000, aseq: 5000, ats: 48000}

	// burst writes pkts (the writers held until the last one is queued),
	// waits until every viewer got them and returns the socket's counts
	// of it; best is the fewest messages per viewer.
	burst := func(pkts []*relay.Packet, best int) burstCounts {
		t.Helper()
		s0, n0 := f.conn.Stats(), received(rx)
		release := holdWriters(f)
		for _, p := range pkts {
			f.WriteRTP(p)
		}
		release()
		f.wakeWriters()
		awaitReceived(t, rx, n0+uint64(len(pkts)*viewers))
		holdWriters(f)() // the rounds that sent them have counted them
		s := f.conn.Stats()
		return burstCounts{udpbatch.Stats{
			Calls: s.Calls - s0.Calls, Messages: s.Messages - s0.Messages, Datagrams: s.Datagrams - s0.Datagrams,
			Segmented: s.Segmented - s0.Segmented, Errors: s.Errors - s0.Errors,
		}, uint64(best * viewers)}
	}
	var all burstCounts
	check := func(name string, c burstCounts) {
		t.Helper()
		all.add(c)
		t.Logf("%s: %v", name, c)
		if c.Errors != 0 {
			t.Errorf("%s: %d send errors", name, c.Errors)
		}
		if c.Segmented == 0 {
			return // no UDP GSO here: every datagram is a message
		}
		if c.Messages != c.best {
			t.Errorf("%s: %d messages, want %d", name, c.Messages, c.best)
		}
	}

	// A keyframe: SPS and PPS (one run, the PPS shorter), then an IDR
	// slice of 60 packets: runs of at most 53 segments of 1,216 bytes
	// (64 KiB).
	check("keyframe (SPS, PPS, 60 packets)", burst(src.frame(60*1186-500, true), 3))
	// Delta frames to every viewer, all full-size packets but the last.
	for _, n := range []int{8, 6, 10, 13, 1} {
		check(fmt.Sprintf("delta frame of %d packets", n), burst(src.frame((n-1)*1186+300, false), 1))
	}
	// Audio that comes while a frame's packets do is the short end of the
	// run before it; the rest of the frame is a run of its own.
	pkts := src.frame(5*1186, false)
	pkts = append(pkts[:2], append([]*relay.Packet{src.audio()}, pkts[2:]...)...)
	check("frame of 5 packets with an audio packet after its second", burst(pkts, 2))
	// Audio alone: one datagram per viewer.
	check("audio packet", burst([]*relay.Packet{src.audio()}, 1))
	t.Logf("all: %v", all)
}

// The floor of the machine: what a packet to a viewer costs at the least,
// part by part (the kernel's sendmmsg is BenchmarkFloorSendmmsg in
// udpbatch), and what it costs through the writers today.

// BenchmarkFloorAESGCM is the encryption of one SRTP packet of 1,200
// bytes (12 of header, authenticated; 1,188 of payload, encrypted) with
// AEAD_AES_128_GCM, the profile the fan-out prefers: crypto/cipher's Seal
// alone, and with what pion's SRTP session does around it for each
// packet (gcmWriter.seal: a pooled buffer, a lock, the header marshalled,
// the IV). ns/op is per packet.
func BenchmarkFloorAESGCM(b *testing.B) {
	payload := make([]byte, 1188)
	hdr := rtp.Header{Version: 2, PayloadType: 102, SequenceNumber: 1, Timestamp: 90000, SSRC: 1000}
	w := newGCMWriter(b, nil, nil)
	b.Run("seal", func(b *testing.B) {
		var out [1500]byte
		n, _ := hdr.MarshalTo(out[:])
		nonce := make([]byte, w.aead.NonceSize())
		b.SetBytes(int64(n + len(payload)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			nonce[11] = byte(i)
			w.aead.Seal(out[n:n], nonce, payload, out[:n])
		}
	})
	b.Run("srtp", func(b *testing.B) {
		b.SetBytes(int64(12 + len(payload)))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			hdr.SequenceNumber = uint16(i)
			ibuf := gcmBuffers.Get()
			if _, err := w.seal(ibuf.([]byte), &hdr, payload); err != nil {
				b.Fatal(err)
			}
			gcmBuffers.Put(ibuf)
		}
	})
}

// gcmBuffers are the buffers gcmWriters encrypt into, as pion's SRTP
// session's pool.
var gcmBuffers = sync.Pool{New: func() any { return make([]byte, 1492) }}

// gcmWriter stands in for a viewer's pion SRTP session (its WriteRTP with
// AEAD_AES_128_GCM), down to the socket, without pion's RTPSender, DTLS
// and ICE layers: for each packet a buffer from a pool, under the
// session's lock the header marshalled into it and the payload sealed
// after it (the header as associated data, the IV of RFC 7714 from the
// salt, SSRC, rollover counter and sequence number), then the packet
// written to the fan-out's socket, addressed to the viewer, as pion's ICE
// UDP mux writes it. (pion's own path also allocates its IV, 16 bytes.)
type gcmWriter struct {
	conn *udpbatch.Conn
	addr *net.UDPAddr

	mu   sync.Mutex
	aead cipher.AEAD
	salt [12]byte
}

func newGCMWriter(tb testing.TB, conn *udpbatch.Conn, addr *net.UDPAddr) *gcmWriter {
	tb.Helper()
	key := make([]byte, 16)
	for i := range key {
		key[i] = byte(i * 7)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		tb.Fatal(err)
	}
	w := &gcmWriter{conn: conn, addr: addr, aead: aead}
	copy(w.salt[:], "salt of test")
	return w
}

// seal writes the SRTP packet of h and payload into buf and returns it.
func (w *gcmWriter) seal(buf []byte, h *rtp.Header, payload []byte) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := h.MarshalTo(buf)
	if err != nil {
		return nil, err
	}
	var iv [12]byte
	binary.BigEndian.PutUint32(iv[2:], h.SSRC)
	binary.BigEndian.PutUint16(iv[10:], h.SequenceNumber) // rollover counter 0
	for i := range iv {
		iv[i] ^= w.salt[i]
	}
	ct := w.aead.Seal(buf[n:n], iv[:], payload, buf[:n])
	return buf[:n+len(ct)], nil
}

func (w *gcmWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	ibuf := gcmBuffers.Get()
	defer gcmBuffers.Put(ibuf)
	pkt, err := w.seal(ibuf.([]byte), h, payload)
	if err != nil {
		return 0, err
	}
	return w.conn.WriteTo(pkt, w.addr)
}

// Write takes the viewer's RTCP (none is sent here).
func (w *gcmWriter) Write(b []byte) (int, error) { return len(b), nil }

// TestFloorReceivers is the receivers' process of BenchmarkWriterToSocket
// when LS_FLOOR_RECEIVERS is set (otherwise it skips): it opens that many
// loopback UDP sockets, prints their ports, and reads them until its
// standard input closes. Out of the benchmark's process, their reads are
// not in its CPU time.
func TestFloorReceivers(t *testing.T) {
	n, err := strconv.Atoi(os.Getenv("LS_FLOOR_RECEIVERS"))
	if err != nil {
		t.Skip("the receivers' process of BenchmarkWriterToSocket")
	}
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadBuffer(4 << 20)
		defer c.Close()
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
		fmt.Printf("port %d\n", c.LocalAddr().(*net.UDPAddr).Port)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// receiverProcess starts n receivers in a process of their own (this test
// binary running TestFloorReceivers) and returns their addresses.
func receiverProcess(tb testing.TB, n int) []*net.UDPAddr {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloorReceivers$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LS_FLOOR_RECEIVERS="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	var addrs []*net.UDPAddr
	sc := bufio.NewScanner(stdout)
	for len(addrs) < n && sc.Scan() {
		if port, ok := strings.CutPrefix(sc.Text(), "port "); ok {
			p, err := strconv.Atoi(port)
			if err != nil {
				tb.Fatal(err)
			}
			addrs = append(addrs, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(p))))
		}
	}
	if len(addrs) < n {
		tb.Fatalf("the receivers' process gave %d addresses of %d: %v", len(addrs), n, sc.Err())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return addrs
}

// secondOf is a second of a stream as the hub sends it, in the bursts
// the writers get: 30 frames, a keyframe (SPS, PPS, 40 packets) then 29
// of 7 packets (6 full-size), and 50 audio packets, each alone, in the
// order of their times (frames every 33 ms, audio every 20 ms): 295
// packets in 80 bursts.
func secondOf(src *burstSource) [][]*relay.Packet {
	var bursts [][]*relay.Packet
	for v, a := 0, 0; v < 30 || a < 50; {
		if v < 30 && (a == 50 || v*50 <= a*30) {
			if v == 0 {
				bursts = append(bursts, src.frame(40*1186-400, true))
			} else {
				bursts = append(bursts, src.frame(6*1186+500, false))
			}
			v++
		} else {
			bursts = append(bursts, []*relay.Packet{src.audio()})
			a++
		}
	}
	return bursts
}

// BenchmarkWriterToSocket is the writers' whole cost per packet to a
// viewer, but for pion's RTPSender, DTLS and ICE layers: the channel's
// cache and queues, the writers, pion's SRTP (AEAD_AES_128_GCM) for each
// viewer, the batch and sendmmsg to loopback receivers in another
// process. Seconds of a stream (secondOf) go burst by burst (a frame,
// or an audio packet), each sent to every viewer before the next is
// written, as bursts 13-20 ms apart are. op is a packet delivered to a viewer: ns/op is wall time
// (the writers run on every core), cpu-ns/delivery the process's CPU
// time, which on loopback holds the kernel's delivery into the
// receivers' sockets but not their reads. With srtp=none the viewers'
// writers only marshal and add a zero tag (sockWriter).
func BenchmarkWriterToSocket(b *testing.B) {
	for _, bc := range []struct {
		viewers int
		srtp    bool
	}{{64, true}, {64, false}, {16, true}} {
		name := fmt.Sprintf("viewers=%d/srtp=%v", bc.viewers, bc.srtp)
		if !bc.srtp {
			name = fmt.Sprintf("viewers=%d/srtp=none", bc.viewers)
		}
		b.Run(name, func(b *testing.B) {
			f, err := New(Config{UDPAddr: "127.0.0.1:0", Logger: testLogger()}, newFakeUpstream())
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			for i, addr := range receiverProcess(b, bc.viewers) {
				var w interface {
					WriteRTP(*rtp.Header, []byte) (int, error)
					Write([]byte) (int, error)
				} = &sockWriter{conn: f.conn, addr: addr}
				if bc.srtp {
					w = newGCMWriter(b, f.conn, addr)
				}
				v := addFakeViewer(b, f, fmt.Sprint("v", i), w)
				f.conn.Route(addr.AddrPort(), v.w.batch)
			}
			awaitWriters(b, f, bc.viewers)
			src := &burstSource{vseq: 1000, vts: 90000, aseq: 5000, ats: 48000}
			var want uint64
			// One second of packets, renumbered as a second more each
			// time (made once: the benchmark measures no source).
			bursts := secondOf(src)
			var videoPkts uint16
			for _, burst := range bursts {
				for _, p := range burst {
					if p.Track == relaywire.Video {
						videoPkts++
					}
				}
			}
			second := func() {
				for _, burst := range bursts {
					for _, p := range burst {
						f.WriteRTP(p)
					}
					want += uint64(len(burst) * bc.viewers)
					for f.conn.Stats().Datagrams < want {
						time.Sleep(100 * time.Microsecond)
					}
				}
				for _, burst := range bursts {
					for _, p := range burst {
						if p.Track == relaywire.Video {
							p.Seq += videoPkts
							p.Timestamp += 90000
						} else {
							p.Seq += 50
							p.Timestamp += 48000
						}
					}
				}
			}
			second() // the viewers start at its keyframe
			s0 := f.conn.Stats()
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			cpu0, want0 := processCPU(), want
			b.ResetTimer()
			for want-want0 < uint64(b.N) {
				second()
			}
			b.StopTimer()
			cpu := (processCPU() - cpu0).Nanoseconds()
			runtime.ReadMemStats(&m1)
			s := f.conn.Stats()
			if st := f.Stats(); st.QueueDrops != 0 || st.CacheMisses != 0 || s.Errors != 0 {
				b.Fatalf("dropped %d, missed %d, send errors %d", st.QueueDrops, st.CacheMisses, s.Errors)
			}
			// Per delivery: the loop delivered whole seconds, b.N or a
			// few more.
			delivered := float64(want - want0)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/delivered, "ns/op")
			b.ReportMetric(float64(cpu)/delivered, "cpu-ns/delivery")
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/delivered, "allocs/delivery")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/delivered, "B/delivery")
			dg, calls := s.Datagrams-s0.Datagrams, s.Calls-s0.Calls
			b.ReportMetric(float64(dg)/float64(max(calls, 1)), "datagrams/call")
			b.ReportMetric(100*float64(s.Segmented-s0.Segmented)/float64(max(dg, 1)), "%segmented")
			b.ReportMetric(float64(s.Messages-s0.Messages)/float64(max(dg, 1))*1000, "messages/kdatagram")
		})
	}
}
