package fanout

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// ntpToTime is the inverse of ntpTime (to the nanosecond below).
func ntpToTime(ntp uint64) time.Time {
	frac := (ntp & 0xffffffff) * uint64(time.Second) >> 32
	return time.Unix(int64(ntp>>32)-ntpEpochOffset, int64(frac))
}

func TestNTPTime(t *testing.T) {
	for _, tc := range []struct {
		at   time.Time
		want uint64
	}{
		{time.Unix(0, 0), ntpEpochOffset << 32},
		{time.Unix(1, 500_000_000), (ntpEpochOffset+1)<<32 | 1<<31},
		{time.Unix(1_700_000_000, 250_000_000), (ntpEpochOffset+1_700_000_000)<<32 | 1<<30},
	} {
		if got := ntpTime(tc.at); got != tc.want {
			t.Errorf("ntpTime(%v) = %#x, want %#x", tc.at, got, tc.want)
		}
	}
	at := time.Unix(1_700_000_000, 123_456_789)
	if back := ntpToTime(ntpTime(at)); at.Sub(back) < 0 || at.Sub(back) > time.Nanosecond {
		t.Fatalf("%v went to NTP and back as %v", at, back)
	}
}

func TestSenderReportsExtrapolateTheChannelsClockAndCountWhatWasWritten(t *testing.T) {
	ch := newChannel(testChannel)
	v := newViewer(nil, "v", ch, 64, testWriter())
	w := &headerWriter{}
	for tr := range v.tracks {
		v.tracks[tr] = &viewerTrack{}
		v.tracks[tr].bound.Store(&binding{ssrc: 500 + uint32(tr), pt: 102, writer: w})
	}
	var srs [2]rtcp.SenderReport
	t0 := time.Unix(1000, 0)
	if pkts := v.senderReports(t0, &srs, nil); len(pkts) != 0 {
		t.Fatalf("reports before any packet: %v", pkts)
	}

	// A video frame of three packets, the first at t0, the last 10 ms
	// later, its timestamp about to wrap; a packet of the frame before,
	// recovered late; an audio packet at t0 + 2 ms.
	const vts = 0xffff_f000
	ch.ingest(relayedVideo(100, vts, false, "", 0x41, 1), t0)
	ch.ingest(relayedVideo(101, vts, false, "", 0x41, 2), t0.Add(5*time.Millisecond))
	ch.ingest(relayedVideo(102, vts, true, "", 0x41, 3), t0.Add(10*time.Millisecond))
	ch.ingest(relayedVideo(99, vts-3000, true, "", 0x41, 0), t0.Add(12*time.Millisecond))
	ch.ingest(&relay.Packet{Channel: testChannel, Track: relaywire.Audio, Seq: 7, Timestamp: 480, Marker: true, Payload: []byte{0xfc, 1, 2}}, t0.Add(2*time.Millisecond))

	// The viewer has written three video packets (burst, live or
	// retransmitted alike) and no audio yet: a report for video only.
	for i, n := range []uint16{300, 200, 100} {
		v.writeRTP(relaywire.Video, meta(100+uint16(i), n, vts, false), i == 0)
	}
	now := t0.Add(1500 * time.Millisecond)
	pkts := v.senderReports(now, &srs, nil)
	want := rtcp.SenderReport{
		SSRC:    500,
		NTPTime: ntpTime(now),
		// From the frame's first packet: 1.5 s of a 90 kHz clock.
		RTPTime:     uint32(vts + 135000 - 1<<32),
		PacketCount: 3,
		OctetCount:  600,
	}
	if len(pkts) != 1 || !reflect.DeepEqual(*pkts[0].(*rtcp.SenderReport), want) {
		t.Fatalf("reports %v, want only %+v", pkts, want)
	}

	// Audio written: both tracks, each on its own clock from its own
	// newest packet, as of the same now.
	v.writeRTP(relaywire.Audio, meta(7, 3, 480, false), false)
	pkts = v.senderReports(now, &srs, nil)
	wantAudio := rtcp.SenderReport{SSRC: 501, NTPTime: ntpTime(now), RTPTime: 480 + 71904, PacketCount: 1, OctetCount: 3}
	if len(pkts) != 2 || !reflect.DeepEqual(*pkts[0].(*rtcp.SenderReport), want) || !reflect.DeepEqual(*pkts[1].(*rtcp.SenderReport), wantAudio) {
		t.Fatalf("reports %v, want %+v and %+v", pkts, want, wantAudio)
	}
	if _, err := rtcp.Marshal(pkts); err != nil {
		t.Fatal(err)
	}

	// A now taken just before the newest packets came reaches back.
	pkts = v.senderReports(t0.Add(-time.Millisecond), &srs, nil)
	if got := pkts[0].(*rtcp.SenderReport).RTPTime; got != vts-90 {
		t.Fatalf("video RTP time 1 ms before its frame: %d, want %d", got, uint32(vts-90))
	}
	if got := pkts[1].(*rtcp.SenderReport).RTPTime; got != 480-144 {
		t.Fatalf("audio RTP time 3 ms before its packet: %d, want %d", got, 480-144)
	}

	// The next frame moves the clock to its own first packet.
	ch.ingest(relayedVideo(103, vts+3000, true, "", 0x41, 4), t0.Add(40*time.Millisecond))
	pkts = v.senderReports(now, &srs, nil)
	if got, want := pkts[0].(*rtcp.SenderReport).RTPTime, uint32(vts+3000+131400-1<<32); got != want {
		t.Fatalf("video RTP time after the next frame: %d, want %d", got, want)
	}

	// An unbound track has no report.
	v.tracks[relaywire.Video].bound.Store(nil)
	pkts = v.senderReports(now, &srs, nil)
	if len(pkts) != 1 || pkts[0].(*rtcp.SenderReport).SSRC != 501 {
		t.Fatalf("reports %v, want audio's only", pkts)
	}
}

