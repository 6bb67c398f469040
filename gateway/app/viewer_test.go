package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/prometheus/client_golang/prometheus"

	functionapp "lightspeed/function/app"
	"lightspeed/shared/h264"
	"lightspeed/shared/relaywire"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/lossy"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/viewer"
)

// stackConfig is a gateway on loopback with an embedded function in
// region "ams".
func stackConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.RelayAddr = "127.0.0.1:0"
	cfg.EmbedFunction = true
	cfg.WebRTCUDPAddr = "127.0.0.1:0"
	cfg.Region = "ams"
	cfg.FunctionCap = 100
	cfg.HubMaxHold = 40 * time.Millisecond
	return cfg
}

// startFunction runs one more function against g until the test ends or
// the returned stop is called. With a forwarder (see lossyRelay) the
// function reaches the gateway through it.
func startFunction(t *testing.T, g *Gateway, region string, capacity int, via *lossy.Forwarder) (*functionapp.Function, func()) {
	t.Helper()
	li, err := g.RelayLocalInfo()
	if err != nil {
		t.Fatal(err)
	}
	if via != nil {
		li.Addr = via.Addr()
	}
	f, err := functionapp.New(functionapp.Config{
		GatewayAddr:      li.Addr,
		RelaySecret:      li.Secret,
		RelayFingerprint: li.Fingerprint,
		WebRTCUDPAddr:    "127.0.0.1:0",
		Region:           region,
		MachineID:        region + "-test",
		Capacity:         capacity,
	}, testLog(t).With("function", region), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	waitUntil(t, "the function registers", func() bool {
		for _, fn := range g.Relay().Functions() {
			if fn.MachineID == region+"-test" {
				return true
			}
		}
		return false
	})
	return f, stop
}

// lossyRelay starts a forwarder to g's relay address that loses nothing
// until its rule is set.
func lossyRelay(t *testing.T, g *Gateway) *lossy.Forwarder {
	t.Helper()
	li, err := g.RelayLocalInfo()
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := lossy.New(li.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fwd.Close() })
	return fwd
}

// waitUntil polls cond every 5 ms for at most 20 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamForever publishes the test media in a loop until the test ends.
func streamForever(t *testing.T, g *Gateway) *ftlclient.Conn {
	t.Helper()
	// Real-time media through the whole stack under the race detector
	// loads the machine: one such test at a time, also against the
	// Chromium tests and the bench of other packages.
	netns.Exclusive(t)
	nals, opus := sourceMedia(t)
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); conn.Stream(ctx, nals, opus, 0) }()
	t.Cleanup(func() { cancel(); conn.Close(); <-done })
	waitUntil(t, "channel 77 is live", func() bool {
		h := g.Hubs().Get(77)
		return h != nil && h.Stats().Live
	})
	return conn
}

// recorder checks what a viewer receives: from its first keyframe on, the
// NAL units and Opus packets must be a contiguous run of the looping
// source, with continuous sequence numbers.
type recorder struct {
	t         *testing.T
	mu        sync.Mutex
	depack    codecs.H264Packet
	started   bool
	nals      [][]byte
	opus      [][]byte
	lastSeq   map[string]uint16 // last consumed
	seqSeen   map[string]bool
	pending   map[string]map[uint16]*rtp.Packet
	gaps      int
	progress  chan struct{}
	maxPacket int
	// the video timestamps consumed: the last, and how often one went back
	videoTS     uint32
	videoTSBack int
	// frames whose last packet never came before the next frame's first
	// (a layer switch cuts the old layer's frame in progress): a
	// receiver's frame assembler drops them
	inFragment bool
	cutFrames  int
}

func newRecorder(t *testing.T) *recorder {
	return &recorder{t: t, lastSeq: map[string]uint16{}, seqSeen: map[string]bool{}, pending: map[string]map[uint16]*rtp.Packet{}, progress: make(chan struct{}, 1)}
}

