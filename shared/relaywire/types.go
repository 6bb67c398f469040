// Package relaywire is the wire format between the gateway and its
// functions (docs/relay.md): control-stream messages and RTP-over-QUIC
// datagrams.
package relaywire

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pion/ice/v2"
)

// ALPN is the QUIC application protocol of the relay.
const ALPN = "lightspeed-relay/1"

// Version is the relay protocol version the function sends in Hello.
// Version 2 added the flags byte of every datagram (docs/relay.md);
// version 3 the keyframe_request message, which a gateway of version 2
// would take for a protocol error and close the connection on; version 4
// simulcast: flows of up to MaxLayers video tracks (FlowOf), the layer of
// a session and of a keyframe request, and session_layer. A gateway
// refuses a function of another version, naming both.
const Version = 4

// Track is a media track of a channel: its audio, or one layer of its
// video. A channel without simulcast has one video layer, Video.
type Track uint8

// The tracks of a channel. Video layers after the first are tracks 2 and
// up (LayerTrack).
const (
	Video Track = 0 // the video, or its first simulcast layer
	Audio Track = 1
)

// MaxLayers bounds the video layers of a channel: OBS sends at most 4.
const MaxLayers = 4

// NumTracks is the number of tracks a channel can have: its audio and
// MaxLayers video layers, numbered 0 to NumTracks-1.
const NumTracks = 1 + MaxLayers

// LayerTrack returns the track of video layer i (0 <= i < MaxLayers).
func LayerTrack(i int) Track {
	if i == 0 {
		return Video
	}
	return Track(i + 1)
}

// IsVideo reports whether t is a video layer.
func (t Track) IsVideo() bool { return t != Audio }

// Layer is the video layer of t (LayerTrack's inverse); 0 for Audio.
func (t Track) Layer() int {
	if t <= Audio {
		return 0
	}
	return int(t) - 1
}

// String returns "audio", "video", or "video1" and up for the layers
// after the first.
func (t Track) String() string {
	switch {
	case t == Audio:
		return "audio"
	case t == Video:
		return "video"
	}
	return fmt.Sprintf("video%d", t.Layer())
}

// The tracks' RTP parameters: what the gateway's hub sends, the relay
// carries and the function's SDPs describe.
const (
	VideoCodec       = "H264" // packetization mode 1: single NAL units and FU-A
	AudioCodec       = "OPUS"
	VideoPayloadType = 96
	AudioPayloadType = 97
	VideoClockRate   = 90000
	AudioClockRate   = 48000
	AudioChannels    = 2

	// DefaultH264Fmtp is the video format announced until the stream's
	// SPS tells its profile and level: constrained baseline, level 3.1.
	DefaultH264Fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
	// OpusFmtp is the audio format.
	OpusFmtp = "minptime=10;useinbandfec=1"
)

// Ticks is d in ticks of an RTP clock of the given rate, rounded toward
// zero (negative for a negative d). It is exact for any d: a 32-bit
// timestamp takes its low 32 bits.
func Ticks(d time.Duration, clock uint32) int64 {
	c := int64(clock)
	return int64(d/time.Second)*c + int64(d%time.Second)*c/int64(time.Second)
}

// ClockRate is the RTP clock rate of the track.
func (t Track) ClockRate() uint32 {
	if t.IsVideo() {
		return VideoClockRate
	}
	return AudioClockRate
}

// Flow is the datagram flow id of one track of one channel.
type Flow uint64

// flowTrackBits is the low bits of a flow id that hold its track.
const flowTrackBits = 3

// FlowOf returns the flow id of a channel's track (below NumTracks).
func FlowOf(channel uint32, t Track) Flow {
	return Flow(channel)<<flowTrackBits | Flow(t)&(1<<flowTrackBits-1)
}

// Channel is the flow's channel.
func (f Flow) Channel() uint32 { return uint32(f >> flowTrackBits) }

// Track is the flow's track; a flow id FlowOf did not make may name one
// not below NumTracks.
func (f Flow) Track() Track { return Track(f & (1<<flowTrackBits - 1)) }

// TrackInfo describes one track of a channel: what a downstream SDP
// needs, and the flow its packets come on. The gateway's hub makes it; the
// relay carries it in Subscribed.
type TrackInfo struct {
	Flow  Flow   `json:"flow"`
	Track string `json:"track"` // "video" (every layer) or "audio"
	// Layer names a video layer of a simulcast publisher: its RTP stream
	// id (rid), as the publisher named it. Empty without simulcast.
	Layer       string `json:"layer,omitempty"`
	Codec       string `json:"codec"` // "H264" or "OPUS"
	PayloadType uint8  `json:"payload_type"`
	ClockRate   uint32 `json:"clock_rate"`
	Channels    uint16 `json:"channels,omitempty"`
	Fmtp        string `json:"fmtp,omitempty"`
	SSRC        uint32 `json:"ssrc"`
	// FirstSeq is the sequence number of the first packet of the track the
	// subscription sends (the start of the keyframe cache it begins with,
	// or the next packet the channel makes), so that the function can ask
	// again for packets lost before the first one it receives. Absent
	// from gateways that do not say.
	FirstSeq *uint16 `json:"first_seq,omitempty"`
}

// MaxCandidates bounds the distinct addresses a viewer session's ICE
// candidates name, in its SDP and trickled together: the function sends
// connectivity checks to each. A browser names a few; a host with many
// interfaces a few dozen. The function refuses more; the gateway tells the
// viewer.
const MaxCandidates = 64

