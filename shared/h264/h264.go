// Package h264 reads and cuts H.264 RTP payloads (RFC 6184, non-interleaved
// mode): Inspect tells what a payload carries, ParseSPS reads the picture
// size from a sequence parameter set, and Fragmenter cuts payloads to a
// smaller size. None of them copies or allocates per packet.
package h264

import (
	"encoding/binary"
	"errors"
)

// NAL unit types (H.264 Table 7-1) and RTP aggregation/fragmentation types (RFC 6184).
const (
	NALSlice uint8 = 1
	NALIDR   uint8 = 5
	NALSEI   uint8 = 6
	NALSPS   uint8 = 7
	NALPPS   uint8 = 8
	NALAUD   uint8 = 9
	NALSTAPA uint8 = 24
	NALFUA   uint8 = 28
)

const (
	typeMask = 0x1f // nal_unit_type in a NAL header or FU header
	fuStart  = 0x80 // S bit of the FU header
	fuEnd    = 0x40 // E bit of the FU header
)

// Errors returned by Inspect. They are fixed values so that rejecting a
// hostile stream costs no allocation.
var (
	errEmpty         = errors.New("h264: empty payload")
	errForbiddenType = errors.New("h264: forbidden NAL unit type 0")
	errReservedType  = errors.New("h264: reserved NAL unit type 30 or 31")
	errInterleaved   = errors.New("h264: STAP-B, MTAP or FU-B payload, not allowed in non-interleaved mode")
	errShortFUA      = errors.New("h264: FU-A payload shorter than 3 bytes")
	errFUAType       = errors.New("h264: FU-A fragments a NAL unit of type 0 or 24-31")
	errEmptySTAPA    = errors.New("h264: STAP-A payload without aggregated units")
	errSTAPALength   = errors.New("h264: STAP-A unit length truncated")
	errSTAPAZeroUnit = errors.New("h264: STAP-A unit of length 0")
	errSTAPALongUnit = errors.New("h264: STAP-A unit length exceeds payload")
	errSTAPAUnitType = errors.New("h264: STAP-A aggregates a NAL unit of type 0 or 24-31")
)

// PayloadInfo describes one RTP H.264 payload.
type PayloadInfo struct {
	NALType  uint8 // type of the NAL unit carried; for FU-A the fragmented unit's type; for STAP-A, NALSTAPA
	Start    bool  // the payload begins a NAL unit (single NAL, STAP-A, FU-A with S bit)
	End      bool  // the payload ends a NAL unit (single NAL, STAP-A, FU-A with E bit)
	Keyframe bool  // carries an IDR slice, SPS or PPS (for FU-A: only on the fragment with the S bit; for STAP-A: any aggregated unit)
	HasSPS   bool  // carries a complete SPS (single NAL or inside STAP-A)
}

// Inspect describes payload without copying or allocating. It returns an
// error naming the problem for an empty payload, the forbidden type 0, the
// reserved types 30 and 31, the interleaved-mode types (STAP-B, MTAP16,
// MTAP24, FU-B), an FU-A shorter than 3 bytes or fragmenting a type that
// cannot be fragmented, and a STAP-A whose unit lengths do not tile the
// payload exactly or that aggregates a unit of type 0 or 24-31.
//
// Inspect is lenient where the RFC lets a receiver be: the forbidden_zero_bit
// and the FU header's R bit are ignored, and an FU-A with both S and E set
// is accepted. An FU-A never reports HasSPS, even with S and E set.
func Inspect(payload []byte) (PayloadInfo, error) {
	if len(payload) == 0 {
		return PayloadInfo{}, errEmpty
	}
	t := payload[0] & typeMask
	switch {
	case t == 0:
		return PayloadInfo{}, errForbiddenType
	case t < NALSTAPA:
		return PayloadInfo{
			NALType:  t,
			Start:    true,
			End:      true,
			Keyframe: isKeyframe(t),
			HasSPS:   t == NALSPS,
		}, nil
	case t == NALSTAPA:
		return inspectSTAPA(payload)
	case t == NALFUA:
		if len(payload) < 3 {
			return PayloadInfo{}, errShortFUA
		}
		ft := payload[1] & typeMask
		if ft == 0 || ft >= NALSTAPA {
			return PayloadInfo{}, errFUAType
		}
		start := payload[1]&fuStart != 0
		return PayloadInfo{
			NALType:  ft,
			Start:    start,
			End:      payload[1]&fuEnd != 0,
			Keyframe: start && isKeyframe(ft),
		}, nil
	case t >= 30:
		return PayloadInfo{}, errReservedType
	default: // 25, 26, 27, 29
		return PayloadInfo{}, errInterleaved
	}
}

// inspectSTAPA checks that the aggregation units of a STAP-A tile its
// payload exactly and sums up what they carry.
func inspectSTAPA(payload []byte) (PayloadInfo, error) {
	info := PayloadInfo{NALType: NALSTAPA, Start: true, End: true}
	rest := payload[1:]
	if len(rest) == 0 {
		return PayloadInfo{}, errEmptySTAPA
	}
	for len(rest) > 0 {
		if len(rest) < 2 {
			return PayloadInfo{}, errSTAPALength
		}
		size := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		switch {
		case size == 0:
			return PayloadInfo{}, errSTAPAZeroUnit
		case size > len(rest):
			return PayloadInfo{}, errSTAPALongUnit
		}
		t := rest[0] & typeMask
		if t == 0 || t >= NALSTAPA {
			return PayloadInfo{}, errSTAPAUnitType
		}
		info.Keyframe = info.Keyframe || isKeyframe(t)
		info.HasSPS = info.HasSPS || t == NALSPS
		rest = rest[size:]
	}
	return info, nil
}

// isKeyframe reports whether a NAL unit of type t starts or belongs to a
// keyframe.
func isKeyframe(t uint8) bool {
	return t == NALIDR || t == NALSPS || t == NALPPS
}

// SPSOf returns the first complete SPS NAL unit in payload (single NAL or
// inside STAP-A), or nil. The result aliases payload; its capacity is
// clipped so that appending to it cannot overwrite payload.
func SPSOf(payload []byte) []byte {
	if len(payload) == 0 {
		return nil
	}
	switch t := payload[0] & typeMask; t {
	case NALSPS:
		return payload[:len(payload):len(payload)]
	case NALSTAPA:
		for rest := payload[1:]; len(rest) >= 2; {
			size := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			if size == 0 || size > len(rest) {
				return nil
			}
			if rest[0]&typeMask == NALSPS {
				return rest[:size:size]
			}
			rest = rest[size:]
		}
	}
	return nil
}
