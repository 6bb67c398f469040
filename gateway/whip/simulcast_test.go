package whip

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
	"lightspeed/shared/testkit/testmedia"
	"lightspeed/shared/testkit/whipclient"
	"lightspeed/shared/webrtcapi"
)

// layerMedia returns the test media as layer i sends it: every slice's
// last byte is the layer's own, so that the layers' packets differ.
func layerMedia(t *testing.T, i int) [][]byte {
	t.Helper()
	nals, err := testmedia.NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(nals))
	for j, nal := range nals {
		out[j] = bytes.Clone(nal)
		if typ := nal[0] & 0x1f; typ == 1 || typ == 5 {
			out[j][len(nal)-1] = 0xa0 + byte(i)
		}
	}
	return out
}

// sentPackets records the video packets a publisher sent, by SSRC, each
// sequence number once (a retransmission is the same packet again).
type sentPackets struct {
	mu   sync.Mutex
	seen map[uint32]map[uint16]bool
	sent map[uint32][][]byte // payloads in the order sent
}

func (s *sentPackets) record(h *rtp.Header, payload []byte, _ time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen, s.sent = map[uint32]map[uint16]bool{}, map[uint32][][]byte{}
	}
	if s.seen[h.SSRC] == nil {
		s.seen[h.SSRC] = map[uint16]bool{}
	}
	if !s.seen[h.SSRC][h.SequenceNumber] {
		s.seen[h.SSRC][h.SequenceNumber] = true
		s.sent[h.SSRC] = append(s.sent[h.SSRC], bytes.Clone(payload))
	}
}

func (s *sentPackets) of(ssrc uint32) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent[ssrc]
}

// lossyLayer loses the first sending of some packets of one SSRC, by
// their order among its packets.
type lossyLayer struct {
	mu      sync.Mutex
	ssrc    uint32
	which   map[int]bool    // the packets to lose: 1 the first
	seen    map[uint16]int  // the packets sent of ssrc, by sequence number: their order
	dropped map[uint16]bool // lost already
}

func (l *lossyLayer) set(ssrc uint32, which ...int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ssrc, l.which, l.seen, l.dropped = ssrc, map[int]bool{}, map[uint16]int{}, map[uint16]bool{}
	for _, n := range which {
		l.which[n] = true
	}
}

func (l *lossyLayer) lose(h *rtp.Header) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil || h.SSRC != l.ssrc {
		return false
	}
	n, ok := l.seen[h.SequenceNumber]
	if !ok {
		n = len(l.seen) + 1
		l.seen[h.SequenceNumber] = n
	}
	if l.which[n] && !l.dropped[h.SequenceNumber] {
		l.dropped[h.SequenceNumber] = true
		return true
	}
	return false
}

func (l *lossyLayer) lost() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.dropped)
}

// videoSection returns the video m-section of an SDP.
func videoSection(sdp string) string {
	i := strings.Index(sdp, "m=video")
	if i < 0 {
		return ""
	}
	if j := strings.Index(sdp[i+1:], "\r\nm="); j >= 0 {
		return sdp[i : i+1+j+2]
	}
	return sdp[i:]
}

