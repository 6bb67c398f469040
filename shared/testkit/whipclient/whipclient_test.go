package whipclient

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/h264"
	"lightspeed/shared/testkit/testmedia"
)

// answerer is a tiny WHIP endpoint for the tests: one session, a pion
// PeerConnection that receives, notes the video frames of each video
// stream (by rid, "" without simulcast) and can ask for a keyframe.
type answerer struct {
	t         *testing.T
	simulcast bool                // takes simulcast: the header extensions it needs
	edit      func(string) string // if set, rewrites the answer
	mu        sync.Mutex
	pc        *webrtc.PeerConnection
	frames    map[string][]frame // as received, in order
	ssrc      map[string]uint32
	got       chan struct{} // a frame came
}

// frame is a video frame as the answerer received it.
type frame struct {
	ts  uint32
	key bool // its first packet carries an SPS or an IDR slice
	end byte // the last byte of its last packet (with the marker), if it came
}

func newAnswerer(t *testing.T) (*answerer, *httptest.Server) {
	a := &answerer{t: t, got: make(chan struct{}, 1024), frames: map[string][]frame{}, ssrc: map[string]uint32{}}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(func() {
		srv.Close()
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.pc != nil {
			a.pc.Close()
		}
	})
	return a, srv
}

func (a *answerer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodDelete {
		return
	}
	offer, _ := io.ReadAll(r.Body)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	if a.simulcast {
		if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	a.mu.Lock()
	a.pc = pc
	a.mu.Unlock()
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if track.Kind() != webrtc.RTPCodecTypeVideo {
			for {
				if _, _, err := track.ReadRTP(); err != nil {
					return
				}
			}
		}
		a.mu.Lock()
		a.ssrc[track.RID()] = uint32(track.SSRC())
		a.mu.Unlock()
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			a.packet(track.RID(), p)
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	<-gathered
	w.Header().Set("Location", "/session/1")
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	sdp := pc.LocalDescription().SDP
	if a.edit != nil {
		sdp = a.edit(sdp)
	}
	io.WriteString(w, sdp)
}

// packet notes a video packet of the stream of rid: a new timestamp
// starts a frame.
func (a *answerer) packet(rid string, p *rtp.Packet) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.frames[rid]
	if n := len(f); n > 0 && f[n-1].ts == p.Timestamp {
		if p.Marker {
			f[n-1].end = p.Payload[len(p.Payload)-1]
		}
		return
	}
	info, err := h264.Inspect(p.Payload)
	fr := frame{ts: p.Timestamp, key: err == nil && (info.HasSPS || info.NALType == h264.NALIDR)}
	if p.Marker {
		fr.end = p.Payload[len(p.Payload)-1]
	}
	a.frames[rid] = append(f, fr)
	select {
	case a.got <- struct{}{}:
	default:
	}
}

// waitFrames waits until n frames came of the video without simulcast.
func (a *answerer) waitFrames(n int) []frame { return a.waitLayerFrames("", n) }

// waitLayerFrames waits until n frames of the layer of rid came.
func (a *answerer) waitLayerFrames(rid string, n int) []frame {
	a.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		a.mu.Lock()
		f := append([]frame(nil), a.frames[rid]...)
		a.mu.Unlock()
		if len(f) >= n {
			return f
		}
		select {
		case <-a.got:
		case <-deadline:
			a.t.Fatalf("%d video frames of %q after 10 s, want %d", len(f), rid, n)
		}
	}
}

// askKeyframe sends a PLI for the video track without simulcast.
func (a *answerer) askKeyframe() { a.askLayerKeyframe("") }

// askLayerKeyframe sends a PLI for the SSRC of the layer of rid.
func (a *answerer) askLayerKeyframe(rid string) {
	a.t.Helper()
	a.mu.Lock()
	pc, ssrc := a.pc, a.ssrc[rid]
	a.mu.Unlock()
	if err := pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		a.t.Fatal(err)
	}
}

