package fanout

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/relaywire"
)

func TestWHEPViewerReceivesEveryPacketFromItsFirstKeyframeOn(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "whep-1")

	// Delta frames before any keyframe: the viewer cannot decode them and
	// must not get them; its audio starts at once.
	h.writeDeltas(3)
	firstKey := len(h.sent[relaywire.Video])
	for range 3 {
		h.writeGOP(8)
		p.waitAll(relaywire.Video, h.sent[relaywire.Video][firstKey:])
	}
	p.waitAll(relaywire.Audio, h.sent[relaywire.Audio])

	p.checkExactly(relaywire.Video, h.sent[relaywire.Video][firstKey:])
	p.checkExactly(relaywire.Audio, h.sent[relaywire.Audio])
	if first := p.received(relaywire.Video)[0]; first.Payload[0]&0x1f != 7 {
		t.Fatalf("first video packet carries NAL type %d, want an SPS", first.Payload[0]&0x1f)
	}
	subs, _, _ := h.up.calls()
	if !slices.Equal(subs, []uint32{testChannel}) {
		t.Fatalf("subscribed %v, want [%d]", subs, testChannel)
	}
}

func TestViewerJoiningMidGOPStartsWithTheCachedKeyframe(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	typ, answer, err := h.f.StartSession(context.Background(), "late", testChannel, p.offer(), "")
	if err != nil || typ != "answer" {
		t.Fatalf("StartSession: %q %v", typ, err)
	}
	// The stream runs before the viewer connects: one GOP, then into the next.
	h.writeGOP(5)
	secondKey := len(h.sent[relaywire.Video])
	h.writeGOP(10)
	audioBefore := len(h.sent[relaywire.Audio])

	p.accept(answer)
	h.waitConnected(1)
	h.writeDeltas(5)
	h.writeGOP(5)

	want := h.sent[relaywire.Video][secondKey:]
	p.waitAll(relaywire.Video, want)
	p.checkExactly(relaywire.Video, want)
	got := p.received(relaywire.Video)
	if got[0].Payload[0]&0x1f != 7 || got[0].SequenceNumber != want[0].seq {
		t.Fatalf("first video packet: seq %d NAL type %d; want seq %d, an SPS", got[0].SequenceNumber, got[0].Payload[0]&0x1f, want[0].seq)
	}
	p.waitAll(relaywire.Audio, h.sent[relaywire.Audio][audioBefore:])
	p.checkExactly(relaywire.Audio, h.sent[relaywire.Audio][audioBefore:])
}

