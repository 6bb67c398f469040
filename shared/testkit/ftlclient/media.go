package ftlclient

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// RTP as the FTL SDK sends it.
const (
	videoPT    = 96
	audioPT    = 97
	videoClock = 90000 // Hz
	audioClock = 48000 // Hz

	maxMTU       = 1392                                 // largest media packet
	rtpHeaderLen = 12                                   // no CSRC, no extension
	maxSingleNAL = maxMTU - rtpHeaderLen                // 1380: larger units go in FU-A
	fuaFragment  = maxMTU - rtpHeaderLen - fuaHeaderLen // 1378 bytes of a unit per FU-A packet
	fuaHeaderLen = 2                                    // FU indicator and FU header
	fuaType      = 28                                   // NAL unit type of FU-A
	ringSize     = 2048                                 // packets kept per SSRC for retransmission
	packetBuffer = 1500                                 // the SDK's packet and receive buffers
	maxOpus      = packetBuffer - rtpHeaderLen          // largest audio payload
	frameRate    = 30                                   // video frames per second
	opusPacket   = 20000                                // microseconds of audio per Opus packet
	nalSPS       = 7                                    // NAL unit type of a sequence parameter set
	nackPT       = 205                                  // RTCP transport layer feedback, FMT 1 generic NACK
	pingPT       = 250                                  // FTL ping, FMT 1
	pingLen      = 24                                   // header, padding, 64-bit struct timeval
	speedKbps    = 15000                                // OBS's speed test rate
	speedPacket  = rtpHeaderLen + maxMTU                // 1404-byte speed test packets
	pingInterval = 25 * time.Millisecond                // media pings
	srInterval   = time.Second                          // sender reports
	ntpEpochDiff = 2208988800                           // seconds from 1900 to 1970
)

// slot is one packet kept for retransmission. Its array makes storing a
// packet allocation-free.
type slot struct {
	sn  int32 // the sequence number held, -1 for none
	n   int
	buf [packetBuffer]byte
}

// track is the sending state of one SSRC, as the SDK's media component.
type track struct {
	ssrc        uint32
	pt          uint8
	clock       int64
	seq         uint16 // next sequence number
	nackEnabled bool

	// Timestamps come from media time (dts, in microseconds) relative to
	// the track's first packet, as the SDK's _update_timestamp.
	started   bool
	baseDTS   int64
	lastDTS   int64
	timestamp uint32

	// For sender reports.
	packets, payloadBytes uint32

	ring [ringSize]slot
}

func newTrack(ssrc uint32, pt uint8, clock int64) *track {
	t := &track{ssrc: ssrc, pt: pt, clock: clock, nackEnabled: true}
	for i := range t.ring {
		t.ring[i].sn = -1
	}
	return t
}

// next takes the slot for the next sequence number.
func (t *track) next() (*slot, uint16) {
	sn := t.seq
	t.seq++
	s := &t.ring[sn%ringSize]
	s.sn = int32(sn)
	return s, sn
}

func (t *track) header(sn uint16, marker bool) rtp.Header {
	return rtp.Header{
		Version:        2,
		Marker:         marker,
		PayloadType:    t.pt,
		SequenceNumber: sn,
		Timestamp:      t.timestamp,
		SSRC:           t.ssrc,
	}
}

// setTimestamp sets the RTP timestamp of the track's next packets from
// their media time. c.mu is held.
func (c *Conn) setTimestamp(t *track, dts int64) {
	if c.srEpoch.IsZero() {
		c.srEpoch = time.Now()
	}
	if !t.started {
		t.started = true
		t.baseDTS = dts
	}
	t.timestamp = uint32(((dts-t.baseDTS)*t.clock + 500000) / 1000000)
	t.lastDTS = dts
}

// putVideoPacket writes into out the next RTP packet of a NAL unit, as the
// SDK packetizes: the whole unit if this is its first packet and it fits
// in 1380 bytes, else an FU-A fragment carrying at most 1378 bytes. rest
// is what is left to send of the unit, nalHeader the unit's first byte.
// It returns the packet's length and how many bytes of rest it carries.
// The marker is set on the unit's last packet if it ends a frame.
func putVideoPacket(out []byte, h rtp.Header, rest []byte, first bool, nalHeader byte, endOfFrame bool) (n, used int) {
	single := first && len(rest) <= maxSingleNAL
	last := single || (!first && len(rest) <= fuaFragment)
	h.Marker = last && endOfFrame
	n, _ = h.MarshalTo(out) // out is a packet buffer: never short
	if single {
		return n + copy(out[n:], rest), len(rest)
	}
	var flags byte
	skip := 0
	switch {
	case first: // the FU header replaces the unit's own header
		flags = 0x80
		skip = 1
	case last:
		flags = 0x40
	}
	out[n] = nalHeader&0x60 | fuaType
	out[n+1] = flags | nalHeader&0x1f
	frag := rest[skip:]
	if len(frag) > fuaFragment {
		frag = frag[:fuaFragment]
	}
	return n + fuaHeaderLen + copy(out[n+fuaHeaderLen:], frag), skip + len(frag)
}

