package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"

	fnrelay "lightspeed/function/relay"
	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
	"lightspeed/shared/testkit/lossy"
)

func TestFunctionWithTheSecretIsWelcomedWithItsHelloAndLoad(t *testing.T) {
	g := startGateway(t, "", nil)
	before := time.Now()
	f := startFunction(t, clientConfig(g, "machine-1"))
	f.h.load.Store(&relaywire.Load{Viewers: 3, EgressBps: 4.5e6, CPU: 0.25})

	waitFor(t, "the function's load report", func() bool {
		fns := g.Functions()
		return len(fns) == 1 && fns[0].Viewers == 3
	})
	got := g.Functions()[0]
	want := Function{ID: "machine-1", Region: "ams", MachineID: "machine-1", MediaAddr: "203.0.113.7:8189",
		Capacity: 100, Viewers: 3, EgressBps: 4.5e6, CPU: 0.25, Connected: got.Connected}
	if got != want {
		t.Errorf("Functions()[0] = %+v, want %+v", got, want)
	}
	if got.Connected.Before(before) || got.Connected.After(time.Now()) {
		t.Errorf("Connected %v outside the test", got.Connected)
	}
	if !f.Connected() {
		t.Error("client not Connected")
	}
	if n := testutil.ToFloat64(g.metrics.functions); n != 1 {
		t.Errorf("functions gauge %v, want 1", n)
	}
}

func TestFunctionsAreListedByIDAndLeaveWhenTheyDisconnect(t *testing.T) {
	g := startGateway(t, "", nil)
	b := startFunction(t, clientConfig(g, "b"))
	startFunction(t, clientConfig(g, "a"))
	anon := startFunction(t, clientConfig(g, ""))
	waitFor(t, "three functions", func() bool { return len(g.Functions()) == 3 })
	fns := g.Functions()
	if !slices.IsSortedFunc(fns, func(x, y Function) int { return strings.Compare(x.ID, y.ID) }) {
		t.Errorf("functions %v not sorted by ID", fns)
	}
	var anonID string
	for _, fn := range fns {
		if fn.MachineID == "" {
			anonID = fn.ID
		}
	}
	if len(anonID) != 16 {
		t.Errorf("function without machine id got id %q, want 16 hex characters", anonID)
	}
	b.stop()
	anon.stop()
	waitFor(t, "the stopped functions to leave", func() bool { return len(g.Functions()) == 1 })
	if n := testutil.ToFloat64(g.metrics.functions); n != 1 {
		t.Errorf("functions gauge %v, want 1", n)
	}
}

// rawDial connects to g with quic-go itself, as a function that does not
// follow the protocol would.
func rawDial(t *testing.T, g *gateway) *quic.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{relaywire.ALPN}}
	qc, err := quic.DialAddr(ctx, g.Addr().String(), tlsConf, &quic.Config{EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return qc
}

func TestConnectionsThatDoNotProveTheSecretAreRefusedAndGetNothing(t *testing.T) {
	write := func(t *testing.T, str *quic.Stream, m relaywire.Message) {
		t.Helper()
		if err := relaywire.WriteMessage(str, m); err != nil {
			t.Fatal(err)
		}
	}
	// challenge sends hello and returns the nonce of the answer.
	challenge := func(t *testing.T, str *quic.Stream, br *bufio.Reader) []byte {
		t.Helper()
		write(t, str, &relaywire.Hello{Version: relaywire.Version, MachineID: "intruder"})
		m, err := relaywire.ReadMessage(br)
		if err != nil {
			t.Fatal(err)
		}
		nonce, _ := hex.DecodeString(m.(*relaywire.Challenge).Nonce)
		return nonce
	}
	exporter := func(qc *quic.Conn) []byte {
		state := qc.ConnectionState().TLS
		b, err := state.ExportKeyingMaterial(relaywire.ExporterLabel, nil, relaywire.ExporterLength)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// oldVersion says hello with an older protocol version.
	oldVersion := func(v int) func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
		return func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			write(t, str, &relaywire.Hello{Version: v, MachineID: "old"})
			// The close's reason, which the function logs, names both; so
			// does the error message the gateway writes before closing,
			// which the function may read first.
			want := fmt.Sprintf("version %d, this gateway %d", v, relaywire.Version)
			m, err := relaywire.ReadMessage(br)
			if e, ok := m.(*relaywire.Error); ok && err == nil {
				if !strings.Contains(e.Message, want) {
					t.Fatalf("error message %q, want one naming both versions (%q)", e.Message, want)
				}
				m, err = relaywire.ReadMessage(br)
			}
			var ae *quic.ApplicationError
			if !errors.As(err, &ae) || !strings.Contains(ae.ErrorMessage, want) {
				t.Fatalf("answer to an old hello: %v %v, want a close naming both versions (%q)", m, err, want)
			}
		}
	}
	tests := []struct {
		name   string
		talk   func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader)
		code   quic.ApplicationErrorCode
		reason string
	}{
		{"subscribe instead of hello", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			write(t, str, &relaywire.Subscribe{Channel: 77})
		}, relaywire.CodeProtocol, "protocol"},
		{"garbage instead of hello", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			str.Write([]byte{0x05, 0x01, 'x', 'x', 'x', 'x'})
		}, relaywire.CodeProtocol, "protocol"},
		{"subscribe instead of auth", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			challenge(t, str, br)
			write(t, str, &relaywire.Subscribe{Channel: 77})
		}, relaywire.CodeProtocol, "protocol"},
		{"wrong secret", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			nonce := challenge(t, str, br)
			write(t, str, &relaywire.Auth{MAC: hex.EncodeToString(relaywire.AuthMAC("guess", exporter(qc), nonce))})
			relaywire.WriteMessage(str, &relaywire.Subscribe{Channel: 77}) // the gateway may have closed already
		}, relaywire.CodeUnauthorized, "bad_mac"},
		{"proof of another connection", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
			nonce := challenge(t, str, br)
			other := make([]byte, relaywire.ExporterLength)
			write(t, str, &relaywire.Auth{MAC: hex.EncodeToString(relaywire.AuthMAC(testSecret, other, nonce))})
			relaywire.WriteMessage(str, &relaywire.Subscribe{Channel: 77}) // the gateway may have closed already
		}, relaywire.CodeUnauthorized, "bad_mac"},
		{"silence", func(t *testing.T, qc *quic.Conn, str *quic.Stream, br *bufio.Reader) {
		}, relaywire.CodeUnauthorized, "timeout"},
		{"a function of relay protocol version 1", oldVersion(1), relaywire.CodeProtocol, "protocol"},
		// A version 2 gateway closes the connection on keyframe_request,
		// which version 3 added: the versions must match.
		{"a function of relay protocol version 2", oldVersion(2), relaywire.CodeProtocol, "protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := startGateway(t, "", nil)
			pub := startPublishing(g.hubs, 77)
			qc := rawDial(t, g)
			for i := range 10 { // datagrams before welcome are ignored
				qc.SendDatagram(relaywire.AppendDatagram(nil, relaywire.FlowOf(77, relaywire.Video), 0, make([]byte, 12+i)))
			}
			if tt.name != "silence" {
				str, err := qc.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				tt.talk(t, qc, str, bufio.NewReader(str))
			}
			for i := range 50 {
				pub.write(hub.Video, i, 100)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d, err := qc.ReceiveDatagram(ctx)
			if d != nil {
				t.Fatalf("received a datagram of %d bytes", len(d))
			}
			var ae *quic.ApplicationError
			if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != tt.code {
				t.Fatalf("connection ended with %v, want application error %#x from the gateway", err, tt.code)
			}
			if fns := g.Functions(); len(fns) != 0 {
				t.Errorf("Functions() = %v", fns)
			}
			if n := pub.h.Stats().Subscribers; n != 0 {
				t.Errorf("hub has %d subscribers", n)
			}
			if n := testutil.ToFloat64(g.metrics.authFailures.WithLabelValues(tt.reason)); n != 1 {
				t.Errorf("auth failures %q = %v, want 1", tt.reason, n)
			}
		})
	}
}

