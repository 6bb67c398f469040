package fanout

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"lightspeed/function/packetcache"
	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// The video layers of the simulcast tests, highest first as the gateway
// lists them. The highest is not the first layer's track, and has a
// profile of its own.
var (
	topLayer = relaywire.LayerTrack(2)
	midLayer = relaywire.LayerTrack(1)
	lowLayer = relaywire.Video

	testLayers = []testLayer{
		{rid: "h", track: topLayer, fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"},
		{rid: "m", track: midLayer},
		{rid: "l", track: lowLayer},
	}
)

// simulcast is a harness whose channel has testLayers, each layer fed by
// a synth of its own (its own payload bytes, sequence numbers and
// timestamps), the audio by the harness's synth.
type simulcast struct {
	*harness
	layer map[relaywire.Track]*synth
}

func newSimulcast(t *testing.T) *simulcast {
	t.Helper()
	s := &simulcast{harness: newHarness(t, Config{}), layer: map[relaywire.Track]*synth{}}
	s.up.layers = testLayers
	for i, l := range testLayers {
		s.layer[l.track] = newLayerSynth(i)
	}
	return s
}

// gop writes a keyframe of every layer, then n rounds of a delta frame of
// each layer; an audio packet after the keyframes and after each round.
// The layers go lowest first, so that a packet of another layer queued to
// a viewer by mistake would be sent before the last one of its own.
func (s *simulcast) gop(n int) {
	for _, l := range slices.Backward(testLayers) {
		s.write(l.track, s.layer[l.track].keyframe()...)
	}
	s.write(relaywire.Audio, s.syn.audio())
	s.deltas(n)
}

func (s *simulcast) deltas(n int) {
	for i := range n {
		for _, l := range slices.Backward(testLayers) {
			s.write(l.track, s.layer[l.track].delta(i)...)
		}
		s.write(relaywire.Audio, s.syn.audio())
	}
}

// TestSimulcastViewersGetOneLayerEach: a viewer gets the highest layer
// (the subscription's first video track) unless its session pinned
// another; a rid the channel does not have is the highest. Each gets its
// layer byte for byte, from that layer's keyframe on, and nothing of the
// others; the audio is everyone's.
func TestSimulcastViewersGetOneLayerEach(t *testing.T) {
	s := newSimulcast(t)
	viewers := []struct {
		session, layer string
		want           relaywire.Track
	}{
		{"default", "", topLayer},
		{"pinned", "m", midLayer},
		{"lowest", "l", lowLayer},
		{"unknown", "x", topLayer},
	}
	peers := make([]*peer, len(viewers))
	for i, v := range viewers {
		peers[i] = newPeer(t, viewerAPI(t, true))
		s.connectWHEPLayer(peers[i], v.session, v.layer)
	}
	s.gop(6)
	s.gop(6)
	for i, v := range viewers {
		p := peers[i]
		p.waitAll(relaywire.Video, s.sent[v.want])
		p.waitAll(relaywire.Audio, s.sent[relaywire.Audio])
		p.checkExactly(relaywire.Video, s.sent[v.want])
		p.checkExactly(relaywire.Audio, s.sent[relaywire.Audio])
		if got := p.received(relaywire.Video); len(got) != len(s.sent[v.want]) || got[0].Payload[0]&0x1f != 7 {
			t.Errorf("%s: %d video packets for %d, the first a NAL of type %d, want an SPS", v.session, len(got), len(s.sent[v.want]), got[0].Payload[0]&0x1f)
		}
	}
	// A late joiner's burst is its layer's cached keyframe.
	late := newPeer(t, viewerAPI(t, true))
	from := len(s.sent[midLayer])
	s.gop(2)
	s.connectWHEPLayer(late, "late", "m")
	s.deltas(2)
	late.waitAll(relaywire.Video, s.sent[midLayer][from:])
	late.checkExactly(relaywire.Video, s.sent[midLayer][from:])
	if n := len(s.up.keyframeRequests()); n != 0 {
		t.Errorf("%d keyframe requests, want none: no viewer switched", n)
	}
}

// TestSimulcastOfferHasTheHighestLayersProfile: the video a viewer is
// offered has the profile of the channel's highest layer, whatever layer
// it pinned.
func TestSimulcastOfferHasTheHighestLayersProfile(t *testing.T) {
	s := newSimulcast(t)
	_, offer, err := s.f.StartSession(context.Background(), "ws", testChannel, "", "l")
	if err != nil {
		t.Fatal(err)
	}
	var pts []string
	for _, l := range strings.Split(offer, "\r\n") {
		if rest, ok := strings.CutPrefix(l, "m=video "); ok {
			pts = strings.Fields(rest)[2:]
		}
	}
	if len(pts) == 0 || !strings.Contains(offer, "a=fmtp:"+pts[0]+" "+testLayers[0].fmtp) {
		t.Fatalf("first video payload type %v is not the highest layer's 42001f:\n%s", pts, offer)
	}
}

// TestSimulcastSwitchLandsOnTheTargetsKeyframeAsOneStream: a viewer of
// the highest layer is switched to the middle one. A keyframe of the
// middle layer is asked for at once; the viewer keeps the highest layer
// until that keyframe's first packet, then gets the middle layer from it
// on, as one stream: the same SSRC and payload type, sequence numbers
// that go on from the last one with no gap and no repeat, timestamps that
// never go back. NACKs after the switch are answered with the packet of
// the layer it was sent from, and a PLI asks for a keyframe of the layer
// the viewer gets now.
func TestSimulcastSwitchLandsOnTheTargetsKeyframeAsOneStream(t *testing.T) {
	s := newSimulcast(t)
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.f.now = clock.Now // the keyframe throttle's clock, before the first session
	// No NACK generator (every NACK is the test's) and no SRTP replay
	// window (a retransmission arrives again).
	p := newPeer(t, viewerAPI(t, false))
	s.connectWHEP(p, "v")
	s.gop(4)
	p.waitAll(relaywire.Video, s.sent[topLayer])

	if err := s.f.SetLayer("v", "m"); err != nil {
		t.Fatal(err)
	}
	if got, want := s.up.keyframeRequests(), []keyframeReq{{testChannel, midLayer}}; !slices.Equal(got, want) {
		t.Fatalf("keyframe requests %v at the switch, want %v", got, want)
	}
	s.deltas(3) // the middle layer's deltas: the viewer stays where it is
	before := slices.Clone(s.sent[topLayer])
	from := len(s.sent[midLayer])
	s.write(midLayer, s.layer[midLayer].keyframe()...)
	s.deltas(4) // the highest layer goes on, to other viewers

	// What the viewer must get: the highest layer until the switch, then
	// the middle one from its keyframe on, numbered after it.
	last := before[len(before)-1]
	want := slices.Clone(before)
	for i, m := range s.sent[midLayer][from:] {
		want = append(want, sent{seq: last.seq + 1 + uint16(i), payload: m.payload})
	}
	p.waitAll(relaywire.Video, want)
	p.checkExactly(relaywire.Video, want)
	got := p.received(relaywire.Video)
	if len(got) != len(want) {
		t.Fatalf("%d video packets received, want %d: a repeat", len(got), len(want))
	}
	ordered := slices.SortedFunc(slices.Values(got), func(a, b *rtp.Packet) int {
		return int(a.SequenceNumber-want[0].seq) - int(b.SequenceNumber-want[0].seq)
	})
	first := ordered[len(before)]
	if first.Payload[0]&0x1f != 7 || first.SequenceNumber != last.seq+1 {
		t.Fatalf("the first packet after the switch: seq %d, NAL type %d; want seq %d, the keyframe's SPS", first.SequenceNumber, first.Payload[0]&0x1f, last.seq+1)
	}
	if first.Timestamp == ordered[len(before)-1].Timestamp {
		t.Errorf("the switch did not advance the timestamp (%d)", first.Timestamp)
	}
	// tsOff is the timestamp shift of the middle layer's packets.
	tsOff := first.Timestamp - s.sent[midLayer][from].ts
	for i, pkt := range ordered {
		if pkt.SSRC != ordered[0].SSRC || pkt.PayloadType != ordered[0].PayloadType {
			t.Fatalf("packet %d: SSRC %d, payload type %d; the stream began with %d, %d", i, pkt.SSRC, pkt.PayloadType, ordered[0].SSRC, ordered[0].PayloadType)
		}
		if i > 0 && int32(pkt.Timestamp-ordered[i-1].Timestamp) < 0 {
			t.Fatalf("packet %d (seq %d): timestamp %d after %d, going back", i, pkt.SequenceNumber, pkt.Timestamp, ordered[i-1].Timestamp)
		}
		if i >= len(before) && pkt.Timestamp-tsOff != s.sent[midLayer][from+i-len(before)].ts {
			t.Fatalf("packet %d: timestamp %d, not the middle layer's %d shifted by %d", i, pkt.Timestamp, s.sent[midLayer][from+i-len(before)].ts, tsOff)
		}
	}

	// NACKs: a packet of the middle layer, one of the highest from before
	// the switch.
	ask := []*rtp.Packet{ordered[len(before)+2], ordered[3]}
	err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: p.videoSSRC(),
		Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{ask[0].SequenceNumber, ask[1].SequenceNumber})}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ask {
		var copies []*rtp.Packet
		waitFor(t, "the retransmission", func() bool {
			copies = slices.DeleteFunc(p.received(relaywire.Video), func(q *rtp.Packet) bool { return q.SequenceNumber != a.SequenceNumber })
			return len(copies) >= 2
		})
		for _, c := range copies {
			if len(copies) != 2 || string(c.Payload) != string(a.Payload) || c.Timestamp != a.Timestamp {
				t.Fatalf("seq %d: %d copies, one with timestamp %d and %d bytes; want 2 of the packet sent (timestamp %d, %d bytes)",
					a.SequenceNumber, len(copies), c.Timestamp, len(c.Payload), a.Timestamp, len(a.Payload))
			}
		}
	}
	if st := s.f.Stats(); st.NACKed != 2 || st.Retransmits != 2 || st.CacheMisses != 0 {
		t.Fatalf("stats %+v, want 2 NACKed, 2 retransmitted, no misses", st)
	}

	// A PLI asks for a keyframe of the middle layer (the throttle's
	// second since the switch's request is up).
	clock.advance(time.Second)
	if err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: p.videoSSRC()}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the PLI's keyframe request", func() bool { return len(s.up.keyframeRequests()) == 2 })
	if got := s.up.keyframeRequests()[1]; got != (keyframeReq{testChannel, midLayer}) {
		t.Fatalf("the PLI asked for %v, want the middle layer", got)
	}
}

