package ftl

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func rtpBytes(t testing.TB, ssrc uint32, pt uint8, seq uint16, ts uint32, marker bool, payload []byte) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc, Marker: marker}, Payload: payload}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ftlPing is an FTL media ping as the SDK sends it on 64-bit Linux.
func ftlPing() []byte {
	b := make([]byte, 24)
	b[0], b[1], b[2], b[3] = 0x81, 0xFA, 0, 24
	copy(b[8:], "timeval.")
	return b
}

// udpFrom opens a UDP socket on ip that talks to the server's media port.
func udpFrom(t *testing.T, s *testServer, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, s.MediaAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *net.UDPConn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// barrier sends a ping from c and waits for its echo: the server reads its
// socket in order, so everything sent before has been handled.
func barrier(t *testing.T, c *net.UDPConn) {
	t.Helper()
	p := ftlPing()
	send(t, c, p)
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no ping echo: %v", err)
		}
		if bytes.Equal(buf[:n], p) {
			return
		}
	}
}

var (
	idrPayload = []byte{0x65, 0x88, 0x84, 0x00, 0x10}
	sliceBytes = []byte{0x41, 0x9a, 0x00, 0x10}
	opusBytes  = []byte{0xfc, 0xff, 0xfe}
)

func TestMediaFromOtherSourcesNeverReachesTheHub(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	c.publish(77, testSecret, sdkAttributes)
	h := s.hubs.Get(77)
	rejected := func(reason string) float64 { return testutil.ToFloat64(s.metrics.rejected.WithLabelValues(reason)) }

	pub := udpFrom(t, s, "127.0.0.1")
	send(t, pub, rtpBytes(t, 78, 96, 100, 0, true, idrPayload))
	barrier(t, pub)
	if got := h.Stats().PacketsIn; got != 1 {
		t.Fatalf("the publisher's first packet: hub got %d packets, want 1", got)
	}

	otherIP := udpFrom(t, s, "127.0.0.2")
	send(t, otherIP, rtpBytes(t, 78, 96, 101, 3000, true, sliceBytes))
	otherPort := udpFrom(t, s, "127.0.0.1")
	send(t, otherPort, rtpBytes(t, 78, 96, 101, 3000, true, sliceBytes))
	send(t, pub, rtpBytes(t, 4242, 96, 101, 3000, true, sliceBytes))     // unknown SSRC
	send(t, pub, rtpBytes(t, 78, 100, 101, 3000, true, sliceBytes))      // wrong payload type
	send(t, pub, []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}) // not RTP
	send(t, otherIP, ftlPing())
	barrier(t, pub)

	if got := h.Stats().PacketsIn; got != 1 {
		t.Fatalf("spoofed packets reached the hub: %d packets, want 1", got)
	}
	for reason, want := range map[string]float64{"wrong_ip": 1, "wrong_port": 1, "unknown_ssrc": 1, "wrong_payload_type": 1, "not_rtp": 1, "unknown_source": 1} {
		if got := rejected(reason); got != want {
			t.Errorf("rejected{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	// The publisher's own next packet still goes through.
	send(t, pub, rtpBytes(t, 78, 96, 101, 3000, true, sliceBytes))
	barrier(t, pub)
	if got := h.Stats().PacketsIn; got != 2 {
		t.Fatalf("hub got %d packets, want 2", got)
	}
}

// Media of a registered session that has not begun (the server has not
// replied to "." yet) is dropped and counted, and flows once it begins.
func TestMediaBeforeTheStreamBeginsIsDropped(t *testing.T) {
	s := startServer(t, Config{})
	pub := udpFrom(t, s, "127.0.0.1")
	ctl := &control{srv: s.Server, conn: discardConn{}, remote: netip.MustParseAddrPort("127.0.0.1:1")}
	sess := newSession(s.Server, ctl, 77, netip.MustParseAddr("127.0.0.1"))
	sess.video = trackState{enabled: true, pt: 96, ssrc: 78}
	sess.audio = trackState{enabled: true, pt: 97, ssrc: 77}
	if err := s.claim(sess); err != nil {
		t.Fatal(err)
	}
	if err := s.register(sess); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.end("test over", 0) })

	send(t, pub, rtpBytes(t, 78, 96, 100, 0, true, idrPayload))
	barrier(t, pub)
	if got := testutil.ToFloat64(s.metrics.rejected.WithLabelValues("not_started")); got != 1 {
		t.Fatalf("rejected{reason=not_started} = %v, want 1", got)
	}
	if h := s.hubs.Get(77); h != nil && h.Stats().PacketsIn != 0 {
		t.Fatalf("hub got %d packets before the stream began", h.Stats().PacketsIn)
	}

	sess.begin()
	send(t, pub, rtpBytes(t, 78, 96, 101, 3000, true, sliceBytes))
	barrier(t, pub)
	if got := s.hubs.Get(77).Stats().PacketsIn; got != 1 {
		t.Fatalf("hub got %d packets after the stream began, want 1", got)
	}
}

