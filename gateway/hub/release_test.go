package hub_test

import (
	"bytes"
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
