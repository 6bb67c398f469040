package relaywire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

// rtpPacket returns an RTP version 2 packet with sequence number seq, SSRC
// 0x0a0b0c0d and n payload bytes.
func rtpPacket(seq uint16, n int) []byte {
	p := make([]byte, 12+n)
	p[0], p[1] = 0x80, 96
	p[2], p[3] = byte(seq>>8), byte(seq)
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
		d := AppendDatagram(nil, f, pkt)
		if len(d) > MaxDatagramSize {
			t.Errorf("flow %d: datagram of %d bytes", f, len(d))
		}
		got, rtp, err := ParseDatagram(d)
		if err != nil {
			t.Fatalf("flow %d: %v", f, err)
		}
		if got != f || !bytes.Equal(rtp, pkt) || RTPSequence(rtp) != 4242 || RTPSSRC(rtp) != 0x0a0b0c0d {
			t.Errorf("flow %d: got flow %d, %d bytes, seq %d, ssrc %#x", f, got, len(rtp), RTPSequence(rtp), RTPSSRC(rtp))
		}
		if got.Channel() != f.Channel() || got.Track() != f.Track() {
			t.Errorf("flow %d: channel/track changed", f)
		}
	}
}

func TestFlowIDsAreChannelAndTrack(t *testing.T) {
	if f := FlowOf(77, Audio); f != 155 || f.Channel() != 77 || f.Track() != Audio {
		t.Errorf("FlowOf(77, audio) = %d", f)
	}
	if f := FlowOf(77, Video); f != 154 || f.Track() != Video {
		t.Errorf("FlowOf(77, video) = %d", f)
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
		{"short RTP header", append(quicvarint.Append(nil, 154), rtpPacket(1, 0)[:11]...)},
		{"RTP version 1", append(quicvarint.Append(nil, 154), append([]byte{0x40}, rtpPacket(1, 4)[1:]...)...)},
		{"flow beyond 32-bit channels", append(quicvarint.Append(nil, 1<<33), rtpPacket(1, 4)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ParseDatagram(tt.b); !errors.Is(err, ErrDatagram) {
				t.Fatalf("got %v, want ErrDatagram", err)
			}
		})
	}
}

func TestAppendDatagramReusesTheBuffer(t *testing.T) {
	buf := make([]byte, 0, MaxDatagramSize)
	d := AppendDatagram(buf, FlowOf(77, Video), rtpPacket(1, 1188))
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
		buf = AppendDatagram(buf[:0], FlowOf(77, Video), pkt)
	}
}

func BenchmarkParseDatagram(b *testing.B) {
	d := AppendDatagram(nil, FlowOf(77, Audio), rtpPacket(1, 1188))
	b.ReportAllocs()
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, _, err := ParseDatagram(d); err != nil {
			b.Fatal(err)
		}
	}
}
