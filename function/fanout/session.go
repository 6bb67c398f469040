package fanout

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pion/webrtc/v3"

	"lightspeed/shared/relaywire"
	"lightspeed/shared/webrtcapi"
)

// Who owns what while sessions start and end. The session methods run on
// their caller's goroutine (the relay client's), pion's callbacks
// (OnConnectionStateChange, OnSelectedCandidatePairChange) on pion's. Both
// change a viewer's session state (viewer.sess), the fan-out's maps, and a
// channel's session count, subscription and grace timer under Fanout.mu,
// and call pion and the Upstream with no lock held. A channel's tracks and
// err are set once, by its first session's subscribe, before ready is
// closed; the other sessions read them after. A viewer's tracks are set by
// negotiate before attach starts the viewer's goroutines.

// ErrTooManyCandidates is returned for a viewer whose ICE candidates name
// more than relaywire.MaxCandidates addresses (each is one the function
// would send connectivity checks to), or that trickles more than
// relaywire.MaxTrickle before its SDP.
var ErrTooManyCandidates = errors.New("too many ICE candidates")

// ErrUnreachableCandidate is returned for a trickled candidate whose
// address no viewer can have.
var ErrUnreachableCandidate = errors.New("a candidate address no viewer can have")

// unreachable reports whether a remote candidate's address is one no
// viewer can have: loopback, unspecified, multicast or link-local. The
// function would send connectivity checks to its own host's services or
// its link. A fan-out serving loopback (tests) takes every address.
func (f *Fanout) unreachable(a netip.Addr) bool {
	if f.loopback {
		return false
	}
	return a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a.IsLinkLocalUnicast()
}

// dropUnreachable returns a viewer's SDP without the candidate lines that
// name an address no viewer can have, and how many it dropped. pion then
// learns the viewer's address from its connectivity checks, as it does
// for a browser that hides its addresses behind mDNS names.
func (f *Fanout) dropUnreachable(sdp string) (string, int) {
	if f.loopback {
		return sdp, 0
	}
	var b strings.Builder
	dropped := 0
	for line := range strings.Lines(sdp) {
		if v, ok := strings.CutPrefix(line, "a=candidate:"); ok {
			if a, ok := relaywire.CheckedAddr(strings.TrimRight(v, "\r\n")); ok && f.unreachable(a.Addr()) {
				dropped++
				continue
			}
		}
		b.WriteString(line)
	}
	if dropped == 0 {
		return sdp, 0
	}
	return b.String(), dropped
}

// errSessionEnded is returned by StartSession when the session was closed
// while it was being set up.
var errSessionEnded = errors.New("session closed while starting")

// StartSession sets up the PeerConnection of a new viewer of channel. With
// an offer (WHEP) it answers it; with offer == "" (the Lightspeed
// websocket) it makes a sendonly offer of H.264 video and Opus audio. Either
// way it returns the SDP once ICE gathering completed, so the candidates are
// inside and nothing is trickled. The viewer's video is the channel's
// video layer of rid layer, or its highest layer for "" or a rid the
// channel does not have. The channel is subscribed through the Upstream
// when its first viewer arrives. StartSession fails with ErrFull when the
// fan-out has Capacity sessions.
func (f *Fanout) StartSession(ctx context.Context, session string, channel uint32, offer, layer string) (sdpType, sdp string, err error) {
	var remote relaywire.CandidateSet
	if !remote.AddSDP(offer) {
		return "", "", fmt.Errorf("fanout: session %s: the offer names more than %d addresses: %w", session, relaywire.MaxCandidates, ErrTooManyCandidates)
	}
	v, err := f.reserve(session, channel, remote, layer)
	if err != nil {
		return "", "", fmt.Errorf("fanout: session %s: channel %d: %w", session, channel, err)
	}
	sdpType, sdp, err = f.negotiate(ctx, v, offer)
	if err != nil {
		f.closeViewer(v, "start failed", false)
		return "", "", fmt.Errorf("fanout: session %s: channel %d: %w", session, channel, err)
	}
	f.log.Info("fanout: session started", "viewer", session, "channel", channel, "sdp", sdpType)
	return sdpType, sdp, nil
}

