package relaywire

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
)

// rtpPacket returns an RTP version 2 packet with the marker bit, sequence
// number seq, timestamp 0x01020304, SSRC 0x0a0b0c0d and n payload bytes.
func rtpPacket(seq uint16, n int) []byte {
	p := make([]byte, 12+n)
	p[0], p[1] = 0x80, 0x80|96
	p[2], p[3] = byte(seq>>8), byte(seq)
	p[4], p[5], p[6], p[7] = 1, 2, 3, 4
	p[8], p[9], p[10], p[11] = 0x0a, 0x0b, 0x0c, 0x0d
	for i := range n {
		p[12+i] = byte(i)
	}
	return p
}

func TestDatagramRoundTripsEveryFlow(t *testing.T) {
	flows := []Flow{FlowOf(0, Video), FlowOf(0, Audio), FlowOf(31, Audio), FlowOf(77, Video), FlowOf(8191, Audio), FlowOf(1<<30, Video), FlowOf(^uint32(0), Audio)}
	pkt := rtpPacket(4242, 1188)
	for _, f := range flows {
		for _, flags := range []Flags{0, FlagKeyframe, FlagStreamStart, FlagKeyframe | FlagStreamStart} {
			b := AppendDatagram(nil, f, flags, pkt)
			if len(b) > MaxDatagramSize {
				t.Errorf("flow %d: datagram of %d bytes", f, len(b))
			}
			d, err := ParseDatagram(b)
			if err != nil {
				t.Fatalf("flow %d: %v", f, err)
			}
			if d.Flow != f || d.Flags != flags || !bytes.Equal(d.RTP, pkt) || !bytes.Equal(d.Payload, pkt[12:]) ||
				d.Seq != 4242 || d.SSRC != 0x0a0b0c0d || d.Timestamp != 0x01020304 || !d.Marker {
				t.Errorf("flow %d flags %d: got %+v", f, flags, d)
			}
			if d.Flags.Keyframe() != (flags&FlagKeyframe != 0) || d.Flags.StreamStart() != (flags&FlagStreamStart != 0) {
				t.Errorf("flags %d: Keyframe %v, StreamStart %v", flags, d.Flags.Keyframe(), d.Flags.StreamStart())
			}
			if d.Flow.Channel() != f.Channel() || d.Flow.Track() != f.Track() {
				t.Errorf("flow %d: channel/track changed", f)
			}
		}
	}
}

func TestFlowIDsAreChannelAndTrack(t *testing.T) {
	if f := FlowOf(77, Audio); f != 77<<3|1 || f.Channel() != 77 || f.Track() != Audio {
		t.Errorf("FlowOf(77, audio) = %d", f)
	}
	if f := FlowOf(77, Video); f != 77<<3 || f.Track() != Video {
		t.Errorf("FlowOf(77, video) = %d", f)
	}
	for i := range MaxLayers {
		tr := LayerTrack(i)
		if f := FlowOf(1<<32-1, tr); f.Channel() != 1<<32-1 || f.Track() != tr || !tr.IsVideo() || tr.Layer() != i || tr >= NumTracks {
			t.Errorf("layer %d: track %d, flow %d (channel %d, track %d)", i, tr, f, f.Channel(), f.Track())
		}
	}
}

func TestParseDatagramRejectsMalformed(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"cut flow id", []byte{0x40}},
		{"flow id only", quicvarint.Append(nil, 154)},
		{"flags only", append(quicvarint.Append(nil, 154), 0)},
		{"no flags byte", append(quicvarint.Append(nil, 154), rtpPacket(1, 0)...)[:12]},
		{"short RTP header", append(quicvarint.Append(nil, 154), append([]byte{0}, rtpPacket(1, 0)[:11]...)...)},
		{"RTP version 1", append(quicvarint.Append(nil, 154), append([]byte{0, 0x40}, rtpPacket(1, 4)[1:]...)...)},
		{"flow beyond 32-bit channels", append(quicvarint.Append(nil, 1<<35), append([]byte{0}, rtpPacket(1, 4)...)...)},
		{"CSRCs past the end", AppendDatagram(nil, 154, 0, append([]byte{0x82}, rtpPacket(1, 4)[1:]...))},
		{"extension past the end", AppendDatagram(nil, 154, 0, append([]byte{0x90}, rtpPacket(1, 4)[1:]...))},
		{"padding past the payload", AppendDatagram(nil, 154, 0, append(append([]byte{0xa0}, rtpPacket(1, 3)[1:]...), 9))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseDatagram(tt.b); !errors.Is(err, ErrDatagram) {
				t.Fatalf("got %v, want ErrDatagram", err)
			}
		})
	}
}

func TestAppendDatagramReusesTheBuffer(t *testing.T) {
	buf := make([]byte, 0, MaxDatagramSize)
	d := AppendDatagram(buf, FlowOf(77, Video), FlagKeyframe, rtpPacket(1, 1188))
	if &d[0] != &buf[:1][0] {
		t.Fatal("AppendDatagram did not use dst")
	}
}

func BenchmarkAppendDatagram(b *testing.B) {
	buf := make([]byte, 0, MaxDatagramSize)
	pkt := rtpPacket(1, 1188)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		buf = AppendDatagram(buf[:0], FlowOf(77, Video), 0, pkt)
	}
}

func BenchmarkParseDatagram(b *testing.B) {
	d := AppendDatagram(nil, FlowOf(77, Audio), 0, rtpPacket(1, 1188))
	b.ReportAllocs()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, err := ParseDatagram(d); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTicksAreExactOnEveryClock(t *testing.T) {
	for _, tt := range []struct {
		d     time.Duration
		clock uint32
		want  int64
	}{
		{time.Second, 90000, 90000},
		{33 * time.Millisecond, 90000, 2970},
		{20 * time.Millisecond, 48000, 960},
		{-time.Second, 48000, -48000},
		{time.Hour + time.Nanosecond, 90000, 324000000},
	} {
		if got := Ticks(tt.d, tt.clock); got != tt.want {
			t.Errorf("Ticks(%v, %d) = %d, want %d", tt.d, tt.clock, got, tt.want)
		}
	}
}
