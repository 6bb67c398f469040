package fanout

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/relaywire"
)

const (
	testChannel    = 77
	testVideoSSRC  = 0x1111
	testAudioSSRC  = 0x2222
	maxTestFragLen = 1100
	waitLimit      = 30 * time.Second // a bound on every wait, never an expectation
)

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGoroutines waits until at most n goroutines run, and dumps them if
// that never happens.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeUpstream is the relay client of the tests: it answers subscriptions
// with the tracks of a hub and records every call.
type fakeUpstream struct {
	mu           sync.Mutex
	subscribes   []uint32
	unsubscribes []uint32
	closed       map[string]string
	candidates   map[string][]relaywire.Candidate
	err          error
	keyframes    []keyframeReq // RequestKeyframe's calls, in order
	refuse       bool          // RequestKeyframe drops, as without a relay connection
	// layers are the channel's video layers, highest first, as the
	// gateway lists them; none: one video track without a rid.
	layers []testLayer
}

// keyframeReq is one call of RequestKeyframe.
type keyframeReq struct {
	channel uint32
	track   relaywire.Track
}

// testLayer is a video layer of a simulcast channel.
type testLayer struct {
	rid   string
	track relaywire.Track
	fmtp  string // "": the default
}

func newFakeUpstream() *fakeUpstream {
	return &fakeUpstream{closed: map[string]string{}, candidates: map[string][]relaywire.Candidate{}}
}

func (u *fakeUpstream) Subscribe(_ context.Context, channel uint32) ([]relaywire.TrackInfo, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.subscribes = append(u.subscribes, channel)
	if u.err != nil {
		return nil, u.err
	}
	layers := u.layers
	if len(layers) == 0 {
		layers = []testLayer{{track: relaywire.Video}}
	}
	var tracks []relaywire.TrackInfo
	for _, l := range layers {
		fmtp := l.fmtp
		if fmtp == "" {
			fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
		}
		tracks = append(tracks, relaywire.TrackInfo{Flow: relaywire.FlowOf(channel, l.track), Track: "video", Layer: l.rid,
			Codec: "H264", PayloadType: 96, ClockRate: 90000, Fmtp: fmtp, SSRC: testVideoSSRC + uint32(l.track)})
	}
	return append(tracks, relaywire.TrackInfo{Flow: relaywire.FlowOf(channel, relaywire.Audio), Track: "audio", Codec: "OPUS", PayloadType: 97, ClockRate: 48000,
		Channels: 2, Fmtp: "minptime=10;useinbandfec=1", SSRC: testAudioSSRC}), nil
}

func (u *fakeUpstream) Unsubscribe(channel uint32) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.unsubscribes = append(u.unsubscribes, channel)
}

func (u *fakeUpstream) SendCandidate(session string, c relaywire.Candidate) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.candidates[session] = append(u.candidates[session], c)
}

func (u *fakeUpstream) SessionClosed(session, reason string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed[session] = reason
}

func (u *fakeUpstream) RequestKeyframe(channel uint32, t relaywire.Track) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keyframes = append(u.keyframes, keyframeReq{channel, t})
	return !u.refuse
}

// keyframeRequests returns the keyframe requests so far.
func (u *fakeUpstream) keyframeRequests() []keyframeReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.keyframes)
}

func (u *fakeUpstream) calls() (subs, unsubs []uint32, closed map[string]string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.subscribes), slices.Clone(u.unsubscribes), maps(u.closed)
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// synth makes the RTP packets a hub sends: H.264 with SPS, PPS, IDR and
// slices (single NAL units and FU-A fragments, marker on each frame's last
// packet), and Opus.
type synth struct {
	rnd        *rand.Rand
	vseq, aseq uint16
	vts, ats   uint32
}

func newSynth() *synth {
	return &synth{rnd: rand.New(rand.NewPCG(1, 2)), vseq: 65500, vts: 1 << 31, aseq: 300, ats: 7}
}

// newLayerSynth is the synth of video layer i of a simulcast channel: its
// own random bytes, sequence numbers and timestamps.
func newLayerSynth(i int) *synth {
	return &synth{rnd: rand.New(rand.NewPCG(uint64(10+i), 2)), vseq: uint16(65500 + 7919*i), vts: 1<<31 + uint32(1234567*i), aseq: 300, ats: 7}
}

func (s *synth) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s.rnd.Uint32())
	}
	return b
}

func (s *synth) video(payload []byte, marker bool) []byte {
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: s.vseq, Timestamp: s.vts, SSRC: testVideoSSRC, Marker: marker}, Payload: payload}
	s.vseq++
	b, err := p.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// nal packetizes one NAL unit: a single NAL packet, or FU-A fragments.