// sendVideoNAL packetizes and sends one NAL unit with media time dts,
// keeping every packet for retransmission. It returns the unit's RTP
// timestamp and, if stamp is set, the time right before its first packet
// was written. With a pacer the packets are queued to it instead (waiting
// while its queue is full), a stamped first packet is reported to
// OnFrame by the pacer, and firstSent is zero.
func (c *Conn) sendVideoNAL(ctx context.Context, nal []byte, dts int64, endOfFrame, stamp bool) (ts uint32, firstSent time.Time, err error) {
	t := c.video
	c.mu.Lock()
	c.setTimestamp(t, dts)
	ts = t.timestamp
	c.mu.Unlock()
	for rest, first := nal, true; len(rest) > 0; first = false {
		c.mu.Lock()
		s, sn := t.next()
		n, used := putVideoPacket(s.buf[:], t.header(sn, false), rest, first, nal[0], endOfFrame)
		s.n = n
		rest = rest[used:]
		t.packets++
		t.payloadBytes += uint32(used)
		if c.videoQ == nil { // else the pacer sends and counts it
			c.stats.videoPackets.Add(1)
			c.stats.videoBytes.Add(uint64(n))
			if first && stamp {
				firstSent = time.Now()
			}
			err = c.send(s.buf[:n])
		}
		c.mu.Unlock()
		if c.videoQ != nil {
			err = c.queueVideo(ctx, queuedVideo{sn: sn, stamp: first && stamp})
		}
		if err != nil {
			return ts, firstSent, err
		}
	}
	return ts, firstSent, nil
}

// sendAudio sends one Opus packet with media time dts.
func (c *Conn) sendAudio(payload []byte, dts int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.audio
	c.setTimestamp(t, dts)
	s, sn := t.next()
	h := t.header(sn, false)
	n, _ := h.MarshalTo(s.buf[:])
	n += copy(s.buf[n:], payload)
	s.n = n
	t.packets++
	t.payloadBytes += uint32(len(payload))
	c.stats.audioPackets.Add(1)
	c.stats.audioBytes.Add(uint64(n))
	return c.send(s.buf[:n])
}

func (c *Conn) send(b []byte) error {
	_, err := c.udp.WriteToUDPAddrPort(b, c.media)
	return err
}

// streamState is what Stream keeps between calls.
type streamState struct {
	mu           sync.Mutex // one Stream at a time
	nextDTS      int64      // media time where the next loop starts, microseconds
	waitForSPS   bool       // the SDK drops video until the first SPS
	videoStarted bool       // and audio until the first video
}

// Stream sends the media in real time (times cfg.Rate): video at 30
// frames per second from nals, H.264 NAL units in decoding order without
// start codes; audio from opus, one 20 ms Opus packet each. It plays the
// media loops times, or until ctx is done if loops is 0; each loop starts
// when the longer of the two tracks of the previous one ends, and
// timestamps go on across loops and calls. It returns nil when the loops
// are played (with PeakKbps, once the pacer has sent their last video
// packet), ctx's error when ctx is done, and the connection's error
// (a *ReplyError when the ingest ended the stream, ErrClosed after
// Disconnect or Close) when the connection ends.
func (c *Conn) Stream(ctx context.Context, nals, opus [][]byte, loops int) error {
	st := &c.stream
	st.mu.Lock()
	defer st.mu.Unlock()

	frames := splitFrames(nals)
	if len(frames) == 0 {
		return fmt.Errorf("ftl: channel %d: stream: no video", c.channel)
	}
	for i, p := range opus {
		if len(p) == 0 || len(p) > maxOpus {
			return fmt.Errorf("ftl: channel %d: stream: Opus packet %d is %d bytes, want 1 to %d", c.channel, i, len(p), maxOpus)
		}
	}
	videoLen := int64(len(frames)) * 1000000 / frameRate
	audioLen := int64(len(opus)) * opusPacket
	loopLen := max(videoLen, audioLen)

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	start, origin := time.Now(), st.nextDTS
	for loop := 0; loops <= 0 || loop < loops; loop++ {
		base := st.nextDTS
		for v, a := 0, 0; v < len(frames) || a < len(opus); {
			vdts := base + int64(v)*1000000/frameRate
			adts := base + int64(a)*opusPacket
			video := v < len(frames) && (a == len(opus) || vdts <= adts)
			dts := adts
			if video {
				dts = vdts
			}
			at := start.Add(time.Duration(float64(dts-origin) * float64(time.Microsecond) / c.cfg.Rate))
			if err := c.waitUntil(ctx, timer, at); err != nil {
				return err
			}
			var err error
			if video {
				err = c.sendFrame(ctx, frames[v], dts)
				v++
			} else {
				err = c.sendOpus(opus[a], dts)
				a++
			}
			if err != nil {
				if c.ctx.Err() != nil {
					return c.done()
				}
				if ctx.Err() != nil { // waiting for the pacer's queue
					return ctx.Err()
				}
				return fmt.Errorf("ftl: channel %d: stream: %w", c.channel, err)
			}
		}
		st.nextDTS = base + loopLen
	}
	return c.waitVideoSent(ctx)
}