// TestSimulcastKeyframeRequestsAreThrottledPerLayer: switches ask for a
// keyframe of their layer, at most once a second per layer; a switch
// called off before its keyframe leaves the viewer where it was.
func TestSimulcastKeyframeRequestsAreThrottledPerLayer(t *testing.T) {
	s := newSimulcast(t)
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.f.now = clock.Now
	p := newPeer(t, viewerAPI(t, true))
	s.connectWHEP(p, "v")
	s.gop(2)
	p.waitAll(relaywire.Video, s.sent[topLayer])
	for _, rid := range []string{"m", "l", "m", "h", "", "l"} {
		if err := s.f.SetLayer("v", rid); err != nil {
			t.Fatal(err)
		}
	}
	want := []keyframeReq{{testChannel, midLayer}, {testChannel, lowLayer}}
	if got := s.up.keyframeRequests(); !slices.Equal(got, want) {
		t.Fatalf("keyframe requests %v, want %v", got, want)
	}
	if st := s.f.Stats(); st.KeyframesSent != 2 || st.KeyframesThrottled != 2 {
		t.Fatalf("%d keyframe requests sent, %d throttled; want 2, 2", st.KeyframesSent, st.KeyframesThrottled)
	}
	clock.advance(time.Second)
	if err := s.f.SetLayer("v", "m"); err != nil {
		t.Fatal(err)
	}
	if got := s.up.keyframeRequests(); len(got) != 3 || got[2] != (keyframeReq{testChannel, midLayer}) {
		t.Fatalf("keyframe requests %v, want the middle layer's again a second on", got)
	}
	// Called off: the keyframes of the middle and low layers come, the
	// viewer stays on the highest.
	if err := s.f.SetLayer("v", ""); err != nil {
		t.Fatal(err)
	}
	s.gop(3)
	p.waitAll(relaywire.Video, s.sent[topLayer])
	p.checkExactly(relaywire.Video, s.sent[topLayer])
	if err := s.f.SetLayer("nobody", "m"); err == nil {
		t.Fatal("SetLayer of an unknown session: no error")
	}
}

