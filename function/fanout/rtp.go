package fanout

import "encoding/binary"

// rtpHeader is what the fan-out reads from a relayed RTP packet.
type rtpHeader struct {
	marker bool
	seq    uint16
	ts     uint32
	ssrc   uint32
}

// parseRTP reads the fixed header of an RTP packet and returns its payload
// without CSRCs, header extension and padding. It aliases b and allocates
// nothing. ok is false for anything that is not a well-formed version 2
// packet.
func parseRTP(b []byte) (h rtpHeader, payload []byte, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return rtpHeader{}, nil, false
	}
	off := 12 + 4*int(b[0]&0x0f)
	if len(b) < off {
		return rtpHeader{}, nil, false
	}
	if b[0]&0x10 != 0 { // header extension: profile, length in 32-bit words
		if len(b) < off+4 {
			return rtpHeader{}, nil, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
		if len(b) < off {
			return rtpHeader{}, nil, false
		}
	}
	end := len(b)
	if b[0]&0x20 != 0 { // padding: the last byte counts the padding bytes
		pad := int(b[end-1])
		if pad == 0 || pad > end-off {
			return rtpHeader{}, nil, false
		}
		end -= pad
	}
	h = rtpHeader{
		marker: b[1]&0x80 != 0,
		seq:    binary.BigEndian.Uint16(b[2:]),
		ts:     binary.BigEndian.Uint32(b[4:]),
		ssrc:   binary.BigEndian.Uint32(b[8:]),
	}
	return h, b[off:end], true
}
