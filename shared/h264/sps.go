package h264

import (
	"errors"
	"fmt"
)

// maxMbs bounds the picture width and height in macroblocks (65536 pixels),
// far above any H.264 level, so sizes cannot overflow.
const maxMbs = 4096

// SPS holds what we read from a sequence parameter set.
type SPS struct {
	ProfileIDC, ConstraintFlags, LevelIDC uint8
	Width, Height                         int // after frame cropping
}

// ParseSPS parses an SPS NAL unit (starting with the NAL header byte) up to
// the frame cropping fields, skipping emulation-prevention bytes as it reads.
// It handles the high profiles (chroma_format_idc, bit depths, scaling
// matrices), field coding (frame_mbs_only_flag) and cropping. Every value is
// range-checked, so hostile input yields an error, never a panic or an
// unbounded loop; the VUI and anything after it are not read.
func ParseSPS(nal []byte) (SPS, error) {
	if len(nal) == 0 {
		return SPS{}, errors.New("h264: SPS: empty")
	}
	if t := nal[0] & typeMask; t != NALSPS {
		return SPS{}, fmt.Errorf("h264: SPS: NAL unit type %d, want %d", t, NALSPS)
	}
	r := bitReader{buf: nal[1:]}
	s := SPS{
		ProfileIDC:      uint8(r.bits(8)),
		ConstraintFlags: uint8(r.bits(8)),
		LevelIDC:        uint8(r.bits(8)),
	}
	if id := r.ue(); id > 31 {
		return SPS{}, r.fail("seq_parameter_set_id", id)
	}

	chromaFormat := uint32(1) // 4:2:0 unless signalled
	separateColourPlanes := false
	if hasChromaFormat(s.ProfileIDC) {
		if chromaFormat = r.ue(); chromaFormat > 3 {
			return SPS{}, r.fail("chroma_format_idc", chromaFormat)
		}
		if chromaFormat == 3 {
			separateColourPlanes = r.flag()
		}
		if v := r.ue(); v > 6 {
			return SPS{}, r.fail("bit_depth_luma_minus8", v)
		}
		if v := r.ue(); v > 6 {
			return SPS{}, r.fail("bit_depth_chroma_minus8", v)
		}
		r.flag()      // qpprime_y_zero_transform_bypass_flag
		if r.flag() { // seq_scaling_matrix_present_flag
			lists := 8
			if chromaFormat == 3 {
				lists = 12
			}
			for i := range lists {
				if !r.flag() {
					continue
				}
				size := 16
				if i >= 6 {
					size = 64
				}
				if err := r.skipScalingList(size); err != nil {
					return SPS{}, err
				}
			}
		}
	}

	if v := r.ue(); v > 12 {
		return SPS{}, r.fail("log2_max_frame_num_minus4", v)
	}
	switch pocType := r.ue(); pocType {
	case 0:
		if v := r.ue(); v > 12 {
			return SPS{}, r.fail("log2_max_pic_order_cnt_lsb_minus4", v)
		}
	case 1:
		r.flag() // delta_pic_order_always_zero_flag
		r.se()   // offset_for_non_ref_pic
		r.se()   // offset_for_top_to_bottom_field
		n := r.ue()
		if n > 255 {
			return SPS{}, r.fail("num_ref_frames_in_pic_order_cnt_cycle", n)
		}
		for range n {
			r.se() // offset_for_ref_frame
		}
	case 2:
	default:
		return SPS{}, r.fail("pic_order_cnt_type", pocType)
	}
	r.ue()   // max_num_ref_frames
	r.flag() // gaps_in_frame_num_value_allowed_flag
	widthMbs := int64(r.ue()) + 1
	heightMapUnits := int64(r.ue()) + 1
	frameMbsOnly := r.flag()
	if !frameMbsOnly {
		r.flag() // mb_adaptive_frame_field_flag
	}
	r.flag() // direct_8x8_inference_flag
	var cropLeft, cropRight, cropTop, cropBottom uint32
	if r.flag() { // frame_cropping_flag
		cropLeft, cropRight, cropTop, cropBottom = r.ue(), r.ue(), r.ue(), r.ue()
	}
	if r.err != nil {
		return SPS{}, r.err
	}
	if widthMbs > maxMbs {
		return SPS{}, r.fail("pic_width_in_mbs_minus1", widthMbs-1)
	}
	if heightMapUnits > maxMbs {
		return SPS{}, r.fail("pic_height_in_map_units_minus1", heightMapUnits-1)
	}

	// Crop units, H.264 equations 7-19 to 7-22.
	fieldFactor := int64(2)
	if frameMbsOnly {
		fieldFactor = 1
	}
	cropUnitX, cropUnitY := int64(1), fieldFactor
	if !separateColourPlanes && chromaFormat != 0 {
		if chromaFormat != 3 {
			cropUnitX = 2 // SubWidthC
		}
		if chromaFormat == 1 {
			cropUnitY *= 2 // SubHeightC
		}
	}
	width := widthMbs*16 - cropUnitX*(int64(cropLeft)+int64(cropRight))
	height := fieldFactor*heightMapUnits*16 - cropUnitY*(int64(cropTop)+int64(cropBottom))
	if width <= 0 || height <= 0 {
		return SPS{}, fmt.Errorf("h264: SPS: cropping (%d, %d, %d, %d) leaves no picture",
			cropLeft, cropRight, cropTop, cropBottom)
	}
	s.Width, s.Height = int(width), int(height)
	return s, nil
}

