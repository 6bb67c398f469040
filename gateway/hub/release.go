package hub

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/pion/rtp"

	"lightspeed/shared/h264"
)

// track is the state of one output track.
type track struct {
	kind      Track
	ssrc      uint32
	pt        uint8
	clockRate uint32
	minStep   uint32 // one frame in clock ticks: the least timestamp step across a reconnect

	buf  reorder
	ring ring

	// output numbering
	seq         uint16 // sequence number of the next output packet
	baseTS      uint32 // first output timestamp of the hub's life
	tsOffset    uint32 // output timestamp = publisher timestamp + tsOffset
	newSession  bool   // tsOffset is set by the next released packet
	streamStart bool   // the next output packet is the first of a publisher session
	released    bool   // a packet was released in an earlier session
	lastTS      uint32 // timestamp of the last output packet
	lastRelease time.Time

	// access-unit tracking (video)
	auSeen    bool   // auTS and auEnded describe the last released packet
	auTS      uint32 // publisher timestamp of the current access unit
	auEnded   bool   // the last released packet had the marker bit
	auKeyable bool   // the access unit has carried nothing but SEI, AUD and the like so far

	bits  rateWindow // input bits, RTP header included
	video videoInfo  // what Stats reports of a video layer

	carry carry // the FU-A NAL unit being re-cut (video)
}

// FU-A header bits and sizes (RFC 6184).
const (
	fuStart    = 0x80
	fuEnd      = 0x40
	fuTypeMask = 0x1f
	fuaHeader  = 2
	// fuaData is the NAL unit bytes one output FU-A packet carries.
	fuaData = maxPayloadSize - fuaHeader
)

// carry is the NAL unit a track is re-cutting from FU-A fragments that
// did not fit (docs/hub.md, "Release"): its FU indicator and type, and the
// data bytes received and not yet sent.
type carry struct {
	open     bool   // a NAL unit is being cut
	ind, typ byte   // FU indicator; FU header's type bits
	start    bool   // the S bit is still to send
	ts       uint32 // the publisher timestamp of its fragments
	outTS    uint32 // its output timestamp
	keyframe bool   // the next packet sent carries the keyframe mark
	n        int
	data     [fuaData]byte
}

// videoInfo is what the hub learned of a video layer from its stream.
type videoInfo struct {
	width, height    int
	fmtp             string    // "" until an SPS is seen
	sps              [256]byte // the last SPS parsed, to parse each one once
	spsLen           int
	frames           rateWindow
	lastKeyframe     time.Time
	keyframeInterval time.Duration
}

// fmtpOr is the layer's fmtp, or def before its first SPS.
func (v *videoInfo) fmtpOr(def string) string {
	if v.fmtp == "" {
		return def
	}
	return v.fmtp
}

// init sets the fixed parameters of the track and its random start.
func (tr *track) init(kind Track, pt uint8, clockRate, minStep uint32) {
	tr.kind, tr.pt, tr.clockRate, tr.minStep = kind, pt, clockRate, minStep
	tr.ssrc = rand.Uint32()
	tr.seq = uint16(rand.Uint32())
	tr.baseTS = rand.Uint32()
}

// startSession prepares the track for a new publisher session: the
// publisher's numbering and timestamps start afresh.
func (tr *track) startSession() {
	tr.buf.started = false
	tr.buf.farBehind = 0
	tr.newSession = true
	tr.auSeen = false
}

// ticks converts a duration to clock ticks of the track.
func (tr *track) ticks(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(uint64(d/time.Microsecond) * uint64(tr.clockRate) / 1e6)
}

