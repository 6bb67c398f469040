package app

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/testmedia"
)

const testKey = "77-e2esecretkey"

// testLog sends a gateway's logs to the test's log, shown when it fails.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// testConfig is a gateway on loopback with ephemeral ports.
func testConfig(t *testing.T) Config {
	return Config{
		FTLAddr:      "127.0.0.1:0",
		FTLMediaAddr: "127.0.0.1:0",
		HTTPAddr:     "127.0.0.1:0",
		RelayAddr:    "127.0.0.1:0",
		WHIPUDPAddr:  "127.0.0.1:0",
		DataDir:      t.TempDir(),
		StreamKey:    testKey,
		// Generous, so a retransmission under -race on a busy machine still
		// arrives in time; the loss test proves recovery, not speed.
		HubMaxHold: 500 * time.Millisecond,
		LogLevel:   "info",
	}
}

// startGateway runs a gateway until the test ends.
func startGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, keys.NewStatic(k), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g
}

// collector keeps copies of everything a hub subscription delivers.
type collector struct {
	mu      sync.Mutex
	packets []rtp.Packet
	changed chan struct{}
	hub     *hub.Hub
}

func collect(t *testing.T, h *hub.Hub) *collector {
	t.Helper()
	sub := h.Subscribe(hub.SubscribeOptions{Capacity: 8192})
	c := &collector{changed: make(chan struct{}, 1), hub: h}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := sub.Next(ctx)
			if err != nil {
				return
			}
			if len(p.Data) > hub.MaxPacketSize {
				t.Errorf("hub packet of %d bytes", len(p.Data))
			}
			var pkt rtp.Packet
			if err := pkt.Unmarshal(bytes.Clone(p.Data)); err != nil {
				t.Errorf("hub packet: %v", err)
				continue
			}
			c.mu.Lock()
			c.packets = append(c.packets, pkt)
			c.mu.Unlock()
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; sub.Close() })
	return c
}

// media splits what was collected into NAL units and Opus packets.
func (c *collector) media(t *testing.T) (nals, opus [][]byte, video, audio []rtp.Packet) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var depack codecs.H264Packet
	for _, p := range c.packets {
		switch p.PayloadType {
		case 96:
			video = append(video, p)
			out, err := depack.Unmarshal(p.Payload)
			if err != nil {
				t.Fatalf("depacketize seq %d: %v", p.SequenceNumber, err)
			}
			for _, n := range bytes.Split(out, []byte{0, 0, 0, 1}) {
				if len(n) > 0 {
					nals = append(nals, n)
				}
			}
		case 97:
			audio = append(audio, p)
			opus = append(opus, p.Payload)
		default:
			t.Fatalf("payload type %d out of the hub", p.PayloadType)
		}
	}
	return nals, opus, video, audio
}

// waitFor waits until the collector holds at least want NAL units and
// Opus packets, or fails after a generous bound.
func (c *collector) waitFor(t *testing.T, wantNALs, wantOpus int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		nals, opus, _, _ := c.media(t)
		if len(nals) >= wantNALs && len(opus) >= wantOpus {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			t.Fatalf("got %d NAL units and %d Opus packets, want %d and %d; hub %+v", len(nals), len(opus), wantNALs, wantOpus, c.hub.Stats())
		}
	}
}

func sourceMedia(t *testing.T) (nals, opus [][]byte) {
	t.Helper()
	nals, err := testmedia.NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	opus, err = testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	return nals, opus
}

// publish streams the test media once with the FTL SDK's behaviour.
func publish(t *testing.T, addr string, loops int) *ftlclient.Conn {
	t.Helper()
	nals, opus := sourceMedia(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: addr, StreamKey: testKey, SpeedTest: 200 * time.Millisecond, Rate: 4})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if err := conn.Stream(ctx, nals, opus, loops); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return conn
}

func equalUnits(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d units, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: unit %d differs (%d bytes, want %d)", what, i, len(got[i]), len(want[i]))
		}
	}
}

// checkContinuous fails unless every track's output sequence numbers
// follow each other with no gap and no repeat, and timestamps never go
// back.
func checkContinuous(t *testing.T, what string, pkts []rtp.Packet) {
	t.Helper()
	for i := 1; i < len(pkts); i++ {
		if pkts[i].SequenceNumber != pkts[i-1].SequenceNumber+1 {
			t.Fatalf("%s: seq %d after %d", what, pkts[i].SequenceNumber, pkts[i-1].SequenceNumber)
		}
		if int32(pkts[i].Timestamp-pkts[i-1].Timestamp) < 0 {
			t.Fatalf("%s: timestamp %d after %d", what, pkts[i].Timestamp, pkts[i-1].Timestamp)
		}
		if pkts[i].SSRC != pkts[0].SSRC {
			t.Fatalf("%s: SSRC changed", what)
		}
	}
}

