package fanout

import (
	"encoding/hex"
	"strings"
	"sync/atomic"

	"github.com/pion/webrtc/v3"
)

// playoutDelayURI is the RTP header extension that tells a browser how long
// to buffer video. The burst of a late joiner carries min = max = 0, so the
// browser shows the keyframe at once instead of buffering the burst.
const playoutDelayURI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"

// defaultH264Fmtp is the video format when the channel does not announce
// one: constrained baseline, level 3.1.
const defaultH264Fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"

// The codecs of the fan-out's MediaEngine. H.264 comes in the profiles
// browsers offer (packetization mode 1 only); a session prefers the one
// that matches its channel's stream, so the SDP names what is sent.
var (
	h264Profiles = []struct {
		pt      webrtc.PayloadType
		profile string
	}{{102, "42e01f"}, {104, "42001f"}, {106, "4d001f"}, {108, "64001f"}}
	opusCodec = webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1",
		},
		PayloadType: 111,
	}
)

func h264Codecs() []webrtc.RTPCodecParameters {
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	out := make([]webrtc.RTPCodecParameters, 0, len(h264Profiles))
	for _, p := range h264Profiles {
		out = append(out, webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.profile,
				RTCPFeedback: fb,
			},
			PayloadType: p.pt,
		})
	}
	return out
}

// fmtpParam returns the value of key in an fmtp line.
func fmtpParam(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// h264Profile returns the profile_idc and constraint flags of an fmtp's
// profile-level-id.
func h264Profile(fmtp string) (idc, constraints byte, ok bool) {
	b, err := hex.DecodeString(fmtpParam(fmtp, "profile-level-id"))
	if err != nil || len(b) != 3 {
		return 0, 0, false
	}
	return b[0], b[1], true
}

// preferH264 orders the fan-out's H.264 codecs for a channel whose stream
// has the given fmtp: the same profile first (exact constraint flags before
// others), then the rest in their usual order.
func preferH264(fmtp string) []webrtc.RTPCodecParameters {
	if fmtp == "" {
		fmtp = defaultH264Fmtp
	}
	idc, cons, ok := h264Profile(fmtp)
	codecs := h264Codecs()
	if !ok {
		return codecs
	}
	score := func(c webrtc.RTPCodecParameters) int {
		ci, cc, _ := h264Profile(c.SDPFmtpLine)
		switch {
		case ci == idc && cc == cons:
			return 2
		case ci == idc:
			return 1
		}
		return 0
	}
	out := make([]webrtc.RTPCodecParameters, 0, len(codecs))
	for s := 2; s >= 0; s-- {
		for _, c := range codecs {
			if score(c) == s {
				out = append(out, c)
			}
		}
	}
	return out
}

// sameCodec reports whether a negotiated codec is the fan-out's codec c.
func sameCodec(c, negotiated webrtc.RTPCodecParameters) bool {
	if !strings.EqualFold(c.MimeType, negotiated.MimeType) {
		return false
	}
	if !strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) {
		return true
	}
	ci, cc, _ := h264Profile(c.SDPFmtpLine)
	ni, nc, ok := h264Profile(negotiated.SDPFmtpLine)
	return ok && ci == ni && cc == nc && fmtpParam(negotiated.SDPFmtpLine, "packetization-mode") == "1"
}

// chooseCodec picks the negotiated codec to send: the first of prefs the
// remote accepted, else any negotiated codec of the same kind that can
// carry the stream (H.264 in packetization mode 1).
func chooseCodec(prefs, negotiated []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
	for _, p := range prefs {
		for _, n := range negotiated {
			if sameCodec(p, n) {
				return n, true
			}
		}
	}
	for _, p := range prefs {
		for _, n := range negotiated {
			if strings.EqualFold(p.MimeType, n.MimeType) &&
				(!strings.EqualFold(n.MimeType, webrtc.MimeTypeH264) || fmtpParam(n.SDPFmtpLine, "packetization-mode") == "1") {
				return n, true
			}
		}
	}
	return webrtc.RTPCodecParameters{}, false
}

// binding is what a viewer's track learned when its PeerConnection bound
// it: where and how to write.
type binding struct {
	ssrc      uint32
	pt        uint8
	playoutID uint8 // header extension id of playout-delay, 0 if not negotiated
	writer    webrtc.TrackLocalWriter
}

// viewerTrack is the webrtc.TrackLocal of one track of one viewer. It does
// not write by itself: the viewer's writer writes through its binding, one
// packet at a time, with the viewer's own SSRC and payload type.
type viewerTrack struct {
	kind  webrtc.RTPCodecType
	id    string
	prefs []webrtc.RTPCodecParameters
	bound atomic.Pointer[binding]
}

func newViewerTrack(kind webrtc.RTPCodecType, prefs []webrtc.RTPCodecParameters) *viewerTrack {
	return &viewerTrack{kind: kind, id: kind.String(), prefs: prefs}
}

// Bind picks the codec to send among the negotiated ones and keeps the
// binding's SSRC, payload type and writer.
func (t *viewerTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, ok := chooseCodec(t.prefs, ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(codec.PayloadType), writer: ctx.WriteStream()}
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == playoutDelayURI && e.ID > 0 && e.ID < 15 {
			b.playoutID = uint8(e.ID)
		}
	}
	t.bound.Store(b)
	return codec, nil
}

// Unbind forgets the binding.
func (t *viewerTrack) Unbind(webrtc.TrackLocalContext) error {
	t.bound.Store(nil)
	return nil
}

// ID is "video" or "audio".
func (t *viewerTrack) ID() string { return t.id }

// RID is empty: there is one encoding.
func (t *viewerTrack) RID() string { return "" }

// StreamID groups the viewer's two tracks into one media stream.
func (t *viewerTrack) StreamID() string { return "lightspeed" }

// Kind is audio or video.
func (t *viewerTrack) Kind() webrtc.RTPCodecType { return t.kind }
