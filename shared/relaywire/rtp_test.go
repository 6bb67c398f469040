package relaywire

import (
	"bytes"
	"testing"

	"github.com/pion/rtp"
)

func marshal(t testing.TB, p *rtp.Packet) []byte {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseDatagramReadsTheRTPHeader: the header fields and the payload
// come out of any well-formed packet; a malformed one is refused.
func TestParseDatagramReadsTheRTPHeader(t *testing.T) {
	payload := []byte{0x65, 1, 2, 3, 4}
	withExt := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 7, Timestamp: 9, SSRC: 11}, Payload: payload}
	if err := withExt.SetExtension(3, []byte{0xde, 0xad}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		pkt     []byte
		want    Datagram
		payload []byte
		ok      bool
	}{
		{
			name:    "plain packet",
			pkt:     marshal(t, &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: 65535, Timestamp: 0xfffffff0, SSRC: 0xcafe}, Payload: payload}),
			want:    Datagram{Marker: true, Seq: 65535, Timestamp: 0xfffffff0, SSRC: 0xcafe},
			payload: payload, ok: true,
		},
		{
			name:    "CSRCs are skipped",
			pkt:     marshal(t, &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 1, CSRC: []uint32{1, 2}}, Payload: payload}),
			want:    Datagram{Seq: 1},
			payload: payload, ok: true,
		},
		{
			name:    "a header extension is skipped",
			pkt:     marshal(t, withExt),
			want:    Datagram{Seq: 7, Timestamp: 9, SSRC: 11},
			payload: payload, ok: true,
		},
		{
			name:    "padding is removed",
			pkt:     marshal(t, &rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, SequenceNumber: 2}, Payload: payload, PaddingSize: 3}),
			want:    Datagram{Seq: 2},
			payload: payload, ok: true,
		},
		{name: "too short", pkt: make([]byte, 11)},
		{name: "version 1", pkt: append([]byte{0x40}, make([]byte, 15)...)},
		{name: "CSRC count beyond the packet", pkt: append([]byte{0x8f}, make([]byte, 20)...)},
		{name: "extension header cut", pkt: append([]byte{0x90}, make([]byte, 13)...)},
		{name: "extension length beyond the packet", pkt: append([]byte{0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 9}, 0)},
		{name: "padding count zero", pkt: append([]byte{0xa0}, make([]byte, 15)...)},
		{name: "padding longer than the payload", pkt: append(append([]byte{0xa0}, make([]byte, 12)...), 9)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseDatagram(AppendDatagram(nil, FlowOf(7, Video), 0, tt.pkt))
			if ok := err == nil; ok != tt.ok {
				t.Fatalf("ParseDatagram: %v, want ok %v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if d.Seq != tt.want.Seq || d.Timestamp != tt.want.Timestamp || d.SSRC != tt.want.SSRC || d.Marker != tt.want.Marker ||
				!bytes.Equal(d.Payload, tt.payload) || !bytes.Equal(d.RTP, tt.pkt) {
				t.Fatalf("ParseDatagram = %+v; want %+v with payload %x", d, tt.want, tt.payload)
			}
		})
	}
}

// FuzzDatagramRTP reads arbitrary RTP packets in datagrams and compares
// with pion's parser: what ParseDatagram accepts, pion reads the same.
func FuzzDatagramRTP(f *testing.F) {
	f.Add(marshal(f, &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: 1}, Payload: []byte{0x67, 0x42}}))
	f.Add(marshal(f, &rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, CSRC: []uint32{5}}, Payload: []byte{1}, PaddingSize: 4}))
	f.Add([]byte{0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0, 0x41})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDatagram(AppendDatagram(nil, FlowOf(7, Video), 0, b))
		if err != nil {
			return
		}
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			if b[0]&0x10 != 0 {
				return // pion also checks the extension's elements; ParseDatagram skips the block whole, as RFC 3550 allows
			}
			t.Fatalf("ParseDatagram accepted what pion rejects (%v): %x", err, b)
		}
		if p.SequenceNumber != d.Seq || p.Timestamp != d.Timestamp || p.SSRC != d.SSRC || p.Marker != d.Marker {
			t.Fatalf("header %+v, pion %+v", d, p.Header)
		}
		if !bytes.Equal(p.Payload, d.Payload) {
			t.Fatalf("payload %x, pion %x", d.Payload, p.Payload)
		}
	})
}