func TestWebsocketModeOffersSendonlyH264AndOpus(t *testing.T) {
	h := newHarness(t, Config{})
	typ, offer, err := h.f.StartSession(context.Background(), "ws-1", testChannel, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if typ != "offer" {
		t.Fatalf("sdp type %q, want offer", typ)
	}
	for _, want := range []string{"H264/90000", "opus/48000/2", "a=sendonly", "profile-level-id=42e01f", "typ host", "127.0.0.1"} {
		if !strings.Contains(offer, want) {
			t.Errorf("offer lacks %q:\n%s", want, offer)
		}
	}

	p := newPeer(t, viewerAPI(t, true))
	if err := h.f.SetAnswer("ws-1", p.answer(offer)); err != nil {
		t.Fatal(err)
	}
	h.waitConnected(1)
	h.writeGOP(10)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	p.waitAll(relaywire.Audio, h.sent[relaywire.Audio])
	p.checkExactly(relaywire.Video, h.sent[relaywire.Video])
	p.checkExactly(relaywire.Audio, h.sent[relaywire.Audio])
}

func TestNACKIsAnsweredFromTheSharedCache(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, false)) // no NACK generator: every NACK is the test's
	h.connectWHEP(p, "nacker")
	h.writeGOP(6)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	p.waitAll(relaywire.Audio, h.sent[relaywire.Audio])

	ask := []sent{h.sent[relaywire.Video][2], h.sent[relaywire.Video][5], h.sent[relaywire.Audio][1]}
	p.mu.Lock()
	ssrc := [2]uint32{uint32(p.remote[relaywire.Video].SSRC()), uint32(p.remote[relaywire.Audio].SSRC())}
	p.mu.Unlock()
	err := p.pc.WriteRTCP([]rtcp.Packet{
		&rtcp.TransportLayerNack{MediaSSRC: ssrc[relaywire.Video], Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{ask[0].seq, ask[1].seq})},
		&rtcp.TransportLayerNack{MediaSSRC: ssrc[relaywire.Audio], Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{ask[2].seq})},
	})
	if err != nil {
		t.Fatal(err)
	}

	copies := func(tr relaywire.Track, seq uint16) (n int, identical bool, payload []byte) {
		identical = true
		for _, pkt := range p.received(tr) {
			if pkt.SequenceNumber == seq {
				n++
				if payload != nil && string(payload) != string(pkt.Payload) {
					identical = false
				}
				payload = pkt.Payload
			}
		}
		return n, identical, payload
	}
	for i, a := range ask {
		tr := relaywire.Video
		if i == 2 {
			tr = relaywire.Audio
		}
		waitFor(t, "the retransmission", func() bool { n, _, _ := copies(tr, a.seq); return n >= 2 })
		if n, identical, payload := copies(tr, a.seq); n != 2 || !identical || string(payload) != string(a.payload) {
			t.Fatalf("%s seq %d: %d copies, identical %v", tr, a.seq, n, identical)
		}
	}
	if s := h.f.Stats(); s.NACKed != 3 || s.Retransmits != 3 || s.CacheMisses != 0 {
		t.Fatalf("stats %+v, want 3 NACKed, 3 retransmitted, no misses", s)
	}
}

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// videoSSRC is the SSRC of the video a peer receives.
func (p *peer) videoSSRC() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return uint32(p.remote[relaywire.Video].SSRC())
}

// TestViewersKeyframeRequestsReachTheRelayOnceASecondPerChannel: real pion
// viewers send PLIs and FIRs about their video; the fan-out hands the
// relay client one request per channel a second, whichever viewer asks,
// throttles the rest and counts what the relay client drops. The clock is
// the test's: the throttle is checked by counts, never by waiting.
func TestViewersKeyframeRequestsReachTheRelayOnceASecondPerChannel(t *testing.T) {
	h := newHarness(t, Config{})
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.f.now = clock.Now // before the first session: its RTCP reader starts after
	a, b := newPeer(t, viewerAPI(t, false)), newPeer(t, viewerAPI(t, false))
	h.connectWHEP(a, "a")
	h.connectWHEP(b, "b")
	h.writeGOP(2)
	a.waitAll(relaywire.Video, h.sent[relaywire.Video])
	b.waitAll(relaywire.Video, h.sent[relaywire.Video])

	handled := uint64(0)
	// send has p send each of pkts as an RTCP packet of its own and waits
	// until the fan-out decided about each.
	send := func(p *peer, pkts ...rtcp.Packet) {
		t.Helper()
		for _, pkt := range pkts {
			if err := p.pc.WriteRTCP([]rtcp.Packet{pkt}); err != nil {
				t.Fatal(err)
			}
		}
		handled += uint64(len(pkts))
		waitFor(t, "the keyframe requests to be handled", func() bool {
			s := h.f.Stats()
			return s.KeyframesSent+s.KeyframesThrottled+s.KeyframesDropped == handled
		})
	}
	check := func(when string, sent, throttled, dropped uint64) {
		t.Helper()
		s := h.f.Stats()
		if s.KeyframesSent != sent || s.KeyframesThrottled != throttled || s.KeyframesDropped != dropped {
			t.Fatalf("%s: keyframe requests sent %d, throttled %d, dropped %d; want %d, %d, %d",
				when, s.KeyframesSent, s.KeyframesThrottled, s.KeyframesDropped, sent, throttled, dropped)
		}
		if got := h.up.keyframeRequests(); uint64(len(got)) != sent+dropped || slices.ContainsFunc(got, func(r keyframeReq) bool { return r != keyframeReq{testChannel, relaywire.Video} }) {
			t.Fatalf("%s: relay client asked for keyframes of %v, want channel %d's video %d times", when, got, testChannel, sent+dropped)
		}
	}
	pli := func(p *peer) rtcp.Packet { return &rtcp.PictureLossIndication{MediaSSRC: p.videoSSRC()} }
	fir := func(p *peer) rtcp.Packet {
		return &rtcp.FullIntraRequest{MediaSSRC: p.videoSSRC(), FIR: []rtcp.FIREntry{{SSRC: p.videoSSRC()}}}
	}

	send(a, pli(a), pli(a), pli(a), fir(a))
	check("a's first second", 1, 3, 0)
	send(b, pli(b)) // the other viewer of the channel, in the same second
	check("b in the same second", 1, 4, 0)
	clock.advance(999 * time.Millisecond)
	send(b, pli(b))
	check("just before the second is up", 1, 5, 0)
	clock.advance(time.Millisecond)
	send(b, fir(b), pli(b))
	check("the next second", 2, 6, 0)

	// Without a relay connection the request is dropped, and the channel's
	// second still starts: the next ask waits for it.
	h.up.mu.Lock()
	h.up.refuse = true
	h.up.mu.Unlock()
	clock.advance(time.Second)
	send(a, pli(a), pli(a))
	check("without a relay connection", 2, 7, 1)

	// A compound packet with both a PLI and a FIR is one request; a PLI
	// about another SSRC is none.
	h.up.mu.Lock()
	h.up.refuse = false
	h.up.mu.Unlock()
	clock.advance(time.Second)
	if err := a.pc.WriteRTCP([]rtcp.Packet{pli(a), fir(a), &rtcp.PictureLossIndication{MediaSSRC: a.videoSSRC() + 1}}); err != nil {
		t.Fatal(err)
	}
	handled++
	waitFor(t, "the compound packet to be handled", func() bool {
		s := h.f.Stats()
		return s.KeyframesSent+s.KeyframesThrottled+s.KeyframesDropped == handled
	})
	check("a compound packet", 3, 7, 1)
	if s := h.f.Stats(); s.PLIs != 9 || s.FIRs != 3 {
		t.Errorf("counted %d PLIs and %d FIRs, want 9 and 3", s.PLIs, s.FIRs)
	}
}

