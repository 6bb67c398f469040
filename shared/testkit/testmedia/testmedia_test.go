package testmedia

import (
	"bytes"
	"slices"
	"testing"

	"github.com/pion/webrtc/v3/pkg/media/oggreader"
)

const (
	nalSlice = 1
	nalIDR   = 5
	nalSEI   = 6
	nalSPS   = 7
	nalPPS   = 8
	nalAUD   = 9
	nalFill  = 12
)

func TestMediaIsSmallEnoughToCommit(t *testing.T) {
	if n := len(H264()) + len(Opus()); n > 1500*1000 {
		t.Errorf("test media is %d bytes, want < 1.5 MB", n)
	}
	if n := len(mustRead("video-360.h264")) + len(mustRead("video-180.h264")); n > 500*1000 {
		t.Errorf("the lower layers are %d bytes, want < 500 kB", n)
	}
}

// TestLayersAreThePictureAtThreeSizesWithKeyframesTogether: the simulcast
// layers have the resolutions LayerHeights says, the same frames, and
// their IDRs on the same frames, with SPS and PPS before each.
func TestLayersAreThePictureAtThreeSizesWithKeyframesTogether(t *testing.T) {
	layers, err := Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(LayerHeights) {
		t.Fatalf("%d layers, want %d", len(layers), len(LayerHeights))
	}
	var idrs [][]int
	for l, nals := range layers {
		w, h := spsSize(t, nals[0])
		if h != LayerHeights[l] || w != h*16/9 {
			t.Errorf("layer %d is %dx%d, want %dx%d", l, w, h, LayerHeights[l]*16/9, LayerHeights[l])
		}
		var frames []int
		frame := 0
		for i, nal := range nals {
			switch nal[0] & 0x1f {
			case nalIDR:
				if i < 2 || nals[i-2][0]&0x1f != nalSPS || nals[i-1][0]&0x1f != nalPPS {
					t.Errorf("layer %d: IDR at frame %d is not preceded by SPS and PPS", l, frame)
				}
				frames = append(frames, frame)
				frame++
			case nalSlice:
				frame++
			}
		}
		if frame != Seconds*FrameRate {
			t.Errorf("layer %d has %d frames, want %d", l, frame, Seconds*FrameRate)
		}
		idrs = append(idrs, frames)
	}
	for l := 1; l < len(idrs); l++ {
		if !slices.Equal(idrs[l], idrs[0]) {
			t.Errorf("layer %d has IDRs at frames %v, layer 0 at %v", l, idrs[l], idrs[0])
		}
	}
}

func TestH264HasAKeyframeEverySecondWithSPSAndPPSBeforeIt(t *testing.T) {
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	frame := 0
	for i, nal := range nals {
		typ := nal[0] & 0x1f
		switch typ {
		case nalIDR:
			if frame%KeyframeEvery != 0 {
				t.Errorf("IDR at frame %d, want one every %d frames", frame, KeyframeEvery)
			}
			if i < 2 || nals[i-2][0]&0x1f != nalSPS || nals[i-1][0]&0x1f != nalPPS {
				t.Errorf("IDR at frame %d (NAL %d) is not preceded by SPS and PPS", frame, i)
			}
			frame++
		case nalSlice:
			if frame%KeyframeEvery == 0 {
				t.Errorf("frame %d is a non-IDR slice, want an IDR", frame)
			}
			frame++
		case nalSPS, nalPPS:
		default:
			t.Errorf("NAL %d has type %d, want only SPS, PPS, IDR and non-IDR slices", i, typ)
		}
	}
	if want := 4 * FrameRate; frame != want {
		t.Errorf("got %d frames, want %d (4 s at %d fps)", frame, want, FrameRate)
	}
}

func TestH264HasOneSlicePerFrameAndNoBFrames(t *testing.T) {
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	for i, nal := range nals {
		typ := nal[0] & 0x1f
		if typ != nalSlice && typ != nalIDR {
			continue
		}
		r := bitReader{b: unescape(nal[1:])}
		if firstMB := r.ue(); firstMB != 0 {
			t.Errorf("NAL %d: first_mb_in_slice %d, want 0 (one slice per frame)", i, firstMB)
		}
		sliceType := r.ue() % 5
		if sliceType != 0 && sliceType != 2 { // P or I
			t.Errorf("NAL %d: slice_type %d, want P or I only", i, sliceType)
		}
	}
}

