package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	fnrelay "lightspeed/function/relay"
	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

const testSecret = "correct horse battery staple"

// quiet is the logger of the tests; LS_TEST_LOG=1 shows the logs.
func quiet() *slog.Logger {
	if os.Getenv("LS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// waitFor polls cond every 5 ms for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testCert is the relay certificate of the tests, created once.
var testCert = sync.OnceValue(func() tls.Certificate {
	dir, err := os.MkdirTemp("", "relay-cert")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cert, err := LoadOrCreateCert(dir)
	if err != nil {
		panic(err)
	}
	return cert
})

// gateway is a running Server with its hubs.
type gateway struct {
	*Server
	hubs *hub.Registry
	stop func() // cancels Serve and waits for it
}

// startGateway serves a relay on addr ("" for a free loopback port).
func startGateway(t testing.TB, addr string, hubs *hub.Registry, tweak ...func(*Server)) *gateway {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if hubs == nil {
		hubs = hub.NewRegistry(hub.Options{Logger: quiet()})
		t.Cleanup(hubs.Close)
	}
	s := NewServer(Config{Addr: addr, Secret: testSecret, Cert: testCert(), Logger: quiet()}, hubs)
	for _, f := range tweak {
		f(s)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	g := &gateway{Server: s, hubs: hubs}
	g.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(g.stop)
	return g
}

// edge is a running relay client (a function) with its recording handler.
type edge struct {
	*fnrelay.Client
	h    *recorder
	stop func() // cancels Run and waits for it
}

// clientConfig is a client configuration that reaches g.
func clientConfig(g *gateway, machine string) fnrelay.Config {
	return fnrelay.Config{
		GatewayAddr: g.Addr().String(),
		Secret:      testSecret,
		Fingerprint: Fingerprint(testCert()),
		Region:      "ams",
		MachineID:   machine,
		MediaAddr:   "203.0.113.7:8189",
		Capacity:    100,
		Logger:      quiet(),
	}
}

// startFunction runs a client with cfg and a new recorder.
func startFunction(t testing.TB, cfg fnrelay.Config) *edge {
	t.Helper()
	c := fnrelay.NewClient(cfg)
	h := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, h) }()
	var once sync.Once
	f := &edge{Client: c, h: h}
	f.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

// recorder is a Handler that records what it is given.
type recorder struct {
	load atomic.Pointer[relaywire.Load]

	mu    sync.Mutex
	pkts  map[relaywire.Flow][][]byte // copies, in arrival order
	count atomic.Int64

	startMu    sync.Mutex
	start      func(ctx context.Context, session string, channel uint32, offer string) (string, string, error)
	answers    chan [2]string // session, sdp
	candidates chan relaywire.Candidate
	closed     chan [2]string // session, reason
}

func newRecorder() *recorder {
	r := &recorder{
		pkts:       make(map[relaywire.Flow][][]byte),
		answers:    make(chan [2]string, 16),
		candidates: make(chan relaywire.Candidate, 16),
		closed:     make(chan [2]string, 16),
	}
	r.load.Store(&relaywire.Load{})
	return r
}

// WriteRTP keeps a copy of p as an RTP packet: a 12-byte header with
// its marker, sequence number and timestamp (payload type and SSRC 0),
// then its payload.
func (r *recorder) WriteRTP(p *fnrelay.Packet) {
	pkt := make([]byte, 12, 12+len(p.Payload))
	pkt[0] = 0x80
	if p.Marker {
		pkt[1] = 0x80
	}
	binary.BigEndian.PutUint16(pkt[2:], p.Seq)
	binary.BigEndian.PutUint32(pkt[4:], p.Timestamp)
	pkt = append(pkt, p.Payload...)
	r.mu.Lock()
	f := relaywire.FlowOf(p.Channel, p.Track)
	r.pkts[f] = append(r.pkts[f], pkt)
	r.mu.Unlock()
	r.count.Add(1)
}

// packets returns the packets of a flow received so far.
func (r *recorder) packets(f relaywire.Flow) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.pkts[f]...)
}