// stuckWriter is the writer of a viewer that takes no packets: its first
// write waits until release is closed.
type stuckWriter struct {
	entered chan struct{} // closed by the first write
	release chan struct{}
	writes  atomic.Int32
}

func (w *stuckWriter) WriteRTP(_ *rtp.Header, payload []byte) (int, error) {
	if w.writes.Add(1) == 1 {
		close(w.entered)
	}
	<-w.release
	return 12 + len(payload), nil
}

func (w *stuckWriter) Write(b []byte) (int, error) { return len(b), nil }

func TestSlowViewerDropsItsOwnPacketsOnly(t *testing.T) {
	// The slow viewer takes no packets: the first write of its burst (the
	// cached keyframe) does not return, as when pion's SRTP is not ready
	// for a viewer, so nothing drains its queue. UDP never makes the
	// fan-out wait for a viewer that stops reading; a write that does not
	// return is what leaves a queue undrained. The fast viewer, on the same
	// pool of writers, must get every packet, WriteRTP must never wait, and
	// the slow viewer's queue must drop and count what it cannot hold.
	h := newHarness(t, Config{})
	fast := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(fast, "fast")
	h.writeGOP(2)
	fast.waitAll(relaywire.Video, h.sent[relaywire.Video])

	stuck := &stuckWriter{entered: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(stuck.release) }) // before the harness closes the fan-out
	addFakeViewer(t, h.f, "slow", stuck)
	select {
	case <-stuck.entered:
	case <-time.After(waitLimit):
		t.Fatal("the slow viewer's burst never started")
	}
	before := len(h.sent[relaywire.Video]) + len(h.sent[relaywire.Audio])

	// More than the slow viewer's queue holds, a GOP at a time so that the
	// fast viewer's writer keeps up.
	for range 40 {
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			h.writeGOP(10)
		}()
		select {
		case <-wrote:
		case <-time.After(waitLimit):
			t.Fatal("WriteRTP waited for the slow viewer")
		}
		fast.waitAll(relaywire.Video, h.sent[relaywire.Video])
	}
	fast.waitAll(relaywire.Audio, h.sent[relaywire.Audio])
	fast.checkExactly(relaywire.Video, h.sent[relaywire.Video])
	fast.checkExactly(relaywire.Audio, h.sent[relaywire.Audio])

	live := uint64(len(h.sent[relaywire.Video]) + len(h.sent[relaywire.Audio]) - before)
	if live <= defaultQueueSize {
		t.Fatalf("only %d packets written after the slow viewer joined: its queue of %d never filled", live, defaultQueueSize)
	}
	if s := h.f.Stats(); s.QueueDrops != live-defaultQueueSize {
		t.Fatalf("dropped %d of the %d packets written after the slow viewer joined (queue of %d), want %d", s.QueueDrops, live, defaultQueueSize, live-defaultQueueSize)
	}
	if n := stuck.writes.Load(); n != 1 {
		t.Fatalf("%d writes to the slow viewer, want the one that never returned", n)
	}
}