// fromFrame returns the test media's NAL units starting at frame k (one
// slice per frame; SPS and PPS belong to the IDR after them).
func fromFrame(t *testing.T, k int) [][]byte {
	t.Helper()
	nals, err := testmedia.NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	slices := 0
	for i, nal := range nals {
		if slices == k {
			return append(append([][]byte(nil), nals[i:]...), nals[:i]...)
		}
		if typ := nal[0] & 0x1f; typ == 1 || typ == 5 {
			slices++
		}
	}
	t.Fatalf("the test media has fewer than %d frames", k)
	return nil
}

// publish starts a publisher to the answerer streaming the test media
// from frame start (a P frame), and returns it with the packets its
// OnVideoPacket saw, by timestamp.
func publish(t *testing.T, url string, keyframeOnPLI bool, start int) (*Publisher, func() map[uint32]int) {
	t.Helper()
	var (
		mu   sync.Mutex
		sent = map[uint32]int{}
	)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	p, err := Publish(ctx, Config{
		URL: url, Token: "77-secret", Loopback: true, KeyframeOnPLI: keyframeOnPLI,
		OnVideoPacket: func(h *rtp.Header, payload []byte, _ time.Time) {
			mu.Lock()
			sent[h.Timestamp]++
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Stream(streamCtx, fromFrame(t, start), opus)
	}()
	t.Cleanup(func() {
		stop()
		<-done
		p.Close()
	})
	return p, func() map[uint32]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[uint32]int, len(sent))
		for ts, n := range sent {
			out[ts] = n
		}
		return out
	}
}

// firstKey returns the index of the first keyframe in f, or -1.
func firstKey(f []frame) int {
	for i, x := range f {
		if x.key {
			return i
		}
	}
	return -1
}