func TestH264IsConstrainedBaseline720p(t *testing.T) {
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	sps := nals[0]
	if sps[0]&0x1f != nalSPS {
		t.Fatalf("first NAL has type %d, want SPS", sps[0]&0x1f)
	}
	if profile, constraints := sps[1], sps[2]; profile != 66 || constraints&0x40 == 0 {
		t.Errorf("profile_idc %d constraint flags %08b, want 66 with constraint_set1 (constrained baseline)", profile, constraints)
	}
	w, h := spsSize(t, sps)
	if w != Width || h != Height {
		t.Errorf("SPS says %dx%d, want %dx%d", w, h, Width, Height)
	}
}

func TestH264HasNALUnitsLargerThanOneFTLPacket(t *testing.T) {
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	large := 0
	for _, nal := range nals {
		if len(nal) > 1400 {
			large++
		}
	}
	if large == 0 {
		t.Error("no NAL unit is larger than 1400 bytes: FU-A would go untested")
	}
}

func TestH264HasNoSEIOrAUDOrFiller(t *testing.T) {
	// The reader drops SEI units, so look at the raw stream.
	raw := H264()
	for i := 0; i+3 < len(raw); i++ {
		if raw[i] != 0 || raw[i+1] != 0 || raw[i+2] != 1 {
			continue
		}
		switch typ := raw[i+3] & 0x1f; typ {
		case nalSEI, nalAUD, nalFill:
			t.Errorf("NAL of type %d at byte %d; OBS strips those", typ, i+3)
		}
	}
}

func TestSplitH264KeepsEveryByteOfEveryNAL(t *testing.T) {
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	raw, pos := H264(), 0
	for i, nal := range nals {
		switch {
		case bytes.HasPrefix(raw[pos:], []byte{0, 0, 0, 1}):
			pos += 4
		case bytes.HasPrefix(raw[pos:], []byte{0, 0, 1}):
			pos += 3
		default:
			t.Fatalf("NAL %d: no start code at byte %d", i, pos)
		}
		if !bytes.HasPrefix(raw[pos:], nal) {
			t.Fatalf("NAL %d: does not match the file at byte %d", i, pos)
		}
		pos += len(nal)
	}
	if pos != len(raw) {
		t.Errorf("NAL units end at byte %d of %d", pos, len(raw))
	}
}

func TestOpusIsStereo48kHzIn20msPacketsLastingAsLongAsTheVideo(t *testing.T) {
	_, head, err := oggreader.NewWith(bytes.NewReader(Opus()))
	if err != nil {
		t.Fatal(err)
	}
	if head.Channels != 2 || head.SampleRate != OpusSampleRate {
		t.Errorf("OpusHead: %d channels at %d Hz, want 2 at %d", head.Channels, head.SampleRate, OpusSampleRate)
	}
	packets, err := OpusPackets()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range packets {
		if len(p) == 0 {
			t.Fatalf("packet %d is empty", i)
		}
		if d := opusDurationMicros(p[0]); d != OpusFrameLength*1000 {
			t.Errorf("packet %d (TOC %#02x) lasts %d µs, want %d ms", i, p[0], d, OpusFrameLength)
		}
		if p[0]&0x04 == 0 {
			t.Errorf("packet %d (TOC %#02x) is mono", i, p[0])
		}
	}
	// Exactly as long as the video, so that the two loop together.
	if n := len(packets); n != Seconds*1000/OpusFrameLength {
		t.Errorf("got %d packets, want %d (%d s of 20 ms)", n, Seconds*1000/OpusFrameLength, Seconds)
	}
	nals, err := NALUnits()
	if err != nil {
		t.Fatal(err)
	}
	frames := 0
	for _, nal := range nals {
		if typ := nal[0] & 0x1f; typ == 1 || typ == 5 { // one slice per frame
			frames++
		}
	}
	if frames != Seconds*FrameRate {
		t.Errorf("the video has %d frames, want %d (%d s at %d fps)", frames, Seconds*FrameRate, Seconds, FrameRate)
	}
}