func TestViewerLeavingIsCleanedUp(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		leave      func(h *harness, p *peer)
		wantClosed string // reason passed to Upstream.SessionClosed, "" if not called
	}{
		{
			name: "the viewer closes its PeerConnection",
			// Short ICE timeouts, so that the silence of the viewer is noticed
			// soon; long enough for the connection to be set up on a busy
			// machine (pion fails a check that takes longer than both).
			cfg: Config{
				ICEDisconnectedTimeout: time.Second,
				ICEFailedTimeout:       2 * time.Second,
				ICEKeepalive:           200 * time.Millisecond,
				UnsubscribeGrace:       50 * time.Millisecond,
			},
			leave:      func(_ *harness, p *peer) { p.pc.Close() },
			wantClosed: "connection failed",
		},
		{
			name:  "the gateway closes the session",
			cfg:   Config{UnsubscribeGrace: 50 * time.Millisecond},
			leave: func(h *harness, _ *peer) { h.f.CloseSession("leaver", "viewer left") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			h := newHarness(t, tt.cfg)
			idle := runtime.NumGoroutine()
			p := newPeer(t, viewerAPI(t, true))
			h.connectWHEP(p, "leaver")
			h.writeGOP(3)
			p.waitAll(relaywire.Video, h.sent[relaywire.Video])
			if n := h.f.Viewers(testChannel); n != 1 {
				t.Fatalf("Viewers = %d, want 1", n)
			}

			tt.leave(h, p)
			waitFor(t, "the viewer to be removed", func() bool { return h.f.Viewers(testChannel) == 0 && h.f.Load().Viewers == 0 })
			waitFor(t, "the channel to be unsubscribed", func() bool {
				_, unsubs, _ := h.up.calls()
				return slices.Equal(unsubs, []uint32{testChannel})
			})
			h.writeGOP(1) // packets of an unsubscribed channel are ignored
			_, _, closed := h.up.calls()
			if closed["leaver"] != tt.wantClosed {
				t.Fatalf("SessionClosed reason %q, want %q", closed["leaver"], tt.wantClosed)
			}
			p.pc.Close()
			waitGoroutines(t, idle)

			if err := h.f.Close(); err != nil {
				t.Fatal(err)
			}
			waitGoroutines(t, base)
		})
	}
}

func TestCloseEndsEverySession(t *testing.T) {
	base := runtime.NumGoroutine()
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "one")
	_, offer, err := h.f.StartSession(context.Background(), "two", testChannel, "", "") // never answered
	if err != nil || offer == "" {
		t.Fatal(err)
	}
	h.writeGOP(2)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	if s := h.f.Stats(); s.Viewers != 2 || s.Connected != 1 {
		t.Fatalf("%d sessions, %d connected; want 2, of which the answered one connected", s.Viewers, s.Connected)
	}

	if err := h.f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := h.f.Viewers(testChannel); n != 0 {
		t.Fatalf("Viewers = %d after Close", n)
	}
	if _, _, err := h.f.StartSession(context.Background(), "three", testChannel, "", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("StartSession after Close: %v, want ErrClosed", err)
	}
	h.f.WriteRTP(asRelayed(relaywire.Video, h.syn.keyframe()[0])) // ignored, no panic
	p.pc.Close()
	waitGoroutines(t, base)
}