func TestSpeedTestAudioIsDroppedUntilTheFirstVideoPacket(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	c.publish(77, testSecret, sdkAttributes)
	h := s.hubs.Get(77)
	pub := udpFrom(t, s, "127.0.0.1")
	garbage := bytes.Repeat([]byte{0xAB}, 1392)
	for i := range 20 {
		send(t, pub, rtpBytes(t, 77, 97, uint16(i), 0, false, garbage))
	}
	barrier(t, pub)
	if got := h.Stats().PacketsIn; got != 0 {
		t.Fatalf("speed test reached the hub: %d packets", got)
	}
	send(t, pub, rtpBytes(t, 78, 96, 0, 0, true, idrPayload))
	send(t, pub, rtpBytes(t, 77, 97, 0, 0, false, opusBytes))
	barrier(t, pub)
	if got := h.Stats().PacketsIn; got != 2 {
		t.Fatalf("after the first video packet: %d packets in the hub, want 2", got)
	}
}

func TestGapsAreNACKedToThePublisher(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	c.publish(77, testSecret, sdkAttributes)
	pub := udpFrom(t, s, "127.0.0.1")
	send(t, pub, rtpBytes(t, 78, 96, 65534, 0, true, idrPayload))
	send(t, pub, rtpBytes(t, 78, 96, 2, 3000, true, sliceBytes)) // 65535, 0, 1 missing
	buf := make([]byte, 1500)
	_ = pub.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := pub.Read(buf)
	if err != nil {
		t.Fatalf("no NACK: %v", err)
	}
	var nack = buf[:n]
	if nack[0]&0x1f != 1 || nack[1] != 205 {
		t.Fatalf("not a generic NACK: % x", nack)
	}
	if ssrc := uint32(nack[8])<<24 | uint32(nack[9])<<16 | uint32(nack[10])<<8 | uint32(nack[11]); ssrc != 78 {
		t.Fatalf("NACK media SSRC %d, want 78", ssrc)
	}
	if pid, blp := uint16(nack[12])<<8|uint16(nack[13]), uint16(nack[14])<<8|uint16(nack[15]); pid != 65535 || blp != 0b11 {
		t.Fatalf("NACK asks pid %d blp %b, want 65535 and 0b11", pid, blp)
	}
}

// FuzzHandleMedia feeds arbitrary datagrams, from the publisher's address
// and from others, to a live session: nothing panics and the hub only ever
// sees packets of the negotiated SSRCs.
func FuzzHandleMedia(f *testing.F) {
	f.Add(rtpBytes(f, 78, 96, 1, 0, true, idrPayload), true)
	f.Add(rtpBytes(f, 77, 97, 1, 0, false, opusBytes), true)
	f.Add(ftlPing(), true)
	f.Add([]byte{0x80, 0xC8, 0x00, 0x06, 0, 0, 0, 78, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, true)
	f.Add([]byte{0x81, 0xCD, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 78, 0, 1, 0, 0}, false)
	f.Add(rtpBytes(f, 78, 96, 1, 0, true, []byte{0x7c, 0x85, 1, 2, 3}), false)
	s := NewServer(Config{}, staticKeys{77: testSecret}, nil)
	s.hubs = newFuzzHubs()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer uc.Close()
	s.media = uc
	pub := netip.MustParseAddrPort("127.0.0.1:40000")
	sess := newSession(s, &control{srv: s, conn: discardConn{}}, 77, pub.Addr())
	sess.video = trackState{enabled: true, pt: 96, ssrc: 78}
	sess.audio = trackState{enabled: true, pt: 97, ssrc: 77}
	if err := s.register(sess); err != nil {
		f.Fatal(err)
	}
	claim, err := s.hubs.Claim(77)
	if err != nil {
		f.Fatal(err)
	}
	sess.pub, sess.started = claim, time.Now()
	var pkt rtp.Packet
	f.Fuzz(func(t *testing.T, b []byte, fromPublisher bool) {
		from := netip.MustParseAddrPort("127.0.0.9:5000")
		if fromPublisher {
			from = pub
		}
		s.handleMedia(b, from, &pkt, time.Now())
		sess.mu.Lock()
		sess.sendNACKs(time.Now())
		sess.mu.Unlock()
	})
}
