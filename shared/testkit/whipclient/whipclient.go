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
//
// With Config.Layers it publishes simulcast as OBS 32.1 and later can: one
// video RTP stream per rid, each with its own media (StreamLayers).
//
//	p, err := whipclient.Publish(ctx, whipclient.Config{URL: url, Token: key, Layers: []string{"0", "1", "2"}})
//	err = p.StreamLayers(ctx, [][][]byte{nals0, nals1, nals2}, opus)
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
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
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
	// writing goroutine and must not keep h or payload. With Layers, h.SSRC
	// tells the layer (LayerSSRC). A packet LoseVideo loses is among them.
	OnVideoPacket func(h *rtp.Header, payload []byte, sent time.Time)
	// Layers, if set, makes the video simulcast, as OBS 32.1 and later
	// can send it: one RTP stream per rid (OBS names its layers "0", "1",
	// "2", …), in this order. The offer has an "a=rid:<rid> send" line
	// each and "a=simulcast:send" with all of them, and every video packet
	// carries the sdes:mid and sdes:rtp-stream-id header extensions. As
	// OBS, Publish gives up when the answer does not take every layer.
	// Keyframe requests are counted, and KeyframeOnPLI answered, per
	// layer. Empty: one video stream, no simulcast.
	Layers []string
	// OnKeyframeRequest, if set, is called for every PLI or FIR received,
	// with the rid of the layer it asks for ("" without Layers), on the
	// goroutine reading that layer's RTCP, after it was counted.
	OnKeyframeRequest func(rid string)
	// LoseVideo, if set, is asked about every video packet on its way to
	// the network (retransmissions too); one it answers true for is not
	// sent, as if lost on the way, while the NACK responder keeps it to
	// send again. It runs on the writing goroutine and must not keep h.
	LoseVideo func(h *rtp.Header) bool
}

// Publisher is one WHIP session.
type Publisher struct {
	cfg      Config
	pc       *webrtc.PeerConnection
	video    *webrtc.TrackLocalStaticSample // without Layers
	audio    *webrtc.TrackLocalStaticSample
	layers   []*layer // with Layers: one each, in order
	mid      string   // of the video, with Layers
	midID    uint8    // the negotiated id of the sdes:mid header extension, with Layers
	ridID    uint8    // of sdes:rtp-stream-id
	answer   string
	location string
	client   *http.Client

	keys         keyRequests       // of the video without Layers
	videoSender  *webrtc.RTPSender // with Layers
	layerReaders sync.WaitGroup    // the layers' RTCP readers
	reading      bool              // they were started (by Publish)
	connected    chan struct{}
	failed       chan struct{}
}

// keyRequests are the keyframe requests for one video stream.
type keyRequests struct {
	plis, firs atomic.Int64
	wantKey    atomic.Bool // a keyframe request came that Stream has not answered
}

// count counts the PLIs and FIRs among pkts, and calls on (if not nil)
// for each.
func (k *keyRequests) count(pkts []rtcp.Packet, on func()) {
	for _, pkt := range pkts {
		switch pkt.(type) {
		case *rtcp.PictureLossIndication:
			k.plis.Add(1)
		case *rtcp.FullIntraRequest:
			k.firs.Add(1)
		default:
			continue
		}
		k.wantKey.Store(true)
		if on != nil {
			on()
		}
	}
}

// layer is one simulcast layer of the video.
type layer struct {
	rid   string
	track *webrtc.TrackLocalStaticRTP
	pack  rtp.Packetizer // used by one Stream at a time
	ssrc  uint32         // set once negotiated
	keys  keyRequests
}

// Header extensions of a simulcast video, as OBS sends them in every
// packet: the media section (mid) and the layer (rid).
const (
	midURI = "urn:ietf:params:rtp-hdrext:sdes:mid"
	ridURI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
)