func TestStartSessionFailures(t *testing.T) {
	t.Run("at capacity it fails with ErrFull", func(t *testing.T) {
		h := newHarness(t, Config{Capacity: 1})
		if _, _, err := h.f.StartSession(context.Background(), "a", testChannel, "", ""); err != nil {
			t.Fatal(err)
		}
		_, _, err := h.f.StartSession(context.Background(), "b", testChannel, "", "")
		if !errors.Is(err, ErrFull) {
			t.Fatalf("err %v, want ErrFull", err)
		}
		h.f.CloseSession("a", "done")
		if _, _, err := h.f.StartSession(context.Background(), "b", testChannel, "", ""); err != nil {
			t.Fatalf("after a session ended: %v", err)
		}
	})
	t.Run("a session id is used once", func(t *testing.T) {
		h := newHarness(t, Config{})
		if _, _, err := h.f.StartSession(context.Background(), "a", testChannel, "", ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := h.f.StartSession(context.Background(), "a", testChannel, "", ""); !errors.Is(err, ErrSessionExists) {
			t.Fatalf("err %v, want ErrSessionExists", err)
		}
	})
	t.Run("a failed subscription fails the session and is retried by the next one", func(t *testing.T) {
		h := newHarness(t, Config{})
		h.up.err = errors.New("channel 77 has no stream")
		_, _, err := h.f.StartSession(context.Background(), "a", testChannel, "", "")
		if err == nil || !strings.Contains(err.Error(), "no stream") {
			t.Fatalf("err %v", err)
		}
		if n := h.f.Viewers(testChannel); n != 0 {
			t.Fatalf("Viewers = %d after a failed start", n)
		}
		h.up.mu.Lock()
		h.up.err = nil
		h.up.mu.Unlock()
		if _, _, err := h.f.StartSession(context.Background(), "b", testChannel, "", ""); err != nil {
			t.Fatal(err)
		}
		if subs, _, _ := h.up.calls(); len(subs) != 2 {
			t.Fatalf("subscribed %d times, want 2", len(subs))
		}
	})
	t.Run("an offer that is not SDP fails and leaves nothing running", func(t *testing.T) {
		base := runtime.NumGoroutine()
		h := newHarness(t, Config{})
		if _, _, err := h.f.StartSession(context.Background(), "a", testChannel, "v=0 nonsense", ""); err == nil {
			t.Fatal("no error")
		}
		if n := h.f.Load().Viewers; n != 0 {
			t.Fatalf("%d viewers after a failed start", n)
		}
		h.f.Close()
		waitGoroutines(t, base)
	})
	t.Run("unknown sessions", func(t *testing.T) {
		h := newHarness(t, Config{})
		if err := h.f.SetAnswer("nope", "v=0"); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("SetAnswer: %v", err)
		}
		if err := h.f.AddCandidate("nope", relaywire.Candidate{}); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("AddCandidate: %v", err)
		}
		h.f.CloseSession("nope", "x") // no panic
	})
}

func TestChannelStaysSubscribedForANewViewerWithinTheGrace(t *testing.T) {
	h := newHarness(t, Config{UnsubscribeGrace: time.Hour})
	if _, _, err := h.f.StartSession(context.Background(), "a", testChannel, "", ""); err != nil {
		t.Fatal(err)
	}
	h.f.CloseSession("a", "left")
	if _, _, err := h.f.StartSession(context.Background(), "b", testChannel, "", ""); err != nil {
		t.Fatal(err)
	}
	subs, unsubs, _ := h.up.calls()
	if len(subs) != 1 || len(unsubs) != 0 {
		t.Fatalf("subscribes %v, unsubscribes %v; want one subscription kept", subs, unsubs)
	}
}

