package whip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v3"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/shared/relaywire"
)

// Who owns what. A session lives from its POST (after the claim) to end,
// which runs once: it releases the claim, closes the PeerConnection and
// the interceptors, waits for the session's track readers and forgets the
// session. end is called by the DELETE handler, Server.Close and the POST
// handler itself on their goroutines; pion's callbacks and the connect
// timer call it on a goroutine of their own (endAsync), since pion must
// not be closed from inside its callbacks.

const (
	// nackInterval is how often pion's NACK generator looks for gaps. The
	// hub holds packets behind a gap for 40 ms by default: the NACK must
	// leave within a fraction of that for the retransmission to count.
	nackInterval = 10 * time.Millisecond
	// nacksPerPacket: a lost packet is asked for once. A second request
	// would go out before the first one's answer could arrive, and after
	// the hub's hold a retransmission comes too late anyway.
	nacksPerPacket = 1
	// nackMemory is how many NACKed video sequence numbers are remembered
	// to count the retransmissions that come back.
	nackMemory = 512
	// readBufferSize holds any RTP packet pion accepts (its receive MTU is
	// 1460).
	readBufferSize = 1500
	// maxReadErrors ends a track reader after this many failed reads in a
	// row that were not the end of the track.
	maxReadErrors = 100
)

// session is one WHIP publisher.
type session struct {
	srv      *Server
	id       string
	key      keys.Key
	pub      *hub.Publisher
	offer    *offer
	remote   string
	software string
	log      *slog.Logger
	done     chan struct{} // closed when end has finished
	ending   chan struct{} // closed when end begins
	// allLayers is closed when every simulcast layer's track has come:
	// their RTCP readers start then (see onTrack).
	allLayers chan struct{}

	startOnce sync.Once
	endOnce   sync.Once
	readers   sync.WaitGroup // track and RTCP readers

	// nacked holds the NACKed sequence numbers + 1 of each video layer,
	// by seq % nackMemory.
	nacked [relaywire.MaxLayers][nackMemory]atomic.Uint32

	created   time.Time    // set by newSession
	lastMedia atomic.Int64 // unix nanoseconds of the newest RTP packet; 0: none yet

	mu           sync.Mutex
	ended        bool
	connected    bool
	pc           *webrtc.PeerConnection
	chain        *interceptor.Chain
	connectTimer *time.Timer
	videoPT      uint8
	audioPT      uint8
	audioTaken   bool         // an audio track is forwarded
	layers       []videoLayer // one per video layer (its length is set by newSession and stays)
	cands        relaywire.CandidateSet
	trickled     int
}

// videoLayer is one layer of the publisher's video, written into the hub
// as relaywire.LayerTrack of its index: the video of a publisher without
// simulcast, or the RTP stream of one rid.
type videoLayer struct {
	rid          string // "" without simulcast
	ssrc         uint32 // the publisher's SSRC of it; 0 until known (the offer's a=ssrc without simulcast, else its track)
	taken        bool   // its track is forwarded
	startPLI     bool   // the keyframe request of the start was sent
	lastKeyframe time.Time
	firSeq       uint8
}

// staleAfter is how long a session may go without media (or without
// connecting) before a new POST of its publisher replaces it: an encoder
// sends audio every 20 ms, so a second of silence means it is gone (it
// crashed or lost its network), and the ICE timeouts that would end the
// session take 15 s more, during which OBS's reconnects would get 409.
const staleAfter = time.Second

// stale reports whether the session's publisher is gone by now, as far as
// its media tell.
func (s *session) stale(now time.Time) bool {
	last := s.lastMedia.Load()
	if last == 0 {
		return now.Sub(s.created) >= staleAfter
	}
	return now.Sub(time.Unix(0, last)) >= staleAfter
}

