package ftl

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"lightspeed/gateway/hub"
	"lightspeed/shared/nack"
)

const (
	maxMediaPacket = 1500 // larger UDP payloads are not FTL media
	maxPingPacket  = 64   // an FTL ping is 24 bytes (12 on Windows)
	rtcpSR         = 200
	tickInterval   = 10 * time.Millisecond
	drainQuiet     = 100 * time.Millisecond // after DISCONNECT, end once media is quiet this long
	drainMax       = time.Second            // and at the latest after this
)

// trackState is what the handshake negotiated for one track, and counts.
type trackState struct {
	enabled bool
	pt      uint8
	ssrc    uint32
	packets uint64
	bytes   uint64
}

// session is one publisher's live stream, from CONNECT to its end.
type session struct {
	srv      *Server
	ctl      *control
	channel  uint32
	ip       netip.Addr // media must come from the control connection's IP
	software string
	video    trackState
	audio    trackState

	pub     *hub.Publisher // the claim on the channel, from CONNECT on
	started time.Time      // when "." began the stream; zero before
	done    chan struct{}
	endOnce sync.Once
	touched atomic.Int64 // unix nanoseconds of the last sign of life (media or PING)

	mu        sync.Mutex // media reader and watchdog
	addr      netip.AddrPort
	gotMedia  bool
	gotVideo  bool
	lastMedia time.Time
	nack      nack.Tracker
	nackSeqs  []uint16
	speedTest uint64 // audio packets before the first video packet (dropped)
	nacksSent uint64
	recovered uint64
	srs       uint64
	draining  time.Time // when DISCONNECT came; zero while streaming
}

func newSession(s *Server, c *control, channel uint32, ip netip.Addr) *session {
	sess := &session{srv: s, ctl: c, channel: channel, ip: ip, done: make(chan struct{})}
	sess.touch(time.Now())
	return sess
}

func (sess *session) touch(now time.Time) { sess.touched.Store(now.UnixNano()) }

// alive reports whether the session has shown life within silence.
func (sess *session) alive(now time.Time, silence time.Duration) bool {
	select {
	case <-sess.done:
		return false
	default:
	}
	return now.Sub(time.Unix(0, sess.touched.Load())) < silence
}

func (sess *session) learnedAddr() netip.AddrPort {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.addr
}

// begin starts the stream on the channel's hub, after ".".
func (sess *session) begin() {
	s := sess.srv
	sess.pub.Start(hub.PublisherInfo{
		Software:         sess.software,
		Remote:           sess.ctl.remote.String(),
		VideoCodec:       "H264",
		AudioCodec:       "OPUS",
		VideoPayloadType: sess.video.pt,
		AudioPayloadType: sess.audio.pt,
	})
	// The media socket knows the session already (register came first):
	// its packets wait for the start under the lock.
	sess.mu.Lock()
	sess.started = time.Now()
	sess.mu.Unlock()
	s.metrics.streams.Inc()
	s.log.Info("ftl: stream started", "channel", sess.channel, "remote", sess.ctl.remote.String(),
		"software", sess.software, "video_ssrc", sess.video.ssrc, "audio_ssrc", sess.audio.ssrc)
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		sess.watch()
	}()
}

// watch asks again for lost video packets and ends the stream when media
// does not come or stops.
func (sess *session) watch() {
	t := time.NewTicker(tickInterval)
	defer t.Stop()
	for {
		select {
		case <-sess.done:
			return
		case now := <-t.C:
			sess.mu.Lock()
			sess.sendNACKs(now)
			got, last, draining := sess.gotMedia, sess.lastMedia, sess.draining
			sess.mu.Unlock()
			switch {
			case !draining.IsZero() && (now.Sub(last) > drainQuiet || now.Sub(draining) > drainMax):
				sess.end("publisher disconnected", 0)
			case !got && now.Sub(sess.started) > sess.srv.cfg.MediaTimeout:
				sess.end("no media within "+sess.srv.cfg.MediaTimeout.String(), codeNoMedia)
			case got && now.Sub(last) > sess.srv.cfg.SilenceTimeout:
				sess.end("media silent for "+sess.srv.cfg.SilenceTimeout.String(), codeNoMedia)
			}
		}
	}
}