// onStart makes start answer StartSession.
func (r *recorder) onStart(start func(ctx context.Context, session string, channel uint32, offer string) (string, string, error)) {
	r.startMu.Lock()
	r.start = start
	r.startMu.Unlock()
}

func (r *recorder) StartSession(ctx context.Context, session string, channel uint32, offer, _ string) (string, string, error) {
	r.startMu.Lock()
	start := r.start
	r.startMu.Unlock()
	if start == nil {
		return "answer", "answer to " + offer, nil
	}
	return start(ctx, session, channel, offer)
}

func (r *recorder) SetLayer(string, string) error { return nil }

func (r *recorder) SetAnswer(session, sdp string) error {
	r.answers <- [2]string{session, sdp}
	return nil
}

func (r *recorder) AddCandidate(session string, c relaywire.Candidate) error {
	r.candidates <- c
	return nil
}

func (r *recorder) CloseSession(session, reason string) { r.closed <- [2]string{session, reason} }

func (r *recorder) Load() relaywire.Load { return *r.load.Load() }

// publisher writes synthetic RTP into a live hub. Every packet's payload
// carries its index, so loss and order can be checked.
type publisher struct {
	h   *hub.Hub
	pub *hub.Publisher
	seq [2]uint16
	ts  [2]uint32
}

// startPublishing makes channel live in hubs.
func startPublishing(hubs *hub.Registry, channel uint32) *publisher {
	pub, err := hubs.Claim(channel)
	if err != nil {
		panic(err) // each test starts each channel once
	}
	pub.Start(hub.PublisherInfo{Software: "test", Remote: "127.0.0.1:50000",
		VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97})
	return &publisher{h: pub.Hub(), pub: pub, seq: [2]uint16{1000, 5000}}
}

// write writes packet index i of track t, with size payload bytes (at
// least 3).
func (p *publisher) write(t hub.Track, i int, size int) {
	head := byte(0xfc) // an Opus TOC byte
	if t == hub.Video {
		head = 0x41 // a non-IDR slice
	}
	p.writeHead(t, i, size, head)
}

// keyframe writes an IDR slice carrying index i.
func (p *publisher) keyframe(i int, size int) { p.writeHead(hub.Video, i, size, 0x65) }

// writeHead writes a packet whose payload starts with head.
func (p *publisher) writeHead(t hub.Track, i int, size int, head byte) {
	payload := make([]byte, max(size, 3))
	payload[0] = head
	payload[1], payload[2] = byte(i>>8), byte(i)
	for k := 3; k < len(payload); k++ {
		payload[k] = byte(k + i)
	}
	pt, step := uint8(96), uint32(3000)
	if t == hub.Audio {
		pt, step = 97, 960
	}
	pkt := &rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: p.seq[t], Timestamp: p.ts[t], Marker: true, SSRC: 78},
		Payload: payload,
	}
	p.seq[t]++
	p.ts[t] += step
	p.pub.WriteRTP(t, pkt, time.Now())
}

// index returns the index a publisher packet carried (see write).
func index(rtpPacket []byte) int {
	return int(rtpPacket[12+1])<<8 | int(rtpPacket[12+2])
}

// checkGoroutines fails the test when, after it ended, goroutines it
// started are still running.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				var buf bytes.Buffer
				pprof.Lookup("goroutine").WriteTo(&buf, 1)
				t.Fatalf("%d goroutines running, %d before:\n%s", runtime.NumGoroutine(), before, buf.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// udpProxy forwards datagrams between one client and a server; Stall
// drops everything the server sends, as a congested path would.
type udpProxy struct {
	ln      *net.UDPConn // the client side
	up      *net.UDPConn // towards the server
	stalled atomic.Bool
	client  atomic.Pointer[net.UDPAddr]
	wg      sync.WaitGroup
}

func newUDPProxy(t testing.TB, server net.Addr) *udpProxy {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, server.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{ln: ln, up: up}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.client.Store(from)
			up.Write(buf[:n])
		}
	}()
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			if c := p.client.Load(); c != nil && !p.stalled.Load() {
				ln.WriteToUDP(buf[:n], c)
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		up.Close()
		p.wg.Wait()
	})
	return p
}

func (p *udpProxy) Addr() string { return p.ln.LocalAddr().String() }