func TestRemoteCandidatesBeforeTheAnswerAreKept(t *testing.T) {
	h := newHarness(t, Config{})
	_, offer, err := h.f.StartSession(context.Background(), "ws", testChannel, "", "")
	if err != nil {
		t.Fatal(err)
	}
	p := newPeer(t, viewerAPI(t, true))
	answer := p.answer(offer)
	// Send the viewer's candidates apart from its answer, first.
	var cands []relaywire.Candidate
	var lines []string
	for _, l := range strings.Split(answer, "\r\n") {
		if c, ok := strings.CutPrefix(l, "a="); ok && strings.HasPrefix(c, "candidate:") {
			mid, idx := "0", uint16(0)
			cands = append(cands, relaywire.Candidate{Candidate: c, SDPMid: &mid, SDPMLineIndex: &idx})
			continue
		}
		lines = append(lines, l)
	}
	if len(cands) == 0 {
		t.Fatal("viewer answer has no candidates")
	}
	cands = append(cands, relaywire.Candidate{}) // end of candidates
	for _, c := range cands {
		if err := h.f.AddCandidate("ws", c); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.f.SetAnswer("ws", strings.Join(lines, "\r\n")); err != nil {
		t.Fatal(err)
	}
	h.waitConnected(1)
	h.writeGOP(2)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
}

// TestRemoteCandidatesAreBounded checks that a viewer cannot make the
// function check more than relaywire.MaxCandidates addresses: not in its
// offer, not in its answer, not trickled; and that a viewer cannot queue
// candidates without bound before its SDP. Candidates naming an address
// already named, or one the function never checks, cost nothing.
func TestRemoteCandidatesAreBounded(t *testing.T) {
	zero := uint16(0)
	cand := func(port int) relaywire.Candidate {
		return relaywire.Candidate{Candidate: fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", port, port), SDPMLineIndex: &zero}
	}
	withCandidates := func(sdp string, from, n int) string {
		var b strings.Builder
		b.WriteString(strings.TrimRight(sdp, "\r\n"))
		for port := from; port < from+n; port++ {
			b.WriteString("\r\na=" + cand(port).Candidate)
		}
		return b.String() + "\r\n"
	}
	t.Run("offer", func(t *testing.T) {
		h := newHarness(t, Config{})
		p := newPeer(t, viewerAPI(t, true))
		offer := withCandidates(p.offer(), 1, relaywire.MaxCandidates+1)
		if _, _, err := h.f.StartSession(context.Background(), "v", testChannel, offer, ""); !errors.Is(err, ErrTooManyCandidates) {
			t.Fatalf("StartSession with %d addresses: %v", relaywire.MaxCandidates+1, err)
		}
		if err := h.f.AddCandidate("v", relaywire.Candidate{}); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("the refused session is still there: %v", err)
		}
	})
	t.Run("trickled", func(t *testing.T) {
		h := newHarness(t, Config{})
		if _, _, err := h.f.StartSession(context.Background(), "ws", testChannel, "", ""); err != nil {
			t.Fatal(err)
		}
		for port := 1; port <= relaywire.MaxCandidates; port++ {
			if err := h.f.AddCandidate("ws", cand(port)); err != nil {
				t.Fatalf("address %d: %v", port, err)
			}
		}
		for _, c := range []relaywire.Candidate{
			cand(1), // named already
			{Candidate: "candidate:9 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive", SDPMLineIndex: &zero},
			{SDPMLineIndex: &zero}, // end of candidates
		} {
			if err := h.f.AddCandidate("ws", c); err != nil {
				t.Fatalf("%q: %v", c.Candidate, err)
			}
		}
		if err := h.f.AddCandidate("ws", cand(relaywire.MaxCandidates+1)); !errors.Is(err, ErrTooManyCandidates) {
			t.Fatalf("address %d: %v", relaywire.MaxCandidates+1, err)
		}
	})
	t.Run("queued before the SDP", func(t *testing.T) {
		h := newHarness(t, Config{})
		if _, _, err := h.f.StartSession(context.Background(), "ws", testChannel, "", ""); err != nil {
			t.Fatal(err)
		}
		for i := range relaywire.MaxTrickle {
			if err := h.f.AddCandidate("ws", cand(1)); err != nil {
				t.Fatalf("candidate %d: %v", i+1, err)
			}
		}
		if err := h.f.AddCandidate("ws", relaywire.Candidate{SDPMLineIndex: &zero}); !errors.Is(err, ErrTooManyCandidates) {
			t.Fatalf("candidate %d before the SDP: %v", relaywire.MaxTrickle+1, err)
		}
	})
	t.Run("answer after trickled", func(t *testing.T) {
		h := newHarness(t, Config{})
		_, offer, err := h.f.StartSession(context.Background(), "ws", testChannel, "", "")
		if err != nil {
			t.Fatal(err)
		}
		for port := 1; port < relaywire.MaxCandidates; port++ {
			if err := h.f.AddCandidate("ws", cand(port)); err != nil {
				t.Fatalf("address %d: %v", port, err)
			}
		}
		p := newPeer(t, viewerAPI(t, true))
		answer := withCandidates(p.answer(offer), 1000, 2)
		if err := h.f.SetAnswer("ws", answer); !errors.Is(err, ErrTooManyCandidates) {
			t.Fatalf("an answer naming 2 more addresses: %v", err)
		}
		if err := h.f.AddCandidate("ws", relaywire.Candidate{}); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("the session is still open: %v", err)
		}
		if _, _, closed := h.up.calls(); closed["ws"] == "" {
			t.Fatalf("the gateway was not told the session closed: %v", closed)
		}
	})
}