// reserve counts a new session against the capacity and its channel,
// creating the channel on its first session.
func (f *Fanout) reserve(session string, id uint32, remote relaywire.CandidateSet, layer string) (*viewer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return nil, ErrClosed
	case f.sessions[session] != nil:
		return nil, ErrSessionExists
	case len(f.sessions) >= f.cfg.Capacity:
		return nil, ErrFull
	}
	ch := f.channels[id]
	if ch == nil {
		ch = newChannel(id)
		ch.wake = f.wakeWriters
		f.channels[id] = ch
		f.publishChannels()
	}
	ch.refs++
	if ch.grace != nil {
		if ch.grace.Stop() {
			f.wg.Done()
		}
		ch.grace = nil
		ch.graceGen++
	}
	v := newViewer(f, session, ch, defaultQueueSize, f.pickWriter())
	v.sess.remote = remote
	v.sess.layer = layer
	f.sessions[session] = v
	return v, nil
}

// subscribe makes sure the channel of v is subscribed: the first session
// of a channel calls the Upstream, the others wait for its answer.
func (f *Fanout) subscribe(ctx context.Context, v *viewer) error {
	ch := v.ch
	f.mu.Lock()
	if v.sess.closed || ch.gone {
		f.mu.Unlock()
		return errSessionEnded
	}
	first := !ch.subscribed
	ch.subscribed = true
	prev := f.unsubscribing[ch.id]
	f.mu.Unlock()

	if first {
		if prev != nil {
			<-prev // the previous subscription of the channel must end first
		}
		tracks, err := f.up.Subscribe(ctx, ch.id)
		if err == nil {
			ch.tracks = tracks
			ch.setTracks(tracks)
			f.log.Info("fanout: channel subscribed", "channel", ch.id, "tracks", len(tracks))
		} else {
			ch.err = err
			f.mu.Lock()
			f.removeChannel(ch)
			f.mu.Unlock()
		}
		close(ch.ready)
	}
	select {
	case <-ch.ready:
		if ch.err != nil {
			return fmt.Errorf("subscribe: %w", ch.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// negotiate creates the viewer's PeerConnection and makes its SDP.
func (f *Fanout) negotiate(ctx context.Context, v *viewer, offer string) (string, string, error) {
	if err := f.subscribe(ctx, v); err != nil {
		return "", "", err
	}
	f.startLayer(v)
	cert, err := f.certs.Get(time.Now())
	if err != nil {
		return "", "", err
	}
	pc, err := f.api.NewPeerConnection(webrtc.Configuration{
		BundlePolicy: webrtc.BundlePolicyMaxBundle,
		Certificates: []webrtc.Certificate{cert},
	})
	if err != nil {
		return "", "", fmt.Errorf("new peer connection: %w", err)
	}
	v.tracks[relaywire.Video] = newViewerTrack(webrtc.RTPCodecTypeVideo, webrtcapi.PreferH264(v.ch.videoFmtp()))
	v.tracks[relaywire.Audio] = newViewerTrack(webrtc.RTPCodecTypeAudio, webrtcapi.PreferOpus())
	var senders [2]*webrtc.RTPSender
	for t, track := range v.tracks {
		tr, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			pc.Close()
			return "", "", fmt.Errorf("add %s transceiver: %w", track.ID(), err)
		}
		// The codec that matches the channel's stream comes first in the
		// SDP, under the payload type the viewer's offer gave it (none in
		// the preferences: pion takes the negotiated one).
		if err := tr.SetCodecPreferences(anyPayloadType(track.prefs)); err != nil {
			pc.Close()
			return "", "", fmt.Errorf("%s codec preferences: %w", track.ID(), err)
		}
		senders[t] = tr.Sender()
	}
	// Datagrams to the viewer's address join its writer's batches.
	senders[0].Transport().ICETransport().OnSelectedCandidatePairChange(func(p *webrtc.ICECandidatePair) {
		f.routeViewer(v, p)
	})
	// Media starts at `connected`: before SRTP is ready pion drops writes.
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			v.join()
		case webrtc.PeerConnectionStateFailed:
			f.closeViewer(v, "connection failed", true)
		case webrtc.PeerConnectionStateClosed:
			f.closeViewer(v, "connection closed", true)
		}
	})
	if !f.attach(v, pc, senders) {
		pc.Close()
		return "", "", errSessionEnded
	}

	var local webrtc.SessionDescription
	if offer != "" {
		offer, dropped := f.dropUnreachable(offer)
		if dropped > 0 {
			f.log.Debug("fanout: dropped candidates no viewer can have", "viewer", v.id, "count", dropped)
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
			return "", "", fmt.Errorf("set offer: %w", err)
		}
		f.flushCandidates(v, pc)
		if local, err = pc.CreateAnswer(nil); err != nil {
			return "", "", fmt.Errorf("create answer: %w", err)
		}
	} else if local, err = pc.CreateOffer(nil); err != nil {
		return "", "", fmt.Errorf("create offer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(local); err != nil {
		return "", "", fmt.Errorf("set local %s: %w", local.Type, err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", "", ctx.Err()
	case <-v.done:
		return "", "", errSessionEnded
	}
	desc := pc.LocalDescription()
	if desc == nil {
		return "", "", errSessionEnded
	}
	return desc.Type.String(), desc.SDP, nil
}

// startLayer sets the video layer v starts with, once its channel's
// subscription answered: the one its session pinned (or a SetLayer since
// asked for), SetLayer aims v from then on.
func (f *Fanout) startLayer(v *viewer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.layerOf(v, v.sess.layer)
	v.sess.layerSet = true
	v.ch.mu.Lock()
	v.cur.track, v.target = t, t
	v.ch.mu.Unlock()
}

// layerOf is the video track of the layer of rid layer in v's channel:
// the highest for "" and for a rid the channel does not have.
func (f *Fanout) layerOf(v *viewer, rid string) relaywire.Track {
	t, ok := v.ch.layer(rid)
	if !ok {
		f.log.Debug("fanout: the channel has no such video layer: the highest instead", "viewer", v.id, "channel", v.ch.id, "layer", rid, "track", t)
	}
	return t
}

// SetLayer pins a session's video to the channel's layer of rid layer (the
// highest for "" or a rid the channel does not have). A viewer that was
// sent video switches at the first packet of that layer's next keyframe,
// which is asked for at once (within the channel's keyframe throttle);
// its video stays one stream (see viewer). A viewer sent no video yet
// starts with that layer.
func (f *Fanout) SetLayer(session, layer string) error {
	f.mu.Lock()
	v := f.sessions[session]
	if v == nil {
		f.mu.Unlock()
		return fmt.Errorf("fanout: session %s: %w", session, ErrUnknownSession)
	}
	if !v.sess.layerSet {
		v.sess.layer = layer // the start layer, once the subscription answered
		f.mu.Unlock()
		return nil
	}
	t := f.layerOf(v, layer)
	v.ch.mu.Lock()
	wait := v.ch.aim(v, t)
	v.ch.mu.Unlock()
	f.mu.Unlock()
	if wait {
		f.log.Debug("fanout: viewer switches layer", "viewer", v.id, "channel", v.ch.id, "layer", layer, "track", t)
		f.requestKeyframe(v.ch, t)
	}
	return nil
}

// attach hands v its PeerConnection and starts its goroutines, unless the
// session or the fan-out was closed meanwhile.
func (f *Fanout) attach(v *viewer, pc *webrtc.PeerConnection, senders [2]*webrtc.RTPSender) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v.sess.closed || f.closed {
		return false
	}
	v.sess.pc = pc
	v.sess.audioRTCP = senders[relaywire.Audio]
	f.running[v] = struct{}{}
	v.running.Store(2)
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		v.start(pc)
	}()
	// Video's RTCP (NACKs) is read as it comes; audio's (receiver reports)
	// by the reporter once a second, without a goroutine of its own.
	go func() {
		defer f.wg.Done()
		v.readRTCP(relaywire.Video, senders[relaywire.Video])
	}()
	return true
}

