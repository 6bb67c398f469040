package relaywire

import (
	"encoding/binary"
	"errors"

	"github.com/quic-go/quic-go/quicvarint"
)

// ErrDatagram marks a datagram that is not a flow id, a flags byte and an
// RTP packet.
var ErrDatagram = errors.New("relaywire: malformed datagram")

// maxFlow is the largest flow id: that of the last track number on
// channel 2^32-1.
const maxFlow = Flow(1)<<(32+flowTrackBits) - 1

// rtpHeaderSize is the fixed part of an RTP header.
const rtpHeaderSize = 12

// MaxPacketSize is the size limit of every RTP packet the relay carries:
// the hub cuts its output to it, and the function's caches hold packets of
// at most this size. With its framing a datagram of the largest packet
// fits quic-go's initial 1243-byte datagram limit.
const MaxPacketSize = 1200

// MaxDatagramSize is the largest datagram the gateway sends: an 8-byte
// flow id, the flags byte and a packet of MaxPacketSize bytes.
const MaxDatagramSize = 8 + 1 + MaxPacketSize

// Flags are what the gateway's hub decided about one packet; they travel
// with it so that the function never inspects the media to learn them.
// Bits not defined here are zero when sent and ignored when received.
type Flags uint8

// The flags of a packet.
const (
	// FlagKeyframe marks the first packet of a keyframe: a decoder may
	// start with it (the SEI, AUD or parameter sets that lead the
	// keyframe's access unit included).
	FlagKeyframe Flags = 1 << iota
	// FlagStreamStart marks the first packet of a track after the
	// publisher (re)started: what came before belongs to another stream,
	// so a cached keyframe from before it no longer serves a new viewer.
	FlagStreamStart
)

// Keyframe reports whether FlagKeyframe is set.
func (f Flags) Keyframe() bool { return f&FlagKeyframe != 0 }

// StreamStart reports whether FlagStreamStart is set.
func (f Flags) StreamStart() bool { return f&FlagStreamStart != 0 }

// Datagram is one parsed datagram: the flow, the flags and the RTP packet
// with the header fields the function reads.
type Datagram struct {
	Flow      Flow
	Flags     Flags
	Seq       uint16
	Timestamp uint32
	SSRC      uint32
	Marker    bool
	RTP       []byte // the whole RTP packet, aliasing the datagram
	Payload   []byte // the RTP payload without CSRCs, header extension and padding, aliasing the datagram
}

// AppendDatagram appends the datagram of one RTP packet of flow f to dst:
// the flow id as a QUIC varint, the flags byte, then the packet unchanged.
// It does not allocate when dst has the capacity. Flow ids fit 35 bits
// (FlowOf never makes a larger one); higher bits are dropped.
func AppendDatagram(dst []byte, f Flow, flags Flags, rtp []byte) []byte {
	dst = quicvarint.Append(dst, uint64(f&maxFlow))
	dst = append(dst, byte(flags))
	return append(dst, rtp...)
}

// ParseDatagram reads a datagram; the slices of d alias b. It fails when
// the flow id does not belong to a 32-bit channel, the flags byte is
// missing, or what follows is not a well-formed RTP version 2 packet (a
// complete fixed header, CSRCs, header extension and padding within the
// packet). It allocates nothing.
func ParseDatagram(b []byte) (d Datagram, err error) {
	v, n, err := quicvarint.Parse(b)
	if err != nil || Flow(v) > maxFlow || len(b) <= n {
		return Datagram{}, ErrDatagram
	}
	d.Flow, d.Flags = Flow(v), Flags(b[n])
	d.RTP = b[n+1:]
	payload, ok := rtpPayload(d.RTP)
	if !ok {
		return Datagram{}, ErrDatagram
	}
	d.Payload = payload
	d.Marker = d.RTP[1]&0x80 != 0
	d.Seq = binary.BigEndian.Uint16(d.RTP[2:])
	d.Timestamp = binary.BigEndian.Uint32(d.RTP[4:])
	d.SSRC = binary.BigEndian.Uint32(d.RTP[8:])
	return d, nil
}

// rtpPayload returns the payload of an RTP version 2 packet without CSRCs,
// header extension and padding, or false when b is not one.
func rtpPayload(b []byte) ([]byte, bool) {
	if len(b) < rtpHeaderSize || b[0]>>6 != 2 {
		return nil, false
	}
	off := rtpHeaderSize + 4*int(b[0]&0x0f)
	if len(b) < off {
		return nil, false
	}
	if b[0]&0x10 != 0 { // header extension: profile, length in 32-bit words
		if len(b) < off+4 {
			return nil, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
		if len(b) < off {
			return nil, false
		}
	}
	end := len(b)
	if b[0]&0x20 != 0 { // padding: the last byte counts the padding bytes
		pad := int(b[end-1])
		if pad == 0 || pad > end-off {
			return nil, false
		}
		end -= pad
	}
	return b[off:end], true
}