func (s *synth) nal(nal []byte, last bool) [][]byte {
	if len(nal) <= maxTestFragLen {
		return [][]byte{s.video(nal, last)}
	}
	var out [][]byte
	hdr, body := nal[0], nal[1:]
	for start := true; len(body) > 0; start = false {
		n := min(len(body), maxTestFragLen-2)
		fu := []byte{hdr&0xe0 | 28, hdr & 0x1f}
		if start {
			fu[1] |= 0x80
		}
		if n == len(body) {
			fu[1] |= 0x40
		}
		out = append(out, s.video(append(fu, body[:n]...), last && n == len(body)))
		body = body[n:]
	}
	return out
}

// keyframe is SPS, PPS and an IDR slice of about 2.5 KB.
func (s *synth) keyframe() [][]byte {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	idr := append([]byte{0x65}, s.bytes(2500)...)
	out := append(s.nal(sps, false), s.nal(pps, false)...)
	out = append(out, s.nal(idr, true)...)
	s.vts += 3000
	return out
}

// delta is a P slice, every third one large enough to be fragmented.
func (s *synth) delta(i int) [][]byte {
	size := 300
	if i%3 == 2 {
		size = 1800
	}
	out := s.nal(append([]byte{0x41}, s.bytes(size)...), true)
	s.vts += 3000
	return out
}

func (s *synth) audio() []byte {
	p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SequenceNumber: s.aseq, Timestamp: s.ats, SSRC: testAudioSSRC, Marker: s.aseq == 300}, Payload: append([]byte{0xfc}, s.bytes(80)...)}
	s.aseq++
	s.ats += 960
	b, err := p.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// sent is a packet the test wrote to the fan-out.
type sent struct {
	seq     uint16
	ts      uint32
	payload []byte
}

// harness is a fan-out on 127.0.0.1 fed by a synth.
type harness struct {
	t    *testing.T
	f    *Fanout
	up   *fakeUpstream
	syn  *synth
	sent [relaywire.NumTracks][]sent
}

func testLogger() *slog.Logger {
	if os.Getenv("FANOUT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	cfg.UDPAddr = "127.0.0.1:0"
	cfg.Logger = testLogger()
	h := &harness{t: t, up: newFakeUpstream(), syn: newSynth()}
	f, err := New(cfg, h.up)
	if err != nil {
		t.Fatal(err)
	}
	h.f = f
	t.Cleanup(func() { f.Close() })
	return h
}

func (h *harness) write(t relaywire.Track, pkts ...[]byte) {
	for _, b := range pkts {
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			h.t.Fatal(err)
		}
		h.sent[t] = append(h.sent[t], sent{p.SequenceNumber, p.Timestamp, slices.Clone(p.Payload)})
		h.f.WriteRTP(asRelayed(t, b))
	}
}

// writeGOP writes a keyframe and n delta frames, with an audio packet per
// frame.
func (h *harness) writeGOP(n int) {
	h.write(relaywire.Video, h.syn.keyframe()...)
	h.write(relaywire.Audio, h.syn.audio())
	h.writeDeltas(n)
}

func (h *harness) writeDeltas(n int) {
	for i := range n {
		h.write(relaywire.Video, h.syn.delta(i)...)
		h.write(relaywire.Audio, h.syn.audio())
	}
}

// waitConnected waits until n sessions are connected: from then on the
// packets written reach them.
func (h *harness) waitConnected(n int) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%d connected sessions", n), func() bool { return h.f.Stats().Connected == n })
}

// viewerAPI is a pion API for viewers on loopback; withNACK adds pion's
// default interceptors (NACK generator, reports) and widens the SRTP replay
// window from pion's 64 packets to 1024, as browsers have it, so that a
// packet the relay recovered after a large keyframe still counts. Without
// them, SRTP replay protection is off, so that a test can ask for a packet
// it already has and see it arrive again.
func viewerAPI(t testing.TB, withNACK bool, tune ...func(*webrtc.SettingEngine)) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if withNACK {
		if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
			t.Fatal(err)
		}
	}
	se := viewerSettings()
	if withNACK {
		se.SetSRTPReplayProtectionWindow(1024)
	} else {
		se.DisableSRTPReplayProtection(true)
	}
	for _, f := range tune {
		f(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
}

// viewerSettings are the settings of a viewer on loopback.
func viewerSettings() webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool {
		ifi, err := net.InterfaceByName(name)
		return err == nil && ifi.Flags&net.FlagLoopback != 0
	})
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return se
}

// peer is a pion viewer that records every RTP packet and every sender
// report it receives.
type peer struct {
	t  *testing.T
	pc *webrtc.PeerConnection

	mu     sync.Mutex
	pkts   [2][]*rtp.Packet // arrival order
	srs    [2][]rtcp.SenderReport
	remote [2]*webrtc.TrackRemote
	wg     sync.WaitGroup
}