// sendFrame sends the NAL units of one frame, the marker on the last, and
// tells cfg.OnFrame when the frame's first packet went out.
func (c *Conn) sendFrame(ctx context.Context, frame [][]byte, dts int64) error {
	st := &c.stream
	onFrame := c.cfg.OnFrame
	started := false
	for i, nal := range frame {
		if st.waitForSPS {
			if nal[0]&0x1f != nalSPS {
				continue
			}
			st.waitForSPS = false
			st.videoStarted = true
		}
		stamp := onFrame != nil && !started
		ts, sent, err := c.sendVideoNAL(ctx, nal, dts, i == len(frame)-1, stamp)
		if err != nil {
			return err
		}
		if stamp && c.videoQ == nil {
			onFrame(ts, sent)
		}
		started = true
	}
	return nil
}

func (c *Conn) sendOpus(p []byte, dts int64) error {
	if !c.stream.videoStarted {
		return nil
	}
	return c.sendAudio(p, dts)
}

// waitUntil waits until at, or returns early when ctx is done or the
// connection ends.
func (c *Conn) waitUntil(ctx context.Context, timer *time.Timer, at time.Time) error {
	if d := time.Until(at); d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-c.ctx.Done():
			timer.Stop()
			return c.done()
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return c.done()
	default:
		return nil
	}
}

// splitFrames groups NAL units into access units (frames): a new one
// starts at a parameter set, SEI or delimiter after a slice, and at a
// slice whose first_mb_in_slice is 0 (the slice header's first bit is 1).
func splitFrames(nals [][]byte) [][][]byte {
	var (
		frames [][][]byte
		cur    [][]byte
		hasVCL bool
	)
	for _, nal := range nals {
		if len(nal) == 0 {
			continue
		}
		typ := nal[0] & 0x1f
		vcl := typ >= 1 && typ <= 5
		startsAU := (typ >= 6 && typ <= 9) || (typ >= 14 && typ <= 18) ||
			(vcl && len(nal) > 1 && nal[1]&0x80 != 0)
		if hasVCL && startsAU {
			frames = append(frames, cur)
			cur, hasVCL = nil, false
		}
		cur = append(cur, nal)
		hasVCL = hasVCL || vcl
	}
	if len(cur) > 0 {
		frames = append(frames, cur)
	}
	return frames
}

// readMedia reads what the ingest sends to the media socket.
func (c *Conn) readMedia(ctx context.Context) error {
	buf := make([]byte, packetBuffer)
	for {
		n, from, err := c.udp.ReadFromUDPAddrPort(buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("ftl: channel %d: media socket: %w", c.channel, err)
		}
		c.handleDatagram(buf[:n], from, time.Now())
	}
}

// handleDatagram handles one datagram on the media socket, as the SDK's
// receive thread: a generic NACK makes it resend, a ping echo gives the
// RTT. Datagrams from other hosts than the ingest are dropped.
func (c *Conn) handleDatagram(b []byte, from netip.AddrPort, now time.Time) {
	if from.Addr().Unmap() != c.ingest || len(b) < 2 {
		return
	}
	// Like the SDK, look only at the FMT bits and the packet type.
	switch format, pt := b[0]&0x1f, b[1]; {
	case format == 1 && pt == nackPT:
		c.handleNACK(b)
	case format == 1 && pt == pingPT:
		c.handlePingEcho(b, now)
	}
}

