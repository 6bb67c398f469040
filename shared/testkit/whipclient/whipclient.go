// Package whipclient is a WHIP publisher for tests and benches that
// behaves as OBS's WHIP output does (OBS 30 and later): it gathers every
// candidate before it offers (OBS sends no trickle PATCH), POSTs the offer
// with the stream key as a Bearer token, needs exactly 201 Created with a
// Location, sends H.264 and Opus, and DELETEs the Location with the token
// when it stops. pion's default interceptors answer the gateway's NACKs
// and send sender reports, as a real encoder's WebRTC stack would.
//
//	p, err := whipclient.Publish(ctx, whipclient.Config{URL: "http://host:8080/api/whip", Token: key})
//	defer p.Close()
//	err = p.Stream(ctx, nals, opus) // real time, looping, until ctx ends
package whipclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"
	"github.com/pion/webrtc/v3/pkg/media"

	"lightspeed/shared/testkit/testmedia"
)

// UserAgent is what OBS 31 sends, the default.
const UserAgent = "Mozilla/5.0 (OBS-Studio/31.0.0; Linux x86_64; en-US)"

// answerWait is how long OBS waits for the answer.
const answerWait = 8 * time.Second

// Config configures a publisher.
type Config struct {
	// URL is the WHIP endpoint, e.g. "http://host:8080/api/whip".
	URL string
	// Token is sent as "Authorization: Bearer <Token>" on POST and DELETE.
	Token string
	// Loopback gathers only 127.0.0.1 candidates (tests on loopback).
	Loopback bool
	// UserAgent; empty: UserAgent.
	UserAgent string
	// KeyframeOnPLI makes Stream answer a keyframe request (PLI or FIR)
	// as an encoder does: the next video frame it sends is the next
	// keyframe of the looped media, the frames before it skipped, the
	// timestamps going on as if they had been sent. Off, the requests are
	// only counted and keyframes come when the media has them.
	KeyframeOnPLI bool
	// OnVideoPacket, if set, is called with every video RTP packet
	// (retransmissions too) once it has been handed to the network: the
	// header, the payload and the time the write returned. It runs on the
	// writing goroutine and must not keep h or payload.
	OnVideoPacket func(h *rtp.Header, payload []byte, sent time.Time)
}

// Publisher is one WHIP session.
type Publisher struct {
	cfg      Config
	pc       *webrtc.PeerConnection
	video    *webrtc.TrackLocalStaticSample
	audio    *webrtc.TrackLocalStaticSample
	location string
	client   *http.Client

	plis, firs atomic.Int64
	wantKey    atomic.Bool // a keyframe request came that Stream has not answered
	connected  chan struct{}
	failed     chan struct{}
}

// HTTPError is a refused POST: its status and body.
type HTTPError struct {
	Status int
	Body   string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("whipclient: POST answered %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// Publish offers, POSTs and waits until the PeerConnection is connected
// or ctx ends. A refused POST returns an *HTTPError.
func Publish(ctx context.Context, cfg Config) (*Publisher, error) {
	pc, err := newPeerConnection(cfg)
	if err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, pc: pc, client: &http.Client{Timeout: answerWait},
		connected: make(chan struct{}), failed: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			pc.Close()
		}
	}()
	p.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "obs")
	if err != nil {
		return nil, err
	}
	p.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "obs")
	if err != nil {
		return nil, err
	}
	for _, track := range []webrtc.TrackLocal{p.audio, p.video} { // OBS offers audio first
		tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return nil, err
		}
		go p.readRTCP(tr.Sender())
	}
	var connectedOnce, failedOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			connectedOnce.Do(func() { close(p.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			failedOnce.Do(func() { close(p.failed) })
		}
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	answer, location, err := p.post(ctx, pc.LocalDescription().SDP)
	if err != nil {
		return nil, err
	}
	p.location = location
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		p.delete()
		return nil, fmt.Errorf("whipclient: answer: %w", err)
	}
	select {
	case <-p.connected:
	case <-p.failed:
		p.delete()
		return nil, errors.New("whipclient: the connection failed")
	case <-ctx.Done():
		p.delete()
		return nil, ctx.Err()
	}
	ok = true
	return p, nil
}

func newPeerConnection(cfg Config) (*webrtc.PeerConnection, error) {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	codecs := []struct {
		c    webrtc.RTPCodecParameters
		kind webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", RTCPFeedback: fb}, PayloadType: 96}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if err := m.RegisterCodec(c.c, c.kind); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if cfg.OnVideoPacket != nil {
		// First in the chain: it wraps the writer to the network, so it
		// sees the packets as sent, retransmissions included.
		ir.Add(sentHookFactory{fn: cfg.OnVideoPacket})
	}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, err
	}
	var se webrtc.SettingEngine
	if cfg.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return api.NewPeerConnection(webrtc.Configuration{})
}

// post sends the offer and returns the answer and the session's absolute
// URL.
func (p *Publisher) post(ctx context.Context, offer string) (answer, location string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.URL, strings.NewReader(offer))
	if err != nil {
		return "", "", err
	}
	p.header(req)
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("whipclient: POST: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated { // OBS takes nothing else
		return "", "", &HTTPError{Status: resp.StatusCode, Body: string(body)}
	}
	loc, err := resp.Location()
	if err != nil {
		return "", "", fmt.Errorf("whipclient: 201 without a Location: %w", err)
	}
	return string(body), loc.String(), nil
}