// onRTP reorders like a receiver's jitter buffer would (packets recovered
// by NACK arrive late), then consumes packets in sequence order.
func (r *recorder) onRTP(kind string, p *rtp.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := p.MarshalSize(); n > r.maxPacket {
		r.maxPacket = n
	}
	if !r.seqSeen[kind] {
		r.seqSeen[kind], r.lastSeq[kind] = true, p.SequenceNumber-1
	}
	if int16(p.SequenceNumber-r.lastSeq[kind]) <= 0 {
		return // already consumed: a duplicate
	}
	if r.pending[kind] == nil {
		r.pending[kind] = map[uint16]*rtp.Packet{}
	}
	c := *p
	c.Payload = bytes.Clone(p.Payload)
	r.pending[kind][p.SequenceNumber] = &c
	for {
		next := r.lastSeq[kind] + 1
		q, ok := r.pending[kind][next]
		if !ok {
			if len(r.pending[kind]) < 256 {
				break
			}
			// A hole nobody filled: skip it, as a receiver would.
			r.gaps++
			r.t.Logf("%s: seq %d never arrived (after %d NAL units)", kind, next, len(r.nals))
			r.lastSeq[kind] = next
			continue
		}
		delete(r.pending[kind], next)
		r.lastSeq[kind] = next
		r.consume(kind, q)
	}
	select {
	case r.progress <- struct{}{}:
	default:
	}
}

func (r *recorder) consume(kind string, p *rtp.Packet) {
	switch kind {
	case "video":
		if r.started && int32(p.Timestamp-r.videoTS) < 0 {
			r.videoTSBack++
		}
		if !r.started {
			info, err := h264.Inspect(p.Payload)
			if err != nil || !info.Keyframe || !info.Start {
				return
			}
			r.started = true
		}
		if r.inFragment && p.Timestamp != r.videoTS {
			r.cutFrames++
			r.depack = codecs.H264Packet{}
		}
		r.videoTS = p.Timestamp
		if len(p.Payload) > 1 && p.Payload[0]&0x1f == 28 { // FU-A: in a NAL unit until its end bit
			r.inFragment = p.Payload[1]&0x40 == 0
		}
		out, err := r.depack.Unmarshal(p.Payload)
		if err != nil {
			r.t.Errorf("depacketize: %v", err)
			return
		}
		for _, n := range bytes.Split(out, []byte{0, 0, 0, 1}) {
			if len(n) > 0 {
				r.nals = append(r.nals, bytes.Clone(n))
			}
		}
	case "audio":
		r.opus = append(r.opus, p.Payload)
	}
}

func (r *recorder) counts() (nals, opus int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.nals), len(r.opus)
}

// waitFor waits until the viewer has at least n NAL units and m Opus packets.
func (r *recorder) waitFor(t *testing.T, n, m int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		a, b := r.counts()
		if a >= n && b >= m {
			return
		}
		select {
		case <-r.progress:
		case <-deadline:
			t.Fatalf("viewer got %d NAL units and %d Opus packets, want %d and %d", a, b, n, m)
		}
	}
}

