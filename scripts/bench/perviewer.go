//go:build linux

package main

import (
	"encoding/binary"
	"math"
	"sync/atomic"
)

// The per-viewer figures: what one viewer costs the server and the
// network, per second of stream. Counted at the viewers (bytes, packets,
// frames) and at the processes (CPU, memory); see docs/bench.md.

// fullPayload is the RTP payload of a full-size packet: 1,200 bytes of
// RTP, less the 12-byte fixed header.
const fullPayload = 1188

// ipUDPHeader is what IPv4 and UDP add to each datagram (20 + 8 bytes).
const ipUDPHeader = 28

// mediaBytes is the media an RTP payload carries, without the payload
// format's own bytes. H.264 (RFC 6184): a single NAL unit packet is the
// NAL unit; STAP-A counts its NAL units without the STAP-A header and
// their 2-byte sizes; FU-A counts the fragment without its indicator and
// header, plus, in the first fragment, the NAL header byte they stand
// for. Opus: the whole payload.
func mediaBytes(video bool, payload []byte) int {
	if !video || len(payload) == 0 {
		return len(payload)
	}
	switch payload[0] & 0x1f {
	case 24: // STAP-A
		n := 0
		for rest := payload[1:]; len(rest) >= 2; {
			size := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			if size > len(rest) {
				break
			}
			n += size
			rest = rest[size:]
		}
		return n
	case 28: // FU-A
		if len(payload) < 2 {
			return 0
		}
		n := len(payload) - 2
		if payload[1]&0x80 != 0 { // start
			n++
		}
		return n
	}
	return len(payload)
}

// packetsFor is how many full-size packets n bytes of one frame need.
func packetsFor(n int) uint64 {
	return uint64((n + fullPayload - 1) / fullPayload)
}

// trackCount counts one track of one viewer: the media bytes received,
// and the packets its frames would need at full size. A frame is the
// packets of one RTP timestamp (a packet carries one), so a frame of n
// media bytes needs ceil(n / 1188) packets; each Opus packet is a frame.
// The count grows as a frame's bytes come, not when it ends, so that a
// window's count matches the packets and bytes received in it (a
// keyframe of 100 packets across a window's edge would otherwise count
// whole on one side). add runs on the track's reader goroutine; the
// counts may be read from any.
type trackCount struct {
	started bool
	ts      uint32
	bytes   int // of the current frame so far

	media  atomic.Uint64
	needed atomic.Uint64
}

func (c *trackCount) add(ts uint32, n int) {
	c.media.Add(uint64(n))
	if !c.started || ts != c.ts {
		c.started, c.ts, c.bytes = true, ts, 0
	}
	before := packetsFor(c.bytes)
	c.bytes += n
	c.needed.Add(packetsFor(c.bytes) - before)
}

// wireCount counts the datagrams one viewer's socket received and their
// UDP payload bytes: SRTP (the media) apart from the rest (SRTCP, STUN,
// DTLS). It is updated by the socket's reader and read from any
// goroutine.
type wireCount struct {
	rtp, rtpBytes     atomic.Uint64
	other, otherBytes atomic.Uint64
}

// datagram counts one received UDP payload, demultiplexed as RFC 7983
// and RFC 5761 do: first byte 128–191 is RTP or RTCP, RTCP with a second
// byte (marker and payload type) of 192–223.
func (w *wireCount) datagram(b []byte) {
	if w == nil {
		return
	}
	if len(b) >= 2 && b[0] >= 128 && b[0] <= 191 && (b[1] < 192 || b[1] > 223) {
		w.rtp.Add(1)
		w.rtpBytes.Add(uint64(len(b)))
		return
	}
	w.other.Add(1)
	w.otherBytes.Add(uint64(len(b)))
}

// flow is what the viewers counted up to one moment, summed over them.
type flow struct {
	RTP, RTPBytes     uint64 // SRTP datagrams, their UDP payload bytes
	Other, OtherBytes uint64 // SRTCP, STUN and DTLS datagrams, their bytes
	Media             [2]uint64
	Needed            [2]uint64 // per track: video, audio
}

// sub is f − o.
func (f flow) sub(o flow) flow {
	d := flow{RTP: f.RTP - o.RTP, RTPBytes: f.RTPBytes - o.RTPBytes, Other: f.Other - o.Other, OtherBytes: f.OtherBytes - o.OtherBytes}
	for k := range 2 {
		d.Media[k] = f.Media[k] - o.Media[k]
		d.Needed[k] = f.Needed[k] - o.Needed[k]
	}
	return d
}