// layerMTU bounds a layer's packets, as a sample track's: 1200 bytes with
// a 12-byte header and up to 28 bytes of header extensions.
const layerMTU = 1200 - 28

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
			p.closePC()
		}
	}()
	p.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "obs")
	if err != nil {
		return nil, err
	}
	// OBS offers audio first. Its RTCP is read for the interceptors.
	sendonly := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}
	audioTr, err := pc.AddTransceiverFromTrack(p.audio, sendonly)
	if err != nil {
		return nil, err
	}
	go p.readRTCP(audioTr.Sender(), &keyRequests{}, nil)
	videoTr, err := p.addVideo(pc, sendonly)
	if err != nil {
		return nil, err
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
	p.location, p.answer = location, answer
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		p.delete()
		return nil, fmt.Errorf("whipclient: answer: %w", err)
	}
	if err := p.layersTaken(videoTr); err != nil {
		p.delete()
		return nil, err
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
	for _, l := range p.layers {
		p.layerReaders.Add(1)
		go p.readLayerRTCP(l)
	}
	p.reading = true
	ok = true
	return p, nil
}

// addVideo adds the video transceiver: one sample track, or with
// cfg.Layers one RTP track per rid, the first the transceiver's and the
// others its sender's further encodings.
func (p *Publisher) addVideo(pc *webrtc.PeerConnection, init webrtc.RTPTransceiverInit) (*webrtc.RTPTransceiver, error) {
	h264 := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}
	if len(p.cfg.Layers) == 0 {
		var err error
		if p.video, err = webrtc.NewTrackLocalStaticSample(h264, "video", "obs"); err != nil {
			return nil, err
		}
		tr, err := pc.AddTransceiverFromTrack(p.video, init)
		if err != nil {
			return nil, err
		}
		var on func()
		if f := p.cfg.OnKeyframeRequest; f != nil {
			on = func() { f("") }
		}
		go p.readRTCP(tr.Sender(), &p.keys, on)
		return tr, nil
	}
	var tr *webrtc.RTPTransceiver
	for i, rid := range p.cfg.Layers {
		track, err := webrtc.NewTrackLocalStaticRTP(h264, "video", "obs", webrtc.WithRTPStreamID(rid))
		if err != nil {
			return nil, err
		}
		if i == 0 {
			if tr, err = pc.AddTransceiverFromTrack(track, init); err == nil {
				p.videoSender = tr.Sender()
			}
		} else {
			err = tr.Sender().AddEncoding(track)
		}
		if err != nil {
			return nil, fmt.Errorf("whipclient: layer %q: %w", rid, err)
		}
		l := &layer{rid: rid, track: track,
			pack: rtp.NewPacketizer(layerMTU, 0, 0, &codecs.H264Payloader{}, rtp.NewRandomSequencer(), 90000)}
		p.layers = append(p.layers, l)
	}
	return tr, nil
}

// layersTaken checks, with Layers, that the answer takes every layer
// ("a=simulcast:recv" with all the rids, in order), as OBS does, and
// notes what sending them needs: the header extensions' ids, the video's
// mid and each layer's SSRC.
func (p *Publisher) layersTaken(tr *webrtc.RTPTransceiver) error {
	if len(p.layers) == 0 {
		return nil
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(p.answer); err != nil {
		return fmt.Errorf("whipclient: answer: %w", err)
	}
	mid := tr.Mid()
	for _, m := range d.MediaDescriptions {
		if v, _ := m.Attribute("mid"); v != mid {
			continue
		}
		v, _ := m.Attribute("simulcast")
		if got, want := v, "recv "+strings.Join(p.cfg.Layers, ";"); got != want {
			return fmt.Errorf("whipclient: the answer takes simulcast %q, not all the layers offered (%q)", got, want)
		}
		ids := map[string]uint8{}
		for _, a := range m.Attributes {
			if a.Key != "extmap" {
				continue
			}
			var e sdp.ExtMap
			if err := e.Unmarshal("extmap:" + a.Value); err == nil && e.URI != nil && e.Value > 0 && e.Value < 15 {
				ids[e.URI.String()] = uint8(e.Value)
			}
		}
		if ids[midURI] == 0 || ids[ridURI] == 0 {
			return errors.New("whipclient: the answer takes simulcast without the sdes:mid and sdes:rtp-stream-id header extensions")
		}
		ssrcs := map[string]uint32{}
		for _, e := range tr.Sender().GetParameters().Encodings {
			ssrcs[e.RID] = uint32(e.SSRC)
		}
		for _, l := range p.layers {
			l.ssrc = ssrcs[l.rid]
		}
		p.mid, p.midID, p.ridID = mid, ids[midURI], ids[ridURI]
		return nil
	}
	return fmt.Errorf("whipclient: the answer has no video section of mid %q", mid)
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
	if len(cfg.Layers) > 0 {
		if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
			return nil, err
		}
	}
	ir := &interceptor.Registry{}
	if cfg.LoseVideo != nil {
		// The closest to the network: what it loses was sent as far as
		// the rest of the chain knows, the NACK responder's buffer too.
		ir.Add(videoHookFactory{lose: cfg.LoseVideo})
	}
	if cfg.OnVideoPacket != nil {
		// Next to the network: it sees the packets as sent,
		// retransmissions included.
		ir.Add(videoHookFactory{sent: cfg.OnVideoPacket})
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
// requests in k, calling on (if not nil) for each.
func (p *Publisher) readRTCP(s *webrtc.RTPSender, k *keyRequests, on func()) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		k.count(pkts, on)
	}
}