// release sends one publisher packet downstream: video is cut into pieces
// of at most MaxPacketSize bytes, each gets the next output sequence
// number. A packet that cannot be sent (an audio payload over 1188 bytes,
// an unparseable video payload over 1188 bytes, an empty one) counts as
// lost and leaves one output sequence number unused.
func (h *Hub) release(tr *track, ts uint32, marker bool, payload []byte, arrival time.Time) {
	if tr.newSession {
		if tr.released {
			// Continue from the last output timestamp plus the pause, so
			// that decoders never see time jump back.
			step := max(tr.ticks(arrival.Sub(tr.lastRelease)), tr.minStep)
			tr.tsOffset = tr.lastTS + step - ts
		} else {
			tr.tsOffset = tr.baseTS - ts
		}
		tr.newSession = false
		tr.streamStart = true
	}
	tr.released = true
	tr.lastRelease = arrival
	outTS := ts + tr.tsOffset

	if tr.kind == Audio {
		if len(payload) == 0 || len(payload) > maxPayloadSize {
			h.counters.lost++
			tr.seq++
			return
		}
		copy(h.out[headerSize:], payload)
		h.emit(tr, headerSize+len(payload), outTS, marker, false)
		return
	}

	keyframe := h.inspectVideo(tr, ts, marker, payload, arrival)
	if h.recut(tr, ts, outTS, marker, payload, keyframe) {
		return
	}
	h.frag.Reset(payload, maxPayloadSize)
	sent := false
	for {
		n, last := h.frag.Next(h.out[headerSize:])
		if n == 0 {
			break
		}
		h.emit(tr, headerSize+n, outTS, marker && last, keyframe && !sent)
		sent = true
		if last {
			break
		}
	}
	if !sent {
		h.counters.lost++
		tr.seq++
	}
}

// recut re-cuts an FU-A fragment that does not fit, or one that continues
// the NAL unit the track is re-cutting, into full-size packets through the
// track's carry, and reports whether it took the payload. Anything else
// first sends what the carry holds.
func (h *Hub) recut(tr *track, ts, outTS uint32, marker bool, payload []byte, keyframe bool) bool {
	c := &tr.carry
	isFUA := len(payload) > fuaHeader && payload[0]&fuTypeMask == h264.NALFUA
	continues := isFUA && c.open && payload[0] == c.ind && payload[1]&fuTypeMask == c.typ &&
		payload[1]&fuStart == 0 && ts == c.ts
	if !continues {
		h.flushCarry(tr)
		if !isFUA || len(payload) <= maxPayloadSize {
			return false
		}
		*c = carry{open: true, ind: payload[0], typ: payload[1] & fuTypeMask,
			start: payload[1]&fuStart != 0, ts: ts, outTS: outTS}
	}
	c.keyframe = c.keyframe || keyframe
	end := payload[1]&fuEnd != 0
	data := payload[fuaHeader:]
	for len(data) > 0 {
		k := copy(c.data[c.n:], data)
		c.n += k
		data = data[k:]
		if c.n == fuaData && (len(data) > 0 || !end) {
			h.sendCarry(tr, false, false)
		}
	}
	if end {
		h.sendCarry(tr, true, marker)
		c.open = false
	}
	return true
}

// flushCarry sends what the track's carry holds, as a fragment without
// the end bit, and closes it: the NAL unit will not continue.
func (h *Hub) flushCarry(tr *track) {
	c := &tr.carry
	if c.open && c.n > 0 {
		h.sendCarry(tr, false, false)
	}
	c.open = false
}

// sendCarry sends the carry's bytes as one FU-A packet.
func (h *Hub) sendCarry(tr *track, end, marker bool) {
	c := &tr.carry
	hdr := c.typ
	if c.start {
		hdr |= fuStart
	}
	if end {
		hdr |= fuEnd
	}
	h.out[headerSize], h.out[headerSize+1] = c.ind, hdr
	copy(h.out[headerSize+fuaHeader:], c.data[:c.n])
	h.emit(tr, headerSize+fuaHeader+c.n, c.outTS, marker, c.keyframe)
	c.start, c.keyframe, c.n = false, false, 0
}

// inspectVideo follows access units and reports whether payload starts a
// keyframe: it is the first packet of its access unit that carries an SPS,
// PPS or IDR slice, and only SEI, AUD and the like came before it in the
// access unit. An access unit starts after a packet with the marker bit or
// when the timestamp changes. It also counts frames and reads SPSs.
func (h *Hub) inspectVideo(tr *track, ts uint32, marker bool, payload []byte, arrival time.Time) bool {
	if !tr.auSeen || tr.auEnded || ts != tr.auTS {
		tr.auKeyable = true
		tr.video.frames.add(arrival, 1)
	}
	tr.auSeen, tr.auTS, tr.auEnded = true, ts, marker

	info, err := h264.Inspect(payload)
	if err != nil {
		tr.auKeyable = false
		return false
	}
	if info.HasSPS {
		h.readSPS(tr, h264.SPSOf(payload))
	}
	keyframe := tr.auKeyable && info.Keyframe
	if !keyframe && info.Start && info.End && info.NALType >= h264.NALSEI && info.NALType < h264.NALSTAPA {
		return false // SEI, AUD and other units a decoder may start after
	}
	tr.auKeyable = false
	if v := &tr.video; keyframe {
		if !v.lastKeyframe.IsZero() {
			v.keyframeInterval = arrival.Sub(v.lastKeyframe)
		}
		v.lastKeyframe = arrival
	}
	return keyframe
}