func TestCandidatesNoViewerCanHaveAreDropped(t *testing.T) {
	f := &Fanout{cfg: Config{}}
	sdp := "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n" +
		"a=candidate:2 1 udp 2130706431 ::1 9 typ host\r\n" +
		"a=candidate:3 1 udp 2130706431 169.254.1.1 9 typ host\r\n" +
		"a=candidate:4 1 udp 2130706431 fe80::1 9 typ host\r\n" +
		"a=candidate:5 1 udp 2130706431 0.0.0.0 9 typ host\r\n" +
		"a=candidate:6 1 udp 2130706431 224.0.0.251 9 typ host\r\n" +
		"a=candidate:7 1 udp 2130706431 ::ffff:127.0.0.1 9 typ host\r\n" +
		"a=candidate:8 1 udp 1686052607 198.51.100.7 50000 typ srflx raddr 0.0.0.0 rport 0\r\n" +
		"a=candidate:9 1 udp 2130706431 10.0.0.1 9 typ host\r\n" +
		"a=candidate:10 1 udp 2130706431 x.local 9 typ host\r\n" +
		"a=candidate:11 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive\r\n" +
		"a=end-of-candidates\r\n"
	got, dropped := f.dropUnreachable(sdp)
	want := "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n" +
		"a=candidate:8 1 udp 1686052607 198.51.100.7 50000 typ srflx raddr 0.0.0.0 rport 0\r\n" +
		"a=candidate:9 1 udp 2130706431 10.0.0.1 9 typ host\r\n" +
		"a=candidate:10 1 udp 2130706431 x.local 9 typ host\r\n" +
		"a=candidate:11 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive\r\n" +
		"a=end-of-candidates\r\n"
	if got != want || dropped != 7 {
		t.Fatalf("dropped %d:\n%s\nwant 7:\n%s", dropped, got, want)
	}
	f.loopback = true
	if got, dropped := f.dropUnreachable(sdp); got != sdp || dropped != 0 {
		t.Fatalf("a loopback fan-out dropped %d", dropped)
	}
}

// TestAViewerWithoutUsableCandidatesConnects serves a loopback viewer from
// a fan-out that drops loopback candidates: the function learns the
// viewer's address from its connectivity checks (a peer-reflexive
// candidate), as with a browser that hides its addresses behind mDNS
// names, and refuses a trickled loopback candidate.
func TestAViewerWithoutUsableCandidatesConnects(t *testing.T) {
	h := newHarness(t, Config{})
	h.f.loopback = false // it still gathers on loopback only: New read the setting
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "v")
	h.writeGOP(2)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])

	_, pc, err := h.f.peer("v")
	if err != nil {
		t.Fatal(err)
	}
	remote := 0
	for _, st := range pc.GetStats() {
		if c, ok := st.(webrtc.ICECandidateStats); ok && c.Type == webrtc.StatsTypeRemoteCandidate {
			remote++
			if c.CandidateType != webrtc.ICECandidateTypePrflx {
				t.Errorf("remote candidate %s:%d of type %s, want only the peer-reflexive one", c.IP, c.Port, c.CandidateType)
			}
		}
	}
	if remote == 0 {
		t.Error("no remote candidate in the stats")
	}
	zero := uint16(0)
	c := relaywire.Candidate{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", SDPMLineIndex: &zero}
	if err := h.f.AddCandidate("v", c); !errors.Is(err, ErrUnreachableCandidate) {
		t.Fatalf("a trickled loopback candidate: %v", err)
	}
}

