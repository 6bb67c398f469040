package whip

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v3"

	"lightspeed/gateway/keys"
	"lightspeed/shared/relaywire"
)

// What this file reads comes from the publisher: the Authorization header,
// the channel in the URL, the offer and trickled SDP fragments. Every
// function here is a fuzz target.

// maxBody bounds an offer or a trickled fragment. An OBS offer is about
// 2 KiB; a browser's with many candidates well under 16 KiB.
const maxBody = 64 << 10

// bearerKey reads the stream key of an "Authorization: Bearer <key>"
// header (RFC 6750: the scheme is case-insensitive, one or more spaces
// follow it). It fails when the header is missing, another scheme, or the
// token is not a stream key "<channel>-<secret>".
func bearerKey(header string) (keys.Key, error) {
	if header == "" {
		return keys.Key{}, errors.New("no Authorization header: send the stream key as \"Authorization: Bearer <channel>-<secret>\"")
	}
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return keys.Key{}, errors.New("the Authorization header is not \"Bearer <stream key>\"")
	}
	token = strings.TrimSpace(token)
	k, err := keys.Parse(token)
	if err != nil {
		return keys.Key{}, errors.New("the bearer token is not a stream key \"<channel>-<secret>\"")
	}
	return k, nil
}

// parseChannel reads the channel of a URL path segment: a decimal number
// from 1 to 4294967295, digits only.
func parseChannel(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, false
	}
	return uint32(n), true
}

// offerError is why an offer is refused, with the HTTP status to say so.
type offerError struct {
	status int // 400 or 406
	msg    string
}

func (e *offerError) Error() string { return e.msg }

// keyframeFeedback is how the publisher can be asked for a keyframe.
type keyframeFeedback uint8

const (
	feedbackNone keyframeFeedback = iota // neither offered: PLI is sent anyway
	feedbackPLI                          // a=rtcp-fb:<pt> nack pli
	feedbackFIR                          // a=rtcp-fb:<pt> ccm fir, without nack pli
)

// offer is what the gateway needs from a publisher's offer.
type offer struct {
	// videoFeedback is the keyframe request each H.264 payload type of the
	// offer takes.
	videoFeedback map[uint8]keyframeFeedback
	// videoSSRC is the first a=ssrc of the video section, 0 if none: the
	// keyframe request at the start can go out before the first packet.
	videoSSRC uint32
	// profiles are the H.264 profile-level-ids offered, to name them when
	// none is one the gateway takes.
	profiles []string
	// layers are the rids of a simulcast publisher's video layers, in the
	// order of its a=simulcast:send list (readSimulcast); empty without
	// simulcast.
	layers []string
	// sdp is the offer as pion is to get it when it differs from the one
	// that came (simulcastOffer): "" for an offer without a=rid or
	// a=simulcast lines, which goes to pion unchanged.
	sdp string
}

// checkOffer reads a publisher's SDP offer. It refuses (400) what is not a
// WebRTC offer: malformed SDP, no ICE credentials or DTLS fingerprint, more
// candidate addresses than relaywire.MaxCandidates, malformed simulcast
// (readSimulcast); and (406) an offer without H.264 in packetization mode
// 1 or without Opus that the publisher sends, simulcast of more than
// relaywire.MaxLayers layers, of audio, or of more than one video.
func checkOffer(text string) (*offer, error) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(text); err != nil {
		return nil, &offerError{400, "malformed SDP: " + err.Error()}
	}
	var cands relaywire.CandidateSet
	if !cands.AddSDP(text) {
		return nil, &offerError{400, fmt.Sprintf("the offer's ICE candidates name more than %d addresses", relaywire.MaxCandidates)}
	}
	if !hasAttr(d.Attributes, "ice-ufrag") && !anyMediaHas(&d, "ice-ufrag") {
		return nil, &offerError{400, "the offer has no ICE credentials (a=ice-ufrag)"}
	}
	if !hasAttr(d.Attributes, "fingerprint") && !anyMediaHas(&d, "fingerprint") {
		return nil, &offerError{400, "the offer has no DTLS fingerprint (a=fingerprint)"}
	}
	o := &offer{videoFeedback: make(map[uint8]keyframeFeedback)}
	hasOpus := false
	simulcastAt := -1 // the media section of the simulcast video
	anySimulcast := false
	for i, m := range d.MediaDescriptions {
		simulcast := hasSimulcast(m)
		anySimulcast = anySimulcast || simulcast
		if m.MediaName.Port.Value == 0 || !sends(m) {
			continue
		}
		switch m.MediaName.Media {
		case "video":
			found := o.readVideo(m)
			if !simulcast {
				if found && o.videoSSRC == 0 {
					o.videoSSRC = firstSSRC(m)
				}
				continue
			}
			if simulcastAt >= 0 {
				return nil, &offerError{406, "the offer has simulcast on more than one video: the gateway takes the layers of one video"}
			}
			if !found {
				return nil, &offerError{406, "the simulcast video has no H.264 (packetization-mode=1): the gateway takes H.264 video only"}
			}
			layers, err := readSimulcast(m)
			if err != nil {
				return nil, err
			}
			o.layers, simulcastAt = layers, i
		case "audio":
			if simulcast {
				return nil, &offerError{406, "the offer has simulcast audio: the gateway takes simulcast video only"}
			}
			hasOpus = hasOpus || hasCodec(m, "opus", 48000)
		}
	}
	noH264 := len(o.videoFeedback) == 0
	switch {
	case noH264 && !hasOpus:
		return nil, &offerError{406, "the offer has neither H.264 video (packetization-mode=1) nor Opus audio: the gateway takes H.264 and Opus"}
	case noH264:
		return nil, &offerError{406, "the offer has no H.264 video (packetization-mode=1): the gateway takes H.264 video only"}
	case !hasOpus:
		return nil, &offerError{406, "the offer has no Opus audio: the gateway takes Opus audio only"}
	}
	if anySimulcast {
		sdpText, err := simulcastOffer(&d, simulcastAt, o.layers)
		if err != nil {
			return nil, &offerError{400, "the offer cannot be used: " + err.Error()}
		}
		o.sdp = sdpText
	}
	return o, nil
}