func TestSplitOggJoinsPacketsAcrossSegmentsAndPages(t *testing.T) {
	big := bytes.Repeat([]byte{0xfc, 1, 2, 3, 4}, 130) // 650 bytes: 255+255+140
	ogg := buildOgg([][][]byte{
		{[]byte("OpusHead\x01\x02\x38\x01\x80\xbb\x00\x00\x00\x00\x00")},
		{[]byte("OpusTags")},
		{[]byte{0xfc, 9}, big[:510]}, // big continues on the next page
		{big[510:], []byte{0xfc, 7, 7}},
	})
	packets, err := SplitOgg(ogg)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{{0xfc, 9}, big, {0xfc, 7, 7}}
	if len(packets) != len(want) {
		t.Fatalf("got %d packets, want %d", len(packets), len(want))
	}
	for i := range want {
		if !bytes.Equal(packets[i], want[i]) {
			t.Errorf("packet %d: got %d bytes, want %d", i, len(packets[i]), len(want[i]))
		}
	}
}

// buildOgg makes an Ogg stream, one page per element of pages; a page's
// last piece continues on the next page when its length is a multiple of
// 255 (the lacing then ends with 255).
func buildOgg(pages [][][]byte) []byte {
	var out []byte
	for i, pieces := range pages {
		var lacing, payload []byte
		for _, piece := range pieces {
			n := len(piece)
			for n >= 255 {
				lacing = append(lacing, 255)
				n -= 255
			}
			if len(piece)%255 != 0 || len(piece) == 0 {
				lacing = append(lacing, byte(n))
			}
			payload = append(payload, piece...)
		}
		h := make([]byte, 27)
		copy(h, "OggS")
		if i == 0 {
			h[5] = 2 // beginning of stream
		}
		h[18] = byte(i)
		h[26] = byte(len(lacing))
		page := append(append(h, lacing...), payload...)
		crc := oggCRC(page)
		page[22], page[23], page[24], page[25] = byte(crc), byte(crc>>8), byte(crc>>16), byte(crc>>24)
		out = append(out, page...)
	}
	return out
}

func oggCRC(b []byte) uint32 {
	var crc uint32
	for _, v := range b {
		crc ^= uint32(v) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// opusDurationMicros returns the duration of an Opus packet with a single
// frame (code 0) from its TOC byte (RFC 6716 section 3.1), or -1.
func opusDurationMicros(toc byte) int {
	if toc&0x03 != 0 {
		return -1 // several frames: not what the media should hold
	}
	config := int(toc >> 3)
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		return []int{10000, 20000, 40000, 60000}[config%4]
	case config < 16: // hybrid: 10, 20 ms
		return []int{10000, 20000}[config%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		return []int{2500, 5000, 10000, 20000}[config%4]
	}
}

// spsSize returns the picture size a (baseline) SPS describes.
func spsSize(t *testing.T, sps []byte) (width, height int) {
	t.Helper()
	r := bitReader{b: unescape(sps[4:])} // after NAL header, profile, constraints, level
	r.ue()                               // seq_parameter_set_id
	r.ue()                               // log2_max_frame_num_minus4
	switch r.ue() {                      // pic_order_cnt_type
	case 0:
		r.ue() // log2_max_pic_order_cnt_lsb_minus4
	case 1:
		t.Fatal("pic_order_cnt_type 1 is not expected from x264")
	}
	r.ue()  // max_num_ref_frames
	r.bit() // gaps_in_frame_num_value_allowed_flag
	w := r.ue() + 1
	h := r.ue() + 1
	frameMBsOnly := r.bit()
	if frameMBsOnly == 0 {
		r.bit() // mb_adaptive_frame_field_flag
	}
	r.bit() // direct_8x8_inference_flag
	var left, right, top, bottom int
	if r.bit() == 1 {
		left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
	}
	return w*16 - 2*(left+right), h*16*(2-frameMBsOnly) - 2*(top+bottom)
}

// unescape removes emulation prevention bytes (00 00 03 → 00 00).
func unescape(b []byte) []byte {
	out := make([]byte, 0, len(b))
	zeros := 0
	for _, v := range b {
		if zeros >= 2 && v == 3 {
			zeros = 0
			continue
		}
		if v == 0 {
			zeros++
		} else {
			zeros = 0
		}
		out = append(out, v)
	}
	return out
}

type bitReader struct {
	b   []byte
	pos int
}

func (r *bitReader) bit() int {
	if r.pos >= 8*len(r.b) {
		return 0
	}
	v := int(r.b[r.pos/8]>>(7-r.pos%8)) & 1
	r.pos++
	return v
}

// ue reads an unsigned Exp-Golomb code.
func (r *bitReader) ue() int {
	zeros := 0
	for r.bit() == 0 && zeros < 32 {
		zeros++
	}
	v := 1
	for range zeros {
		v = v<<1 | r.bit()
	}
	return v - 1
}