// handleNACK resends the packets a generic NACK (RFC 4585) asks for that
// are still in the ring. Like the SDK it reads only the first RTCP packet
// of the datagram, trusts its length field (with a bound check) and
// ignores the version and padding bits.
func (c *Conn) handleNACK(b []byte) {
	if len(b) < 12 {
		return
	}
	length := int(binary.BigEndian.Uint16(b[2:4])) // in 32-bit words, minus one
	if len(b) < (length+1)*4 {
		return
	}
	c.stats.nacks.Add(1)
	ssrc := binary.BigEndian.Uint32(b[8:12])
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := 0; i < length-2; i++ {
		fci := b[12+4*i:]
		pid := binary.BigEndian.Uint16(fci[0:2])
		blp := binary.BigEndian.Uint16(fci[2:4])
		c.resend(ssrc, pid)
		for bit := range uint16(16) {
			if blp&(1<<bit) != 0 {
				c.resend(ssrc, pid+bit+1)
			}
		}
	}
}

// resend sends packet sn of ssrc again, byte for byte, if the ring still
// holds it. c.mu is held.
func (c *Conn) resend(ssrc uint32, sn uint16) {
	var t *track
	switch ssrc { // the SDK looks up audio first
	case c.audio.ssrc:
		t = c.audio
	case c.video.ssrc:
		t = c.video
	default:
		return
	}
	s := &t.ring[sn%ringSize]
	if s.sn != int32(sn) || !t.nackEnabled {
		return
	}
	c.stats.retransmits.Add(1)
	if err := c.send(s.buf[:s.n]); err != nil {
		c.log.Debug("ftl: resend failed", "ssrc", ssrc, "seq", sn, "err", err)
	}
}

// putPing writes an FTL ping: V=2, FMT 1, PT 250, the length in bytes (not
// words), then the send time as a 64-bit Linux struct timeval after four
// bytes of alignment padding.
func putPing(b []byte, now time.Time) {
	b[0] = 2<<6 | 1
	b[1] = pingPT
	binary.BigEndian.PutUint16(b[2:4], pingLen)
	clear(b[4:8])
	binary.LittleEndian.PutUint64(b[8:16], uint64(now.Unix()))
	binary.LittleEndian.PutUint64(b[16:24], uint64(now.Nanosecond()/1000))
}

// handlePingEcho takes the RTT from a ping the ingest sent back.
func (c *Conn) handlePingEcho(b []byte, now time.Time) {
	if len(b) < pingLen {
		return
	}
	sec := int64(binary.LittleEndian.Uint64(b[8:16]))
	usec := int64(binary.LittleEndian.Uint64(b[16:24]))
	if usec < 0 || usec >= 1000000 {
		return
	}
	rtt := now.Sub(time.Unix(sec, usec*1000))
	if rtt < 0 || rtt > time.Minute {
		return // not a time we sent
	}
	c.stats.rtt.Store(int64(rtt))
	c.stats.pingsEchoed.Add(1)
	select {
	case c.echoes <- struct{}{}:
	default:
	}
}

// pingMedia sends a ping every 25 ms (except during the speed test) and,
// every second, a sender report for each track that has started, as the
// SDK's ping thread.
func (c *Conn) pingMedia(ctx context.Context) error {
	tick := time.NewTicker(pingInterval)
	defer tick.Stop()
	var (
		ping   [pingLen]byte
		lastSR time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		if !c.pingsOff.Load() {
			c.sendPing(ping[:], now)
		}
		if now.Sub(lastSR) > srInterval {
			lastSR = now
			c.sendSenderReports()
		}
	}
}

func (c *Conn) sendPing(b []byte, now time.Time) {
	putPing(b, now)
	if err := c.send(b); err != nil {
		c.log.Debug("ftl: ping failed", "err", err)
		return
	}
	c.stats.pingsSent.Add(1)
}

// sendSenderReports sends an RTCP sender report for each started track.
// Like the SDK, its NTP time is the wall clock at the first media
// timestamp plus the media time since, so it moves with the timestamps.
func (c *Conn) sendSenderReports() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range [...]*track{c.video, c.audio} {
		if !t.started {
			continue
		}
		at := c.srEpoch.Add(time.Duration(t.lastDTS-t.baseDTS) * time.Microsecond)
		sr := rtcp.SenderReport{
			SSRC:        t.ssrc,
			NTPTime:     ntpTime(at),
			RTPTime:     t.timestamp,
			PacketCount: t.packets,
			OctetCount:  t.payloadBytes,
		}
		b, err := sr.Marshal()
		if err != nil {
			continue
		}
		if err := c.send(b); err != nil {
			c.log.Debug("ftl: sender report failed", "err", err)
			continue
		}
		c.stats.senderReports.Add(1)
	}
}

