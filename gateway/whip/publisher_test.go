package whip

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/h264"
	"lightspeed/shared/testkit/testmedia"
)

// testPublisher is a pion publisher that behaves as OBS's WHIP output
// does: it gathers every candidate before it offers (no trickle), sends
// the stream key as a Bearer token on POST and DELETE, offers H.264
// (payload type 96, nack and nack pli) and Opus (111), and answers NACKs
// from its send buffer.
type testPublisher struct {
	t         *testing.T
	pc        *webrtc.PeerConnection
	video     *webrtc.TrackLocalStaticRTP
	audio     *webrtc.TrackLocalStaticRTP
	keyframes chan rtcp.Packet // PLIs and FIRs the publisher received
	connected chan struct{}
	location  string
	loser     *loser // nil without publisherOptions.lose
}

// publisherOptions say what a test publisher offers.
type publisherOptions struct {
	videoMime string // webrtc.MimeTypeH264 (default), MimeTypeVP8, or "none"
	noAudio   bool
	feedback  []webrtc.RTCPFeedback // of the video codec; default nack and nack pli
	// lose names video sequence numbers whose first sending is lost, as
	// on the wire: the publisher's NACK responder has them to send again.
	// Each is deleted from the map when it is lost.
	lose map[uint16]bool
}

// loser is an interceptor that drops the first sending of the video
// packets in lose.
type loser struct {
	interceptor.NoOp
	mu   sync.Mutex
	lose map[uint16]bool
}

// remaining returns how many packets were not lost yet.
func (l *loser) remaining() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lose)
}

func (l *loser) NewInterceptor(string) (interceptor.Interceptor, error) { return l, nil }

func (l *loser) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if info.ClockRate != 90000 {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		l.mu.Lock()
		lost := l.lose[h.SequenceNumber]
		delete(l.lose, h.SequenceNumber)
		l.mu.Unlock()
		if lost {
			return len(payload), nil
		}
		return w.Write(h, payload, a)
	})
}

func newPublisher(t *testing.T, o publisherOptions) *testPublisher {
	t.Helper()
	if o.videoMime == "" {
		o.videoMime = webrtc.MimeTypeH264
	}
	if o.feedback == nil {
		o.feedback = []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	}
	m := &webrtc.MediaEngine{}
	videoCap := webrtc.RTPCodecCapability{MimeType: o.videoMime, ClockRate: 90000, RTCPFeedback: o.feedback}
	if o.videoMime == webrtc.MimeTypeH264 {
		videoCap.SDPFmtpLine = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	}
	audioCap := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
	if o.videoMime != "none" {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: videoCap, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: audioCap, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		t.Fatal(err)
	}
	p := &testPublisher{t: t, keyframes: make(chan rtcp.Packet, 16), connected: make(chan struct{})}
	ir := &interceptor.Registry{}
	if o.lose != nil {
		// Added first, so it is the closest to the wire: the responder
		// keeps every packet before it is lost.
		p.loser = &loser{lose: o.lose}
		ir.Add(p.loser)
	}
	responder, err := nack.NewResponderInterceptor()
	if err != nil {
		t.Fatal(err)
	}
	ir.Add(responder)
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetDTLSRetransmissionInterval(100 * time.Millisecond)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	p.pc = pc
	t.Cleanup(func() { pc.Close() })
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(p.connected) })
		}
	})
	add := func(c webrtc.RTPCodecCapability, id string, keyframes chan rtcp.Packet) *webrtc.TrackLocalStaticRTP {
		track, err := webrtc.NewTrackLocalStaticRTP(c, id, "obs")
		if err != nil {
			t.Fatal(err)
		}
		tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				pkts, _, err := tr.Sender().ReadRTCP()
				if err != nil {
					return
				}
				for _, pkt := range pkts {
					switch pkt.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						if keyframes != nil {
							keyframes <- pkt
						}
					}
				}
			}
		}()
		return track
	}
	if o.videoMime != "none" {
		p.video = add(videoCap, "video", p.keyframes)
	}
	if !o.noAudio {
		p.audio = add(audioCap, "audio", nil)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return p
}

