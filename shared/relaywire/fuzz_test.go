package relaywire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/pion/ice/v2"
)

// FuzzReadMessage reads a control stream of arbitrary bytes: it must never
// panic, must fail only with an I/O or protocol error, and every message it
// returns must encode and decode to itself.
func FuzzReadMessage(f *testing.F) {
	for _, m := range everyMessage() {
		b, err := AppendMessage(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(frame(byte(TypeNACK), `{"flow":1,"seqs":[1,2,3]}`))
	f.Add(frame(byte(TypeKeyframe), `{"channel":4294967295}`))
	f.Add(frame(18, `{}`))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			m, err := ReadMessage(r)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			b, err := AppendMessage(nil, m)
			if err != nil {
				t.Fatalf("re-encode %s: %v", m.Type(), err)
			}
			again, err := ReadMessage(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("decode re-encoded %s: %v", m.Type(), err)
			}
			if !reflect.DeepEqual(normalize(m), normalize(again)) {
				t.Fatalf("%s changed: %+v then %+v", m.Type(), m, again)
			}
		}
	})
}

// normalize makes empty and nil slices equal, as JSON's omitempty does.
func normalize(m Message) Message {
	switch v := m.(type) {
	case *Subscribed:
		c := *v
		if len(c.Tracks) == 0 {
			c.Tracks = nil
		}
		return &c
	case *NACK:
		c := *v
		if len(c.Seqs) == 0 {
			c.Seqs = nil
		}
		return &c
	}
	return m
}

// FuzzParseDatagram parses arbitrary datagrams: it must never panic, an
// accepted one must hold a payload inside its RTP packet, and it must
// re-encode to the same flow, flags and packet.
func FuzzParseDatagram(f *testing.F) {
	f.Add(AppendDatagram(nil, FlowOf(77, Video), FlagKeyframe, rtpPacket(1, 20)))
	f.Add(AppendDatagram(nil, FlowOf(^uint32(0), Audio), FlagStreamStart, rtpPacket(65535, 0)))
	f.Add(AppendDatagram(nil, FlowOf(5, Video), 0, append([]byte{0xb1, 0x60, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4, 0, 0, 0, 5, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 9, 9, 2}, 0)[:27]))
	f.Add([]byte{0x40})
	f.Add([]byte{0xc0, 0, 0, 2, 0, 0, 0, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDatagram(b)
		if err != nil {
			return
		}
		if len(d.RTP) < 12 || d.RTP[0]>>6 != 2 {
			t.Fatalf("accepted %d bytes of RTP, first byte %#x", len(d.RTP), d.RTP[0])
		}
		if len(d.Payload) > len(d.RTP)-12 {
			t.Fatalf("payload of %d bytes in a packet of %d", len(d.Payload), len(d.RTP))
		}
		again, err := ParseDatagram(AppendDatagram(nil, d.Flow, d.Flags, d.RTP))
		if err != nil || again.Flow != d.Flow || again.Flags != d.Flags || !bytes.Equal(again.RTP, d.RTP) ||
			again.Seq != d.Seq || again.Timestamp != d.Timestamp || again.SSRC != d.SSRC || again.Marker != d.Marker {
			t.Fatalf("re-encoded datagram differs: %v", err)
		}
	})
}

// FuzzCandidateSet adds a viewer's candidate strings, as trickled and as an
// SDP: it must never panic, never hold more than MaxCandidates addresses,
// take again what it took, and count every candidate that pion reads as
// one it would check (a UDP candidate with an IP address).
func FuzzCandidateSet(f *testing.F) {
	f.Add("candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "v=0\r\na=candidate:2 1 UDP 1 ::1 10 typ host\r\n")
	f.Add("a=candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive", "a=candidate:4 1 udp 1 x.local 5 typ host\n")
	f.Add("candidate: 1 udp 2130706431 127.0.0.2 9 typ host", "a=candidate: 1 udpx 1 10.0.0.1 9 typ host\r\n")
	f.Add("Candidate:1 1 udp 2130706431 fe80::1%eth0 9 typ host", "a=candidate:\r\na=candidate: 1 udp\r\n")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, cand, sdp string) {
		var s CandidateSet
		took := s.Add(cand)
		if !took {
			t.Fatalf("%q refused by an empty set", cand)
		}
		if c, err := ice.UnmarshalCandidate(strings.TrimPrefix(cand, "candidate:")); err == nil && c.NetworkType().IsUDP() &&
			!strings.HasSuffix(c.Address(), ".local") && s.Len() != 1 {
			t.Fatalf("%q: pion checks %s, but the set counted %d addresses", cand, c.Address(), s.Len())
		}
		s.AddSDP(sdp)
		if s.Len() > MaxCandidates {
			t.Fatalf("%d addresses", s.Len())
		}
		if !s.Add(cand) {
			t.Fatalf("%q taken, then refused", cand)
		}
	})
}