// MaxTrickle bounds the candidate messages (candidates and ends of
// candidates) a viewer session trickles: each is a message to the
// function.
const MaxTrickle = 256

// CandidateSet is the distinct addresses (IP and port) that a viewer's ICE
// candidates name. A candidate counts when pion, which the function runs,
// would check its address: it reads the candidate with pion's own parser,
// as pion does, so that no candidate pion takes is missed. TCP candidates,
// mDNS names (the function has mDNS off) and candidates pion cannot read
// do not count. The zero value is empty.
type CandidateSet struct {
	addrs map[netip.AddrPort]struct{}
}

// Add counts the address of a trickled candidate (RTCIceCandidateInit's
// candidate: "candidate:..."). It reports false, counting nothing, when
// the address would be the set's (MaxCandidates+1)th.
func (s *CandidateSet) Add(candidate string) bool {
	return s.addAll([]string{strings.TrimPrefix(candidate, "candidate:")})
}

// AddSDP counts the addresses of an SDP's candidate lines. It reports
// false, counting nothing, when with the set's they would name more than
// MaxCandidates addresses.
func (s *CandidateSet) AddSDP(sdp string) bool {
	var values []string
	for line := range strings.Lines(sdp) {
		if v, ok := strings.CutPrefix(line, "a=candidate:"); ok {
			values = append(values, strings.TrimRight(v, "\r\n"))
		}
	}
	return s.addAll(values)
}

// AddTrickled counts the addresses of trickled candidates, all or none:
// it reports false, counting nothing, when they would pass MaxCandidates.
func (s *CandidateSet) AddTrickled(cands []Candidate) bool {
	values := make([]string, len(cands))
	for i, c := range cands {
		values[i] = strings.TrimPrefix(c.Candidate, "candidate:")
	}
	return s.addAll(values)
}

// Len is the number of distinct addresses in the set.
func (s *CandidateSet) Len() int { return len(s.addrs) }

// addAll adds the addresses of candidate values (an SDP attribute's value,
// after "candidate:"), all or none.
func (s *CandidateSet) addAll(values []string) bool {
	var fresh []netip.AddrPort
	for _, v := range values {
		a, ok := CheckedAddr(v)
		if !ok {
			continue
		}
		if _, seen := s.addrs[a]; seen || slices.Contains(fresh, a) {
			continue
		}
		if len(s.addrs)+len(fresh) == MaxCandidates {
			return false
		}
		fresh = append(fresh, a)
	}
	if len(fresh) > 0 && s.addrs == nil {
		s.addrs = make(map[netip.AddrPort]struct{}, len(fresh))
	}
	for _, a := range fresh {
		s.addrs[a] = struct{}{}
	}
	return true
}

// CheckedAddr returns the address pion would send connectivity checks to
// for a candidate, or false when it would send none. value is a candidate
// attribute's value: an SDP line after "a=candidate:", or
// RTCIceCandidateInit's candidate after its "candidate:" prefix.
func CheckedAddr(value string) (netip.AddrPort, bool) {
	c, err := ice.UnmarshalCandidate(value)
	if err != nil || !c.NetworkType().IsUDP() || strings.HasSuffix(c.Address(), ".local") {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(c.Address())
	if err != nil || c.Port() < 0 || c.Port() > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap().WithZone(""), uint16(c.Port())), true
}

// Candidate is an ICE candidate in the browser's RTCIceCandidateInit form.
// An empty Candidate string means the end of candidates.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// ParseSDPFrag reads the candidates of an application/trickle-ice-sdpfrag
// body (RFC 8840), as WHEP and WHIP clients PATCH them: a=mid and
// a=ice-ufrag set the context of the a=candidate lines that follow (a
// candidate with neither is of m-line 0); a=end-of-candidates is an empty
// candidate. It fails on a fragment with no candidate line or more than
// MaxTrickle of them.
func ParseSDPFrag(frag string) ([]Candidate, error) {
	var (
		out        []Candidate
		mid, ufrag *string
		mline      *uint16
		index      uint16
	)
	for line := range strings.Lines(frag) {
		line = strings.TrimSpace(line)
		isCand := strings.HasPrefix(line, "a=candidate:") || line == "a=end-of-candidates"
		if isCand && len(out) == MaxTrickle {
			return nil, fmt.Errorf("more than %d candidates", MaxTrickle)
		}
		switch {
		case strings.HasPrefix(line, "m="):
			if index == 1<<16-1 {
				return nil, errors.New("too many m= lines")
			}
			i := index
			mline = &i
			index++
		case strings.HasPrefix(line, "a=mid:"):
			v := strings.TrimPrefix(line, "a=mid:")
			mid = &v
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			v := strings.TrimPrefix(line, "a=ice-ufrag:")
			ufrag = &v
		case strings.HasPrefix(line, "a=candidate:"):
			c := Candidate{Candidate: strings.TrimPrefix(line, "a="), SDPMid: mid, SDPMLineIndex: mline, UsernameFragment: ufrag}
			if mid == nil && mline == nil {
				zero := uint16(0)
				c.SDPMLineIndex = &zero
			}
			out = append(out, c)
		case line == "a=end-of-candidates":
			out = append(out, Candidate{SDPMid: mid, SDPMLineIndex: mline, UsernameFragment: ufrag})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no a=candidate or a=end-of-candidates line")
	}
	return out, nil
}

// Load is what a function reports every second.
type Load struct {
	Viewers   int     `json:"viewers"`
	EgressBps float64 `json:"egress_bps"`
	CPU       float64 `json:"cpu"` // 0..1 of the machine
}
