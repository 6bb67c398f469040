package hub_test

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"lightspeed/gateway/hub"
)

// ftlPayloads packetizes one NAL unit as the FTL SDK does: a single NAL
// unit up to 1380 bytes, else FU-A with 1378-byte fragments.
func ftlPayloads(nal []byte) [][]byte {
	if len(nal) <= 1380 {
		return [][]byte{nal}
	}
	var r [][]byte
	ind, typ := nal[0]&0xe0|28, nal[0]&0x1f
	for data, start := nal[1:], true; len(data) > 0; start = false {
		k := min(1378, len(data))
		hdr := typ
		if start {
			hdr |= 0x80
		}
		if k == len(data) {
			hdr |= 0x40
		}
		r = append(r, append([]byte{ind, hdr}, data[:k]...))
		data = data[k:]
	}
	return r
}

// publisher numbers the packets of one track as a publisher would.
type publisher struct {
	seq uint16
}

// frame returns the FTL packets of one access unit, the marker on the last.
func (p *publisher) frame(ts uint32, nals ...[]byte) []*rtp.Packet {
	var r []*rtp.Packet
	for _, n := range nals {
		for _, pl := range ftlPayloads(n) {
			r = append(r, pkt(p.seq, ts, false, pl))
			p.seq++
		}
	}
	r[len(r)-1].Marker = true
	return r
}

func write(pub *hub.Publisher, t hub.Track, pkts []*rtp.Packet, arrival time.Time) {
	for _, p := range pkts {
		pub.WriteRTP(t, p, arrival)
	}
}

// annexB returns the NAL units with start codes, as codecs.H264Packet
// depacketizes them.
func annexB(nals ...[]byte) []byte {
	var b []byte
	for _, n := range nals {
		b = append(b, 0, 0, 0, 1)
		b = append(b, n...)
	}
	return b
}

func TestVideoIsRefragmentedToMaxPacketSize(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	frames := [][][]byte{
		{nal(7, 12, 1), nal(8, 4, 2), nal(5, 20000, 3)}, // SPS, PPS, IDR of 15 FU-A fragments
		{nal(1, 1380, 4)},                // the largest single NAL unit FTL sends
		{nal(1, 1188, 5)},                // fits an output packet as it is
		{nal(1, 1189, 6)},                // one byte too many
		{nal(1, 1381, 7)},                // the smallest FU-A FTL sends
		{nal(6, 30, 8), nal(1, 2757, 9)}, // an SEI and a slice of two full FU-A fragments and one byte
	}
	var video publisher
	var want []byte
	inPackets := 0
	for i, f := range frames {
		pkts := video.frame(uint32(i)*3000, f...)
		inPackets += len(pkts)
		write(pub, hub.Video, pkts, t0)
		want = append(want, annexB(f...)...)
	}

	got := drain(t, s)
	contiguous(t, got)
	var depack codecs.H264Packet
	var stream []byte
	markers := 0
	for i, p := range got {
		if len(p.Data) > hub.MaxPacketSize {
			t.Errorf("packet %d is %d bytes, over %d", i, len(p.Data), hub.MaxPacketSize)
		}
		nals, err := depack.Unmarshal(p.rtp.Payload)
		if err != nil {
			t.Fatalf("packet %d does not depacketize: %v", i, err)
		}
		stream = append(stream, nals...)
		lastOfFrame := i == len(got)-1 || got[i+1].Timestamp != p.Timestamp
		if p.rtp.Marker != lastOfFrame {
			t.Errorf("packet %d marker %v, want %v (only on the last piece of a frame)", i, p.rtp.Marker, lastOfFrame)
		}
		if p.rtp.Marker {
			markers++
		}
	}
	if !bytes.Equal(stream, want) {
		t.Errorf("depacketized stream differs from the NAL units sent (%d bytes, want %d)", len(stream), len(want))
	}
	if markers != len(frames) {
		t.Errorf("%d markers, want %d", markers, len(frames))
	}
	if len(got) <= inPackets {
		t.Errorf("%d output packets from %d input packets: nothing was cut", len(got), inPackets)
	}
	for i, p := range got {
		if p.Keyframe != (i == 0) {
			t.Errorf("packet %d Keyframe %v, want it on the SPS only", i, p.Keyframe)
		}
	}
}