func TestFunctionWithAWrongSecretNeverAppears(t *testing.T) {
	g := startGateway(t, "", nil)
	startPublishing(g.hubs, 77)
	cfg := clientConfig(g, "m")
	cfg.Secret = "not the secret"
	f := startFunction(t, cfg)
	subscribed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, err := f.Subscribe(ctx, 77)
		subscribed <- err
	}()
	waitFor(t, "two refused attempts", func() bool { return f.Stats().ConnectFails >= 2 })
	if fns := g.Functions(); len(fns) != 0 {
		t.Errorf("Functions() = %v", fns)
	}
	if f.Connected() || f.Stats().Received != 0 {
		t.Errorf("refused client connected or received %d packets", f.Stats().Received)
	}
	if n := testutil.ToFloat64(g.metrics.authFailures.WithLabelValues("bad_mac")); n < 2 {
		t.Errorf("bad_mac failures %v, want >= 2", n)
	}
	cancel()
	if err := <-subscribed; err == nil {
		t.Error("Subscribe succeeded without a connection")
	}
}

func TestFunctionPinningAnotherCertificateRefusesToConnect(t *testing.T) {
	g := startGateway(t, "", nil)
	other, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientConfig(g, "m")
	cfg.Fingerprint = Fingerprint(other)
	f := startFunction(t, cfg)
	waitFor(t, "two failed attempts", func() bool { return f.Stats().ConnectFails >= 2 })
	if f.Connected() || len(g.Functions()) != 0 {
		t.Error("connected to a gateway with another certificate")
	}
	// The handshake failed on the function's side: the gateway never got
	// as far as authentication.
	if n := testutil.CollectAndCount(g.metrics.authFailures); n != 0 {
		t.Errorf("%d auth failure series on the gateway", n)
	}
}

