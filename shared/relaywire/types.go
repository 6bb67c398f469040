// Package relaywire is the wire format between the gateway and its
// functions (docs/relay.md): control-stream messages and RTP-over-QUIC
// datagrams.
package relaywire

import "strings"

// ALPN is the QUIC application protocol of the relay.
const ALPN = "lightspeed-relay/1"

// Version is the relay protocol version sent in Hello.
const Version = 1

// Track is a media track of a channel.
type Track uint8

// The tracks of a channel.
const (
	Video Track = 0
	Audio Track = 1
)

func (t Track) String() string {
	if t == Video {
		return "video"
	}
	return "audio"
}

// Flow is the datagram flow id of one track of one channel.
type Flow uint64

// FlowOf returns the flow id of a channel's track.
func FlowOf(channel uint32, t Track) Flow { return Flow(channel)<<1 | Flow(t&1) }

// Channel is the flow's channel.
func (f Flow) Channel() uint32 { return uint32(f >> 1) }

// Track is the flow's track.
func (f Flow) Track() Track { return Track(f & 1) }

// TrackInfo describes one track of a subscribed channel.
type TrackInfo struct {
	Flow        Flow   `json:"flow"`
	Track       string `json:"track"` // "video" or "audio"
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
// candidates name. Candidates the function never checks do not count: TCP
// ones, mDNS host names and unreadable ones. The zero value is empty.
type CandidateSet struct {
	addrs map[string]struct{}
}

// Add counts the address of a candidate ("candidate:..." or
// "a=candidate:..."). It reports false, counting nothing, when the address
// would be the set's (MaxCandidates+1)th.
func (s *CandidateSet) Add(candidate string) bool {
	addr, ok := candidateAddr(candidate)
	if !ok {
		return true
	}
	if _, seen := s.addrs[addr]; seen {
		return true
	}
	if len(s.addrs) == MaxCandidates {
		return false
	}
	if s.addrs == nil {
		s.addrs = make(map[string]struct{})
	}
	s.addrs[addr] = struct{}{}
	return true
}

// AddSDP adds the candidates of an SDP. It reports false when they name
// more than MaxCandidates addresses with those already in the set.
func (s *CandidateSet) AddSDP(sdp string) bool {
	for line := range strings.Lines(sdp) {
		if strings.HasPrefix(line, "a=candidate:") && !s.Add(line) {
			return false
		}
	}
	return true
}

// Len is the number of distinct addresses in the set.
func (s *CandidateSet) Len() int { return len(s.addrs) }

// candidateAddr returns the address and port of a UDP candidate (RFC 8839:
// foundation, component, transport, priority, address, port, "typ" ...),
// or false for one the function does not check.
func candidateAddr(c string) (string, bool) {
	c = strings.TrimPrefix(strings.TrimSpace(c), "a=")
	rest, ok := strings.CutPrefix(c, "candidate:")
	if !ok {
		return "", false
	}
	f := strings.Fields(rest)
	if len(f) < 6 || !strings.EqualFold(f[2], "udp") || strings.HasSuffix(f[4], ".local") {
		return "", false
	}
	return f[4] + " " + f[5], true
}

// Candidate is an ICE candidate in the browser's RTCIceCandidateInit form.
// An empty Candidate string means the end of candidates.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// Load is what a function reports every second.
type Load struct {
	Viewers   int     `json:"viewers"`
	EgressBps float64 `json:"egress_bps"`
	CPU       float64 `json:"cpu"` // 0..1 of the machine
}