func TestKeyframeIsMarkedOnTheFirstPacketDecodersCanStartAt(t *testing.T) {
	tests := []struct {
		name string
		nals [][]byte
		want int // output packet of the frame marked Keyframe, -1 for none
	}{
		{"SPS, PPS and IDR", [][]byte{nal(7, 10, 0), nal(8, 4, 0), nal(5, 3000, 0)}, 0},
		{"AUD before the SPS", [][]byte{nal(9, 2, 0), nal(7, 10, 0), nal(8, 4, 0), nal(5, 300, 0)}, 1},
		{"IDR alone, fragmented", [][]byte{nal(5, 4000, 0)}, 0},
		{"slice", [][]byte{nal(1, 3000, 0)}, -1},
		{"slice then SPS in the same frame", [][]byte{nal(1, 300, 0), nal(7, 10, 0), nal(5, 300, 0)}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pub, _ := newLiveHub(t)
			s := subscribe(t, h, hub.SubscribeOptions{})
			var video publisher
			write(pub, hub.Video, video.frame(0, nal(1, 100, 0)), t0) // a frame before
			write(pub, hub.Video, video.frame(3000, tt.nals...), t0)
			got := drain(t, s)
			if got[0].Keyframe {
				t.Error("the slice before is marked Keyframe")
			}
			for i, p := range got[1:] {
				if p.Keyframe != (i == tt.want) {
					t.Errorf("output packet %d of the frame: Keyframe %v, want %v", i, p.Keyframe, i == tt.want)
				}
			}
		})
	}
}

// fuaCount is the number of full-size FU-A packets a NAL unit of n bytes
// needs: its n-1 data bytes (the header byte is carried by the FU
// indicator and header) in pieces of 1,186.
func fuaCount(n int) int { return (n - 1 + 1185) / 1186 }

// TestFTLFragmentsAreRecutIntoFullPackets: the FTL SDK's 1,392-byte FU-A
// fragments of a NAL unit come out as ceil(data bytes / 1,186) packets,
// all of 1,200 bytes but the NAL unit's last, and depacketize into the
// same NAL units byte for byte.
func TestFTLFragmentsAreRecutIntoFullPackets(t *testing.T) {
	sizes := []int{1381, 2757, 5931, 5932, 20000, 70001}
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	var video publisher
	for i, n := range sizes {
		write(pub, hub.Video, video.frame(uint32(i)*3000, nal(5, n, byte(i))), t0)
	}
	got := drain(t, s)
	contiguous(t, got)
	for i, n := range sizes {
		var frame []out
		for _, p := range got {
			if p.Timestamp == got[0].Timestamp+uint32(i)*3000 {
				frame = append(frame, p)
			}
		}
		if len(frame) != fuaCount(n) {
			t.Errorf("NAL unit of %d bytes (%d FTL fragments): %d packets, want %d", n, len(ftlPayloads(nal(5, n, 0))), len(frame), fuaCount(n))
		}
		var depack codecs.H264Packet
		var stream []byte
		for j, p := range frame {
			if j < len(frame)-1 && len(p.Data) != hub.MaxPacketSize {
				t.Errorf("NAL unit of %d bytes: packet %d of %d is %d bytes, want %d", n, j, len(frame), len(p.Data), hub.MaxPacketSize)
			}
			b, err := depack.Unmarshal(p.rtp.Payload)
			if err != nil {
				t.Fatal(err)
			}
			stream = append(stream, b...)
		}
		if !bytes.Equal(stream, annexB(nal(5, n, byte(i)))) {
			t.Errorf("NAL unit of %d bytes does not depacketize to itself", n)
		}
	}
}

// TestPacketsThatFitPassUnchanged: FU-A fragments that fit an output
// packet, as a WHIP publisher sends them, are not re-cut.
func TestPacketsThatFitPassUnchanged(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	n := nal(5, 5000, 1)
	var in [][]byte
	for data, start := n[1:], true; len(data) > 0; start = false {
		k := min(1100, len(data))
		hdr := n[0] & 0x1f
		if start {
			hdr |= 0x80
		}
		if k == len(data) {
			hdr |= 0x40
		}
		in = append(in, append([]byte{n[0]&0xe0 | 28, hdr}, data[:k]...))
		data = data[k:]
	}
	for i, p := range in {
		pub.WriteRTP(hub.Video, pkt(uint16(i), 0, i == len(in)-1, p), t0)
	}
	got := drain(t, s)
	if len(got) != len(in) {
		t.Fatalf("%d packets out of %d that fit", len(got), len(in))
	}
	for i, p := range got {
		if !bytes.Equal(p.rtp.Payload, in[i]) {
			t.Errorf("packet %d changed", i)
		}
	}
}