func newSession(s *Server, key keys.Key, pub *hub.Publisher, o *offer, remote, software string) *session {
	id := newID()
	layers := []videoLayer{{ssrc: o.videoSSRC}}
	if len(o.layers) > 0 {
		layers = make([]videoLayer, len(o.layers))
		for i, rid := range o.layers {
			layers[i].rid = rid
		}
	}
	return &session{
		created:   time.Now(),
		srv:       s,
		id:        id,
		key:       key,
		pub:       pub,
		offer:     o,
		remote:    remote,
		software:  software,
		log:       s.log.With("channel", key.Channel, "session", id),
		done:      make(chan struct{}),
		ending:    make(chan struct{}),
		allLayers: make(chan struct{}),
		layers:    layers,
	}
}

// layerCount is the number of the publisher's video layers: 1 without
// simulcast.
func (s *session) layerCount() int { return len(s.layers) }

// layerOf returns the index of the video layer of rid ("" without
// simulcast), or -1. Called with mu held.
func (s *session) layerOf(rid string) int {
	for i := range s.layers {
		if s.layers[i].rid == rid {
			return i
		}
	}
	return -1
}

// layerOfSSRC returns the index of the video layer the publisher sends
// with ssrc, or -1.
func (s *session) layerOfSSRC(ssrc uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.layers {
		if s.layers[i].ssrc == ssrc && s.layers[i].taken {
			return i
		}
	}
	return -1
}

// negotiate creates the PeerConnection, answers the offer and returns the
// answer once ICE gathering completed, every candidate inside.
func (s *session) negotiate(ctx context.Context, offerSDP string) (string, error) {
	cert, err := s.srv.certs.Get(time.Now())
	if err != nil {
		return "", err
	}
	api := s.srv.api
	if len(s.offer.layers) > 0 {
		api = s.srv.simAPI
	}
	if s.offer.sdp != "" {
		offerSDP = s.offer.sdp // its simulcast as the gateway takes it
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		BundlePolicy: webrtc.BundlePolicyMaxBundle,
		Certificates: []webrtc.Certificate{cert},
	})
	if err != nil {
		return "", fmt.Errorf("new peer connection: %w", err)
	}
	chain, err := s.srv.interceptors()
	if err != nil {
		pc.Close()
		return "", err
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		pc.Close()
		chain.Close()
		return "", errors.New("session ended while starting")
	}
	s.pc, s.chain = pc, chain
	s.cands.AddSDP(offerSDP) // checkOffer bounded them
	s.mu.Unlock()
	// pion's NACK generator and receiver reports write through here; the
	// API has no interceptors of its own, so they are bound by hand to the
	// streams in onTrack.
	chain.BindRTCPWriter(interceptor.RTCPWriterFunc(s.writeRTCP))
	pc.OnTrack(s.onTrack)
	pc.OnConnectionStateChange(s.onState)

	offerSDP, dropped := s.dropUnreachable(offerSDP)
	if dropped > 0 {
		s.log.Debug("whip: dropped candidates no publisher can have", "count", dropped)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		return "", &offerError{400, "the offer cannot be used: " + err.Error()}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", &offerError{400, "the offer cannot be answered: " + err.Error()}
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gathering candidates: %w", ctx.Err())
	}
	desc := pc.LocalDescription()
	if desc == nil {
		return "", errors.New("no local description")
	}
	videoPT, audioPT, err := s.accepted(desc.SDP)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return "", errors.New("session ended while starting")
	}
	s.videoPT, s.audioPT = videoPT, audioPT
	timeout := s.srv.cfg.ConnectTimeout
	s.connectTimer = time.AfterFunc(timeout, func() {
		s.mu.Lock()
		connected := s.connected
		s.mu.Unlock()
		if !connected {
			s.endAsync(fmt.Sprintf("not connected within %v", timeout), "connect_timeout")
		}
	})
	return desc.SDP, nil
}