func TestKeyframeOnPLISkipsToTheNextKeyframe(t *testing.T) {
	const start = 5 // 25 frames before the media's next keyframe
	a, srv := newAnswerer(t)
	p, sent := publish(t, srv.URL, true, start)
	before := a.waitFrames(3)
	if k := firstKey(before); k >= 0 {
		t.Fatalf("frame %d is a keyframe before any request; the media starts at P frame %d", k, start)
	}
	a.askKeyframe()
	asked := len(a.waitFrames(3)) // frames received by the time it was sent, at least
	f := a.waitFrames(asked + 6)
	k := firstKey(f)
	if k < 0 || k > asked+5 {
		t.Fatalf("first keyframe at frame %d of %d; the PLI went out after frame %d (frames: %+v)", k, len(f), asked, f)
	}
	// The timestamps go on as if the skipped frames had been sent: one
	// frame's duration (pion rounds 1/30 s at 90 kHz down to 2999) at
	// every step.
	for i := 1; i < len(f); i++ {
		if d, want := f[i].ts-f[i-1].ts, f[1].ts-f[0].ts; d != want || d < 2999 || d > 3000 {
			t.Fatalf("frame %d: timestamp step %d, want %d (one frame)", i, d, want)
		}
	}
	if plis, _ := p.KeyframeRequests(); plis != 1 {
		t.Errorf("KeyframeRequests: %d PLIs, want 1", plis)
	}
	// OnVideoPacket saw every frame the answerer received (it is called
	// once the write returned, which may be after the answerer read it).
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; i < len(f); {
		if sent()[f[i].ts] > 0 {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("frame %d (timestamp %d) received, not seen by OnVideoPacket", i, f[i].ts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWithoutKeyframeOnPLIKeyframesComeFromTheMedia(t *testing.T) {
	const start = 20 // 10 frames before the media's next keyframe
	a, srv := newAnswerer(t)
	p, _ := publish(t, srv.URL, false, start)
	a.waitFrames(2)
	a.askKeyframe()
	f := a.waitFrames(testmedia.KeyframeEvery - start + 2)
	if k := firstKey(f); k != testmedia.KeyframeEvery-start {
		t.Fatalf("first keyframe at frame %d, want %d: the media's own (frames: %+v)", k, testmedia.KeyframeEvery-start, f)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if plis, _ := p.KeyframeRequests(); plis == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the PLI was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// layerMedia returns the test media from frame start as layer i sends it:
// every slice's last byte is the layer's own.
func layerMedia(t *testing.T, start, i int) [][]byte {
	t.Helper()
	nals := fromFrame(t, start)
	out := make([][]byte, len(nals))
	for j, nal := range nals {
		out[j] = append([]byte(nil), nal...)
		if typ := nal[0] & 0x1f; typ == 1 || typ == 5 {
			out[j][len(nal)-1] = 0xa0 + byte(i)
		}
	}
	return out
}

func TestSimulcastLayersSendTheirOwnMedia(t *testing.T) {
	const start = 5 // 25 frames before the media's next keyframe
	a, srv := newAnswerer(t)
	a.simulcast = true
	rids := []string{"q", "h", "f"}
	asked := make(chan string, 16)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Publish(ctx, Config{URL: srv.URL, Token: "77-secret", Loopback: true, KeyframeOnPLI: true, Layers: rids,
		OnKeyframeRequest: func(rid string) { asked <- rid }})
	if err != nil {
		t.Fatal(err)
	}
	offer := p.pc.LocalDescription().SDP
	for _, want := range []string{"a=rid:q send\r\n", "a=rid:h send\r\n", "a=rid:f send\r\n", "a=simulcast:send q;h;f\r\n", midURI, ridURI} {
		if !strings.Contains(offer, want) {
			t.Errorf("the offer lacks %q", want)
		}
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	media := [][][]byte{layerMedia(t, start, 0), layerMedia(t, start, 1), layerMedia(t, start, 2)}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.StreamLayers(streamCtx, media, opus)
	}()
	defer func() {
		stop()
		<-done
		p.Close()
	}()

	// Each layer reaches the answerer as the track of its rid, with its
	// own media.
	for i, rid := range rids {
		for k, f := range a.waitLayerFrames(rid, 3) {
			if f.end != 0 && f.end != 0xa0+byte(i) {
				t.Fatalf("layer %s: frame %d ends with %#x, layer %d's media ends its slices with %#x", rid, k, f.end, i, 0xa0+i)
			}
		}
		if p.LayerSSRC(rid) == 0 {
			t.Fatalf("layer %s: no SSRC", rid)
		}
	}

	// A PLI for layer h's SSRC is counted for h, and makes h (only)
	// skip to its next keyframe.
	a.askLayerKeyframe("h")
	select {
	case rid := <-asked:
		if rid != "h" {
			t.Fatalf("the PLI for layer h was counted for layer %q", rid)
		}
	case <-ctx.Done():
		t.Fatal("the PLI for layer h was not counted")
	}
	n := len(a.waitLayerFrames("h", 1))
	if f := a.waitLayerFrames("h", n+6); firstKey(f) < 0 || firstKey(f) > n+5 {
		t.Fatalf("layer h: first keyframe at frame %d of %d; the PLI was counted after frame %d", firstKey(f), len(f), n)
	}
	if q := a.waitLayerFrames("q", 1); len(q) < testmedia.KeyframeEvery-start && firstKey(q) >= 0 {
		t.Fatalf("layer q has a keyframe at frame %d of its %d: the PLI was for layer h", firstKey(q), len(q))
	}
	for rid, want := range map[string]int64{"q": 0, "h": 1, "f": 0} {
		if plis, firs := p.LayerKeyframeRequests(rid); plis != want || firs != 0 {
			t.Errorf("layer %s: %d PLIs and %d FIRs, want %d PLIs", rid, plis, firs, want)
		}
	}
	if plis, _ := p.KeyframeRequests(); plis != 1 {
		t.Errorf("KeyframeRequests: %d PLIs, want 1", plis)
	}
}

// TestSimulcastGivesUpOnAnAnswerOfFewerLayers: as OBS, a publisher of
// layers gives up when the answer does not take every one.
func TestSimulcastGivesUpOnAnAnswerOfFewerLayers(t *testing.T) {
	a, srv := newAnswerer(t)
	a.simulcast = true
	a.edit = func(sdp string) string {
		return strings.Replace(strings.Replace(sdp, "a=simulcast:recv q;h;f", "a=simulcast:recv q;h", 1), "a=rid:f recv\r\n", "", 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Publish(ctx, Config{URL: srv.URL, Token: "77-secret", Loopback: true, Layers: []string{"q", "h", "f"}})
	if err == nil || !strings.Contains(err.Error(), "not all the layers offered") {
		t.Fatalf("Publish: %v; want it to give up", err)
	}
}
