package ftlclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"lightspeed/shared/testkit/testmedia"
)

// streamAll streams the media once and waits until the ingest has every
// media packet.
func streamAll(t *testing.T, f *fakeIngest, c *Conn, nals, opus [][]byte, loops int) [][]byte {
	t.Helper()
	if err := c.Stream(context.Background(), nals, opus, loops); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	s := c.Stats()
	want := int(s.VideoPackets + s.AudioPackets)
	waitFor(t, "every media packet", func() bool { return len(f.mediaPackets()) >= want })
	return f.mediaPackets()
}

func unmarshal(t *testing.T, b []byte) *rtp.Packet {
	t.Helper()
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		t.Fatalf("RTP packet %x: %v", b[:min(len(b), 16)], err)
	}
	return &p
}

// split sorts media packets by SSRC, checking payload types on the way.
func split(t *testing.T, packets [][]byte) (video, audio []*rtp.Packet) {
	t.Helper()
	for _, b := range packets {
		p := unmarshal(t, b)
		switch {
		case p.SSRC == 78 && p.PayloadType == videoPT:
			video = append(video, p)
		case p.SSRC == 77 && p.PayloadType == audioPT:
			audio = append(audio, p)
		default:
			t.Fatalf("packet with SSRC %d PT %d, want video SSRC 78 PT 96 or audio SSRC 77 PT 97", p.SSRC, p.PayloadType)
		}
	}
	return video, audio
}

func TestStreamPacketizesTheTestMediaAsTheSDKDoes(t *testing.T) {
	nals, err := testmedia.NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 8})
	packets := streamAll(t, f, c, nals, opus, 1)

	if first := unmarshal(t, packets[0]); first.SSRC != 78 || first.Payload[0]&0x1f != nalSPS {
		t.Errorf("first media packet: SSRC %d NAL type %d, want the SPS: no audio before video", first.SSRC, first.Payload[0]&0x1f)
	}
	video, audio := split(t, packets)

	var (
		depacketizer codecs.H264Packet
		annexB       []byte
		frames       int
	)
	for i, p := range video {
		if size := p.MarshalSize(); size > maxMTU {
			t.Errorf("video packet %d is %d bytes, want at most %d", i, size, maxMTU)
		}
		if p.SequenceNumber != uint16(i) {
			t.Fatalf("video packet %d has sequence number %d", i, p.SequenceNumber)
		}
		switch typ := p.Payload[0] & 0x1f; {
		case typ == 24:
			t.Errorf("video packet %d is a STAP-A; the SDK never aggregates", i)
		case typ == fuaType && p.Payload[1]&0x40 == 0 && len(p.Payload) != fuaHeaderLen+fuaFragment:
			t.Errorf("video packet %d is an FU-A fragment of %d bytes that does not end its unit, want %d", i, len(p.Payload)-fuaHeaderLen, fuaFragment)
		case typ != fuaType && len(p.Payload) > maxSingleNAL:
			t.Errorf("video packet %d carries a whole %d-byte unit, more than %d", i, len(p.Payload), maxSingleNAL)
		}
		if want := uint32(frames) * 3000; p.Timestamp != want {
			t.Fatalf("video packet %d of frame %d has timestamp %d, want %d", i, frames, p.Timestamp, want)
		}
		if p.Marker {
			frames++
		}
		out, err := depacketizer.Unmarshal(p.Payload)
		if err != nil {
			t.Fatalf("video packet %d: %v", i, err)
		}
		annexB = append(annexB, out...)
	}
	var want []byte
	for _, nal := range nals {
		want = append(append(want, 0, 0, 0, 1), nal...)
	}
	if !bytes.Equal(annexB, want) {
		t.Errorf("depacketized video (%d bytes) differs from the NAL units sent (%d bytes)", len(annexB), len(want))
	}
	if want := 4 * testmedia.FrameRate; frames != want {
		t.Errorf("%d packets with the marker bit, want one per frame (%d)", frames, want)
	}

	if len(audio) != len(opus) {
		t.Fatalf("got %d audio packets, want %d", len(audio), len(opus))
	}
	for i, p := range audio {
		if p.SequenceNumber != uint16(i) || p.Timestamp != uint32(i)*960 || p.Marker {
			t.Errorf("audio packet %d: seq %d ts %d marker %v, want seq %d ts %d no marker", i, p.SequenceNumber, p.Timestamp, p.Marker, i, i*960)
		}
		if !bytes.Equal(p.Payload, opus[i]) {
			t.Errorf("audio packet %d does not carry Opus packet %d", i, i)
		}
	}
}