// drain ends the stream once the media sent before DISCONNECT has arrived.
func (sess *session) drain(now time.Time) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.draining.IsZero() {
		sess.draining = now
	}
}

func (sess *session) isDraining() bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return !sess.draining.IsZero()
}

// end stops the stream once: the channel's claim is released (it goes
// offline), the publisher gets code (unless 0), the control connection
// closes, and a summary is logged.
func (sess *session) end(reason string, code int) {
	sess.endOnce.Do(func() {
		s := sess.srv
		close(sess.done)
		st := sess.pub.Hub().Stats() // before the channel may have its next publisher
		sess.pub.Release()
		s.release(sess)
		if code != 0 {
			sess.ctl.reply(strconv.Itoa(code))
		}
		sess.ctl.conn.Close()
		sess.mu.Lock()
		defer sess.mu.Unlock()
		if sess.started.IsZero() {
			return // ended before "."
		}
		s.log.Info("ftl: stream ended", "channel", sess.channel, "reason", reason,
			"duration", time.Since(sess.started).Round(time.Millisecond).String(),
			"video_packets", sess.video.packets, "audio_packets", sess.audio.packets,
			"bytes", sess.video.bytes+sess.audio.bytes, "speed_test_dropped", sess.speedTest,
			"nacks_sent", sess.nacksSent, "recovered", sess.recovered, "lost", st.Lost,
			"evicted_nacks", sess.nack.Evicted())
	})
}

// readMedia reads the media socket until it is closed.
func (s *Server) readMedia() error {
	buf := make([]byte, maxMediaPacket+1)
	var pkt rtp.Packet
	for {
		n, addr, err := s.media.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("ftl: media read", "err", err)
			continue
		}
		s.handleMedia(buf[:n], addr, &pkt, time.Now())
	}
}

// handleMedia routes one UDP payload: FTL ping, sender report or RTP.
// pkt is scratch space reused across calls.
func (s *Server) handleMedia(b []byte, from netip.AddrPort, pkt *rtp.Packet, now time.Time) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	switch {
	case len(b) < 4 || len(b) > maxMediaPacket:
		s.metrics.rejected.WithLabelValues("size").Inc()
	case b[0] == 0x81 && b[1] == 0xFA:
		s.handlePing(b, from)
	case b[0]>>6 != 2:
		s.metrics.rejected.WithLabelValues("not_rtp").Inc()
	case b[1] == rtcpSR:
		s.handleSenderReport(b, from)
	case b[1] >= 192 && b[1] <= 223:
		// Other RTCP (RFC 5761 range) has no use on ingest.
		s.metrics.rejected.WithLabelValues("rtcp").Inc()
	default:
		if err := pkt.Unmarshal(b); err != nil {
			s.metrics.rejected.WithLabelValues("malformed").Inc()
			return
		}
		sess := s.sessionBySSRC(pkt.SSRC)
		if sess == nil {
			s.metrics.rejected.WithLabelValues("unknown_ssrc").Inc()
			return
		}
		sess.onRTP(pkt, len(b), from, now)
	}
}

// handlePing echoes an FTL ping, unchanged, to a known publisher address.
func (s *Server) handlePing(b []byte, from netip.AddrPort) {
	if len(b) > maxPingPacket {
		s.metrics.rejected.WithLabelValues("size").Inc()
		return
	}
	sess := s.sessionByAddr(from)
	if sess == nil {
		s.metrics.rejected.WithLabelValues("unknown_source").Inc()
		return
	}
	if _, err := s.media.WriteToUDPAddrPort(b, from); err == nil {
		s.metrics.pings.Inc()
	}
}

