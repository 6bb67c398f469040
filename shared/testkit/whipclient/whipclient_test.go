package whipclient

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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
// PeerConnection that receives, notes the video frames and can ask for a
// keyframe.
type answerer struct {
	t      *testing.T
	mu     sync.Mutex
	pc     *webrtc.PeerConnection
	frames []frame // as received, in order
	ssrc   uint32
	got    chan struct{} // a frame came
}

// frame is a video frame as the answerer received it.
type frame struct {
	ts  uint32
	key bool // its first packet carries an SPS or an IDR slice
}

func newAnswerer(t *testing.T) (*answerer, *httptest.Server) {
	a := &answerer{t: t, got: make(chan struct{}, 1024)}
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
		a.ssrc = uint32(track.SSRC())
		a.mu.Unlock()
		for {
			p, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			a.packet(p)
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
	io.WriteString(w, pc.LocalDescription().SDP)
}

// packet notes a video packet: a new timestamp starts a frame.
func (a *answerer) packet(p *rtp.Packet) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.frames); n > 0 && a.frames[n-1].ts == p.Timestamp {
		return
	}
	info, err := h264.Inspect(p.Payload)
	a.frames = append(a.frames, frame{ts: p.Timestamp, key: err == nil && (info.HasSPS || info.NALType == h264.NALIDR)})
	select {
	case a.got <- struct{}{}:
	default:
	}
}

// waitFrames waits until n frames came.
func (a *answerer) waitFrames(n int) []frame {
	a.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		a.mu.Lock()
		f := append([]frame(nil), a.frames...)
		a.mu.Unlock()
		if len(f) >= n {
			return f
		}
		select {
		case <-a.got:
		case <-deadline:
			a.t.Fatalf("%d video frames after 10 s, want %d", len(f), n)
		}
	}
}

// askKeyframe sends a PLI for the video track.
func (a *answerer) askKeyframe() {
	a.t.Helper()
	a.mu.Lock()
	pc, ssrc := a.pc, a.ssrc
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
