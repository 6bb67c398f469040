package webrtcapi

import (
	"encoding/hex"
	"strings"

	"github.com/pion/webrtc/v3"

	"lightspeed/shared/relaywire"
)

// PlayoutDelayURI is the RTP header extension that tells a browser how
// long to buffer video. A sender that starts a viewer with a burst of
// cached packets sends them with min = max = 0, so that the browser shows
// the keyframe at once instead of buffering the burst.
const PlayoutDelayURI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"

// The codecs of the MediaEngine. H.264 comes in the profiles browsers
// offer (packetization mode 1 only, with NACK and PLI feedback); a
// transceiver prefers the one that matches its stream, so the SDP names
// what is sent. Opus is 48 kHz stereo.
var (
	h264Profiles = []struct {
		pt      webrtc.PayloadType
		profile string
	}{{102, "42e01f"}, {104, "42001f"}, {106, "4d001f"}, {108, "64001f"}}
	opusCodec = webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: relaywire.AudioClockRate, Channels: relaywire.AudioChannels,
			SDPFmtpLine: relaywire.OpusFmtp,
		},
		PayloadType: 111,
	}
)

// h264Codecs returns the H.264 codecs in their usual order.
func h264Codecs() []webrtc.RTPCodecParameters {
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	out := make([]webrtc.RTPCodecParameters, 0, len(h264Profiles))
	for _, p := range h264Profiles {
		out = append(out, webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeH264, ClockRate: relaywire.VideoClockRate,
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

// PreferH264 returns the codec preferences of a video transceiver
// (RTPTransceiver.SetCodecPreferences) for an H.264 stream with the given
// fmtp line: the MediaEngine's H.264 codecs, the stream's profile first
// (exact constraint flags before others), then the rest in their usual
// order. An empty fmtp is constrained baseline.
func PreferH264(fmtp string) []webrtc.RTPCodecParameters {
	if fmtp == "" {
		fmtp = relaywire.DefaultH264Fmtp // a stream that does not announce its format
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

// PreferOpus returns the codec preferences of an audio transceiver: the
// MediaEngine's Opus.
func PreferOpus() []webrtc.RTPCodecParameters {
	return []webrtc.RTPCodecParameters{opusCodec}
}

// sameCodec reports whether a negotiated codec is the MediaEngine's codec
// c.
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

// ChooseCodec picks the negotiated codec a track sends (in its
// webrtc.TrackLocal's Bind): the first of prefs the remote accepted,
// else any negotiated codec of the same kind that can carry the stream
// (H.264 in packetization mode 1). The codec it returns has the
// negotiated payload type.
func ChooseCodec(prefs, negotiated []webrtc.RTPCodecParameters) (webrtc.RTPCodecParameters, bool) {
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