// layerPacket is a packet of video track t as the relay hands it on;
// key marks the first packet of a keyframe.
func layerPacket(t relaywire.Track, seq uint16, ts uint32, marker, key bool) *relay.Packet {
	return &relay.Packet{Channel: testChannel, Track: t, Seq: seq, Timestamp: ts, Marker: marker, Keyframe: key, Payload: []byte{byte(t), byte(seq)}}
}

// outPacket is a queued packet as the viewer gets it: its layer, and its
// sequence number and timestamp in the viewer's numbering.
type outPacket struct {
	track relaywire.Track
	seq   uint16
	ts    uint32
}

// drainOut takes v's queue as the viewer would get it.
func drainOut(t *testing.T, ch *channel, v *viewer) []outPacket {
	t.Helper()
	var out []outPacket
	buf := make([]byte, packetcache.MaxPayload)
	for _, j := range drainQueue(v) {
		m, ok := ch.load(j.track, j.seq, buf)
		if !ok {
			t.Fatalf("queued %+v is not cached", j)
		}
		out = append(out, outPacket{j.track, m.Seq + j.dseq, m.TS + j.dts})
	}
	return out
}

// TestLayerSwitchesMapTheViewersNumberingBack: two switches, worked out
// by hand. Each lands on the first packet of the target's keyframe, with
// the sequence number after the last one and a timestamp advanced by the
// wall-clock time since the last frame; NACKs map back to the layer a
// packet was sent from, the layer before the last switch included, and
// are dropped before that; the sender report's clock is the layer's,
// shifted as the viewer's packets are.
func TestLayerSwitchesMapTheViewersNumberingBack(t *testing.T) {
	ch := newChannel(testChannel)
	v := newViewer(nil, "v", ch, 64, testWriter())
	v.tracks[relaywire.Video] = &viewerTrack{}
	v.tracks[relaywire.Video].bound.Store(&binding{ssrc: 500, pt: 102, writer: &headerWriter{}})
	l0, l1, l2 := relaywire.Video, relaywire.LayerTrack(1), relaywire.LayerTrack(2)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	ch.ingest(layerPacket(l0, 100, 9000, false, true), at(0))
	ch.ingest(layerPacket(l1, 500, 70000, true, true), at(0))
	ch.join(v) // with l0's keyframe as its burst, and l1's packets not at all
	if v.burstTrack != l0 || v.burstFrom != 100 || v.burstLen != 1 {
		t.Fatalf("burst of track %d from %d, %d packets; want l0's keyframe", v.burstTrack, v.burstFrom, v.burstLen)
	}
	ch.ingest(layerPacket(l0, 101, 9000, true, false), at(0))
	ch.mu.Lock()
	if !ch.aim(v, l1) {
		t.Fatal("aimed at another layer: no keyframe to wait for")
	}
	ch.mu.Unlock()
	ch.ingest(layerPacket(l0, 102, 12000, true, false), at(33))
	ch.ingest(layerPacket(l1, 501, 73000, true, false), at(33)) // not a keyframe: the viewer stays on l0
	ch.ingest(layerPacket(l1, 502, 76000, false, true), at(66)) // the switch: 33 ms after l0's last frame
	ch.ingest(layerPacket(l0, 103, 15000, true, false), at(66)) // l0 goes on, not to this viewer
	ch.ingest(layerPacket(l1, 503, 76000, true, false), at(66))
	want := []outPacket{{l0, 101, 9000}, {l0, 102, 12000}, {l1, 103, 12000 + 2970}, {l1, 104, 12000 + 2970}}
	if got := drainOut(t, ch, v); !slices.Equal(got, want) {
		t.Fatalf("first switch: queued %v, want %v", got, want)
	}

	ch.mu.Lock()
	ch.aim(v, l2)
	ch.mu.Unlock()
	ch.ingest(layerPacket(l2, 7, 5, false, true), at(100)) // 34 ms after l1's last frame
	ch.ingest(layerPacket(l2, 8, 5, true, false), at(100))
	want = []outPacket{{l2, 105, 14970 + 3060}, {l2, 106, 18030}}
	if got := drainOut(t, ch, v); !slices.Equal(got, want) {
		t.Fatalf("second switch: queued %v, want %v", got, want)
	}

	// NACKs: 101 (l0, before the previous layer: dropped), 104 (l1), 106
	// (l2), each sent again as the viewer first got it.
	v.queueNACKs(relaywire.Video, rtcp.NackPairsFromSequenceNumbers([]uint16{101, 104, 106}))
	want = []outPacket{{l1, 104, 14970}, {l2, 106, 18030}}
	if got := drainOut(t, ch, v); !slices.Equal(got, want) {
		t.Fatalf("NACKs of 101, 104, 106: queued %v, want %v", got, want)
	}
	if c := &v.counters; c.nacked.Load() != 3 || c.retransmits.Load() != 2 {
		t.Fatalf("%d NACKed, %d retransmitted; want 3, 2", c.nacked.Load(), c.retransmits.Load())
	}

	// The sender report: l2's clock from its newest frame (at 100 ms), in
	// the viewer's timestamps.
	v.writeRTP(relaywire.Video, meta(106, 2, 18030, true), false)
	var srs [2]rtcp.SenderReport
	pkts := v.senderReports(at(1100), &srs, nil)
	if len(pkts) != 1 || pkts[0].(*rtcp.SenderReport).RTPTime != 18030+90000 {
		t.Fatalf("sender reports %v, want video's at RTP time %d", pkts, 18030+90000)
	}
}