// ntpTime converts t to a 64-bit NTP timestamp.
func ntpTime(t time.Time) uint64 {
	sec := uint64(t.Unix() + ntpEpochDiff)
	frac := uint64(t.Nanosecond()) << 32 / 1000000000
	return sec<<32 | frac
}

// speedTest runs OBS's speed test: a ping to take the idle RTT, packets of
// random bytes on the audio SSRC (timestamp 0) at 15 Mbit/s for d, pings
// until one comes back, then the audio track starts afresh at sequence
// number 0. Media pings are off and NACKs of audio are ignored meanwhile.
func (c *Conn) speedTest(ctx context.Context, d time.Duration) error {
	c.pingsOff.Store(true)
	c.mu.Lock()
	c.audio.nackEnabled = false
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		a := c.audio
		a.seq, a.timestamp, a.started, a.packets, a.payloadBytes = 0, 0, false, 0, 0
		a.nackEnabled = true
		c.srEpoch = time.Time{}
		c.mu.Unlock()
		c.pingsOff.Store(false)
	}()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// The SDK sends its first ping three times and waits 125 ms at most.
	rttBefore, err := c.probeRTT(ctx, timer, 3, 5*pingInterval)
	if err != nil {
		return err
	}

	var seed [32]byte
	rand.Read(seed[:])
	rng := mrand.NewChaCha8(seed)
	var payload [maxMTU]byte
	const bytesPerMs = speedKbps * 1000 / 8 / 1000
	start := time.Now()
	sent, packets := 0, 0
	for elapsed := time.Duration(0); elapsed < d; elapsed = time.Since(start) {
		for budget := maxMTU + int(elapsed.Milliseconds())*bytesPerMs - sent; budget > 0; budget -= speedPacket {
			rng.Read(payload[:])
			if err := c.sendSpeedTestPacket(payload[:]); err != nil {
				return err
			}
			sent += speedPacket
			packets++
		}
		if err := c.waitUntil(ctx, timer, time.Now().Add(time.Millisecond)); err != nil {
			return err
		}
	}
	took := time.Since(start)

	// Then one ping every 25 ms until one comes back, for 2 s at most.
	var rttAfter time.Duration
	for range 2 * time.Second / pingInterval {
		if rttAfter, err = c.probeRTT(ctx, timer, 1, pingInterval); err != nil || rttAfter >= 0 {
			break
		}
	}
	if err != nil {
		return err
	}
	c.log.Info("ftl: speed test done", "packets", packets, "bytes", sent, "took", took,
		"rtt_before", rttBefore, "rtt_after", rttAfter)
	return nil
}

// probeRTT sends copies of one ping and waits up to wait for an echo; it
// returns the RTT, or -1 if none came back.
func (c *Conn) probeRTT(ctx context.Context, timer *time.Timer, copies int, wait time.Duration) (time.Duration, error) {
	select { // forget echoes of earlier pings
	case <-c.echoes:
	default:
	}
	var ping [pingLen]byte
	now := time.Now()
	for range copies {
		c.sendPing(ping[:], now)
	}
	timer.Reset(wait)
	defer timer.Stop()
	select {
	case <-c.echoes:
		return time.Duration(c.stats.rtt.Load()), nil
	case <-timer.C:
		return -1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-c.ctx.Done():
		return 0, c.done()
	}
}

// sendSpeedTestPacket sends one packet of the speed test: garbage on the
// audio SSRC with timestamp 0, kept in the ring like the SDK does.
func (c *Conn) sendSpeedTestPacket(payload []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.audio
	c.setTimestamp(t, 0)
	s, sn := t.next()
	h := t.header(sn, false)
	n, _ := h.MarshalTo(s.buf[:])
	n += copy(s.buf[n:], payload)
	s.n = n
	t.packets++
	t.payloadBytes += uint32(len(payload))
	c.stats.speedTestPackets.Add(1)
	if err := c.send(s.buf[:n]); err != nil {
		if c.ctx.Err() != nil {
			return c.done()
		}
		return err
	}
	return nil
}