// TestSimulcastPublisherReachesTheHub: an OBS-like publisher of three
// layers gets 201 and an answer that takes every layer; each layer's
// H.264 reaches the hub as its own track, byte for byte (but for its first
// two packets, which pion reads to learn the layer's payload type and
// rid), two packets of layer 1 that the network loses included, which
// the gateway NACKs; the hub lists the three layers; each layer gets its
// keyframe request at the start, and a request for one layer reaches that
// layer's SSRC only, throttled per layer.
func TestSimulcastPublisherReachesTheHub(t *testing.T) {
	// The hub waits a second for a lost packet, more than its
	// retransmission can take on a loaded machine.
	ts := newTestServerHubs(t, nil, hub.Options{Logger: quietLog, MaxHold: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	sub := ts.hubs.GetOrCreate(77).Subscribe(hub.SubscribeOptions{Capacity: 8192})
	defer sub.Close()

	rids := []string{"0", "1", "2"}
	var sent sentPackets
	keyframes := make(chan string, 64)
	var lossy lossyLayer
	p, err := whipclient.Publish(ctx, whipclient.Config{
		URL: ts.url(whipPath), Token: testKey, Loopback: true, Layers: rids, KeyframeOnPLI: true,
		OnVideoPacket:     sent.record,
		OnKeyframeRequest: func(rid string) { keyframes <- rid },
		LoseVideo:         lossy.lose,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	lossy.set(p.LayerSSRC("1"), 30, 31)

	// The answer takes every layer.
	video := videoSection(p.Answer())
	t.Logf("the answer's video section:\n%s", video)
	for _, want := range []string{"a=simulcast:recv 0;1;2\r\n", "a=rid:0 recv\r\n", "a=rid:1 recv\r\n", "a=rid:2 recv\r\n",
		"urn:ietf:params:rtp-hdrext:sdes:mid\r\n", "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"} {
		if !strings.Contains(video, want) {
			t.Errorf("the answer's video section lacks %q", want)
		}
	}

	media := make([][][]byte, len(rids))
	for i := range rids {
		media[i] = layerMedia(t, i)
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	streamed := make(chan error, 1)
	go func() { streamed <- p.StreamLayers(streamCtx, media, opus) }()

	// Each layer is asked for a keyframe at the start, once its first
	// packet told the gateway its SSRC.
	asked := map[string]int{}
	for len(asked) < len(rids) {
		select {
		case rid := <-keyframes:
			asked[rid]++
		case <-ctx.Done():
			t.Fatalf("keyframe requests at the start: %v, want one per layer", asked)
		}
	}

	// The hub's output of each layer's track, until every layer has had a
	// keyframe (the start's request made each skip to its media's next)
	// and 10 frames after it.
	got := map[hub.Track][][]byte{}
	frames := map[hub.Track]int{} // since the layer's first keyframe
	for {
		enough := len(frames) == len(rids)
		for _, n := range frames {
			enough = enough && n >= 10
		}
		if enough {
			break
		}
		pkt, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("hub: %v after %v frames of the layers", err, frames)
		}
		if pkt.Track == hub.Audio {
			continue
		}
		if pkt.Track.Layer() >= len(rids) {
			t.Fatalf("a packet of track %v", pkt.Track)
		}
		got[pkt.Track] = append(got[pkt.Track], bytes.Clone(pkt.Data[12:]))
		if _, ok := frames[pkt.Track]; !ok && pkt.Keyframe {
			frames[pkt.Track] = 0
		}
		if _, ok := frames[pkt.Track]; ok && pkt.Data[1]&0x80 != 0 { // marker: the end of a frame
			frames[pkt.Track]++
		}
	}
	stop()
	if err := <-streamed; !errors.Is(err, context.Canceled) {
		t.Fatalf("StreamLayers: %v", err)
	}

	// Byte for byte, each layer's from its third packet: pion reads a
	// layer's first two to learn its payload type and rid, and does not
	// hand them on.
	for i, rid := range rids {
		track := relaywire.LayerTrack(i)
		ssrc := p.LayerSSRC(rid)
		mine := sent.of(ssrc)
		if ssrc == 0 || len(mine) == 0 {
			t.Fatalf("layer %s (SSRC %d) sent nothing", rid, ssrc)
		}
		first := slices.IndexFunc(mine, func(b []byte) bool { return bytes.Equal(b, got[track][0]) })
		if first < 0 || first > 2 || len(mine) < first+len(got[track]) {
			t.Fatalf("layer %s: the hub's first packet of %d is the layer's %d of %d sent; want at most its third", rid, len(got[track]), first, len(mine))
		}
		for k, payload := range got[track] {
			if !bytes.Equal(payload, mine[first+k]) {
				t.Fatalf("layer %s: packet %d of the hub's track %v is not the layer's packet %d", rid, k, track, first+k)
			}
		}
		t.Logf("layer %s: the hub released the %d packets the layer sent from its packet %d on", rid, len(got[track]), first)
	}
	if slices.EqualFunc(sent.of(p.LayerSSRC("0")), sent.of(p.LayerSSRC("1")), bytes.Equal) {
		t.Fatal("the layers sent the same packets: the test cannot tell them apart")
	}

	st := ts.hubs.Get(77).Stats()
	var listed []string
	for _, l := range st.Layers {
		listed = append(listed, l.Rid)
		if l.Width != testmedia.Width || l.Height != testmedia.Height {
			t.Errorf("layer %s: %dx%d, want the media's %dx%d", l.Rid, l.Width, l.Height, testmedia.Width, testmedia.Height)
		}
	}
	slices.Sort(listed)
	if n := lossy.lost(); n != 2 {
		t.Fatalf("layer 1 lost %d packets, want 2", n)
	}
	nacks := testutil.ToFloat64(ts.srv.metrics.nacks.WithLabelValues("1"))
	if nacks < 2 || st.NACKsSent < 2 || st.Recovered < 2 || st.Lost != 0 {
		t.Fatalf("NACKs: %v for layer 1; the hub counted %d NACKs, %d recovered, %d lost; want 2, 2, 0", nacks, st.NACKsSent, st.Recovered, st.Lost)
	}
	if !st.Live || !slices.Equal(listed, rids) || !slices.Equal(st.Publisher.Layers, rids) {
		t.Fatalf("hub stats: live %v, layers %v, publisher's layers %v; want the rids %v", st.Live, listed, st.Publisher.Layers, rids)
	}

	// A keyframe request for layer 2 reaches layer 2's SSRC only. Each
	// layer has its own throttle.
	ts.clock.Advance(time.Second)
	if !ts.hubs.Get(77).RequestKeyframe(relaywire.LayerTrack(2)) {
		t.Fatal("the hub cannot ask for layer 2")
	}
	select {
	case rid := <-keyframes:
		if rid != "2" {
			t.Fatalf("the request for layer 2 reached layer %s", rid)
		}
	case <-ctx.Done():
		t.Fatal("no keyframe request reached layer 2")
	}
	sess := ts.channelSession(77)
	if sess.requestKeyframe(relaywire.LayerTrack(2), "test") {
		t.Fatal("layer 2 was asked again within KeyframeInterval")
	}
	if !sess.requestKeyframe(relaywire.LayerTrack(1), "test") {
		t.Fatal("layer 1 could not be asked: its throttle is not its own")
	}
	select {
	case rid := <-keyframes:
		if rid != "1" {
			t.Fatalf("the request for layer 1 reached layer %s", rid)
		}
	case <-ctx.Done():
		t.Fatal("no keyframe request reached layer 1")
	}
	for rid, want := range map[string]int64{"0": 1, "1": 2, "2": 2} {
		if plis, _ := p.LayerKeyframeRequests(rid); plis != want {
			t.Errorf("layer %s got %d PLIs, want %d", rid, plis, want)
		}
	}
	for layer, want := range map[string]float64{"0": 1, "1": 2, "2": 2} {
		if n := testutil.ToFloat64(ts.srv.metrics.keyframes.WithLabelValues("pli", layer)); n != want {
			t.Errorf("%v PLIs counted for layer %s, want %v", n, layer, want)
		}
	}
	if n := testutil.ToFloat64(ts.srv.metrics.layers.WithLabelValues("3")); n != 1 {
		t.Errorf("%v simulcast sessions of 3 layers counted, want 1", n)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held after DELETE: %v", err)
	}
	pub.Release()
}

// channelSession returns the WHIP session of channel, or fails.
func (ts *testServer) channelSession(channel uint32) *session {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	return ts.srv.byChannel[channel]
}

// TestSimulcastRefusals: more layers than the gateway takes, and rids it
// does not take, are refused with a body that says so.
func TestSimulcastRefusals(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	for _, c := range []struct {
		name   string
		layers []string
		status int
		says   string
	}{
		{"five layers", []string{"0", "1", "2", "3", "4"}, 406, "at most 4"},
		{"a rid with a dot", []string{"q", "h.264", "f"}, 400, `rid "h.264"`},
		{"a rid of 17 characters", []string{"q", "abcdefghijklmnopq"}, 400, "1 to 16 letters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := whipclient.Publish(ctx, whipclient.Config{URL: ts.url(whipPath), Token: testKey, Loopback: true, Layers: c.layers})
			var he *whipclient.HTTPError
			if !errors.As(err, &he) || he.Status != c.status || !strings.Contains(he.Body, c.says) {
				t.Fatalf("Publish: %v; want %d saying %q", err, c.status, c.says)
			}
		})
	}
	if n := testutil.ToFloat64(ts.srv.metrics.current); n != 0 {
		t.Fatalf("%v sessions after refusals", n)
	}
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("channel 77 held after refusals: %v", err)
	}
	pub.Release()
}

// answerWith returns api's answer to offer, without its ICE credentials,
// candidates and origin line, which differ from one PeerConnection to the
// next.
func answerWith(t *testing.T, ts *testServer, api *webrtc.API, offer string) string {
	t.Helper()
	cert, err := ts.srv.certs.Get(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{BundlePolicy: webrtc.BundlePolicyMaxBundle, Certificates: []webrtc.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for line := range strings.Lines(answer.SDP) {
		if !strings.HasPrefix(line, "o=") && !strings.HasPrefix(line, "a=ice-") && !strings.HasPrefix(line, "a=candidate") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// TestSimulcastAPIAnswersAsTheSharedOne: the API of simulcast sessions
// (newSimulcastAPI: webrtcapi.New's with more header extensions) answers an
// offer without simulcast as the shared one does, and differs only by the
// simulcast header extensions when they are offered.
func TestSimulcastAPIAnswersAsTheSharedOne(t *testing.T) {
	ts := newTestServer(t, nil)
	plain := newPublisher(t, publisherOptions{}).offer()
	if a, b := answerWith(t, ts, ts.srv.api, plain), answerWith(t, ts, ts.srv.simAPI, plain); a != b {
		t.Fatalf("the answers to an offer without simulcast differ:\n%s\n---\n%s", a, b)
	}
	withExt := strings.Replace(obsOffer, "a=mid:1\r\n", "a=mid:1\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:5 "+webrtcapi.PlayoutDelayURI+"\r\n", 1)
	shared, sim := answerWith(t, ts, ts.srv.api, withExt), answerWith(t, ts, ts.srv.simAPI, withExt)
	if strings.Replace(sim, "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n", "", 1) != shared {
		t.Fatalf("the answers differ by more than the sdes:mid extension:\n%s\n---\n%s", shared, sim)
	}
}

// TestSimulcastLinesWherePionTakesNothing: an offer without simulcast
// video but with a malformed a=simulcast line in a section the gateway
// does not take, on which pion would panic, gets its session, which ends
// as any.
func TestSimulcastLinesWherePionTakesNothing(t *testing.T) {
	ts := newTestServer(t, nil)
	offer := newPublisher(t, publisherOptions{}).offer() +
		"m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:9\r\na=rtpmap:96 H264/90000\r\na=rid:x send\r\na=simulcast:send ;x\r\n"
	resp, body := do(t, http.MethodPost, ts.url(whipPath), testKey, sdpType, offer)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	if strings.Contains(body, "a=rid") || strings.Contains(body, "a=simulcast") {
		t.Fatalf("the answer has simulcast lines:\n%s", body)
	}
	resp, body = do(t, http.MethodDelete, ts.url(resp.Header.Get("Location")), testKey, "", "")
	wantStatus(t, resp, body, http.StatusOK, "")
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held: %v", err)
	}
	pub.Release()
}