// PerViewer are a window's figures per viewer and per second of stream.
// The CPU and memory are marginal: over the same process with the stream
// running and no viewer.
type PerViewer struct {
	// µs of CPU per viewer per second of stream: (the process's CPU in
	// the window − its idle cores × the window) ÷ (viewers × window).
	FunctionMicros float64  `json:"fn_us_per_viewer_second"`
	GatewayMicros  *float64 `json:"gateway_us_per_viewer_second,omitempty"` // nil without a gateway process of its own
	TotalMicros    float64  `json:"total_us_per_viewer_second"`             // the fan-out's and the gateway's together
	// Viewers one core serves at that cost: 1e6 ÷ µs per viewer-second.
	ViewersPerCore      float64 `json:"viewers_per_core"`
	TotalViewersPerCore float64 `json:"total_viewers_per_core"`
	// Memory per added viewer: (at the window's end − with no viewer) ÷
	// viewers, in KB (1,024 bytes).
	HeapKB *float64 `json:"heap_kb_per_viewer,omitempty"` // Go heap in use; nil when unknown
	RSSKB  float64  `json:"rss_kb_per_viewer"`
	// Bytes per viewer per second: SRTP datagrams as the viewers' sockets
	// received them plus 28 bytes of IPv4 and UDP each (the wire), and
	// the media they carried (H.264 NAL units, Opus packets).
	WireBytes       float64 `json:"wire_bytes_per_second"`
	MediaBytes      float64 `json:"media_bytes_per_second"`
	OverheadPercent float64 `json:"overhead_percent"`         // (wire − media) ÷ media
	ControlBytes    float64 `json:"control_bytes_per_second"` // SRTCP, STUN, DTLS, with their 28 bytes; not in the wire figure
	// (wire − media) ÷ SRTP datagrams: IPv4, UDP, RTP and its extensions,
	// SRTP's tag and the H.264 payload format's bytes, per packet.
	OverheadPerPacket float64 `json:"overhead_bytes_per_packet"`
	// RTP packets per viewer per second, and what the media needs at
	// full size: per track, each frame's media bytes ÷ 1,188 rounded up.
	Packets          float64 `json:"pkts_per_second"`
	NeededVideo      float64 `json:"needed_video_pkts_per_second"`
	NeededAudio      float64 `json:"needed_audio_pkts_per_second"`
	Needed           float64 `json:"needed_pkts_per_second"`
	PacketsPerNeeded float64 `json:"pkts_per_needed"`
	// The media bytes ÷ 1,188, not rounded per frame: what it would need
	// if packets could carry several frames.
	MediaAtFullSize float64 `json:"media_bytes_over_1188_per_second"`
}

// windowCounts are the inputs of the per-viewer figures for one window.
type windowCounts struct {
	viewers int
	seconds float64

	cpu, idleCores float64 // the fan-out process: CPU seconds in the window, its idle cores
	// The gateway, a process of its own; hasGateway false without one
	// (the baseline, a function embedded in the gateway, or an unknown
	// pid).
	hasGateway              bool
	gatewayCPU, gatewayIdle float64

	rss, idleRSS int64 // bytes
	// The fan-out's Go heap in use at the window's end and idle; hasHeap
	// false when it could not be read.
	hasHeap        bool
	heap, idleHeap float64

	delivered uint64 // RTP packets the viewers' readers got
	flow      flow   // the viewers' counts over the window
}

// perViewer computes the per-viewer figures of one window.
func perViewer(c windowCounts) PerViewer {
	var p PerViewer
	if c.viewers <= 0 || c.seconds <= 0 {
		return p
	}
	vs := float64(c.viewers) * c.seconds // viewer-seconds
	n := float64(c.viewers)
	p.FunctionMicros = round((c.cpu-c.idleCores*c.seconds)/vs*1e6, 1)
	p.TotalMicros = p.FunctionMicros
	if c.hasGateway {
		gw := round((c.gatewayCPU-c.gatewayIdle*c.seconds)/vs*1e6, 1)
		p.GatewayMicros = &gw
		p.TotalMicros = round((c.cpu-c.idleCores*c.seconds+c.gatewayCPU-c.gatewayIdle*c.seconds)/vs*1e6, 1)
	}
	p.ViewersPerCore = perCore(p.FunctionMicros)
	p.TotalViewersPerCore = perCore(p.TotalMicros)
	p.RSSKB = round(float64(c.rss-c.idleRSS)/n/1024, 1)
	if c.hasHeap {
		h := round((c.heap-c.idleHeap)/n/1024, 1)
		p.HeapKB = &h
	}
	f := c.flow
	media := float64(f.Media[0] + f.Media[1])
	wire := float64(f.RTPBytes + ipUDPHeader*f.RTP)
	p.WireBytes = round(wire/vs, 0)
	p.MediaBytes = round(media/vs, 0)
	p.ControlBytes = round(float64(f.OtherBytes+ipUDPHeader*f.Other)/vs, 0)
	p.OverheadPercent = overheadPercent(wire, media)
	if f.RTP > 0 {
		p.OverheadPerPacket = round((wire-media)/float64(f.RTP), 1)
	}
	p.Packets = round(float64(c.delivered)/vs, 1)
	p.NeededVideo = round(float64(f.Needed[0])/vs, 1)
	p.NeededAudio = round(float64(f.Needed[1])/vs, 1)
	p.Needed = round(float64(f.Needed[0]+f.Needed[1])/vs, 1)
	if p.Needed > 0 {
		p.PacketsPerNeeded = round(float64(c.delivered)/float64(f.Needed[0]+f.Needed[1]), 3)
	}
	p.MediaAtFullSize = round((float64(f.Media[0])/fullPayload+float64(f.Media[1])/fullPayload)/vs, 1)
	return p
}

// overheadPercent is what the wire carries beyond the media, in percent
// of the media; 0 without media.
func overheadPercent(wire, media float64) float64 {
	if media <= 0 {
		return 0
	}
	return round(100*(wire-media)/media, 2)
}

// perCore is how many viewers one core serves at us µs of CPU per
// viewer-second; 0 when the cost is not positive (noise at few viewers).
func perCore(us float64) float64 {
	if us <= 0 {
		return 0
	}
	return math.Round(1e6 / us)
}