// TestAFragmentLostMidNALLeavesAGapAndTheNextFrameDecodes: when a fragment
// in the middle of a NAL unit is lost for good, what the carry held goes
// out before the gap (without the end bit), the rest of the NAL unit after
// it, and the next frame comes out whole.
func TestAFragmentLostMidNALLeavesAGapAndTheNextFrameDecodes(t *testing.T) {
	h, pub, clk := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	var video publisher
	first := video.frame(0, nal(5, 10000, 1))
	lost := first[3]
	next := nal(1, 5000, 2)
	write(pub, hub.Video, slices.Delete(slices.Clone(first), 3, 4), clk.t)
	write(pub, hub.Video, video.frame(3000, next), clk.t)
	h.ReleaseExpired(clk.Advance(time.Second))

	got := drain(t, s)
	gaps := 0
	for i := 1; i < len(got); i++ {
		if d := got[i].Seq - got[i-1].Seq; d != 1 {
			gaps++
			if d != 2 || got[i-1].rtp.Payload[1]&0x40 != 0 {
				t.Errorf("a gap of %d after a packet with FU header %#x, want one number for the lost fragment, after a piece without the end bit", d-1, got[i-1].rtp.Payload[1])
			}
			if got[i].Timestamp != got[0].Timestamp {
				t.Error("the gap is not in the first frame")
			}
		}
	}
	if gaps != 1 {
		t.Errorf("%d gaps, want 1 (fragment %d lost)", gaps, lost.SequenceNumber)
	}
	var depack codecs.H264Packet
	var frame2 []byte
	for _, p := range got {
		if p.Timestamp != got[0].Timestamp {
			b, err := depack.Unmarshal(p.rtp.Payload)
			if err != nil {
				t.Fatal(err)
			}
			frame2 = append(frame2, b...)
		}
	}
	if !bytes.Equal(frame2, annexB(next)) {
		t.Error("the frame after the loss does not depacketize whole")
	}
}

// TestALeftoverGoesOutWhenItsNALUnitDoesNotContinue: the bytes the carry
// holds go out, without the end bit, as soon as something else is
// released on the track (here a new frame whose fragment has the start
// bit) or the publish ends.
func TestALeftoverGoesOutWhenItsNALUnitDoesNotContinue(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	var video publisher
	cut := video.frame(0, nal(5, 5000, 1))
	cut = cut[:len(cut)-1] // the end never comes
	video.seq--            // and is no loss
	write(pub, hub.Video, cut, t0)
	held := drain(t, s)
	data := 0
	for _, p := range held {
		data += len(p.rtp.Payload) - 2
	}
	if sent := len(cut) * 1378; data >= sent || data < sent-1186 {
		t.Fatalf("%d data bytes out of %d sent: want all but a leftover shorter than a packet", data, sent)
	}
	write(pub, hub.Video, video.frame(3000, nal(1, 3000, 2)), t0)
	got := drain(t, s)
	if len(got) == 0 || got[0].Timestamp != held[0].Timestamp || got[0].rtp.Payload[1]&0xc0 != 0 {
		t.Fatalf("the leftover did not go out first, as a middle fragment: %+v", got)
	}
	if n := data + len(got[0].rtp.Payload) - 2; n != len(cut)*1378 {
		t.Errorf("%d data bytes out, want the %d sent", n, len(cut)*1378)
	}

	write(pub, hub.Video, video.frame(6000, nal(5, 5000, 3))[:2], t0)
	video.seq -= 2
	before := len(drain(t, s))
	pub.Release()
	if last := drain(t, s); len(last) != 1 || last[0].rtp.Payload[1]&0x40 != 0 {
		t.Errorf("at the end of the publish %d packets went out (after %d), want the leftover", len(last), before)
	}
}