// isRunOf reports whether got is a contiguous run of the cyclic source.
func isRunOf(got, source [][]byte) bool {
	if len(got) == 0 {
		return false
	}
	for start := range source {
		ok := true
		for i := range got {
			if !bytes.Equal(got[i], source[(start+i)%len(source)]) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// check verifies everything received so far against the source.
func (r *recorder) check(t *testing.T, what string) {
	t.Helper()
	nals, opus := sourceMedia(t)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !bytes.Equal(r.nals[0][:1], []byte{0x67}) && r.nals[0][0]&0x1f != 7 {
		t.Errorf("%s: video does not start with an SPS (NAL type %d)", what, r.nals[0][0]&0x1f)
	}
	if !isRunOf(r.nals, nals) {
		t.Errorf("%s: the %d NAL units received are not a contiguous run of the source", what, len(r.nals))
	}
	if !isRunOf(r.opus, opus) {
		t.Errorf("%s: the %d Opus packets received are not a contiguous run of the source", what, len(r.opus))
	}
	if r.gaps != 0 || r.cutFrames != 0 {
		t.Errorf("%s: %d sequence gaps, %d frames cut short", what, r.gaps, r.cutFrames)
	}
	if r.maxPacket > 1200 {
		t.Errorf("%s: a %d-byte RTP packet", what, r.maxPacket)
	}
}

func whepURL(g *Gateway) string { return fmt.Sprintf("http://%s/api/whep/77", g.HTTPAddr()) }

func watch(t *testing.T, g *Gateway, region string) (*viewer.Viewer, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := viewer.WHEP(ctx, whepURL(g), viewer.Options{Loopback: true, Region: region, OnRTP: rec.onRTP, Interceptors: true})
	if err != nil {
		t.Fatalf("whep: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	if err := v.WaitConnected(ctx); err != nil {
		t.Fatalf("whep viewer: %v", err)
	}
	return v, rec
}

func TestViewersReceiveTheSourceThroughRelayAndFunctions(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	second, _ := startFunction(t, g, "syd", 100, nil)
	streamForever(t, g)

	_, amsRec := watch(t, g, "ams")
	_, sydRec := watch(t, g, "syd")
	wsRec := newRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, err := viewer.Websocket(ctx, fmt.Sprintf("ws://%s/websocket?channel=77", g.HTTPAddr()), viewer.Options{Loopback: true, Region: "ams", OnRTP: wsRec.onRTP, Interceptors: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	if err := ws.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}

	if n := g.Function().Fanout().Viewers(77); n != 2 {
		t.Errorf("embedded (ams) function has %d viewers, want 2", n)
	}
	if n := second.Fanout().Viewers(77); n != 1 {
		t.Errorf("syd function has %d viewers, want 1", n)
	}
	for name, rec := range map[string]*recorder{"ams whep": amsRec, "syd whep": sydRec, "websocket": wsRec} {
		rec.waitFor(t, 150, 150)
		rec.check(t, name)
	}
}

func TestRelayLossIsRecovered(t *testing.T) {
	cfg := stackConfig(t)
	cfg.EmbedFunction = false
	g := startGateway(t, cfg)
	fwd := lossyRelay(t, g)
	f, _ := startFunction(t, g, "ams", 100, fwd)
	// Every 20th packet from the gateway is lost from now on (5 %): mostly
	// media datagrams, recovered by NACK; QUIC recovers its own.
	fwd.SetRule(lossy.EveryNth(20))
	streamForever(t, g)
	_, rec := watch(t, g, "ams")
	rec.waitFor(t, 200, 200)
	rec.check(t, "lossy relay")
	st := f.Client().Stats()
	t.Logf("relay client: %+v; forwarder: %+v", st, fwd.Stats())
	if dropped := fwd.Stats().Dropped; dropped < 10 {
		t.Fatalf("only %d packets dropped", dropped)
	}
	if st.Recovered == 0 {
		t.Fatalf("no datagram recovered by NACK: %+v", st)
	}
}

func TestKilledFunctionsViewersMoveToAnother(t *testing.T) {
	cfg := stackConfig(t)
	cfg.EmbedFunction = false
	g := startGateway(t, cfg)
	_, stopFra := startFunction(t, g, "fra", 100, nil)
	streamForever(t, g)
	v, _ := watch(t, g, "fra")
	_, stopAms := startFunction(t, g, "ams", 100, nil)
	defer stopAms()

	stopFra() // the function dies mid-stream
	select {
	case <-v.Failed():
	case <-time.After(30 * time.Second):
		t.Fatal("the viewer of the killed function never noticed")
	}
	waitUntil(t, "the killed function leaves the relay", func() bool { return len(g.Relay().Functions()) == 1 })
	// The page reconnects through the gateway and lands on the other one.
	_, rec := watch(t, g, "fra")
	rec.waitFor(t, 60, 60)
	rec.check(t, "after the move")
}

func TestPublisherReconnectKeepsViewersPlaying(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	conn := streamForever(t, g)
	v, rec := watch(t, g, "ams")
	rec.waitFor(t, 40, 40)
	conn.Disconnect()
	waitUntil(t, "the channel goes offline", func() bool { return !g.Hubs().Get(77).Stats().Live })
	before, _ := rec.counts()
	streamForever(t, g) // the publisher comes back
	rec.waitFor(t, before+60, 0)
	select {
	case <-v.Failed():
		t.Fatal("the viewer's PeerConnection did not survive the publisher reconnect")
	default:
	}
	rec.mu.Lock()
	gaps := rec.gaps
	rec.mu.Unlock()
	if gaps != 0 {
		t.Fatalf("%d sequence gaps across the publisher reconnect", gaps)
	}
}

func TestRoutingPrefersTheViewersRegionThenTheNearest(t *testing.T) {
	cfg := stackConfig(t)
	cfg.EmbedFunction = false
	g := startGateway(t, cfg)
	ams, _ := startFunction(t, g, "ams", 1, nil)
	fra, _ := startFunction(t, g, "fra", 10, nil)
	syd, _ := startFunction(t, g, "syd", 10, nil)
	streamForever(t, g)

	watch(t, g, "syd")
	watch(t, g, "ams")
	watch(t, g, "ams") // ams is full: the nearest region with room serves
	if a, f, s := ams.Fanout().Viewers(77), fra.Fanout().Viewers(77), syd.Fanout().Viewers(77); a != 1 || f != 1 || s != 1 {
		t.Fatalf("viewers ams %d, fra %d, syd %d; want 1 each", a, f, s)
	}
}

// TestWebsocketCandidatesAreBounded checks that a page whose trickled
// candidates name more than relaywire.MaxCandidates addresses loses its
// socket, told why, and its session.
func TestWebsocketCandidatesAreBounded(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	streamForever(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.DefaultDialer.DialContext(ctx, fmt.Sprintf("ws://%s/websocket?channel=77", g.HTTPAddr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	type message struct {
		Event string          `json:"event"`
		Data  json.RawMessage `json:"data"`
	}
	for {
		var m message
		if err := c.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for the offer: %v", err)
		}
		if m.Event == "offer" {
			break
		}
	}
	if n := g.signaling.Viewers(77); n != 1 {
		t.Fatalf("viewers %d, want 1", n)
	}
	for port := 1; port <= relaywire.MaxCandidates+1; port++ {
		cand := map[string]any{"candidate": fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", port, port), "sdpMLineIndex": 0}
		if err := c.WriteJSON(map[string]any{"event": "candidate", "data": cand}); err != nil {
			t.Fatalf("candidate %d: %v", port, err)
		}
	}
	for {
		var m message
		err := c.ReadJSON(&m)
		if err == nil {
			continue // a candidate or info message sent before the close
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "too many ICE candidates") {
			t.Fatalf("after %d addresses: %v, want a policy-violation close saying why", relaywire.MaxCandidates+1, err)
		}
		break
	}
	waitUntil(t, "the session is gone", func() bool {
		return g.signaling.Viewers(77) == 0 && g.Function().Fanout().Viewers(77) == 0
	})
}

func TestWHEPSessionTrickleAndDelete(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	streamForever(t, g)
	v, _ := watch(t, g, "ams")
	do := func(method, ctype, body string) int {
		req, _ := http.NewRequest(method, v.Location(), strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do("PATCH", "application/trickle-ice-sdpfrag", "a=mid:0\r\na=end-of-candidates\r\n"); got != http.StatusNoContent {
		t.Fatalf("PATCH: %d", got)
	}
	if got := do("PATCH", "application/sdp", "a=end-of-candidates\r\n"); got != http.StatusUnsupportedMediaType {
		t.Fatalf("PATCH with the wrong type: %d", got)
	}
	// A session's candidates may name relaywire.MaxCandidates addresses in
	// all, its offer's included: trickled one by one, the first new address
	// past them is refused; one named already, or a TCP one, is not. They
	// are loopback addresses, which the function's checks may reach.
	var offered relaywire.CandidateSet
	offered.AddSDP(v.PeerConnection().LocalDescription().SDP)
	patch := func(c string) int {
		return do("PATCH", "application/trickle-ice-sdpfrag", "a=mid:0\r\na="+c+"\r\n")
	}
	udp := func(port int) string {
		return fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", port, port)
	}
	free := relaywire.MaxCandidates - offered.Len()
	for port := 1; port <= free; port++ {
		if got := patch(udp(port)); got != http.StatusNoContent {
			t.Fatalf("PATCH of address %d of %d: %d", port, free, got)
		}
	}
	if got := patch(udp(1)); got != http.StatusNoContent {
		t.Fatalf("PATCH of an address named already: %d", got)
	}
	if got := patch("candidate:9 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive"); got != http.StatusNoContent {
		t.Fatalf("PATCH of a TCP candidate: %d", got)
	}
	if got := patch(udp(free + 1)); got != http.StatusBadRequest {
		t.Fatalf("PATCH of address %d past the offer's %d: %d, want 400", free+1, offered.Len(), got)
	}
	// A refused PATCH counts nothing: the session takes what it could
	// before.
	if got := patch(udp(1) + "\r\na=" + udp(free+2)); got != http.StatusBadRequest {
		t.Fatalf("PATCH of a known and a new address: %d, want 400", got)
	}
	if got := patch(udp(1)); got != http.StatusNoContent {
		t.Fatalf("PATCH of a known address after a refused one: %d", got)
	}
	if got := patch("end-of-candidates"); got != http.StatusNoContent {
		t.Fatalf("PATCH of an end of candidates: %d", got)
	}
	if n := g.signaling.Viewers(77); n != 1 {
		t.Fatalf("viewers %d, want 1", n)
	}
	if got := do("DELETE", "", ""); got != http.StatusOK {
		t.Fatalf("DELETE: %d", got)
	}
	waitUntil(t, "the session is gone", func() bool {
		return g.signaling.Viewers(77) == 0 && g.Function().Fanout().Viewers(77) == 0
	})
	if got := do("DELETE", "", ""); got != http.StatusNotFound {
		t.Fatalf("second DELETE: %d", got)
	}
}