// interceptors returns a new chain of pion's NACK generator and receiver
// report interceptors for one PeerConnection.
func (s *Server) interceptors() (*interceptor.Chain, error) {
	gen, err := nack.NewGeneratorInterceptor(
		nack.GeneratorInterval(nackInterval),
		nack.GeneratorMaxNacksPerPacket(nacksPerPacket),
		nack.WithGeneratorLoggerFactory(s.loggers),
	)
	if err != nil {
		return nil, fmt.Errorf("nack generator: %w", err)
	}
	rr, err := report.NewReceiverInterceptor(report.WithReceiverLoggerFactory(s.loggers))
	if err != nil {
		return nil, fmt.Errorf("receiver reports: %w", err)
	}
	g, err := gen.NewInterceptor("")
	if err != nil {
		return nil, fmt.Errorf("nack generator: %w", err)
	}
	r, err := rr.NewInterceptor("")
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("receiver reports: %w", err)
	}
	return interceptor.NewChain([]interceptor.Interceptor{g, r}), nil
}

// accepted checks that the answer took H.264 video and Opus audio (pion
// leaves out codecs its MediaEngine does not have, such as an H.264
// profile it does not know) and, of a simulcast offer, every layer, and
// returns their payload types.
func (s *session) accepted(answer string) (videoPT, audioPT uint8, err error) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(answer); err != nil {
		return 0, 0, fmt.Errorf("own answer: %w", err)
	}
	var video, audio bool
	var recv []string // the layers the answer takes
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Port.Value == 0 {
			continue
		}
		if v, ok := m.Attribute("simulcast"); ok && recv == nil {
			list, _ := strings.CutPrefix(v, "recv ")
			recv = strings.Split(list, ";")
		}
		for _, f := range m.MediaName.Formats {
			pt, err := strconv.ParseUint(f, 10, 7)
			if err != nil {
				continue
			}
			c, err := codecOf(m, uint8(pt))
			switch {
			case err != nil:
			case !video && m.MediaName.Media == "video" && strings.EqualFold(c.name, "H264"):
				video, videoPT = true, uint8(pt)
			case !audio && m.MediaName.Media == "audio" && strings.EqualFold(c.name, "opus"):
				audio, audioPT = true, uint8(pt)
			}
		}
	}
	switch {
	case !video:
		return 0, 0, &offerError{406, fmt.Sprintf("none of the offered H.264 profiles (profile-level-id %s) is one the gateway takes: 42e01f, 42001f, 4d001f or 64001f (any level)",
			strings.Join(s.offer.profiles, ", "))}
	case !audio:
		return 0, 0, &offerError{406, "the offered Opus cannot be received: the gateway takes Opus at 48 kHz, 2 channels"}
	case !slices.Equal(recv, s.offer.layers):
		return 0, 0, fmt.Errorf("the answer takes the simulcast layers %q, not the offered %q", recv, s.offer.layers)
	}
	return videoPT, audioPT, nil
}

// dropUnreachable returns the offer without the candidate lines naming an
// address no publisher can have, and how many it dropped. pion then
// learns the publisher's address from its connectivity checks.
func (s *session) dropUnreachable(offerSDP string) (string, int) {
	if s.srv.loopback {
		return offerSDP, 0
	}
	var b strings.Builder
	dropped := 0
	for line := range strings.Lines(offerSDP) {
		if v, ok := strings.CutPrefix(line, "a=candidate:"); ok {
			if a, ok := relaywire.CheckedAddr(strings.TrimRight(v, "\r\n")); ok && s.srv.unreachable(a.Addr()) {
				dropped++
				continue
			}
		}
		b.WriteString(line)
	}
	return b.String(), dropped
}

// addCandidates adds trickled candidates of the publisher.
func (s *session) addCandidates(cands []webrtc.ICECandidateInit) error {
	s.mu.Lock()
	if s.trickled+len(cands) > maxTrickle {
		s.mu.Unlock()
		return fmt.Errorf("more than %d trickled candidates in this session", maxTrickle)
	}
	for _, c := range cands {
		v := strings.TrimPrefix(c.Candidate, "candidate:")
		if a, ok := relaywire.CheckedAddr(v); ok && s.srv.unreachable(a.Addr()) {
			s.mu.Unlock()
			return fmt.Errorf("candidate address %s is one no publisher can have", a)
		}
		if !s.cands.Add(c.Candidate) {
			s.mu.Unlock()
			return fmt.Errorf("the candidates of this session name more than %d addresses", relaywire.MaxCandidates)
		}
	}
	s.trickled += len(cands)
	pc := s.pc
	s.mu.Unlock()
	for _, c := range cands {
		if err := pc.AddICECandidate(c); err != nil {
			return fmt.Errorf("candidate %q: %v", truncate(c.Candidate, 64), err)
		}
	}
	return nil
}