func TestStreamContinuesTimestampsAcrossLoops(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100})
	nals, opus := syntheticMedia()
	video, audio := split(t, streamAll(t, f, c, nals, opus, 2))

	// A loop lasts as long as its longer track: 4 frames (133332 µs).
	var frameTS []uint32
	for i, p := range video {
		if p.SequenceNumber != uint16(i) {
			t.Fatalf("video packet %d has sequence number %d", i, p.SequenceNumber)
		}
		if p.Marker {
			frameTS = append(frameTS, p.Timestamp)
		}
	}
	if want := []uint32{0, 3000, 6000, 9000, 12000, 15000, 18000, 21000}; !slices.Equal(frameTS, want) {
		t.Errorf("frame timestamps %v, want %v", frameTS, want)
	}
	var audioTS []uint32
	for i, p := range audio {
		if p.SequenceNumber != uint16(i) {
			t.Fatalf("audio packet %d has sequence number %d", i, p.SequenceNumber)
		}
		audioTS = append(audioTS, p.Timestamp)
	}
	if want := []uint32{0, 960, 1920, 2880, 3840, 6400, 7360, 8320, 9280, 10240}; !slices.Equal(audioTS, want) {
		t.Errorf("audio timestamps %v, want %v", audioTS, want)
	}
}

func TestStreamDropsEverythingBeforeTheFirstSPS(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100})
	nals, opus := syntheticMedia()
	p := nals[3]
	// Two lone P frames, then the stream proper.
	video, audio := split(t, streamAll(t, f, c, append([][]byte{p, p}, nals...), opus, 1))
	if len(video) == 0 || video[0].Payload[0]&0x1f != nalSPS || video[0].Timestamp != 0 {
		t.Fatalf("first video packet is not the SPS with timestamp 0")
	}
	// Audio is held back until the first video, then starts at timestamp 0.
	if len(audio) == 0 || len(audio) >= len(opus) {
		t.Fatalf("got %d audio packets, want some but fewer than %d", len(audio), len(opus))
	}
	if audio[0].SequenceNumber != 0 || audio[0].Timestamp != 0 {
		t.Errorf("audio starts at seq %d ts %d, want 0 and 0", audio[0].SequenceNumber, audio[0].Timestamp)
	}
}

func TestOnFrameTellsEachFramesTimestampAndWhenItsFirstPacketWentOut(t *testing.T) {
	type call struct {
		ts   uint32
		sent time.Time
	}
	var calls []call // appended by Stream, which streamAll runs on this goroutine
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100, OnFrame: func(ts uint32, sent time.Time) {
		calls = append(calls, call{ts, sent})
	}})
	nals, opus := syntheticMedia()
	before := time.Now()
	// A lone P frame first: dropped before the first SPS, so not reported.
	video, _ := split(t, streamAll(t, f, c, append([][]byte{nals[3]}, nals...), opus, 2))
	after := time.Now()

	var want []uint32 // the timestamp of each frame's first packet
	for i, p := range video {
		if i == 0 || p.Timestamp != video[i-1].Timestamp {
			want = append(want, p.Timestamp)
		}
	}
	got := make([]uint32, len(calls))
	for i, c := range calls {
		got[i] = c.ts
	}
	if !slices.Equal(got, want) {
		t.Fatalf("OnFrame timestamps %v, want the frames' %v", got, want)
	}
	for i, c := range calls {
		if c.sent.Before(before) || c.sent.After(after) {
			t.Errorf("frame %d: sent at %v, outside the Stream call [%v, %v]", i, c.sent, before, after)
		}
		if i > 0 && c.sent.Before(calls[i-1].sent) {
			t.Errorf("frame %d: sent at %v, before frame %d at %v", i, c.sent, i-1, calls[i-1].sent)
		}
	}
}

