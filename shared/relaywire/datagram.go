package relaywire

import (
	"encoding/binary"
	"errors"

	"github.com/quic-go/quic-go/quicvarint"
)

// ErrDatagram marks a datagram that is not a flow id followed by an RTP
// packet.
var ErrDatagram = errors.New("relaywire: malformed datagram")

// maxFlow is the largest flow id: that of audio on channel 2^32-1.
const maxFlow = Flow(1)<<33 - 1

// rtpHeaderSize is the fixed part of an RTP header.
const rtpHeaderSize = 12

// MaxDatagramSize is the largest datagram the gateway sends: an 8-byte
// flow id and a packet of the hub's MaxPacketSize (1200 bytes).
const MaxDatagramSize = 8 + 1200

// AppendDatagram appends the datagram of one RTP packet of flow f to dst:
// the flow id as a QUIC varint, then the packet unchanged. It does not
// allocate when dst has the capacity. Flow ids fit 33 bits (FlowOf never
// makes a larger one); higher bits are dropped.
func AppendDatagram(dst []byte, f Flow, rtp []byte) []byte {
	dst = quicvarint.Append(dst, uint64(f&maxFlow))
	return append(dst, rtp...)
}

// ParseDatagram splits a datagram into its flow id and RTP packet; rtp
// aliases b. It fails when the flow id does not belong to a 32-bit channel
// or what follows is not an RTP version 2 packet with a complete fixed
// header.
func ParseDatagram(b []byte) (f Flow, rtp []byte, err error) {
	v, n, err := quicvarint.Parse(b)
	if err != nil || Flow(v) > maxFlow {
		return 0, nil, ErrDatagram
	}
	rtp = b[n:]
	if len(rtp) < rtpHeaderSize || rtp[0]>>6 != 2 {
		return 0, nil, ErrDatagram
	}
	return Flow(v), rtp, nil
}

// RTPSequence returns the sequence number of an RTP packet that
// ParseDatagram accepted.
func RTPSequence(rtp []byte) uint16 { return uint16(rtp[2])<<8 | uint16(rtp[3]) }

// RTPSSRC returns the SSRC of an RTP packet that ParseDatagram accepted.
func RTPSSRC(rtp []byte) uint32 { return binary.BigEndian.Uint32(rtp[8:12]) }