// TestAViewerAimedBeforeItsVideoStartsTakesTheLayerAtOnce: before any
// video went out to a viewer, another layer is taken at once: the cached
// keyframe of that layer when it joins, or that layer's next keyframe,
// numbered as the layer is.
func TestAViewerAimedBeforeItsVideoStartsTakesTheLayerAtOnce(t *testing.T) {
	ch := newChannel(testChannel)
	l0, l1 := relaywire.Video, relaywire.LayerTrack(1)
	t0 := time.Unix(1000, 0)
	early := newViewer(nil, "early", ch, 64, testWriter())
	waiting := newViewer(nil, "waiting", ch, 64, testWriter())
	ch.join(waiting) // nothing cached: it waits for l0's keyframe
	ch.ingest(layerPacket(l1, 500, 70000, true, true), t0)
	ch.mu.Lock()
	ch.aim(early, l1)
	if !ch.aim(waiting, l1) {
		t.Fatal("a waiting viewer aimed at l1: no keyframe to wait for")
	}
	ch.mu.Unlock()
	ch.join(early)
	if early.burstTrack != l1 || early.burstFrom != 500 || early.burstLen != 1 {
		t.Fatalf("burst of track %d from %d, %d packets; want l1's keyframe", early.burstTrack, early.burstFrom, early.burstLen)
	}
	ch.ingest(layerPacket(l0, 100, 9000, true, true), t0)
	ch.ingest(layerPacket(l1, 501, 73000, true, false), t0)
	ch.ingest(layerPacket(l1, 502, 76000, true, true), t0)
	if got, want := drainOut(t, ch, early), []outPacket{{l1, 501, 73000}, {l1, 502, 76000}}; !slices.Equal(got, want) {
		t.Fatalf("early viewer: queued %v, want %v", got, want)
	}
	if got, want := drainOut(t, ch, waiting), []outPacket{{l1, 502, 76000}}; !slices.Equal(got, want) {
		t.Fatalf("waiting viewer: queued %v, want %v", got, want)
	}
}