func TestPingsAreEchoedIntoAnRTT(t *testing.T) {
	f := startIngest(t, ingestOptions{echoPings: true})
	c := dial(t, f, Config{})
	waitFor(t, "an echoed ping", func() bool { return c.Stats().PingsEchoed > 0 })
	if s := c.Stats(); s.RTT <= 0 || s.PingsSent < s.PingsEchoed {
		t.Errorf("stats %+v: want an RTT and no more echoes than pings", s)
	}
	for _, b := range f.received() {
		if isPing(b) {
			if len(b) != pingLen || !bytes.Equal(b[:8], []byte{0x81, 0xfa, 0, 24, 0, 0, 0, 0}) {
				t.Errorf("ping % x, want 24 bytes starting 81 fa 00 18 and 4 bytes of padding", b)
			}
			break
		}
	}
}

func TestSenderReportsCountWhatEachTrackSent(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100})
	nals, opus := syntheticMedia()
	video, audio := split(t, streamAll(t, f, c, nals, opus, 1))

	// Wait for a report of each track written after the last packet.
	reports := map[uint32]rtcp.SenderReport{}
	complete := map[uint32]uint32{78: uint32(len(video)), 77: uint32(len(audio))}
	waitFor(t, "sender reports of the whole stream", func() bool {
		for _, b := range f.received() {
			if !isSenderReport(b) {
				continue
			}
			if len(b) != 28 {
				t.Fatalf("sender report of %d bytes, want 28", len(b))
			}
			var sr rtcp.SenderReport
			if err := sr.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			if sr.PacketCount == complete[sr.SSRC] {
				reports[sr.SSRC] = sr
			}
		}
		return len(reports) == 2
	})
	if sr := reports[78]; sr.RTPTime != video[len(video)-1].Timestamp {
		t.Errorf("video report RTP time %d, want the last timestamp %d", sr.RTPTime, video[len(video)-1].Timestamp)
	}
	if sr := reports[77]; sr.RTPTime != audio[len(audio)-1].Timestamp {
		t.Errorf("audio report RTP time %d, want the last timestamp %d", sr.RTPTime, audio[len(audio)-1].Timestamp)
	}
	// NTP times advance with the media times of the tracks.
	ntpDiff := int64(reports[78].NTPTime-reports[77].NTPTime) * 1000000 >> 32 // µs
	if want := int64(100000 - 80000); ntpDiff < want-1 || ntpDiff > want+1 {
		t.Errorf("video report is %d µs after the audio one, want %d (last frame at 100 ms, last audio at 80 ms)", ntpDiff, want)
	}
}