func (p *Publisher) header(req *http.Request) {
	req.Header.Set("Authorization", "Bearer "+p.cfg.Token)
	req.Header.Set("User-Agent", p.cfg.UserAgent)
	if p.cfg.UserAgent == "" {
		req.Header.Set("User-Agent", UserAgent)
	}
}

// readRTCP reads what the gateway sends about one track (which also runs
// the interceptors: NACKs are answered from here) and counts keyframe
// requests.
func (p *Publisher) readRTCP(s *webrtc.RTPSender) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication:
				p.plis.Add(1)
				p.wantKey.Store(true)
			case *rtcp.FullIntraRequest:
				p.firs.Add(1)
				p.wantKey.Store(true)
			}
		}
	}
}

// KeyframeRequests returns the PLIs and FIRs received so far.
func (p *Publisher) KeyframeRequests() (plis, firs int64) { return p.plis.Load(), p.firs.Load() }

// Stream sends nals (H.264 NAL units, as testmedia.NALUnits returns them)
// and opus (20 ms packets) in real time, the video at testmedia.FrameRate,
// looping both, until ctx ends; it returns ctx's error, or the error of a
// write. With Config.KeyframeOnPLI a keyframe request makes it skip to the
// media's next keyframe.
func (p *Publisher) Stream(ctx context.Context, nals, opus [][]byte) error {
	frames := accessUnits(nals)
	if len(frames) == 0 || len(opus) == 0 {
		return errors.New("whipclient: no media to stream")
	}
	keys := make([]bool, len(frames))
	for i, f := range frames {
		keys[i] = isKeyframe(f)
	}
	f := 0 // the media's frame to send next, counting loops
	frameLen := time.Second / testmedia.FrameRate
	opusLen := testmedia.OpusFrameLength * time.Millisecond
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for v, a := 0, 0; ; {
		nextV, nextA := start.Add(time.Duration(v)*frameLen), start.Add(time.Duration(a)*opusLen)
		video := !nextA.Before(nextV) // the video first when both are due
		at := nextA
		if video {
			at = nextV
		}
		timer.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		if video {
			if p.cfg.KeyframeOnPLI && p.wantKey.Swap(false) {
				f = nextKeyframe(keys, f)
			}
			err := p.video.WriteSample(media.Sample{Data: frames[f%len(frames)], Duration: frameLen})
			f++
			if err != nil {
				return fmt.Errorf("whipclient: video: %w", err)
			}
			v++
			continue
		}
		if err := p.audio.WriteSample(media.Sample{Data: opus[a%len(opus)], Duration: opusLen}); err != nil {
			return fmt.Errorf("whipclient: audio: %w", err)
		}
		a++
	}
}

// nextKeyframe returns the first frame from f on (counting loops) that
// is a keyframe, or f if the media has none.
func nextKeyframe(keys []bool, f int) int {
	for i := range len(keys) {
		if keys[(f+i)%len(keys)] {
			return f + i
		}
	}
	return f
}

// isKeyframe reports whether an Annex B access unit holds an IDR slice.
func isKeyframe(au []byte) bool {
	for i := 0; i+4 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 0 && au[i+3] == 1 && au[i+4]&0x1f == 5 {
			return true
		}
	}
	return false
}

// sentHookFactory makes the interceptor of Config.OnVideoPacket.
type sentHookFactory struct {
	fn func(h *rtp.Header, payload []byte, sent time.Time)
}

func (f sentHookFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &sentHook{fn: f.fn}, nil
}

// sentHook hands every video packet to fn once the next writer (the
// network's) has taken it.
type sentHook struct {
	interceptor.NoOp
	fn func(h *rtp.Header, payload []byte, sent time.Time)
}

func (s *sentHook) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.EqualFold(info.MimeType, webrtc.MimeTypeH264) {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		n, err := w.Write(h, payload, a)
		if err == nil {
			s.fn(h, payload, time.Now())
		}
		return n, err
	})
}

// accessUnits groups NAL units into Annex B access units, each ending at
// its slice (the test media has one slice per frame).
func accessUnits(nals [][]byte) [][]byte {
	var out [][]byte
	var au bytes.Buffer
	for _, nal := range nals {
		if len(nal) == 0 {
			continue
		}
		au.Write([]byte{0, 0, 0, 1})
		au.Write(nal)
		if t := nal[0] & 0x1f; t == 1 || t == 5 {
			out = append(out, bytes.Clone(au.Bytes()))
			au.Reset()
		}
	}
	return out
}

// Close DELETEs the session, with the token, and closes the
// PeerConnection. It returns the DELETE's error, if any.
func (p *Publisher) Close() error {
	err := p.delete()
	p.pc.Close()
	return err
}

func (p *Publisher) delete() error {
	req, err := http.NewRequest(http.MethodDelete, p.location, nil)
	if err != nil {
		return err
	}
	p.header(req)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("whipclient: DELETE: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("whipclient: DELETE answered %s", resp.Status)
	}
	return nil
}