// onState follows the PeerConnection: connected starts the publish
// session in the hub and asks for a keyframe; failed or closed ends it.
func (s *session) onState(st webrtc.PeerConnectionState) {
	switch st {
	case webrtc.PeerConnectionStateConnected:
		s.mu.Lock()
		s.connected = true
		if s.connectTimer != nil {
			s.connectTimer.Stop()
		}
		s.mu.Unlock()
		s.start()
		for i := range s.layers {
			s.keyframeAtStart(i)
		}
	case webrtc.PeerConnectionStateDisconnected:
		s.log.Info("whip: publisher unreachable, waiting for it", "remote", s.remote)
	case webrtc.PeerConnectionStateFailed:
		s.endAsync("connection failed", "failed")
	case webrtc.PeerConnectionStateClosed:
		s.endAsync("connection closed", "closed")
	}
}

// start begins the publish session in the hub, once.
func (s *session) start() {
	s.startOnce.Do(func() {
		s.mu.Lock()
		info := hub.PublisherInfo{
			Software:         s.software,
			Remote:           s.remote,
			VideoCodec:       relaywire.VideoCodec,
			AudioCodec:       relaywire.AudioCodec,
			VideoPayloadType: s.videoPT,
			AudioPayloadType: s.audioPT,
			Layers:           slices.Clone(s.offer.layers),
		}
		s.mu.Unlock()
		s.pub.SetKeyframeRequester(func(t hub.Track) { s.requestKeyframe(t, "the channel needs one") })
		s.pub.Start(info)
		if len(info.Layers) > 0 {
			s.log.Info("whip: publisher connected", "remote", s.remote, "layers", info.Layers)
		} else {
			s.log.Info("whip: publisher connected", "remote", s.remote)
		}
	})
}

// keyframeAtStart sends the first keyframe request of video layer i,
// once, when its SSRC is known (from the offer without simulcast, else
// from its track).
func (s *session) keyframeAtStart(i int) {
	s.mu.Lock()
	l := &s.layers[i]
	if l.startPLI || l.ssrc == 0 || !s.connected {
		s.mu.Unlock()
		return
	}
	l.startPLI = true
	s.mu.Unlock()
	s.requestKeyframe(relaywire.LayerTrack(i), "start")
}

// requestKeyframe sends a PLI (or FIR when the publisher offered only
// that) for the SSRC of video track t (a layer of the publisher's) unless
// one went out for it less than KeyframeInterval ago. It reports whether
// it sent one.
func (s *session) requestKeyframe(t hub.Track, why string) bool {
	if !t.IsVideo() || t.Layer() >= len(s.layers) {
		return false
	}
	i := t.Layer()
	now := s.srv.cfg.Now()
	s.mu.Lock()
	l := &s.layers[i]
	if s.ended || !s.connected || l.ssrc == 0 ||
		(!l.lastKeyframe.IsZero() && now.Sub(l.lastKeyframe) < s.srv.cfg.KeyframeInterval) {
		s.mu.Unlock()
		return false
	}
	l.lastKeyframe = now
	ssrc, rid := l.ssrc, l.rid
	var pkt rtcp.Packet = &rtcp.PictureLossIndication{MediaSSRC: ssrc}
	kind := "pli"
	if s.offer.videoFeedback[s.videoPT] == feedbackFIR {
		l.firSeq++
		pkt = &rtcp.FullIntraRequest{MediaSSRC: ssrc, FIR: []rtcp.FIREntry{{SSRC: ssrc, SequenceNumber: l.firSeq}}}
		kind = "fir"
	}
	pc := s.pc
	s.mu.Unlock()
	if err := pc.WriteRTCP([]rtcp.Packet{pkt}); err != nil {
		s.log.Debug("whip: keyframe request not sent", "err", err)
		return false
	}
	s.srv.metrics.keyframes.WithLabelValues(kind, strconv.Itoa(i)).Inc()
	s.log.Debug("whip: keyframe requested", "kind", kind, "layer", i, "rid", rid, "why", why)
	return true
}