// srAfter returns the first of reports made after t.
func srAfter(reports []rtcp.SenderReport, t time.Time) (rtcp.SenderReport, bool) {
	for _, sr := range reports {
		if ntpToTime(sr.NTPTime).After(t) {
			return sr, true
		}
	}
	return rtcp.SenderReport{}, false
}

func TestSenderReportsCountWhatTheViewerReceivedOnTheStreamsClock(t *testing.T) {
	h := newHarness(t, Config{})
	p := newPeer(t, viewerAPI(t, false)) // no NACK generator: the only retransmissions are the test's
	clock := [2]uint32{relaywire.Video: 90000, relaywire.Audio: 48000}

	// The timestamps follow the wall clock from start, as a live source's
	// do, so that the RTP timestamp of any moment is known.
	start := time.Now()
	base := [2]uint32{relaywire.Video: h.syn.vts, relaywire.Audio: h.syn.ats}
	streamTS := func(tr relaywire.Track, at time.Time) uint32 {
		return base[tr] + uint32(relaywire.Ticks(at.Sub(start), clock[tr]))
	}
	frame := func(i int) {
		now := time.Now()
		h.syn.vts, h.syn.ats = streamTS(relaywire.Video, now), streamTS(relaywire.Audio, now)
		if i%10 == 0 {
			h.write(relaywire.Video, h.syn.keyframe()...)
		} else {
			h.write(relaywire.Video, h.syn.delta(i)...)
		}
		h.write(relaywire.Audio, h.syn.audio())
	}

	// The viewer joins mid-GOP: its video starts with a burst.
	_, answer, err := h.f.StartSession(context.Background(), "v", testChannel, p.offer(), "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		frame(i)
	}
	audioFrom := len(h.sent[relaywire.Audio])
	p.accept(answer)
	h.waitConnected(1)
	for i := 5; i < 25; i++ {
		frame(i)
	}
	p.waitAll(relaywire.Video, h.sent[relaywire.Video])
	p.waitAll(relaywire.Audio, h.sent[relaywire.Audio][audioFrom:])

	// Retransmissions count too.
	p.mu.Lock()
	ssrc := [2]uint32{uint32(p.remote[relaywire.Video].SSRC()), uint32(p.remote[relaywire.Audio].SSRC())}
	p.mu.Unlock()
	nacked := [2]uint16{h.sent[relaywire.Video][3].seq, h.sent[relaywire.Audio][audioFrom+2].seq}
	if err := p.pc.WriteRTCP([]rtcp.Packet{
		&rtcp.TransportLayerNack{MediaSSRC: ssrc[relaywire.Video], Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{nacked[relaywire.Video]})},
		&rtcp.TransportLayerNack{MediaSSRC: ssrc[relaywire.Audio], Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{nacked[relaywire.Audio]})},
	}); err != nil {
		t.Fatal(err)
	}
	for tr, seq := range nacked {
		waitFor(t, "the retransmission", func() bool {
			n := 0
			for _, pkt := range p.received(relaywire.Track(tr)) {
				if pkt.SequenceNumber == seq {
					n++
				}
			}
			return n == 2
		})
	}

	// Nothing more is sent. Once the fan-out has counted every packet the
	// viewer received, a report made later counts exactly those.
	var packets, octets [2]uint32
	for tr := range packets {
		for _, pkt := range p.received(relaywire.Track(tr)) {
			packets[tr]++
			octets[tr] += uint32(len(pkt.Payload))
		}
	}
	waitFor(t, "the fan-out to count what the viewer received", func() bool {
		return h.f.Stats().PacketsSent == uint64(packets[0]+packets[1])
	})
	// A report a second after the pause also shows that the RTP time runs
	// on after the last packet, on each track's own clock.
	quiet := time.Now().Add(time.Second)
	waitFor(t, "sender reports of both tracks made after the pause", func() bool {
		_, video := srAfter(p.reports(relaywire.Video), quiet)
		_, audio := srAfter(p.reports(relaywire.Audio), quiet)
		return video && audio
	})

	for tr := range packets {
		track := relaywire.Track(tr)
		reports := p.reports(track)
		last, _ := srAfter(reports, quiet)
		if last.PacketCount != packets[tr] || last.OctetCount != octets[tr] {
			t.Errorf("%s: last report counts %d packets, %d octets; the viewer received %d, %d",
				track, last.PacketCount, last.OctetCount, packets[tr], octets[tr])
		}
		var prev rtcp.SenderReport
		for _, sr := range reports {
			if sr.PacketCount < prev.PacketCount || sr.OctetCount < prev.OctetCount || sr.PacketCount > packets[tr] || sr.OctetCount > octets[tr] {
				t.Errorf("%s: report %+v after %+v, of %d packets sent in all", track, sr, prev, packets[tr])
			}
			// The RTP time of the report's moment is the stream's, for
			// video and audio alike (lip sync), within half a second.
			at := ntpToTime(sr.NTPTime)
			if d := int32(sr.RTPTime - streamTS(track, at)); d > int32(clock[tr]/2) || d < -int32(clock[tr]/2) {
				t.Errorf("%s: report at %v has RTP time %d, %d ticks from the stream's %d", track, at, sr.RTPTime, d, streamTS(track, at))
			}
			prev = sr
		}
	}
}