// hasChromaFormat reports whether an SPS of the profile carries
// chroma_format_idc and the fields that follow it (H.264 7.3.2.1.1).
func hasChromaFormat(profile uint8) bool {
	switch profile {
	case 100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144:
		return true
	}
	return false
}

// bitReader reads the RBSP of a NAL unit bit by bit, dropping the
// emulation-prevention byte of every 0x000003 sequence on the way. Reading
// past the end sets err and yields zeros from then on.
type bitReader struct {
	buf   []byte // NAL unit payload, emulation-prevention bytes included
	pos   int    // index in buf of the next byte to load
	cur   byte   // the loaded byte
	left  uint   // bits of cur not yet read
	zeros int    // zero bytes loaded in a row
	err   error
}

// loadByte loads the next RBSP byte into cur.
func (r *bitReader) loadByte() bool {
	if r.zeros >= 2 && r.pos < len(r.buf) && r.buf[r.pos] == 3 {
		r.pos++ // emulation_prevention_three_byte
		r.zeros = 0
	}
	if r.pos >= len(r.buf) {
		if r.err == nil {
			r.err = errors.New("h264: SPS: truncated")
		}
		return false
	}
	r.cur, r.left = r.buf[r.pos], 8
	r.pos++
	if r.cur == 0 {
		r.zeros++
	} else {
		r.zeros = 0
	}
	return true
}

// bit reads one bit.
func (r *bitReader) bit() uint32 {
	if r.left == 0 && (r.err != nil || !r.loadByte()) {
		return 0
	}
	r.left--
	return uint32(r.cur>>r.left) & 1
}

// flag reads a one-bit flag.
func (r *bitReader) flag() bool { return r.bit() == 1 }

// bits reads an n-bit unsigned integer, n <= 32.
func (r *bitReader) bits(n int) uint32 {
	var v uint32
	for range n {
		v = v<<1 | r.bit()
	}
	return v
}

// ue reads an Exp-Golomb coded unsigned integer (ue(v)). Codes longer than
// 32 bits, which no valid SPS field needs, set err.
func (r *bitReader) ue() uint32 {
	zeros := 0
	for r.bit() == 0 {
		if r.err != nil {
			return 0
		}
		if zeros++; zeros > 31 {
			r.err = errors.New("h264: SPS: Exp-Golomb code longer than 32 bits")
			return 0
		}
	}
	return uint32(1)<<zeros - 1 + r.bits(zeros)
}

// se reads an Exp-Golomb coded signed integer (se(v)).
func (r *bitReader) se() int64 {
	k := int64(r.ue())
	if k%2 == 1 {
		return (k + 1) / 2
	}
	return -k / 2
}

// skipScalingList reads a scaling_list() of size entries (H.264 7.3.2.1.1.1).
func (r *bitReader) skipScalingList(size int) error {
	last, next := int64(8), int64(8)
	for range size {
		if next != 0 {
			delta := r.se()
			if delta < -128 || delta > 127 {
				return r.fail("delta_scale", delta)
			}
			next = (last + delta + 256) % 256
		}
		if next != 0 {
			last = next
		}
	}
	return nil
}

// fail returns the read error if there is one, else an error naming the
// field whose value v is out of range.
func (r *bitReader) fail(field string, v any) error {
	if r.err != nil {
		return r.err
	}
	return fmt.Errorf("h264: SPS: %s %d out of range", field, v)
}