func TestLoadCountsViewersAndEgress(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "v")
	h.writeGOP(10)
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	waitFor(t, "egress to show", func() bool {
		l := h.f.Load()
		return l.Viewers == 1 && l.EgressBps > 0 && l.CPU >= 0 && l.CPU <= 1
	})
	if s := h.f.Stats(); s.PacketsSent < uint64(len(h.sent[relaywire.Video])) || s.BytesSent == 0 || s.Channels != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSDPPrefersTheChannelsProfile(t *testing.T) {
	h := newHarness(t, Config{})
	_, offer, err := h.f.StartSession(context.Background(), "ws", testChannel, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The first H.264 payload type on the m=video line is the channel's profile.
	var pts []string
	for _, l := range strings.Split(offer, "\r\n") {
		if rest, ok := strings.CutPrefix(l, "m=video "); ok {
			pts = strings.Fields(rest)[2:]
		}
	}
	if len(pts) == 0 || !strings.Contains(offer, "a=fmtp:"+pts[0]+" level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f") {
		t.Fatalf("first video payload type %v is not 42e01f:\n%s", pts, offer)
	}
	_ = webrtc.MimeTypeH264
}

func TestSessionNeverConnectedEndsAfterTheConnectTimeout(t *testing.T) {
	h := newHarness(t, Config{ConnectTimeout: 50 * time.Millisecond, UnsubscribeGrace: time.Millisecond})
	if _, _, err := h.f.StartSession(context.Background(), "silent", testChannel, "", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the unanswered session to end", func() bool {
		_, unsubs, closed := h.up.calls()
		return h.f.Viewers(testChannel) == 0 && closed["silent"] == "not connected in time" && len(unsubs) == 1
	})
}

func TestPacketsRecoveredLateByTheRelayAreForwarded(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "v")
	for range 3 {
		var held [][]byte
		pkts := h.syn.keyframe()
		for i := range 12 {
			pkts = append(pkts, h.syn.delta(i)...)
		}
		for i, b := range pkts {
			if i%7 == 3 { // lost on the relay, recovered a few packets later
				held = append(held, b)
				continue
			}
			h.write(relaywire.Video, b)
			if len(held) > 0 && i%7 == 6 {
				h.write(relaywire.Video, held...)
				held = held[:0]
			}
		}
		h.write(relaywire.Video, held...)
		p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	}
	// A packet recovered after a whole large frame went by.
	var frame [][]byte
	for i := range 40 {
		frame = append(frame, h.syn.delta(i)...)
	}
	h.write(relaywire.Video, frame[1:]...)
	h.write(relaywire.Video, frame[0])
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	p.checkExactly(relaywire.Video, h.sent[relaywire.Video])
}

// TestWaitingViewerStartsFromAKeyframeRevealedLate: a viewer waits for a
// keyframe (the channel's stream had none cached when it joined, as at a
// function's first subscription). The keyframe's first packet, its SPS, is
// lost on the relay and recovered after the rest of the keyframe and two
// frames: only then is the keyframe known. The viewer starts from it at
// once, rather than waiting a whole GOP for the next one.
func TestWaitingViewerStartsFromAKeyframeRevealedLate(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, true))
	h.connectWHEP(p, "waiting")

	key := h.syn.keyframe()
	if key[0][12]&0x1f != 7 {
		t.Fatal("the keyframe does not start with an SPS")
	}
	h.write(relaywire.Video, key[1:]...)
	h.writeDeltas(2)
	h.write(relaywire.Video, key[0])
	h.writeDeltas(2)

	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	got := p.received(relaywire.Video)
	if got[0].Payload[0]&0x1f != 7 {
		t.Errorf("first video packet: NAL type %d, want an SPS", got[0].Payload[0]&0x1f)
	}
}