func TestFTLSendThroughTheHubDeliversTheSourceExactly(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := collect(t, g.Hubs().GetOrCreate(77))
	conn := publish(t, g.FTLAddr().String(), 1)
	if err := conn.Disconnect(); err != nil {
		t.Fatal(err)
	}
	wantNALs, wantOpus := sourceMedia(t)
	c.waitFor(t, len(wantNALs), len(wantOpus))
	nals, opus, video, audio := c.media(t)
	equalUnits(t, "H.264", nals, wantNALs)
	equalUnits(t, "Opus", opus, wantOpus)
	checkContinuous(t, "video", video)
	checkContinuous(t, "audio", audio)
	waitUntil(t, "the stream ends", func() bool { return !g.Hubs().Get(77).Stats().Live })
	st := g.Hubs().Get(77).Stats()
	if st.Width != testmedia.Width || st.Height != testmedia.Height {
		t.Fatalf("stats after the stream: %dx%d live=%v", st.Width, st.Height, st.Live)
	}
}

// lossyProxy sits between the publisher and the media socket and drops the
// first copy of some video packets; the retransmission passes.
type lossyProxy struct {
	conn    *net.UDPConn
	target  *net.UDPAddr
	mu      sync.Mutex
	dropped map[uint16]bool
	drops   int
}

func startLossyProxyAt(t *testing.T, front *net.UDPConn, target *net.UDPAddr, drop func(seq uint16) bool) *lossyProxy {
	t.Helper()
	p := &lossyProxy{conn: front, target: target, dropped: map[uint16]bool{}}
	back, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, target)
	if err != nil {
		t.Fatal(err)
	}
	var client *net.UDPAddr
	var cmu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // publisher → gateway
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			b := buf[:n]
			if n >= 12 && b[0]>>6 == 2 && b[1]&0x7f == 96 {
				seq := uint16(b[2])<<8 | uint16(b[3])
				p.mu.Lock()
				first := !p.dropped[seq]
				if first && drop(seq) {
					p.dropped[seq] = true
					p.drops++
					p.mu.Unlock()
					continue
				}
				p.mu.Unlock()
			}
			back.Write(b)
		}
	}()
	go func() { // gateway → publisher (NACKs, ping echoes)
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			to := client
			cmu.Unlock()
			if to != nil {
				front.WriteToUDP(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close(); wg.Wait() })
	return p
}

func TestPublisherLossIsRecoveredByNACK(t *testing.T) {
	cfg := testConfig(t)
	// The publisher is told to send to the proxy.
	proxyPort := reservePort(t)
	cfg.FTLAnnouncePort = proxyPort.LocalAddr().(*net.UDPAddr).Port
	g := startGateway(t, cfg)
	proxy := startLossyProxyAt(t, proxyPort, g.FTLMediaAddr().(*net.UDPAddr), func(seq uint16) bool { return seq%37 == 5 })
	c := collect(t, g.Hubs().GetOrCreate(77))
	conn := publish(t, g.FTLAddr().String(), 1)
	wantNALs, wantOpus := sourceMedia(t)
	c.waitFor(t, len(wantNALs), len(wantOpus))
	if err := conn.Disconnect(); err != nil {
		t.Fatal(err)
	}
	nals, opus, video, _ := c.media(t)
	equalUnits(t, "H.264", nals, wantNALs)
	equalUnits(t, "Opus", opus, wantOpus)
	checkContinuous(t, "video", video)
	st := g.Hubs().Get(77).Stats()
	proxy.mu.Lock()
	drops := proxy.drops
	proxy.mu.Unlock()
	if drops == 0 || st.NACKsSent == 0 || st.Recovered < uint64(drops) || st.Lost != 0 {
		t.Fatalf("dropped %d; hub: nacks %d, recovered %d, lost %d", drops, st.NACKsSent, st.Recovered, st.Lost)
	}
	if s := conn.Stats(); s.Retransmits < uint64(drops) {
		t.Fatalf("publisher retransmitted %d packets for %d drops", s.Retransmits, drops)
	}
}

// reservePort finds a free UDP port on loopback for the proxy.
func reservePort(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPublisherReconnectKeepsTheOutputContinuous(t *testing.T) {
	g := startGateway(t, testConfig(t))
	c := collect(t, g.Hubs().GetOrCreate(77))
	first := publish(t, g.FTLAddr().String(), 1)
	first.Disconnect()
	wantNALs, wantOpus := sourceMedia(t)
	c.waitFor(t, len(wantNALs), len(wantOpus))
	// The second session crashes instead of saying goodbye.
	second := publish(t, g.FTLAddr().String(), 1)
	c.waitFor(t, 2*len(wantNALs), 2*len(wantOpus))
	second.Close()
	nals, opus, video, audio := c.media(t)
	equalUnits(t, "H.264", nals, append(append([][]byte{}, wantNALs...), wantNALs...))
	equalUnits(t, "Opus", opus, append(append([][]byte{}, wantOpus...), wantOpus...))
	checkContinuous(t, "video", video)
	checkContinuous(t, "audio", audio)
	if st := g.Hubs().Get(77).Stats(); st.Publishes != 2 {
		t.Fatalf("publishes %d, want 2", st.Publishes)
	}
}