// nack builds an RTCP generic NACK with pion.
func nack(t *testing.T, ssrc uint32, pairs ...rtcp.NackPair) []byte {
	t.Helper()
	b, err := (&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: pairs}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countSeq counts the media packets of ssrc with sequence number seq.
func countSeq(packets [][]byte, ssrc uint32, seq uint16) (n int, last []byte) {
	for _, b := range packets {
		if isMedia(b) && binary.BigEndian.Uint32(b[8:12]) == ssrc && binary.BigEndian.Uint16(b[2:4]) == seq {
			n++
			last = b
		}
	}
	return n, last
}

func TestNACKResendsThePacketsByteForByte(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100})
	nals, opus := syntheticMedia()
	original := streamAll(t, f, c, nals, opus, 1)
	firstOf := func(ssrc uint32, seq uint16) []byte {
		for _, b := range original {
			if binary.BigEndian.Uint32(b[8:12]) == ssrc && binary.BigEndian.Uint16(b[2:4]) == seq {
				return b
			}
		}
		t.Fatalf("no packet SSRC %d seq %d", ssrc, seq)
		return nil
	}

	// A NACK from another host is ignored, as the SDK does.
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Skipf("no second loopback address: %v", err)
	}
	defer stranger.Close()
	f.mu.Lock()
	client := f.client
	f.mu.Unlock()
	if _, err := stranger.WriteToUDPAddrPort(nack(t, 78, rtcp.NackPair{PacketID: 0}), client); err != nil {
		t.Fatal(err)
	}

	f.sendMedia(nack(t, 78, rtcp.NackPair{PacketID: 2, LostPackets: 0b101})) // 2, 3 and 5
	f.sendMedia(nack(t, 77, rtcp.NackPair{PacketID: 4}))
	f.sendMedia(nack(t, 78, rtcp.NackPair{PacketID: 900})) // never sent

	resent := []struct {
		ssrc uint32
		seq  uint16
	}{{78, 2}, {78, 3}, {78, 5}, {77, 4}}
	waitFor(t, "the retransmissions", func() bool {
		if c.Stats().NACKs < 3 { // the last NACK resends nothing: wait until it was handled
			return false
		}
		packets := f.received()
		for _, r := range resent {
			if n, _ := countSeq(packets, r.ssrc, r.seq); n < 2 {
				return false
			}
		}
		return true
	})
	packets := f.received()
	for _, r := range resent {
		if n, again := countSeq(packets, r.ssrc, r.seq); n != 2 || !bytes.Equal(again, firstOf(r.ssrc, r.seq)) {
			t.Errorf("SSRC %d seq %d: sent %d times, resent bytes equal: %v", r.ssrc, r.seq, n, bytes.Equal(again, firstOf(r.ssrc, r.seq)))
		}
	}
	if n, _ := countSeq(packets, 78, 0); n != 1 {
		t.Errorf("video seq 0 sent %d times, want once: a stranger's NACK was obeyed", n)
	}
	if s := c.Stats(); s.NACKs != 3 || s.Retransmits != 4 {
		t.Errorf("stats: %d NACKs, %d retransmits; want 3 and 4", s.NACKs, s.Retransmits)
	}
}

func TestNACKFindsPacketsAcrossSequenceNumberWrap(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{Rate: 100})
	c.mu.Lock()
	c.video.seq = 65534
	c.mu.Unlock()
	nals, opus := syntheticMedia()
	original := streamAll(t, f, c, nals, opus, 1)

	f.sendMedia(nack(t, 78, rtcp.NackPair{PacketID: 65535, LostPackets: 0b11})) // 65535, 0, 1
	waitFor(t, "the retransmissions", func() bool { return len(f.mediaPackets()) == len(original)+3 })
	again := f.mediaPackets()[len(original):]
	for i, seq := range []uint16{65535, 0, 1} {
		_, first := countSeq(original, 78, seq)
		if !bytes.Equal(again[i], first) {
			t.Errorf("retransmission %d is not video packet %d", i, seq)
		}
	}
}