// routeViewer routes the datagrams to the remote address of v's selected
// candidate pair through v's writer.
func (f *Fanout) routeViewer(v *viewer, p *webrtc.ICECandidatePair) {
	if p == nil || p.Remote == nil {
		return
	}
	ip, err := netip.ParseAddr(p.Remote.Address)
	if err != nil {
		return // a name (mDNS): its datagrams are sent one by one
	}
	addr := netip.AddrPortFrom(ip.Unmap(), p.Remote.Port)
	f.mu.Lock()
	defer f.mu.Unlock()
	if v.sess.closed || addr == v.sess.route {
		return
	}
	if v.sess.route.IsValid() {
		f.conn.Route(v.sess.route, nil)
	}
	v.sess.route = addr
	f.conn.Route(addr, v.w.batch)
}

// SetAnswer applies the viewer's answer to the offer StartSession made.
func (f *Fanout) SetAnswer(session, sdp string) error {
	v, pc, err := f.peer(session)
	if err != nil {
		return err
	}
	f.mu.Lock()
	ok := v.sess.remote.AddSDP(sdp)
	f.mu.Unlock()
	if !ok {
		f.closeViewer(v, "too many ICE candidates", true)
		return fmt.Errorf("fanout: session %s: the answer's candidates and those trickled name more than %d addresses: %w", session, relaywire.MaxCandidates, ErrTooManyCandidates)
	}
	sdp, dropped := f.dropUnreachable(sdp)
	if dropped > 0 {
		f.log.Debug("fanout: dropped candidates no viewer can have", "viewer", v.id, "count", dropped)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("fanout: session %s: set answer: %w", session, err)
	}
	f.flushCandidates(v, pc)
	return nil
}