func newPeer(t *testing.T, api *webrtc.API) *peer {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, pc: pc}
	pc.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		k := relaywire.Video
		if tr.Kind() == webrtc.RTPCodecTypeAudio {
			k = relaywire.Audio
		}
		p.mu.Lock()
		p.remote[k] = tr
		p.mu.Unlock()
		go p.readReports(k, uint32(tr.SSRC()), recv)
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.pkts[k] = append(p.pkts[k], pkt)
			p.mu.Unlock()
		}
	})
	t.Cleanup(func() { pc.Close() })
	return p
}

// readReports records the sender reports about the track's SSRC until the
// PeerConnection closes.
func (p *peer) readReports(k relaywire.Track, ssrc uint32, recv *webrtc.RTPReceiver) {
	for {
		pkts, _, err := recv.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			if sr, ok := pkt.(*rtcp.SenderReport); ok && sr.SSRC == ssrc {
				p.mu.Lock()
				p.srs[k] = append(p.srs[k], *sr)
				p.mu.Unlock()
			}
		}
	}
}

// reports returns the sender reports received about track t.
func (p *peer) reports(t relaywire.Track) []rtcp.SenderReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.srs[t])
}

func (p *peer) gather() string {
	p.t.Helper()
	select {
	case <-webrtc.GatheringCompletePromise(p.pc):
	case <-time.After(waitLimit):
		p.t.Fatal("viewer gathering never completed")
	}
	return p.pc.LocalDescription().SDP
}

// offer makes a WHEP offer: recvonly video and audio.
func (p *peer) offer() string {
	p.t.Helper()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := p.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			p.t.Fatal(err)
		}
	}
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(offer); err != nil {
		p.t.Fatal(err)
	}
	<-gathered
	return p.pc.LocalDescription().SDP
}

func (p *peer) accept(answer string) {
	p.t.Helper()
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		p.t.Fatal(err)
	}
}

// answer answers the fan-out's offer.
func (p *peer) answer(offer string) string {
	p.t.Helper()
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		p.t.Fatal(err)
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.pc.SetLocalDescription(answer); err != nil {
		p.t.Fatal(err)
	}
	return p.gather()
}

func (p *peer) received(t relaywire.Track) []*rtp.Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pkts[t])
}

// bySeq returns the first copy of every sequence number received.
func bySeq(pkts []*rtp.Packet) map[uint16][]byte {
	m := make(map[uint16][]byte, len(pkts))
	for _, p := range pkts {
		if _, ok := m[p.SequenceNumber]; !ok {
			m[p.SequenceNumber] = p.Payload
		}
	}
	return m
}

// hasAll reports whether every packet of want was received.
func (p *peer) hasAll(t relaywire.Track, want []sent) bool {
	got := bySeq(p.received(t))
	for _, w := range want {
		if _, ok := got[w.seq]; !ok {
			return false
		}
	}
	return true
}

// waitAll waits until the peer received every packet of want.
func (p *peer) waitAll(t relaywire.Track, want []sent) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("%d %s packets", len(want), t), func() bool { return p.hasAll(t, want) })
}

// checkExactly fails unless the peer received exactly want on track t:
// the same sequence numbers, nothing else, byte-identical payloads.
func (p *peer) checkExactly(t relaywire.Track, want []sent) {
	p.t.Helper()
	got := bySeq(p.received(t))
	if len(got) != len(want) {
		p.t.Errorf("%s: received %d distinct packets, want %d", t, len(got), len(want))
	}
	for i, w := range want {
		g, ok := got[w.seq]
		switch {
		case !ok:
			p.t.Fatalf("%s: packet %d (seq %d) missing", t, i, w.seq)
		case !bytes.Equal(g, w.payload):
			p.t.Fatalf("%s: packet %d (seq %d) payload differs: got %d bytes %x…, want %d bytes %x…", t, i, w.seq, len(g), g[:min(8, len(g))], len(w.payload), w.payload[:min(8, len(w.payload))])
		}
	}
}

// connectWHEP starts a WHEP session for p and waits until it is
// connected.
func (h *harness) connectWHEP(p *peer, session string) {
	h.t.Helper()
	h.connectWHEPLayer(p, session, "")
}

// connectWHEPLayer starts a WHEP session for p pinned to the video layer
// of rid layer and waits until it is connected.
func (h *harness) connectWHEPLayer(p *peer, session, layer string) {
	h.t.Helper()
	connected := h.f.Stats().Connected
	typ, answer, err := h.f.StartSession(context.Background(), session, testChannel, p.offer(), layer)
	if err != nil {
		h.t.Fatal(err)
	}
	if typ != "answer" {
		h.t.Fatalf("sdp type %q, want answer", typ)
	}
	p.accept(answer)
	h.waitConnected(connected + 1)
}