// offer is the publisher's SDP offer, every candidate inside.
func (p *testPublisher) offer() string { return p.pc.LocalDescription().SDP }

// publish POSTs the offer to url with token and applies the answer. It
// returns the response; on 201 the answer is applied.
func (p *testPublisher) publish(url, token string) (*http.Response, string) {
	p.t.Helper()
	return p.publishSDP(url, token, p.offer())
}

// publishSDP is publish with offer in place of the publisher's own.
func (p *testPublisher) publishSDP(url, token, offer string) (*http.Response, string) {
	p.t.Helper()
	resp, body := do(p.t, http.MethodPost, url, token, "application/sdp", offer)
	if resp.StatusCode == http.StatusCreated {
		p.location = resp.Header.Get("Location")
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: body}); err != nil {
			p.t.Fatalf("set answer: %v", err)
		}
	}
	return resp, body
}

// waitConnected waits for the publisher's PeerConnection to connect.
func (p *testPublisher) waitConnected(ctx context.Context) {
	p.t.Helper()
	select {
	case <-p.connected:
	case <-ctx.Done():
		p.t.Fatal("publisher did not connect")
	}
}

// waitKeyframeRequest waits for the next PLI or FIR the publisher
// receives.
func (p *testPublisher) waitKeyframeRequest(ctx context.Context) rtcp.Packet {
	p.t.Helper()
	select {
	case pkt := <-p.keyframes:
		return pkt
	case <-ctx.Done():
		p.t.Fatal("no keyframe request reached the publisher")
		return nil
	}
}

// sendMedia sends the first second of the test media as OBS would
// (H.264 NAL units as single NAL units or FU-A, 1100 bytes at most;
// Opus packets of 20 ms) and returns the payloads it sent, by track. It
// paces the packets lightly so loopback's socket buffers do not overflow.
func (p *testPublisher) sendMedia(ctx context.Context) (video, audio [][]byte) {
	p.t.Helper()
	nals, err := testmedia.NALUnits()
	if err != nil {
		p.t.Fatal(err)
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		p.t.Fatal(err)
	}
	tick := time.NewTicker(500 * time.Microsecond)
	defer tick.Stop()
	write := func(track *webrtc.TrackLocalStaticRTP, pkt *rtp.Packet) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			p.t.Fatal("sending media: ", ctx.Err())
		}
		if err := track.WriteRTP(pkt); err != nil {
			p.t.Fatalf("write rtp: %v", err)
		}
	}
	var (
		frag     h264.Fragmenter
		buf      [1200]byte
		vseq     = uint16(65500) // wraps around during the test
		aseq     = uint16(300)
		vts      = uint32(90000)
		ats      = uint32(48000)
		frames   = 0
		opusNext = 0
	)
	for _, nal := range nals {
		if frames == testmedia.FrameRate+1 {
			break
		}
		slice := nal[0]&0x1f == 1 || nal[0]&0x1f == 5
		frag.Reset(nal, 1100)
		for {
			n, last := frag.Next(buf[:])
			if n == 0 {
				break
			}
			payload := bytes.Clone(buf[:n])
			video = append(video, payload)
			write(p.video, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: vseq, Timestamp: vts, Marker: last && slice}, Payload: payload})
			vseq++
			if last {
				break
			}
		}
		if !slice {
			continue
		}
		frames++
		vts += 3000
		// Audio up to the video's time: 20 ms packets.
		for opusNext < len(opus) && opusNext*20 < frames*1000/testmedia.FrameRate {
			audio = append(audio, opus[opusNext])
			write(p.audio, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: ats, Marker: opusNext == 0}, Payload: opus[opusNext]})
			aseq++
			ats += 960
			opusNext++
		}
	}
	return video, audio
}

// do sends one request with a Bearer token (none when token is "") and
// returns the response and its body.
func do(t *testing.T, method, url, token, contentType, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (OBS-Studio/31.0.0; Linux x86_64; en-US)")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}