// AddCandidate adds a remote ICE candidate of the viewer; an empty
// candidate string ends the viewer's candidates. Candidates that come
// before the viewer's SDP are kept until it comes.
func (f *Fanout) AddCandidate(session string, c relaywire.Candidate) error {
	init := webrtc.ICECandidateInit{
		Candidate:        c.Candidate,
		SDPMid:           c.SDPMid,
		SDPMLineIndex:    c.SDPMLineIndex,
		UsernameFragment: c.UsernameFragment,
	}
	f.mu.Lock()
	v := f.sessions[session]
	if v == nil {
		f.mu.Unlock()
		return fmt.Errorf("fanout: session %s: %w", session, ErrUnknownSession)
	}
	if !v.sess.remoteSet && len(v.sess.pending) == relaywire.MaxTrickle {
		f.mu.Unlock()
		return fmt.Errorf("fanout: session %s: more than %d candidates before its SDP: %w", session, relaywire.MaxTrickle, ErrTooManyCandidates)
	}
	if !v.sess.remote.Add(c.Candidate) {
		f.mu.Unlock()
		return fmt.Errorf("fanout: session %s: candidates name more than %d addresses: %w", session, relaywire.MaxCandidates, ErrTooManyCandidates)
	}
	if a, ok := relaywire.CheckedAddr(strings.TrimPrefix(c.Candidate, "candidate:")); ok && f.unreachable(a.Addr()) {
		f.mu.Unlock()
		return fmt.Errorf("fanout: session %s: %s: %w", session, a, ErrUnreachableCandidate)
	}
	if !v.sess.remoteSet {
		v.sess.pending = append(v.sess.pending, init)
		f.mu.Unlock()
		return nil
	}
	pc := v.sess.pc
	f.mu.Unlock()
	if err := pc.AddICECandidate(init); err != nil {
		return fmt.Errorf("fanout: session %s: add candidate: %w", session, err)
	}
	return nil
}

// flushCandidates adds the candidates kept until the remote description
// was set.
func (f *Fanout) flushCandidates(v *viewer, pc *webrtc.PeerConnection) {
	f.mu.Lock()
	v.sess.remoteSet = true
	pending := v.sess.pending
	v.sess.pending = nil
	f.mu.Unlock()
	for _, c := range pending {
		if err := pc.AddICECandidate(c); err != nil {
			f.log.Debug("fanout: remote candidate", "viewer", v.id, "err", err)
		}
	}
}