// readLayerRTCP is readRTCP of one simulcast layer: the gateway's RTCP
// about its SSRC. It starts once the PeerConnection is connected (see
// closePC).
func (p *Publisher) readLayerRTCP(l *layer) {
	s := p.videoSender
	var on func()
	if f := p.cfg.OnKeyframeRequest; f != nil {
		on = func() { f(l.rid) }
	}
	defer p.layerReaders.Done()
	for {
		pkts, _, err := s.ReadSimulcastRTCP(l.rid)
		if err != nil {
			return
		}
		l.keys.count(pkts, on)
	}
}

// KeyframeRequests returns the PLIs and FIRs received so far, for every
// layer together.
func (p *Publisher) KeyframeRequests() (plis, firs int64) {
	if len(p.layers) == 0 {
		return p.keys.plis.Load(), p.keys.firs.Load()
	}
	for _, l := range p.layers {
		plis += l.keys.plis.Load()
		firs += l.keys.firs.Load()
	}
	return plis, firs
}

// LayerKeyframeRequests returns the PLIs and FIRs received so far for the
// SSRC of the layer of rid (0, 0 for a rid that is no layer).
func (p *Publisher) LayerKeyframeRequests(rid string) (plis, firs int64) {
	if l := p.layer(rid); l != nil {
		return l.keys.plis.Load(), l.keys.firs.Load()
	}
	return 0, 0
}

// LayerSSRC returns the SSRC the layer of rid is sent with, or 0.
func (p *Publisher) LayerSSRC(rid string) uint32 {
	if l := p.layer(rid); l != nil {
		return l.ssrc
	}
	return 0
}

// Answer returns the gateway's SDP answer.
func (p *Publisher) Answer() string { return p.answer }

func (p *Publisher) layer(rid string) *layer {
	for _, l := range p.layers {
		if l.rid == rid {
			return l
		}
	}
	return nil
}

// Stream sends nals (H.264 NAL units, as testmedia.NALUnits returns them)
// and opus (20 ms packets) in real time, the video at testmedia.FrameRate,
// looping both, until ctx ends; it returns ctx's error, or the error of a
// write. With Config.KeyframeOnPLI a keyframe request makes it skip to the
// media's next keyframe. With Config.Layers every layer sends nals.
func (p *Publisher) Stream(ctx context.Context, nals, opus [][]byte) error {
	layers := make([][][]byte, max(1, len(p.layers)))
	for i := range layers {
		layers[i] = nals
	}
	return p.StreamLayers(ctx, layers, opus)
}