// handleSenderReport accepts a sender report of a live stream.
func (s *Server) handleSenderReport(b []byte, from netip.AddrPort) {
	var sr rtcp.SenderReport
	if len(b) < 28 || sr.Unmarshal(b[:28]) != nil {
		s.metrics.rejected.WithLabelValues("malformed").Inc()
		return
	}
	sess := s.sessionBySSRC(sr.SSRC)
	if sess == nil {
		s.metrics.rejected.WithLabelValues("unknown_ssrc").Inc()
		return
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if reason := sess.checkSource(from); reason != "" {
		s.metrics.rejected.WithLabelValues(reason).Inc()
		return
	}
	sess.srs++
	s.metrics.packets.WithLabelValues("sender_report").Inc()
}

// checkSource reports why from may not send this session's media ("" if
// it may), learning the publisher's port from its first valid packet.
// Called with sess.mu held.
func (sess *session) checkSource(from netip.AddrPort) string {
	if from.Addr() != sess.ip {
		return "wrong_ip"
	}
	if !sess.addr.IsValid() {
		sess.addr = from
		sess.srv.log.Info("ftl: media source learned", "channel", sess.channel, "source", from.String())
	} else if from != sess.addr {
		return "wrong_port"
	}
	return ""
}

// onRTP takes one RTP packet of the session's SSRCs.
func (sess *session) onRTP(pkt *rtp.Packet, size int, from netip.AddrPort, now time.Time) {
	s := sess.srv
	sess.mu.Lock()
	defer sess.mu.Unlock()
	select {
	case <-sess.done:
		s.metrics.rejected.WithLabelValues("ended").Inc()
		return
	default:
	}
	if reason := sess.checkSource(from); reason != "" {
		s.metrics.rejected.WithLabelValues(reason).Inc()
		return
	}
	if sess.started.IsZero() {
		// Registered, but the stream has not begun: media sent before
		// the server's reply to ".".
		s.metrics.rejected.WithLabelValues("not_started").Inc()
		return
	}
	isVideo := pkt.SSRC == sess.video.ssrc && sess.video.enabled
	track, ts := &sess.audio, hub.Audio
	if isVideo {
		track, ts = &sess.video, hub.Video
	}
	if pkt.PayloadType != track.pt {
		s.metrics.rejected.WithLabelValues("wrong_payload_type").Inc()
		return
	}
	sess.gotMedia, sess.lastMedia = true, now
	sess.touch(now)
	if !isVideo && !sess.gotVideo {
		// The post-connect speed test: garbage on the audio SSRC.
		sess.speedTest++
		s.metrics.rejected.WithLabelValues("speed_test").Inc()
		return
	}
	track.packets++
	track.bytes += uint64(size)
	if isVideo {
		sess.gotVideo = true
		recovered, opened := sess.nack.Received(pkt.SequenceNumber, now)
		if recovered {
			sess.recovered++
			sess.pub.AddRecovered(1)
		}
		if opened > 0 {
			sess.sendNACKs(now)
		}
		s.metrics.video.Inc()
	} else {
		s.metrics.audio.Inc()
	}
	sess.pub.WriteRTP(ts, pkt, now)
}

// sendNACKs sends one generic NACK for the video packets due to be asked
// for again. Called with sess.mu held.
func (sess *session) sendNACKs(now time.Time) {
	if !sess.addr.IsValid() || sess.nack.Outstanding() == 0 {
		return
	}
	sess.nackSeqs = sess.nack.Due(now, sess.nackSeqs[:0])
	if len(sess.nackSeqs) == 0 {
		return
	}
	n := rtcp.TransportLayerNack{
		SenderSSRC: 0,
		MediaSSRC:  sess.video.ssrc,
		Nacks:      rtcp.NackPairsFromSequenceNumbers(sess.nackSeqs),
	}
	b, err := n.Marshal()
	if err != nil {
		return
	}
	if _, err := sess.srv.media.WriteToUDPAddrPort(b, sess.addr); err != nil {
		sess.srv.log.Debug("ftl: send nack", "channel", sess.channel, "err", err)
		return
	}
	sess.nacksSent += uint64(len(sess.nackSeqs))
	sess.pub.AddNACKs(len(sess.nackSeqs))
	sess.srv.metrics.nacks.Add(float64(len(sess.nackSeqs)))
}