// readSPS takes the resolution and the profile of video track tr from an
// SPS, parsing each distinct SPS once.
func (h *Hub) readSPS(tr *track, nal []byte) {
	v := &tr.video
	if len(nal) == 0 || bytes.Equal(nal, v.sps[:v.spsLen]) {
		return
	}
	sps, err := h264.ParseSPS(nal)
	if err != nil {
		return
	}
	if len(nal) <= len(v.sps) {
		v.spsLen = copy(v.sps[:], nal)
	}
	if sps.Width != v.width || sps.Height != v.height {
		h.log.Info("hub: video resolution", "track", tr.kind, "width", sps.Width, "height", sps.Height)
	}
	v.width, v.height = sps.Width, sps.Height
	v.fmtp = fmt.Sprintf("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=%02x%02x%02x",
		sps.ProfileIDC, sps.ConstraintFlags, sps.LevelIDC)
}

// emit finishes the output packet in h.out (payload already at
// h.out[headerSize:n]) and hands it to the retransmission ring, the GOP
// cache and every subscription.
func (h *Hub) emit(tr *track, n int, ts uint32, marker, keyframe bool) {
	streamStart := tr.streamStart
	tr.streamStart = false
	hdr := rtp.Header{
		Version:        2,
		Marker:         marker,
		PayloadType:    tr.pt,
		SequenceNumber: tr.seq,
		Timestamp:      ts,
		SSRC:           tr.ssrc,
	}
	if _, err := hdr.MarshalTo(h.out[:headerSize]); err != nil {
		panic(err) // headerSize fits a header without CSRC and extensions
	}
	p := Packet{Track: tr.kind, Data: h.out[:n], Seq: tr.seq, Timestamp: ts, Keyframe: keyframe, StreamStart: streamStart}
	tr.ring.store(p)
	if keyframe {
		h.gop.keyframe(tr.kind, h.layers)
	}
	h.gop.add(p)
	for _, s := range h.subs {
		if !s.push(p) {
			h.counters.dropped++
		}
	}
	h.counters.packetsOut++
	tr.seq++
	tr.lastTS = ts
}

// ringSize is the number of output packets per track kept for
// retransmission. It divides 2^16, so seq%ringSize is continuous across
// the wrap-around.
const (
	ringSize = 2048
	ringPage = 64 // slots allocated together, when first used
)

// ring is the retransmission ring of one track, indexed by output sequence
// number; each slot records its sequence number to detect overwrites. Its
// slots are allocated a page at a time as the first packets pass, so a hub
// that carries little costs little; after that, storing allocates nothing.
// (The function's packetcache is such a ring too, but its slots hold
// payloads for viewers and it grows to hold a GOP; this one holds a fixed
// 2048 whole packets with their marks, for the functions' NACKs.)
type ring struct {
	pages [ringSize / ringPage]*[ringPage]ringSlot
}

type ringSlot struct {
	seq         uint16
	n           uint16 // 0: empty
	keyframe    bool
	streamStart bool
	data        [MaxPacketSize]byte
}

// store keeps a copy of output packet p.
func (r *ring) store(p Packet) {
	i := int(p.Seq % ringSize)
	page := r.pages[i/ringPage]
	if page == nil {
		page = new([ringPage]ringSlot)
		r.pages[i/ringPage] = page
	}
	s := &page[i%ringPage]
	s.seq, s.keyframe, s.streamStart = p.Seq, p.Keyframe, p.StreamStart
	s.n = uint16(copy(s.data[:], p.Data))
}

// load copies output packet seq of track t into dst if it is still held;
// the packet's Data aliases dst.
func (r *ring) load(t Track, seq uint16, dst []byte) (p Packet, ok bool) {
	i := int(seq % ringSize)
	page := r.pages[i/ringPage]
	if page == nil {
		return Packet{}, false
	}
	s := &page[i%ringPage]
	if s.n == 0 || s.seq != seq || len(dst) < int(s.n) {
		return Packet{}, false
	}
	n := copy(dst, s.data[:s.n])
	return Packet{Track: t, Data: dst[:n], Seq: seq, Timestamp: binary.BigEndian.Uint32(dst[4:8]),
		Keyframe: s.keyframe, StreamStart: s.streamStart}, true
}