func TestSenderReportsSkipAFailingViewerAndEndWithTheSession(t *testing.T) {
	h := newHarness(t, Config{})
	a := newPeer(t, viewerAPI(t, false))
	b := newPeer(t, viewerAPI(t, false))
	h.connectWHEP(a, "a")
	h.connectWHEP(b, "b")
	// "stuck" never takes its answer: its tracks are bound, but it has no
	// SRTP, so writing its reports fails.
	stuck := newPeer(t, viewerAPI(t, false))
	if _, _, err := h.f.StartSession(context.Background(), "stuck", testChannel, stuck.offer(), ""); err != nil {
		t.Fatal(err)
	}
	h.writeGOP(5)
	a.waitAll(relaywire.Video, h.sent[relaywire.Video])
	b.waitAll(relaywire.Video, h.sent[relaywire.Video])
	h.f.mu.Lock()
	sv := h.f.sessions["stuck"]
	h.f.mu.Unlock()
	if sv.tracks[relaywire.Video].bound.Load() == nil {
		t.Fatal("the stuck session's video track is not bound")
	}
	sv.counters.packets[relaywire.Video].Add(1) // as if it had sent a packet

	sessions := func(targets []reportTarget) []string {
		var ids []string
		for _, r := range targets {
			ids = append(ids, r.v.id)
		}
		slices.Sort(ids)
		return ids
	}
	targets := h.f.reportTargets(nil)
	if ids := sessions(targets); !slices.Equal(ids, []string{"a", "b", "stuck"}) {
		t.Fatalf("report targets %v, want a, b, stuck", ids)
	}
	// The failing viewer first, then the closed one, then b.
	order := map[string]int{"stuck": 0, "a": 1, "b": 2}
	slices.SortFunc(targets, func(x, y reportTarget) int { return order[x.v.id] - order[y.v.id] })

	h.f.CloseSession("a", "left")
	closed := time.Now()
	if ids := sessions(h.f.reportTargets(nil)); !slices.Equal(ids, []string{"b", "stuck"}) {
		t.Fatalf("report targets after a closed: %v, want b, stuck", ids)
	}
	if n := h.f.sendReports(targets, &reportScratch{}); n != 1 {
		t.Fatalf("wrote %d report packets, want 1: b's (stuck has no SRTP, a is closed)", n)
	}
	waitFor(t, "b's report after a closed", func() bool {
		_, ok := srAfter(b.reports(relaywire.Video), closed)
		return ok
	})
	for _, tr := range []relaywire.Track{relaywire.Video, relaywire.Audio} {
		if sr, ok := srAfter(a.reports(tr), closed); ok {
			t.Fatalf("a's %s got a report made after its session closed: %+v", tr, sr)
		}
	}
}