func TestFunctionVerifiesTheGatewayWithACAFile(t *testing.T) {
	g := startGateway(t, "", nil)
	writePEM := func(cert tls.Certificate) string {
		path := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cfg := clientConfig(g, "trusting")
	cfg.Fingerprint, cfg.CAFile = "", writePEM(testCert())
	f := startFunction(t, cfg)
	waitFor(t, "the function to connect", f.Connected)

	other, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg = clientConfig(g, "distrusting")
	cfg.Fingerprint, cfg.CAFile = "", writePEM(other)
	d := startFunction(t, cfg)
	waitFor(t, "a failed attempt", func() bool { return d.Stats().ConnectFails >= 1 })
	if d.Connected() {
		t.Error("connected with an unrelated CA")
	}
}

func TestClientWithoutAWayToVerifyTheGatewayDoesNotRun(t *testing.T) {
	c := fnrelay.NewClient(fnrelay.Config{GatewayAddr: "127.0.0.1:1", Secret: "s", Logger: quiet()})
	if err := c.Run(context.Background(), newRecorder()); err == nil {
		t.Fatal("Run without fingerprint or CA returned nil")
	}
	c = fnrelay.NewClient(fnrelay.Config{GatewayAddr: "127.0.0.1:1", Secret: "s", Fingerprint: "abc", Logger: quiet()})
	if err := c.Run(context.Background(), newRecorder()); err == nil {
		t.Fatal("Run with a malformed fingerprint returned nil")
	}
}

// writeBatches writes n packets per track in batches, waiting after each
// batch until the function got all but the dropped ones: the pace keeps
// quic-go's 128-datagram receive queue from overflowing.
func writeBatches(t *testing.T, pub *publisher, f *edge, n, size int) {
	t.Helper()
	const batch = 20
	start := f.h.count.Load()
	for i := 0; i < n; i += batch {
		for k := i; k < min(i+batch, n); k++ {
			pub.write(hub.Video, k, size)
			pub.write(hub.Audio, k, size/4)
		}
		want := start + int64(2*min(i+batch, n))
		waitFor(t, "a batch to arrive", func() bool { return f.h.count.Load() >= want })
	}
}

func TestSubscribedChannelArrivesByteIdenticalInOrderUntilUnsubscribed(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	ref := pub.h.Subscribe(hub.SubscribeOptions{Capacity: 4096})
	defer ref.Close()
	f := startFunction(t, clientConfig(g, "m"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tracks, err := f.Subscribe(ctx, 77)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing was published yet: each track starts where the test's own
	// subscription does, at the hub's next packet.
	want := trackInfos(pub.h.Tracks(), ref)
	for i := range tracks {
		if tracks[i].FirstSeq == nil || want[i].FirstSeq == nil || *tracks[i].FirstSeq != *want[i].FirstSeq {
			t.Errorf("track %d: first_seq %v, want %d", i, tracks[i].FirstSeq, *want[i].FirstSeq)
		}
	}
	noFirst := func(ts []relaywire.TrackInfo) []relaywire.TrackInfo {
		ts = slices.Clone(ts)
		for i := range ts {
			ts[i].FirstSeq = nil
		}
		return ts
	}
	if !slices.Equal(noFirst(tracks), noFirst(want)) {
		t.Errorf("tracks %+v, want %+v", tracks, want)
	}
	if want[0].Flow != relaywire.FlowOf(77, relaywire.Video) || want[1].Codec != "OPUS" {
		t.Errorf("unexpected tracks %+v", want)
	}

	const n = 300
	writeBatches(t, pub, f, n, 1100)

	var sent [2][][]byte
	for range 2 * n {
		p, err := ref.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sent[p.Track] = append(sent[p.Track], bytes.Clone(p.Data))
	}
	for tr, flow := range []relaywire.Flow{relaywire.FlowOf(77, relaywire.Video), relaywire.FlowOf(77, relaywire.Audio)} {
		got := f.h.packets(flow)
		if len(got) != n {
			t.Fatalf("flow %d: %d packets, want %d", flow, len(got), n)
		}
		for i := range got {
			// Marker, sequence number, timestamp and payload as the hub sent them.
			if got[i][1]&0x80 != sent[tr][i][1]&0x80 || !bytes.Equal(got[i][2:8], sent[tr][i][2:8]) || !bytes.Equal(got[i][12:], sent[tr][i][12:]) {
				t.Fatalf("flow %d: packet %d differs from the hub's", flow, i)
			}
		}
		if seq := binary.BigEndian.Uint16(got[0][2:]); seq != *tracks[tr].FirstSeq {
			t.Errorf("flow %d: first packet %d, but subscribed said %d", flow, seq, *tracks[tr].FirstSeq)
		}
	}
	if n := testutil.ToFloat64(g.metrics.datagrams); n < 2*300 {
		t.Errorf("datagrams sent %v, want >= 600", n)
	}

	// Unsubscribe, then subscribe another channel: the gateway handles
	// both in order, so once 78 answers, 77 has no subscription left.
	pub78 := startPublishing(g.hubs, 78)
	f.Unsubscribe(77)
	if _, err := f.Subscribe(ctx, 78); err != nil {
		t.Fatal(err)
	}
	if n := pub.h.Stats().Subscribers; n != 1 {
		t.Errorf("channel 77 has %d subscribers after unsubscribe, want only the test's", n)
	}
	before := len(f.h.packets(relaywire.FlowOf(77, relaywire.Video)))
	for i := range 20 {
		pub.write(hub.Video, i, 100)
		pub78.write(hub.Video, i, 100)
	}
	waitFor(t, "channel 78", func() bool { return len(f.h.packets(relaywire.FlowOf(78, relaywire.Video))) == 20 })
	if after := len(f.h.packets(relaywire.FlowOf(77, relaywire.Video))); after != before {
		t.Errorf("%d packets of channel 77 after unsubscribe", after-before)
	}
}

func TestSubscribingAChannelWithoutStreamFails(t *testing.T) {
	g := startGateway(t, "", nil)
	f := startFunction(t, clientConfig(g, "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := f.Subscribe(ctx, 5)
	if err == nil || !strings.Contains(err.Error(), "channel 5 has no stream") {
		t.Fatalf("Subscribe = %v, want the gateway's error", err)
	}
}

func TestSubscriptionStartsAtTheLastKeyframe(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	pub.write(hub.Video, 0, 50) // before the keyframe: not sent
	pub.keyframe(1, 50)
	pub.write(hub.Video, 2, 50)
	pub.write(hub.Audio, 3, 50)
	f := startFunction(t, clientConfig(g, "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cached packets", func() bool { return f.h.count.Load() >= 3 })
	video := f.h.packets(relaywire.FlowOf(77, relaywire.Video))
	if len(video) != 2 || index(video[0]) != 1 || index(video[1]) != 2 {
		t.Errorf("video starts with %d packets, want indexes 1, 2", len(video))
	}
}

func TestPacerLetsABurstThroughThenSpacesDatagrams(t *testing.T) {
	var p pacer
	t0 := time.Unix(1_700_000_000, 0)
	interval := time.Second / paceRate
	for i := range paceBurst {
		if d := p.delay(t0); d != 0 {
			t.Fatalf("datagram %d of the burst waits %v", i, d)
		}
	}
	for i := 1; i <= 3; i++ {
		if d := p.delay(t0); d != time.Duration(i)*interval {
			t.Fatalf("datagram %d after the burst waits %v, want %v", i, d, time.Duration(i)*interval)
		}
	}
	// After a pause as long as the burst, a whole burst may go again.
	later := t0.Add((paceBurst + 3) * interval)
	for i := range paceBurst {
		if d := p.delay(later); d != 0 {
			t.Fatalf("after the pause, datagram %d waits %v", i, d)
		}
	}
	// A live stream slower than paceRate never waits.
	now := later.Add(time.Second)
	for range 1000 {
		now = now.Add(2 * interval)
		if d := p.delay(now); d != 0 {
			t.Fatalf("a datagram at half the rate waits %v", d)
		}
	}
}

func TestSubscriptionToALongKeyframeCacheDeliversAllOfIt(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	// Eight times what the function's datagram queue holds.
	const n = 1024
	pub.keyframe(0, 1100)
	for i := 1; i < n; i++ {
		pub.write(hub.Video, i, 1100)
		if i%5 == 0 {
			pub.write(hub.Audio, i/5, 200)
		}
	}
	f := startFunction(t, clientConfig(g, "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	// Sent at once, the cache would overflow the function's datagram
	// queue; paced, it arrives (and what is lost anyway is recovered).
	video := relaywire.FlowOf(77, relaywire.Video)
	deadline := time.Now().Add(10 * time.Second)
	for len(f.h.packets(video)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d of %d cached packets; stats %+v", len(f.h.packets(video)), n, f.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	seen := make(map[int]int)
	for _, p := range f.h.packets(video) {
		seen[index(p)]++
	}
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("video packet %d handed on %d times (stats %+v)", i, seen[i], f.Stats())
		}
	}
	t.Logf("stats %+v", f.Stats())
}

// lossyPath starts a forwarder to g that loses nothing until its rule is
// set, and a client config that dials g through it.
func lossyPath(t *testing.T, g *gateway, machine string) (*lossy.Forwarder, fnrelay.Config) {
	t.Helper()
	fwd, err := lossy.New(g.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	cfg := clientConfig(g, machine)
	cfg.GatewayAddr = fwd.Addr()
	return fwd, cfg
}

// media is the size band of the packets that carry the tests' datagrams
// (800 and 200 bytes of payload), below quic-go's MTU probes and above its
// acknowledgements: the packets a rule inside it drops are media lost.
const mediaLeast, mediaMost = 150, 1280

func TestRelayLossIsRecoveredByNACK(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	fwd, cfg := lossyPath(t, g, "lossy")
	f := startFunction(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}

	// Drop 5 % of the packets carrying media, chosen by a seeded PRNG:
	// after a drop the next `spacing` packets pass, then each is dropped
	// with probability 1/2 (18 + 2 = one in 20). The spacing is longer than
	// the distance between a drop and its retransmission under the pacing
	// below (at most one batch and a half), so every hole is recovered by
	// the first NACK.
	const spacing = 18
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(77, 5))
	calls, lastDrop, dropped := 0, 0, 0 // the first packets pass: a track's first loss is seen only after its first arrival
	fwd.SetRule(lossy.Sized(mediaLeast, mediaMost, func([]byte) bool {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls-lastDrop <= spacing || rng.IntN(2) != 0 {
			return false
		}
		lastDrop = calls
		dropped++
		return true
	}))

	video, audio := relaywire.FlowOf(77, relaywire.Video), relaywire.FlowOf(77, relaywire.Audio)
	// has reports whether the function got every index below n of both
	// tracks.
	has := func(n int) bool {
		for _, fl := range []relaywire.Flow{video, audio} {
			seen := make(map[int]bool)
			for _, p := range f.h.packets(fl) {
				seen[index(p)] = true
			}
			for i := range n {
				if !seen[i] {
					return false
				}
			}
		}
		return true
	}
	// Batches of 5 packets per track. After each, wait for all but its
	// last two packets: a lost packet is noticed only when a later one of
	// its track comes, and quic-go may pack the last video packet and the
	// last two audio packets of a batch into the one QUIC packet dropped
	// (two video packets do not fit in one). So each retransmission comes
	// at most one batch later.
	const n, batch = 400, 5
	for i := 0; i < n; i += batch {
		for k := i; k < i+batch; k++ {
			pub.write(hub.Video, k, 800)
			pub.write(hub.Audio, k, 200)
		}
		waitFor(t, "a batch", func() bool { return has(i + batch - 2) })
	}
	// A last batch, with nothing dropped, reveals the last holes; then
	// every packet comes, and every NACK sent reaches the gateway.
	fwd.SetRule(nil)
	for k := n; k < n+batch; k++ {
		pub.write(hub.Video, k, 800)
		pub.write(hub.Audio, k, 200)
	}
	waitFor(t, "every packet", func() bool { return has(n + batch) })
	waitFor(t, "every NACK counted", func() bool {
		return testutil.ToFloat64(g.metrics.nacks) == float64(f.Stats().NACKsSent)
	})
	for _, fl := range []relaywire.Flow{video, audio} {
		seen := make(map[int]int)
		for _, p := range f.h.packets(fl) {
			seen[index(p)]++
		}
		for i := range n {
			if seen[i] != 1 {
				t.Errorf("flow %d: packet %d handed on %d times", fl, i, seen[i])
			}
		}
	}

	mu.Lock()
	total, lost := calls, dropped
	mu.Unlock()
	if rate := float64(lost) / float64(total); rate < 0.03 || rate > 0.07 {
		t.Errorf("dropped %d of %d media packets (%.1f %%), want about 5 %%", lost, total, 100*rate)
	}
	st := f.Stats()
	t.Logf("dropped %d of %d media packets; function stats %+v", lost, total, st)
	if st.Recovered < uint64(lost)-2 || st.Lost < st.Recovered || st.NACKsSent < st.Recovered {
		t.Errorf("stats %+v after %d drops", st, lost)
	}
	if r := testutil.ToFloat64(g.metrics.retransmitted); r < float64(st.Recovered) {
		t.Errorf("retransmitted %v, want >= %d", r, st.Recovered)
	}
	if n := testutil.ToFloat64(g.metrics.nacks); n != float64(st.NACKsSent) {
		t.Errorf("gateway counted %v NACKed sequence numbers, function sent %d", n, st.NACKsSent)
	}
}

// TestASubscriptionsFirstPacketsLostAreRecovered: the first datagrams of a
// subscription (at a function's first viewer, the cached keyframe's SPS
// and IDR) are lost. The function could not know they were sent but for
// the first sequence numbers in the gateway's answer; it asks for them,
// and every packet arrives once.
func TestASubscriptionsFirstPacketsLostAreRecovered(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	fwd, cfg := lossyPath(t, g, "first-lost")
	f := startFunction(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	// The first four packets of media are lost: at least the first two
	// datagrams of each track, written alternately (a packet may carry
	// more than one).
	fwd.SetRule(lossy.Sized(mediaLeast, mediaMost, lossy.First(4)))
	const n = 20
	for k := range n {
		pub.write(hub.Video, k, 800)
		pub.write(hub.Audio, k, 200)
	}
	video, audio := relaywire.FlowOf(77, relaywire.Video), relaywire.FlowOf(77, relaywire.Audio)
	counts := func() [2]map[int]int {
		var seen [2]map[int]int
		for i, fl := range []relaywire.Flow{video, audio} {
			seen[i] = make(map[int]int)
			for _, p := range f.h.packets(fl) {
				seen[i][index(p)]++
			}
		}
		return seen
	}
	waitFor(t, "every packet", func() bool {
		seen := counts()
		return len(seen[0]) == n && len(seen[1]) == n
	})
	for tr, seen := range counts() {
		for i := range n {
			if seen[i] != 1 {
				t.Errorf("track %d: packet %d handed on %d times", tr, i, seen[i])
			}
		}
	}
	if d := fwd.Stats().Dropped; d != 4 {
		t.Errorf("forwarder dropped %d packets, want 4", d)
	}
	if st := f.Stats(); st.Lost < 4 || st.Recovered != st.Lost {
		t.Errorf("recovered %d of %d lost, want all of at least 4", st.Recovered, st.Lost)
	}
}

func TestSlowFunctionBlocksNeitherIngestNorOtherFunctions(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The slow function's path stalls: nothing the gateway sends reaches
	// it, its congestion window fills, SendDatagram blocks.
	proxy := newUDPProxy(t, g.Addr())
	slowCfg := clientConfig(g, "slow")
	slowCfg.GatewayAddr = proxy.Addr()
	slow := startFunction(t, slowCfg)
	if _, err := slow.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	fast := startFunction(t, clientConfig(g, "fast"))
	if _, err := fast.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	proxy.stalled.Store(true)

	const n = 2500 // per track: more than the slow subscription holds
	writeBatches(t, pub, fast, n, 1000)

	waitFor(t, "the slow function's subscription to drop", func() bool { return testutil.ToFloat64(g.metrics.dropped) > 0 })
	for _, fl := range []relaywire.Flow{relaywire.FlowOf(77, relaywire.Video), relaywire.FlowOf(77, relaywire.Audio)} {
		got := fast.h.packets(fl)
		if len(got) != n {
			t.Fatalf("fast function got %d packets of flow %d, want %d", len(got), fl, n)
		}
		for i, p := range got {
			if index(p) != i%65536 {
				t.Fatalf("fast function: packet %d carries index %d", i, index(p))
			}
		}
	}
	if d := pub.h.Stats().Dropped; d == 0 {
		t.Error("hub counted no drops")
	}
	if got := slow.Stats().Received; got >= 2*n {
		t.Errorf("the stalled function received %d packets", got)
	}
}

// quicPair connects two QUIC endpoints on loopback: the gateway's side
// with gwConf, the function's with the relay's own settings.
func quicPair(t *testing.T, gwConf *quic.Config) (gw, fn *quic.Conn) {
	t.Helper()
	cert, err := LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := relaywire.TLSConfig()
	tlsConf.Certificates = []tls.Certificate{cert}
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, gwConf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clientTLS := relaywire.TLSConfig()
	clientTLS.InsecureSkipVerify = true
	fn, err = quic.DialAddr(ctx, ln.Addr().String(), clientTLS, relaywire.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fn.CloseWithError(0, "") })
	if gw, err = ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.CloseWithError(0, "") })
	return gw, fn
}

// TestPacketsTooLargeForADatagramGoOnStreams: on a path with QUIC's
// smallest packets (1200 bytes, no path MTU discovery) the largest
// datagrams do not fit; the gateway sends each on a stream of its own, the
// same bytes, and the rest as datagrams.
func TestPacketsTooLargeForADatagramGoOnStreams(t *testing.T) {
	conf := relaywire.QUICConfig()
	conf.InitialPacketSize = 1200
	conf.DisablePathMTUDiscovery = true
	gw, fn := quicPair(t, conf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &function{s: &Server{metrics: newMetrics(prometheus.NewRegistry(), func() float64 { return 0 })}, qc: gw, ctx: ctx}

	small := relaywire.AppendDatagram(nil, relaywire.FlowOf(77, relaywire.Audio), 0, append([]byte{0x80, 97, 0, 1}, make([]byte, 200)...))
	large := relaywire.AppendDatagram(nil, relaywire.FlowOf(77, relaywire.Video), relaywire.FlagKeyframe, append([]byte{0x80, 96, 0, 2}, make([]byte, relaywire.MaxPacketSize-4)...))
	for _, d := range [][]byte{small, large} {
		if err := f.send(d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := fn.ReceiveDatagram(ctx)
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("datagram %d bytes, %v; want the small packet's %d", len(got), err, len(small))
	}
	st, err := fn.AcceptUniStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(st)
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("stream of %d bytes, %v; want the large packet's %d", len(got), err, len(large))
	}
	if s, d := testutil.ToFloat64(f.s.metrics.streamed), testutil.ToFloat64(f.s.metrics.datagrams); s != 1 || d != 1 {
		t.Errorf("streamed %v, datagrams %v; want 1 and 1", s, d)
	}
}

func TestNACKsForPacketsNoLongerHeldAreCountedUnrecoverable(t *testing.T) {
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	qc, str, _ := rawFunction(t, g)
	write := func(m relaywire.Message) {
		if err := relaywire.WriteMessage(str, m); err != nil {
			t.Fatal(err)
		}
	}
	write(&relaywire.Subscribe{Channel: 77})
	waitFor(t, "the subscription", func() bool { return pub.h.Stats().Subscribers == 1 })
	pub.write(hub.Video, 0, 100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := qc.ReceiveDatagram(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dg, err := relaywire.ParseDatagram(d)
	if err != nil {
		t.Fatal(err)
	}
	seq := dg.Seq

	write(&relaywire.NACK{Flow: relaywire.FlowOf(77, relaywire.Video), Seqs: []uint16{seq, seq + 1, seq - 1}})
	write(&relaywire.NACK{Flow: relaywire.FlowOf(78, relaywire.Video), Seqs: []uint16{1}}) // not subscribed
	again, err := qc.ReceiveDatagram(ctx)
	if err != nil || !bytes.Equal(again, d) {
		t.Fatalf("retransmission %x, %v; want %x", again, err, d)
	}
	waitFor(t, "the unrecoverable count", func() bool { return testutil.ToFloat64(g.metrics.unrecoverable) == 3 })
	if r := testutil.ToFloat64(g.metrics.retransmitted); r != 1 {
		t.Errorf("retransmitted %v, want 1", r)
	}
}

func TestProtocolErrorAfterWelcomeClosesTheConnection(t *testing.T) {
	tests := []struct {
		name string
		send []byte
	}{
		{"gateway-only message", mustFrame(t, &relaywire.Welcome{FunctionID: "x"})},
		{"unknown type", []byte{0x03, 99, '{', '}'}},
		{"oversized message", []byte{0x80, 0x02, 0x00, 0x00}},
		{"too many NACKed sequence numbers", mustFrame(t, &relaywire.NACK{Flow: 1, Seqs: make([]uint16, 65)})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := startGateway(t, "", nil)
			qc, str, _ := rawFunction(t, g)
			waitFor(t, "the function", func() bool { return len(g.Functions()) == 1 })
			str.Write(tt.send)
			<-qc.Context().Done()
			var ae *quic.ApplicationError
			if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != relaywire.CodeProtocol {
				t.Fatalf("closed with %v, want %#x", err, relaywire.CodeProtocol)
			}
			waitFor(t, "the function to leave", func() bool { return len(g.Functions()) == 0 })
		})
	}
}

func mustFrame(t *testing.T, m relaywire.Message) []byte {
	b, err := relaywire.AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawFunction authenticates with quic-go itself and returns the
// connection after welcome.
func rawFunction(t *testing.T, g *gateway) (*quic.Conn, *quic.Stream, *bufio.Reader) {
	t.Helper()
	qc := rawDial(t, g)
	str, err := qc.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(str)
	relaywire.WriteMessage(str, &relaywire.Hello{Version: relaywire.Version, MachineID: "raw"})
	m, err := relaywire.ReadMessage(br)
	if err != nil {
		t.Fatal(err)
	}
	nonce, _ := hex.DecodeString(m.(*relaywire.Challenge).Nonce)
	state := qc.ConnectionState().TLS
	exp, _ := state.ExportKeyingMaterial(relaywire.ExporterLabel, nil, relaywire.ExporterLength)
	relaywire.WriteMessage(str, &relaywire.Auth{MAC: hex.EncodeToString(relaywire.AuthMAC(testSecret, exp, nonce))})
	m, err = relaywire.ReadMessage(br)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.(*relaywire.Welcome); !ok {
		t.Fatalf("got %s, want welcome", m.Type())
	}
	return qc, str, br
}

func TestGatewayRestartReconnectsAndResubscribes(t *testing.T) {
	g := startGateway(t, "", nil)
	addr := g.Addr().String()
	pub := startPublishing(g.hubs, 77)
	f := startFunction(t, clientConfig(g, "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	writeBatches(t, pub, f, 20, 200)

	g.stop()
	// A new gateway on the same address with new hubs; channel 77 goes
	// live only after the function is back, so its first re-subscription
	// is refused and retried.
	g2 := startGateway(t, addr, nil)
	waitFor(t, "the function to reconnect", func() bool { return len(g2.Functions()) == 1 && f.Connected() })
	pub2 := startPublishing(g2.hubs, 77)
	waitFor(t, "the re-subscription", func() bool { return pub2.h.Stats().Subscribers == 1 })
	before := f.h.count.Load()
	writeBatches(t, pub2, f, 20, 200)
	if got := f.h.count.Load() - before; got != 40 {
		t.Errorf("%d packets after the restart, want 40", got)
	}
	if st := f.Stats(); st.Reconnects < 1 {
		t.Errorf("stats %+v: no reconnect counted", st)
	}
}

func TestSessionsAreSignalledThroughTheFunction(t *testing.T) {
	g := startGateway(t, "", nil)
	f := startFunction(t, clientConfig(g, "m"))
	waitFor(t, "the function", func() bool { return len(g.Functions()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	type call struct {
		session, offer string
		channel        uint32
	}
	calls := make(chan call, 4)
	f.h.onStart(func(ctx context.Context, session string, channel uint32, offer string) (string, string, error) {
		calls <- call{session, offer, channel}
		switch offer {
		case "":
			return "offer", "function offer", nil
		case "refuse":
			return "", "", errors.New("no capacity")
		}
		return "answer", "answer to " + offer, nil
	})

	ss, err := g.StartSession(ctx, "m", 77, "viewer offer", "")
	if err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c.session != ss.ID || c.channel != 77 || c.offer != "viewer offer" {
		t.Errorf("handler called with %+v, session %s", c, ss.ID)
	}
	if ss.Type != "answer" || ss.SDP != "answer to viewer offer" || ss.FunctionID != "m" || ss.Channel != 77 || len(ss.ID) != 16 {
		t.Errorf("session %+v", ss)
	}

	// Candidates both ways.
	mid := "0"
	fc := relaywire.Candidate{Candidate: "candidate:1 1 udp 1 127.0.0.1 8189 typ host", SDPMid: &mid}
	f.SendCandidate(ss.ID, fc)
	if got := <-ss.Candidates(); got.Candidate != fc.Candidate || *got.SDPMid != "0" {
		t.Errorf("gateway got candidate %+v", got)
	}
	vc := relaywire.Candidate{Candidate: "candidate:2 1 udp 1 192.0.2.1 5000 typ host"}
	if err := g.AddCandidate(ss.ID, vc); err != nil {
		t.Fatal(err)
	}
	if got := <-f.h.candidates; got.Candidate != vc.Candidate {
		t.Errorf("function got candidate %+v", got)
	}

	// The gateway closes the session.
	g.CloseSession(ss.ID, "viewer left")
	if got := <-f.h.closed; got != [2]string{ss.ID, "viewer left"} {
		t.Errorf("handler closed %v", got)
	}
	<-ss.Done()
	if err := g.AddCandidate(ss.ID, vc); !errors.Is(err, ErrNoSession) {
		t.Errorf("AddCandidate after close: %v", err)
	}

	// The function makes the offer; the viewer's answer reaches it.
	ss2, err := g.StartSession(ctx, "m", 77, "", "")
	if err != nil {
		t.Fatal(err)
	}
	<-calls
	if ss2.Type != "offer" || ss2.SDP != "function offer" {
		t.Errorf("session %+v", ss2)
	}
	if err := g.SetAnswer(ctx, ss2.ID, "viewer answer"); err != nil {
		t.Fatal(err)
	}
	if got := <-f.h.answers; got != [2]string{ss2.ID, "viewer answer"} {
		t.Errorf("handler got answer %v", got)
	}
	// The function ends it.
	f.SessionClosed(ss2.ID, "ice failed")
	<-ss2.Done()

	// The function refuses one.
	_, err = g.StartSession(ctx, "m", 77, "refuse", "")
	<-calls
	if err == nil || !strings.Contains(err.Error(), "no capacity") {
		t.Errorf("refused session: %v", err)
	}

	// Unknown functions and sessions.
	if _, err := g.StartSession(ctx, "nobody", 77, "x", ""); !errors.Is(err, ErrFunctionGone) {
		t.Errorf("StartSession on an unknown function: %v", err)
	}
	if err := g.SetAnswer(ctx, "0123456789abcdef", "x"); !errors.Is(err, ErrNoSession) {
		t.Errorf("SetAnswer on an unknown session: %v", err)
	}

	// The function disconnects: its sessions end, it is gone.
	ss3, err := g.StartSession(ctx, "m", 77, "last", "")
	if err != nil {
		t.Fatal(err)
	}
	<-calls
	f.stop()
	<-ss3.Done()
	waitFor(t, "the function to leave", func() bool { return len(g.Functions()) == 0 })
	if _, err := g.StartSession(ctx, "m", 77, "x", ""); !errors.Is(err, ErrFunctionGone) {
		t.Errorf("StartSession after the function left: %v", err)
	}
}

func TestCancelledSessionStartReachesTheHandler(t *testing.T) {
	g := startGateway(t, "", nil)
	f := startFunction(t, clientConfig(g, "m"))
	waitFor(t, "the function", func() bool { return len(g.Functions()) == 1 })
	started := make(chan struct{})
	cancelled := make(chan struct{})
	f.h.onStart(func(ctx context.Context, session string, channel uint32, offer string) (string, string, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return "", "", ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := g.StartSession(ctx, "m", 77, "offer", "")
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("StartSession = %v, want context.Canceled", err)
	}
	<-cancelled
}

func TestDrainedFunctionTakesNoNewSessions(t *testing.T) {
	g := startGateway(t, "", nil)
	f := startFunction(t, clientConfig(g, "m"))
	waitFor(t, "the function", func() bool { return len(g.Functions()) == 1 })
	if err := g.Drain("m", "scale down"); err != nil {
		t.Fatal(err)
	}
	if !g.Functions()[0].Draining {
		t.Error("Functions() does not show the drain")
	}
	waitFor(t, "the function to drain", f.Draining)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.StartSession(ctx, "m", 77, "offer", ""); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Errorf("StartSession on a draining function: %v", err)
	}
	if err := g.Drain("nobody", ""); !errors.Is(err, ErrFunctionGone) {
		t.Errorf("Drain of an unknown function: %v", err)
	}
}

// TestDisconnectClosesAFunctionsConnectionAtOnce: the fleet's Disconnect
// removes the function from Functions() before it returns and closes its
// connection; a second Disconnect finds it gone.
func TestDisconnectClosesAFunctionsConnectionAtOnce(t *testing.T) {
	g := startGateway(t, "", nil)
	qc, _, _ := rawFunction(t, g)
	waitFor(t, "the function", func() bool { return len(g.Functions()) == 1 })
	if err := g.Disconnect("raw", "failed"); err != nil {
		t.Fatal(err)
	}
	if fs := g.Functions(); len(fs) != 0 {
		t.Fatalf("functions after Disconnect: %+v", fs)
	}
	<-qc.Context().Done()
	if err := g.Disconnect("raw", "failed"); !errors.Is(err, ErrFunctionGone) {
		t.Errorf("second Disconnect: %v", err)
	}
}

func TestNewerConnectionOfTheSameMachineReplacesTheOlder(t *testing.T) {
	g := startGateway(t, "", nil)
	old, _, _ := rawFunction(t, g)
	waitFor(t, "the first connection", func() bool { return len(g.Functions()) == 1 })
	f := startFunction(t, clientConfig(g, "raw"))
	waitFor(t, "the second connection", f.Connected)
	<-old.Context().Done()
	var ae *quic.ApplicationError
	if err := context.Cause(old.Context()); !errors.As(err, &ae) || ae.ErrorCode != relaywire.CodeReplaced {
		t.Errorf("older connection closed with %v", err)
	}
	waitFor(t, "one function", func() bool { return len(g.Functions()) == 1 })
	if fns := g.Functions(); fns[0].MediaAddr != "203.0.113.7:8189" {
		t.Errorf("Functions() = %+v, want the newer connection", fns)
	}
}

func TestServeAndRunLeaveNoGoroutinesBehind(t *testing.T) {
	checkGoroutines(t)
	g := startGateway(t, "", nil)
	pub := startPublishing(g.hubs, 77)
	f := startFunction(t, clientConfig(g, "m"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.Subscribe(ctx, 77); err != nil {
		t.Fatal(err)
	}
	writeBatches(t, pub, f, 20, 500)
	if _, err := g.StartSession(ctx, "m", 77, "offer", ""); err != nil {
		t.Fatal(err)
	}
	f.stop()
	g.stop()
	g.hubs.Close()
}

// BenchmarkForwardPacket is the gateway's per-packet work before
// SendDatagram: framing and pacing.
func BenchmarkForwardPacket(b *testing.B) {
	buf := make([]byte, 0, relaywire.MaxDatagramSize)
	pkt := make([]byte, hub.MaxPacketSize)
	pkt[0] = 0x80
	var pace pacer
	now := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Millisecond) // a live stream: never delayed
		buf = relaywire.AppendDatagram(buf[:0], relaywire.FlowOf(77, relaywire.Video), 0, pkt)
		if pace.delay(now) != 0 {
			b.Fatal("delayed")
		}
	}
}