func TestNACKIgnoresPacketsNoLongerInTheRing(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{})
	nal := []byte{0x41, 0x9a, 1, 2, 3}
	for i := range ringSize + 10 {
		if _, _, err := c.sendVideoNAL(context.Background(), nal, int64(i)*33333, true, false); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 { // do not outrun the ingest's socket buffer
			waitFor(t, "the packets so far", func() bool { return len(f.mediaPackets()) > i })
		}
	}
	waitFor(t, "every packet", func() bool { return len(f.mediaPackets()) == ringSize+10 })

	f.sendMedia(nack(t, 78, rtcp.NackPair{PacketID: 5}))            // overwritten by 2053
	f.sendMedia(nack(t, 78, rtcp.NackPair{PacketID: ringSize + 5})) // still there
	waitFor(t, "the retransmission", func() bool { return len(f.mediaPackets()) == ringSize+11 })
	last := unmarshal(t, f.mediaPackets()[ringSize+10])
	if last.SequenceNumber != ringSize+5 {
		t.Errorf("resent seq %d, want %d only", last.SequenceNumber, ringSize+5)
	}
	if s := c.Stats(); s.Retransmits != 1 {
		t.Errorf("%d retransmits, want 1", s.Retransmits)
	}
}

func TestSpeedTestSendsGarbageOnTheAudioSSRCThenAudioRestarts(t *testing.T) {
	f := startIngest(t, ingestOptions{echoPings: true})
	c := dial(t, f, Config{SpeedTest: 30 * time.Millisecond, Rate: 100})
	burst := c.Stats().SpeedTestPackets
	if burst == 0 {
		t.Fatal("no speed test packets")
	}
	waitFor(t, "the speed test", func() bool { return uint64(len(f.mediaPackets())) >= burst })

	var seq uint16
	first, last := -1, -1
	for i, b := range f.received() {
		if !isMedia(b) {
			continue
		}
		p := unmarshal(t, b)
		if len(b) != speedPacket || p.SSRC != 77 || p.PayloadType != audioPT || p.Timestamp != 0 || p.Marker || p.SequenceNumber != seq {
			t.Fatalf("speed test packet %d: %d bytes SSRC %d PT %d ts %d seq %d; want %d bytes SSRC 77 PT 97 ts 0 seq %d",
				seq, len(b), p.SSRC, p.PayloadType, p.Timestamp, p.SequenceNumber, speedPacket, seq)
		}
		seq++
		if first < 0 {
			first = i
		}
		last = i
	}
	for _, b := range f.received()[first:last] {
		if isPing(b) {
			t.Error("a ping in the middle of the speed test")
		}
	}

	nals, opus := syntheticMedia()
	if err := c.Stream(context.Background(), nals, opus, 1); err != nil {
		t.Fatal(err)
	}
	want := int(burst + c.Stats().VideoPackets + c.Stats().AudioPackets)
	waitFor(t, "the media", func() bool { return len(f.mediaPackets()) >= want })
	video, audio := split(t, f.mediaPackets()[burst:])
	if video[0].SequenceNumber != 0 || audio[0].SequenceNumber != 0 || audio[0].Timestamp != 0 {
		t.Errorf("after the speed test: video from seq %d, audio from seq %d ts %d; want both from 0",
			video[0].SequenceNumber, audio[0].SequenceNumber, audio[0].Timestamp)
	}
}

func TestPutVideoPacketSplitsLikeTheSDK(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		packets []int // payload sizes
	}{
		{"one byte", 1, []int{1}},
		{"largest single", 1380, []int{1380}},
		{"smallest FU-A", 1381, []int{2 + 1378, 2 + 2}},
		{"two full fragments", 1 + 2*1378, []int{2 + 1378, 2 + 1378}},
		{"three fragments", 1 + 2*1378 + 1, []int{2 + 1378, 2 + 1378, 2 + 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nal := make([]byte, tt.size)
			nal[0] = 0x65
			for i := 1; i < len(nal); i++ {
				nal[i] = byte(i)
			}
			var (
				sizes []int
				out   [packetBuffer]byte
				depkt codecs.H264Packet
				got   []byte
			)
			for rest, first := nal, true; len(rest) > 0; first = false {
				n, used := putVideoPacket(out[:], rtp.Header{Version: 2, PayloadType: videoPT}, rest, first, nal[0], true)
				rest = rest[used:]
				p := unmarshal(t, out[:n])
				sizes = append(sizes, len(p.Payload))
				if p.Marker != (len(rest) == 0) {
					t.Errorf("packet %d: marker %v with %d bytes left", len(sizes), p.Marker, len(rest))
				}
				b, err := depkt.Unmarshal(p.Payload)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
			}
			if !slices.Equal(sizes, tt.packets) {
				t.Errorf("payload sizes %v, want %v", sizes, tt.packets)
			}
			if !bytes.Equal(got, append([]byte{0, 0, 0, 1}, nal...)) {
				t.Error("fragments do not reassemble to the unit")
			}
		})
	}
}