// readVideo records the H.264 payload types in packetization mode 1 of a
// video section, with their keyframe feedback. It reports whether there
// was one.
func (o *offer) readVideo(m *sdp.MediaDescription) bool {
	found := false
	for _, f := range m.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			continue
		}
		c, err := codecOf(m, uint8(pt))
		if err != nil || !strings.EqualFold(c.name, "H264") || c.clockRate != 90000 {
			continue
		}
		if fmtpParam(c.fmtp, "packetization-mode") != "1" {
			continue
		}
		if p := fmtpParam(c.fmtp, "profile-level-id"); p != "" && len(o.profiles) < 16 {
			o.profiles = append(o.profiles, p)
		}
		fb := feedbackNone
		switch {
		case c.feedback["nack pli"]:
			fb = feedbackPLI
		case c.feedback["ccm fir"]:
			fb = feedbackFIR
		}
		o.videoFeedback[uint8(pt)] = fb
		found = true
	}
	return found
}

// codec is one payload type of a media section.
type codec struct {
	name      string
	clockRate uint32
	fmtp      string
	feedback  map[string]bool // "nack", "nack pli", "ccm fir", …
}

// codecOf reads payload type pt of m from its rtpmap, fmtp and rtcp-fb
// lines.
func codecOf(m *sdp.MediaDescription, pt uint8) (codec, error) {
	c := codec{feedback: make(map[string]bool)}
	prefix := strconv.Itoa(int(pt)) + " "
	found := false
	for _, a := range m.Attributes {
		v, ok := strings.CutPrefix(a.Value, prefix)
		if !ok {
			continue
		}
		switch a.Key {
		case "rtpmap":
			name, rest, _ := strings.Cut(strings.TrimSpace(v), "/")
			rate, _, _ := strings.Cut(rest, "/")
			r, err := strconv.ParseUint(rate, 10, 32)
			if err != nil {
				return codec{}, fmt.Errorf("payload type %d: bad clock rate %q", pt, rate)
			}
			c.name, c.clockRate, found = name, uint32(r), true
		case "fmtp":
			c.fmtp = strings.TrimSpace(v)
		case "rtcp-fb":
			if len(c.feedback) < 16 {
				c.feedback[strings.ToLower(strings.Join(strings.Fields(v), " "))] = true
			}
		}
	}
	if !found {
		return codec{}, fmt.Errorf("payload type %d: no rtpmap", pt)
	}
	return c, nil
}

// hasCodec reports whether m has a payload type of the named codec and
// clock rate.
func hasCodec(m *sdp.MediaDescription, name string, clockRate uint32) bool {
	for _, f := range m.MediaName.Formats {
		pt, err := strconv.ParseUint(f, 10, 7)
		if err != nil {
			continue
		}
		if c, err := codecOf(m, uint8(pt)); err == nil && strings.EqualFold(c.name, name) && c.clockRate == clockRate {
			return true
		}
	}
	return false
}

// sends reports whether the publisher sends media in m: sendonly or
// sendrecv (the default).
func sends(m *sdp.MediaDescription) bool {
	return !hasAttr(m.Attributes, "recvonly") && !hasAttr(m.Attributes, "inactive")
}

// firstSSRC returns the SSRC of m's first a=ssrc line, or 0.
func firstSSRC(m *sdp.MediaDescription) uint32 {
	for _, a := range m.Attributes {
		if a.Key != "ssrc" {
			continue
		}
		id, _, _ := strings.Cut(a.Value, " ")
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			return uint32(n)
		}
	}
	return 0
}

func hasAttr(attrs []sdp.Attribute, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

func anyMediaHas(d *sdp.SessionDescription, key string) bool {
	for _, m := range d.MediaDescriptions {
		if hasAttr(m.Attributes, key) {
			return true
		}
	}
	return false
}

// fmtpParam returns the value of key in an fmtp line.
func fmtpParam(fmtp, key string) string {
	for _, kv := range strings.Split(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// maxTrickle bounds the candidates one session may trickle, over all its
// PATCH requests.
const maxTrickle = relaywire.MaxTrickle

// parseSDPFrag reads the candidates of an application/trickle-ice-sdpfrag
// body (relaywire.ParseSDPFrag, which WHEP's PATCH shares) as pion takes
// them.
func parseSDPFrag(frag string) ([]webrtc.ICECandidateInit, error) {
	cands, err := relaywire.ParseSDPFrag(frag)
	out := make([]webrtc.ICECandidateInit, len(cands))
	for i, c := range cands {
		out[i] = webrtc.ICECandidateInit(c)
	}
	return out, err
}