// peer returns the session's viewer and PeerConnection.
func (f *Fanout) peer(session string) (*viewer, *webrtc.PeerConnection, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.sessions[session]
	if v == nil {
		return nil, nil, fmt.Errorf("fanout: session %s: %w", session, ErrUnknownSession)
	}
	if v.sess.pc == nil {
		return nil, nil, fmt.Errorf("fanout: session %s: no peer connection yet", session)
	}
	return v, v.sess.pc, nil
}

// CloseSession ends a session at the gateway's request.
func (f *Fanout) CloseSession(session, reason string) {
	f.mu.Lock()
	v := f.sessions[session]
	f.mu.Unlock()
	if v != nil {
		f.closeViewer(v, reason, false)
	}
}

// closeViewer ends a session once: it leaves its channel, its goroutines
// end and its PeerConnection closes. notify tells the gateway, when the
// fan-out ended the session on its own.
func (f *Fanout) closeViewer(v *viewer, reason string, notify bool) {
	v.closeOnce.Do(func() {
		f.mu.Lock()
		if f.sessions[v.id] == v {
			delete(f.sessions, v.id)
		}
		v.sess.closed = true
		if v.sess.route.IsValid() {
			f.conn.Route(v.sess.route, nil)
		}
		pc := v.sess.pc
		f.release(v.ch)
		f.mu.Unlock()

		v.ch.leave(v)
		close(v.done)
		v.w.poke() // the writer lets go of v
		if pc != nil {
			if err := pc.GracefulClose(); err != nil {
				f.log.Debug("fanout: close peer connection", "viewer", v.id, "err", err)
			}
		}
		if notify {
			f.up.SessionClosed(v.id, reason)
		}
		c := &v.counters
		f.log.Info("fanout: session closed", "viewer", v.id, "channel", v.ch.id, "reason", reason,
			"packets_sent", c.sent(), "queue_drops", v.queue.dropped.Load(),
			"nacked", c.nacked.Load(), "cache_misses", c.misses.Load(), "plis", c.plis.Load())
	})
}

// release drops a session's hold on its channel; the last one arms the
// unsubscribe grace timer. Called with mu held.
func (f *Fanout) release(ch *channel) {
	ch.refs--
	if ch.refs > 0 || ch.gone || f.closed {
		return
	}
	ch.graceGen++
	gen := ch.graceGen
	f.wg.Add(1)
	ch.grace = time.AfterFunc(f.cfg.UnsubscribeGrace, func() { f.expire(ch, gen) })
}

// expire unsubscribes a channel whose grace ran out without a new viewer.
func (f *Fanout) expire(ch *channel, gen int) {
	defer f.wg.Done()
	f.mu.Lock()
	if gen != ch.graceGen || ch.refs > 0 || ch.gone || f.closed {
		f.mu.Unlock()
		return
	}
	ch.grace = nil
	f.removeChannel(ch)
	if !ch.subscribed {
		f.mu.Unlock()
		return
	}
	done := make(chan struct{})
	f.unsubscribing[ch.id] = done
	f.mu.Unlock()

	<-ch.ready
	if ch.err == nil {
		f.up.Unsubscribe(ch.id)
		f.log.Info("fanout: channel unsubscribed", "channel", ch.id)
	}
	f.mu.Lock()
	delete(f.unsubscribing, ch.id)
	f.mu.Unlock()
	close(done)
}

// anyPayloadType returns codec preferences without their payload types:
// pion then answers each codec with the payload type of the viewer's offer
// (its own when it makes the offer). The MediaEngine's payload types are
// not the browsers' (Chrome and pion give 106 to 42e01f and 127 to
// 4d001f): an answer that used ours would name a codec under a payload
// type the viewer gave another, and a viewer that holds to its own
// numbering receives nothing.
func anyPayloadType(prefs []webrtc.RTPCodecParameters) []webrtc.RTPCodecParameters {
	out := slices.Clone(prefs)
	for i := range out {
		out[i].PayloadType = 0
	}
	return out
}