func TestSplitFramesEndsAFrameAtEachNewAccessUnit(t *testing.T) {
	sps, pps, sei := []byte{0x67, 0}, []byte{0x68, 0}, []byte{0x06, 0}
	idr, p := []byte{0x65, 0x88}, []byte{0x41, 0x9a}
	secondSlice := []byte{0x41, 0x40} // first_mb_in_slice != 0
	got := splitFrames([][]byte{sps, pps, idr, p, secondSlice, sei, p, {}, p})
	want := [][][]byte{{sps, pps, idr}, {p, secondSlice}, {sei, p}, {p}}
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if len(got[i]) != len(want[i]) {
			t.Errorf("frame %d has %d units, want %d", i, len(got[i]), len(want[i]))
		}
	}
}

// newBareConn makes a connection without a control connection whose media
// goes to a local socket nobody reads, for benchmarks and fuzzing.
func newBareConn(tb testing.TB) *Conn {
	tb.Helper()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sink.Close(); udp.Close() })
	return &Conn{
		cfg:     withDefaults(Config{}),
		log:     withDefaults(Config{}).Logger,
		channel: 77,
		udp:     udp,
		ingest:  netip.MustParseAddr("127.0.0.1"),
		media:   sink.LocalAddr().(*net.UDPAddr).AddrPort(),
		video:   newTrack(78, videoPT, videoClock),
		audio:   newTrack(77, audioPT, audioClock),
		echoes:  make(chan struct{}, 1),
		ctx:     context.Background(),
	}
}

func BenchmarkSendVideoNAL(b *testing.B) {
	c := newBareConn(b)
	nal := make([]byte, 5000) // four packets
	nal[0] = 0x41
	b.ReportAllocs()
	b.ResetTimer()
	b.SetBytes(int64(len(nal)))
	for i := range b.N {
		if _, _, err := c.sendVideoNAL(context.Background(), nal, int64(i)*33333, true, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendFrameWithOnFrame(b *testing.B) {
	c := newBareConn(b)
	c.cfg.OnFrame = func(uint32, time.Time) {}
	p := make([]byte, 5000) // four packets
	p[0] = 0x41
	frame := [][]byte{p}
	b.ReportAllocs()
	b.ResetTimer()
	b.SetBytes(int64(len(p)))
	for i := range b.N {
		if err := c.sendFrame(context.Background(), frame, int64(i)*33333); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendAudio(b *testing.B) {
	c := newBareConn(b)
	payload := make([]byte, 160)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := c.sendAudio(payload, int64(i)*20000); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHandleNACK(b *testing.B) {
	c := newBareConn(b)
	for i := range 32 {
		c.sendAudio([]byte{0xfc, byte(i)}, int64(i)*20000)
	}
	pkt, err := (&rtcp.TransportLayerNack{MediaSSRC: 77, Nacks: []rtcp.NackPair{{PacketID: 3, LostPackets: 0xffff}}}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	from := netip.MustParseAddrPort("127.0.0.1:8084")
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.handleDatagram(pkt, from, now)
	}
}

func BenchmarkHandlePingEcho(b *testing.B) {
	c := newBareConn(b)
	var ping [pingLen]byte
	now := time.Now()
	putPing(ping[:], now)
	from := netip.MustParseAddrPort("127.0.0.1:8084")
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.handleDatagram(ping[:], from, now.Add(time.Millisecond))
	}
}