// writeRTCP sends the interceptors' RTCP (NACKs, receiver reports),
// counting the NACKed sequence numbers.
func (s *session) writeRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	for _, p := range pkts {
		n, ok := p.(*rtcp.TransportLayerNack)
		if !ok {
			continue
		}
		// The NACK generator asks for the streams bound with nack
		// feedback: video layers, each taken before it is bound.
		i := s.layerOfSSRC(n.MediaSSRC)
		count := 0
		for _, pair := range n.Nacks {
			for _, seq := range pair.PacketList() {
				if i >= 0 {
					s.nacked[i][seq%nackMemory].Store(uint32(seq) + 1)
				}
				count++
			}
		}
		s.pub.AddNACKs(count)
		s.srv.metrics.nacks.WithLabelValues(strconv.Itoa(max(i, 0))).Add(float64(count))
	}
	s.mu.Lock()
	pc := s.pc
	s.mu.Unlock()
	if err := pc.WriteRTCP(pkts); err != nil {
		return 0, err
	}
	return len(pkts), nil
}

// onTrack forwards the publisher's H.264 video layers and its first Opus
// audio track into the hub: without simulcast the first H.264 track, with
// simulcast the track of each offered rid. Any other track is read and
// dropped.
func (s *session) onTrack(track *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	codec := track.Codec()
	rid := track.RID()
	t := hub.Track(255)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	switch {
	case track.Kind() == webrtc.RTPCodecTypeVideo && strings.EqualFold(codec.MimeType, webrtc.MimeTypeH264):
		if i := s.layerOf(rid); i >= 0 && !s.layers[i].taken {
			s.layers[i].taken, s.layers[i].ssrc = true, uint32(track.SSRC())
			s.videoPT = uint8(codec.PayloadType)
			t = relaywire.LayerTrack(i)
			if rid != "" && !slices.ContainsFunc(s.layers, func(l videoLayer) bool { return !l.taken }) {
				close(s.allLayers)
			}
		}
	case track.Kind() == webrtc.RTPCodecTypeAudio && strings.EqualFold(codec.MimeType, webrtc.MimeTypeOpus) && !s.audioTaken:
		s.audioTaken = true
		s.audioPT = uint8(codec.PayloadType)
		t = hub.Audio
	}
	if t == 255 {
		s.mu.Unlock()
		s.log.Info("whip: extra track ignored", "kind", track.Kind().String(), "codec", codec.MimeType, "rid", rid, "ssrc", uint32(track.SSRC()))
		go discard(track)
		return
	}
	chain := s.chain
	s.readers.Add(2)
	s.mu.Unlock()

	s.start()
	if t.IsVideo() {
		s.keyframeAtStart(t.Layer())
	}
	fb := make([]interceptor.RTCPFeedback, len(codec.RTCPFeedback))
	for i, f := range codec.RTCPFeedback {
		fb[i] = interceptor.RTCPFeedback{Type: f.Type, Parameter: f.Parameter}
	}
	info := &interceptor.StreamInfo{
		ID:           track.ID(),
		SSRC:         uint32(track.SSRC()),
		PayloadType:  uint8(codec.PayloadType),
		MimeType:     codec.MimeType,
		ClockRate:    codec.ClockRate,
		Channels:     codec.Channels,
		SDPFmtpLine:  codec.SDPFmtpLine,
		RTCPFeedback: fb,
	}
	// A simulcast layer's RTCP (its sender reports) comes on a stream of
	// its own; receiver.Read reads the first track's.
	rtcpIn := chain.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if rid != "" {
			return receiver.ReadSimulcast(b, rid)
		}
		return receiver.Read(b)
	}))
	go func() {
		defer s.readers.Done()
		if rid != "" {
			// pion's ReadSimulcast copies the receiver's track entries
			// without its lock while the next layer's track fills one in
			// (a data race): a layer's RTCP is read once every layer has
			// come.
			select {
			case <-s.allLayers:
			case <-s.ending:
				return
			}
		}
		s.readRTCP(rtcpIn)
	}()
	in := chain.BindRemoteStream(info, interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return track.Read(b)
	}))
	if rid != "" {
		s.log.Info("whip: track", "kind", t.String(), "rid", rid, "codec", codec.MimeType, "payload_type", uint8(codec.PayloadType), "ssrc", uint32(track.SSRC()))
	} else {
		s.log.Info("whip: track", "kind", t.String(), "codec", codec.MimeType, "payload_type", uint8(codec.PayloadType), "ssrc", uint32(track.SSRC()))
	}
	defer s.readers.Done()
	s.forward(t, in)
}