// StreamLayers is Stream with media of each video layer's own: layers[i]
// is the NAL units of Config.Layers[i] (without Layers, one element: the
// video's). The layers send a frame each at every frame time; with
// Config.KeyframeOnPLI a request for a layer's SSRC makes that layer skip
// to its media's next keyframe. One Stream or StreamLayers at a time.
func (p *Publisher) StreamLayers(ctx context.Context, layers [][][]byte, opus [][]byte) error {
	n := max(1, len(p.layers))
	if len(layers) != n {
		return fmt.Errorf("whipclient: media of %d video layers for %d layers", len(layers), n)
	}
	frames := make([][][]byte, n) // access units of each layer
	keys := make([][]bool, n)
	for i, nals := range layers {
		frames[i] = accessUnits(nals)
		if len(frames[i]) == 0 {
			return errors.New("whipclient: no media to stream")
		}
		keys[i] = make([]bool, len(frames[i]))
		for j, f := range frames[i] {
			keys[i][j] = isKeyframe(f)
		}
	}
	if len(opus) == 0 {
		return errors.New("whipclient: no media to stream")
	}
	f := make([]int, n) // each layer's frame to send next, counting loops
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
			for i := range n {
				if p.cfg.KeyframeOnPLI && p.keysOf(i).wantKey.Swap(false) {
					f[i] = nextKeyframe(keys[i], f[i])
				}
				err := p.writeFrame(i, frames[i][f[i]%len(frames[i])], frameLen)
				f[i]++
				if err != nil {
					return fmt.Errorf("whipclient: video: %w", err)
				}
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

// keysOf returns the keyframe requests of video layer i.
func (p *Publisher) keysOf(i int) *keyRequests {
	if len(p.layers) == 0 {
		return &p.keys
	}
	return &p.layers[i].keys
}

// writeFrame sends one access unit of video layer i, lasting d.
func (p *Publisher) writeFrame(i int, au []byte, d time.Duration) error {
	if len(p.layers) == 0 {
		return p.video.WriteSample(media.Sample{Data: au, Duration: d})
	}
	l := p.layers[i]
	for _, pkt := range l.pack.Packetize(au, uint32((d*90000+time.Second/2)/time.Second)) {
		if err := pkt.Header.SetExtension(p.midID, []byte(p.mid)); err != nil {
			return err
		}
		if err := pkt.Header.SetExtension(p.ridID, []byte(l.rid)); err != nil {
			return err
		}
		if err := l.track.WriteRTP(pkt); err != nil {
			return err
		}
	}
	return nil
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

// videoHookFactory makes the interceptor of Config.OnVideoPacket (sent)
// or of Config.LoseVideo (lose).
type videoHookFactory struct {
	sent func(h *rtp.Header, payload []byte, sent time.Time)
	lose func(h *rtp.Header) bool
}

func (f videoHookFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &videoHook{sent: f.sent, lose: f.lose}, nil
}

// videoHook hands every video packet to sent once the next writer (the
// network's) has taken it, or drops those lose says to.
type videoHook struct {
	interceptor.NoOp
	sent func(h *rtp.Header, payload []byte, sent time.Time)
	lose func(h *rtp.Header) bool
}

func (v *videoHook) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.EqualFold(info.MimeType, webrtc.MimeTypeH264) {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if v.lose != nil && v.lose(h) {
			return len(payload), nil
		}
		n, err := w.Write(h, payload, a)
		if err == nil && v.sent != nil {
			v.sent(h, payload, time.Now())
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
	p.closePC()
	return err
}

// closePC closes the PeerConnection, after the simulcast layers' RTCP
// readers have stopped: pion's RTPSender.ReadSimulcast reads the sender's
// encodings without its lock, and RTPSender.Stop writes them. The readers
// run only once the connection is up, when a read deadline ends their
// reads at once; should SRTP never have started, the deadline waits for
// it, and the readers are given up after a second.
func (p *Publisher) closePC() error {
	if !p.reading {
		return p.pc.Close()
	}
	stopped := make(chan struct{})
	go func() {
		past := time.Unix(1, 0)
		for _, l := range p.layers {
			p.videoSender.SetReadDeadlineSimulcast(past, l.rid)
		}
		p.layerReaders.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Second):
	}
	return p.pc.Close()
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