// forward writes every packet of one track into the hub until the track
// ends.
func (s *session) forward(t hub.Track, in interceptor.RTPReader) {
	buf := make([]byte, readBufferSize)
	var pkt rtp.Packet
	errs := 0
	for {
		n, _, err := in.Read(buf, nil)
		if err != nil {
			if errs++; errs > maxReadErrors || errors.Is(err, io.EOF) || s.isEnded() {
				return
			}
			continue
		}
		errs = 0
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		if t.IsVideo() {
			slot := &s.nacked[t.Layer()][pkt.SequenceNumber%nackMemory]
			if slot.CompareAndSwap(uint32(pkt.SequenceNumber)+1, 0) {
				s.pub.AddRecovered(1)
			}
		}
		// A padding-only packet (empty payload) is written too: it holds a
		// sequence number, and leaving it out would make the hub wait for
		// it. The hub counts it as unsendable and moves on.
		now := time.Now()
		s.lastMedia.Store(now.UnixNano())
		s.pub.WriteRTP(t, &pkt, now)
	}
}

// readRTCP reads the publisher's RTCP of one receiver (sender reports,
// for the receiver reports' round-trip figures) until it ends.
func (s *session) readRTCP(in interceptor.RTCPReader) {
	buf := make([]byte, readBufferSize)
	errs := 0
	for {
		if _, _, err := in.Read(buf, nil); err != nil {
			if errs++; errs > maxReadErrors || errors.Is(err, io.EOF) || s.isEnded() {
				return
			}
			continue
		}
		errs = 0
	}
}

// discard reads a track nobody forwards, so pion's buffers do not fill.
func discard(track *webrtc.TrackRemote) {
	buf := make([]byte, readBufferSize)
	for {
		if _, _, err := track.Read(buf); err != nil {
			return
		}
	}
}

func (s *session) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// endAsync ends the session on a goroutine of its own, unless the server
// is closing, which ends every session itself.
func (s *session) endAsync(reason, result string) {
	srv := s.srv
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return
	}
	srv.wg.Add(1)
	srv.mu.Unlock()
	go func() {
		defer srv.wg.Done()
		s.end(reason, result)
	}()
}

// end ends the session once: the channel's claim is released, the
// PeerConnection closed, the readers waited for, and the server forgets
// the session. result labels the sessions-ended metric.
func (s *session) end(reason, result string) {
	s.endOnce.Do(func() {
		close(s.ending)
		s.mu.Lock()
		s.ended = true
		pc, chain, timer := s.pc, s.chain, s.connectTimer
		connected := s.connected
		s.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		s.pub.Release()
		if pc != nil {
			if err := pc.Close(); err != nil {
				s.log.Debug("whip: close peer connection", "err", err)
			}
		}
		if chain != nil {
			chain.Close()
		}
		s.readers.Wait()
		s.srv.forget(s)
		s.srv.metrics.ended.WithLabelValues(result).Inc()
		s.log.Info("whip: session ended", "reason", reason, "connected", connected)
		close(s.done)
	})
}
