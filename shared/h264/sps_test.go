package h264

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// SPS NAL units written by libx264 through ffmpeg, e.g.
// ffmpeg -f lavfi -i testsrc=size=1280x720:rate=30 -t 0.2 -pix_fmt yuv420p \
// -c:v libx264 -profile:v baseline -bsf:v h264_mp4toannexb -f h264 out.h264
func TestParseSPSOfX264Streams(t *testing.T) {
	tests := []struct {
		name string
		nal  string
		want SPS
	}{
		{
			name: "baseline 1280x720",
			nal:  "6742c01fd9005005bb0110000003001000000303c0f1832480",
			want: SPS{ProfileIDC: 66, ConstraintFlags: 0xc0, LevelIDC: 31, Width: 1280, Height: 720},
		},
		{
			name: "main 854x480 crops 10 columns",
			nal:  "674d401feca06c1ef3780880000003008000001e078c18cb",
			want: SPS{ProfileIDC: 77, ConstraintFlags: 0x40, LevelIDC: 31, Width: 854, Height: 480},
		},
		{
			name: "high 1280x720",
			nal:  "6764001facd9405005bb0110000003001000000303c0f1831960",
			want: SPS{ProfileIDC: 100, LevelIDC: 31, Width: 1280, Height: 720},
		},
		{
			name: "high 1920x1080 crops 8 rows",
			nal:  "67640028acd940780227e5c044000003000400000300f03c60c658",
			want: SPS{ProfileIDC: 100, LevelIDC: 40, Width: 1920, Height: 1080},
		},
		{
			name: "high 642x362 crops both ways",
			nal:  "6764001eacd940a42fe224c044000003000400000300f03c58b658",
			want: SPS{ProfileIDC: 100, LevelIDC: 30, Width: 642, Height: 362},
		},
		{
			name: "high 10 1920x1080",
			nal:  "676e0028a6cd940780227e5c0440000003004000000f03c60c6580",
			want: SPS{ProfileIDC: 110, LevelIDC: 40, Width: 1920, Height: 1080},
		},
		{
			name: "high 4:2:2 1280x720",
			nal:  "677a001fbcd9405005bb0110000003001000000303c0f1831960",
			want: SPS{ProfileIDC: 122, LevelIDC: 31, Width: 1280, Height: 720},
		},
		{
			name: "high 4:4:4 640x360 crops in luma samples",
			nal:  "67f4001e919b281405ff138088000003000800000301e078b16cb0",
			want: SPS{ProfileIDC: 244, LevelIDC: 30, Width: 640, Height: 360},
		},
		{
			name: "interlaced 720x576 counts field pairs",
			nal:  "6764001facd940b424d80880000003008000001e0f8b16cb",
			want: SPS{ProfileIDC: 100, LevelIDC: 31, Width: 720, Height: 576},
		},
		{
			name: "interlaced 1920x1080 crops in field pairs",
			nal:  "67640028acd94078044fde0220000003002000000783e2c5b2c0",
			want: SPS{ProfileIDC: 100, LevelIDC: 40, Width: 1920, Height: 1080},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSPS(mustHex(tt.nal))
			if err != nil {
				t.Fatalf("ParseSPS(%s): %v", tt.nal, err)
			}
			if got != tt.want {
				t.Errorf("ParseSPS(%s) = %+v, want %+v", tt.nal, got, tt.want)
			}
		})
	}
}

// bitWriter writes the RBSP of an SPS the way an encoder would, for the
// syntax that x264 never emits in an SPS (scaling matrices,
// pic_order_cnt_type 1, separate colour planes, 4:0:0). ffmpeg's
// trace_headers bitstream filter reads the SPS written in
// TestParseSPSOfHandWrittenSyntax field for field as ParseSPS does.
type bitWriter struct {
	rbsp []byte
	used uint // bits used in the last byte of rbsp; 0 means it is full
}

func (w *bitWriter) bits(v uint64, n int) *bitWriter {
	for i := n - 1; i >= 0; i-- {
		if w.used == 0 {
			w.rbsp = append(w.rbsp, 0)
		}
		w.rbsp[len(w.rbsp)-1] |= byte(v>>i&1) << (7 - w.used)
		w.used = (w.used + 1) % 8
	}
	return w
}

func (w *bitWriter) flag(b bool) *bitWriter {
	if b {
		return w.bits(1, 1)
	}
	return w.bits(0, 1)
}

func (w *bitWriter) ue(v uint64) *bitWriter {
	n := 0
	for x := v + 1; x > 1; x >>= 1 {
		n++
	}
	return w.bits(0, n).bits(v+1, n+1)
}

func (w *bitWriter) se(v int64) *bitWriter {
	if v > 0 {
		return w.ue(uint64(2*v - 1))
	}
	return w.ue(uint64(-2 * v))
}

// nal returns the SPS NAL unit: header, RBSP with its stop bit, and an
// emulation-prevention byte wherever two zero bytes precede a byte <= 3.
func (w *bitWriter) nal() []byte {
	w.bits(1, 1)
	out := []byte{0x67}
	zeros := 0
	for _, b := range w.rbsp {
		if zeros >= 2 && b <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		out = append(out, b)
		if b == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

func TestParseSPSOfHandWrittenSyntax(t *testing.T) {
	tests := []struct {
		name  string
		write func(w *bitWriter)
		want  SPS
	}{
		{
			name: "high profile with 4x4 and 8x8 scaling lists and pic_order_cnt_type 1",
			write: func(w *bitWriter) {
				w.bits(100, 8).bits(0, 8).bits(40, 8).ue(0)
				w.ue(1).ue(0).ue(0).flag(false) // 4:2:0, 8 bit, no bypass
				w.flag(true)                    // seq_scaling_matrix_present_flag
				w.flag(true)                    // list 0: 16 deltas
				for i := range 16 {
					w.se(int64(i%5) - 2)
				}
				w.flag(true).se(-8) // list 1: next scale 0 after one delta, default list
				for range 4 {
					w.flag(false)
				}
				w.flag(true) // list 6: 64 deltas, some at the extremes
				for i := range 64 {
					w.se([]int64{-128, 127, 3, 0}[i%4])
				}
				w.flag(false)
				w.ue(4)                                                      // log2_max_frame_num_minus4
				w.ue(1).flag(false).se(-3).se(7).ue(3).se(1).se(-1).se(1000) // pic_order_cnt_type 1
				w.ue(4).flag(false)                                          // max_num_ref_frames, gaps
				w.ue(119).ue(67).flag(true)                                  // 1920x1088, frame_mbs_only_flag
				w.flag(true)                                                 // direct_8x8_inference_flag
				w.flag(true).ue(0).ue(0).ue(0).ue(4)
				w.flag(false) // vui_parameters_present_flag
			},
			want: SPS{ProfileIDC: 100, LevelIDC: 40, Width: 1920, Height: 1080},
		},
		{
			name: "4:4:4 with 12 scaling lists and separate colour planes crops in luma samples",
			write: func(w *bitWriter) {
				w.bits(244, 8).bits(0, 8).bits(30, 8).ue(3)
				w.ue(3).flag(true).ue(2).ue(2).flag(true) // 4:4:4, separate planes, 10 bit, bypass
				w.flag(true)
				for i := range 12 {
					w.flag(true)
					size := 16
					if i >= 6 {
						size = 64
					}
					for range size {
						w.se(1)
					}
				}
				w.ue(0).ue(2) // pic_order_cnt_type 2
				w.ue(1).flag(false)
				w.ue(39).ue(22).flag(true).flag(true) // 640x368
				w.flag(true).ue(0).ue(1).ue(0).ue(2)
				w.flag(false) // vui_parameters_present_flag
			},
			want: SPS{ProfileIDC: 244, LevelIDC: 30, Width: 639, Height: 366},
		},
		{
			name: "4:0:0 monochrome crops in luma samples",
			write: func(w *bitWriter) {
				w.bits(100, 8).bits(0, 8).bits(30, 8).ue(0)
				w.ue(0).ue(0).ue(0).flag(false).flag(false) // 4:0:0
				w.ue(0).ue(0).ue(0)
				w.ue(1).flag(false)
				w.ue(39).ue(22).flag(true).flag(true)
				w.flag(true).ue(0).ue(1).ue(0).ue(2)
				w.flag(false) // vui_parameters_present_flag
			},
			want: SPS{ProfileIDC: 100, LevelIDC: 30, Width: 639, Height: 366},
		},
		{
			name: "emulation-prevention bytes among the fields are skipped",
			write: func(w *bitWriter) {
				w.bits(66, 8).bits(0xc0, 8).bits(31, 8).ue(0)
				w.ue(0).ue(0).ue(0).ue(1).flag(false)
				w.ue(1023).ue(511).flag(false).flag(false).flag(true) // 16384x16384 in fields
				w.flag(true).ue(2047).ue(2047).ue(0).ue(0)            // long runs of zero bits
				w.flag(false)                                         // vui_parameters_present_flag
			},
			want: SPS{ProfileIDC: 66, ConstraintFlags: 0xc0, LevelIDC: 31, Width: 16384 - 2*2*2047, Height: 16384},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w bitWriter
			tt.write(&w)
			nal := w.nal()
			if strings.HasPrefix(tt.name, "emulation") && !bytes.Contains(nal, []byte{0, 0, 3}) {
				t.Fatalf("test SPS %x has no emulation-prevention byte", nal)
			}
			got, err := ParseSPS(nal)
			if err != nil {
				t.Fatalf("ParseSPS(%x): %v", nal, err)
			}
			if got != tt.want {
				t.Errorf("ParseSPS(%x) = %+v, want %+v", nal, got, tt.want)
			}
		})
	}
}

func TestParseSPSRejects(t *testing.T) {
	valid := mustHex("6764001facd9405005bb0110000003001000000303c0f1831960")
	build := func(write func(w *bitWriter)) []byte {
		var w bitWriter
		write(&w)
		return w.nal()
	}
	// baseline writes a baseline SPS up to pic_order_cnt_type.
	baseline := func(w *bitWriter) *bitWriter {
		return w.bits(66, 8).bits(0, 8).bits(31, 8).ue(0).ue(0)
	}
	tests := []struct {
		name    string
		nal     []byte
		wantErr string
	}{
		{"empty", nil, "empty"},
		{"a PPS", testPPS, "NAL unit type 8"},
		{"header only", valid[:1], "truncated"},
		{"cut in the middle", valid[:8], "truncated"},
		{"cut before the cropping flag", valid[:9], "truncated"},
		{
			"seq_parameter_set_id above 31",
			build(func(w *bitWriter) { w.bits(66, 8).bits(0, 8).bits(31, 8).ue(32) }),
			"seq_parameter_set_id 32 out of range",
		},
		{
			"chroma_format_idc above 3",
			build(func(w *bitWriter) { w.bits(100, 8).bits(0, 8).bits(31, 8).ue(0).ue(4) }),
			"chroma_format_idc 4 out of range",
		},
		{
			"bit depth above 14",
			build(func(w *bitWriter) { w.bits(100, 8).bits(0, 8).bits(31, 8).ue(0).ue(1).ue(7) }),
			"bit_depth_luma_minus8 7 out of range",
		},
		{
			"scaling delta below -128",
			build(func(w *bitWriter) {
				w.bits(100, 8).bits(0, 8).bits(31, 8).ue(0).ue(1).ue(0).ue(0).flag(false)
				w.flag(true).flag(true).se(-129)
			}),
			"delta_scale -129 out of range",
		},
		{
			"log2_max_frame_num_minus4 above 12",
			build(func(w *bitWriter) { w.bits(66, 8).bits(0, 8).bits(31, 8).ue(0).ue(13) }),
			"log2_max_frame_num_minus4 13 out of range",
		},
		{
			"pic_order_cnt_type 3",
			build(func(w *bitWriter) { baseline(w).ue(3) }),
			"pic_order_cnt_type 3 out of range",
		},
		{
			"pic order count cycle above 255",
			build(func(w *bitWriter) { baseline(w).ue(1).flag(false).se(0).se(0).ue(256) }),
			"num_ref_frames_in_pic_order_cnt_cycle 256 out of range",
		},
		{
			"Exp-Golomb code of more than 32 bits",
			build(func(w *bitWriter) { w.bits(66, 8).bits(0, 8).bits(31, 8).bits(0, 40).bits(1, 1) }),
			"longer than 32 bits",
		},
		{
			"picture width above 65536",
			build(func(w *bitWriter) {
				baseline(w).ue(2).ue(1).flag(false).ue(4096).ue(44).flag(true).flag(true).flag(false)
			}),
			"pic_width_in_mbs_minus1 4096 out of range",
		},
		{
			"the largest Exp-Golomb width",
			build(func(w *bitWriter) {
				baseline(w).ue(2).ue(1).flag(false).ue(1<<32 - 2).ue(44).flag(true).flag(true).flag(false)
			}),
			"pic_width_in_mbs_minus1 4294967294 out of range",
		},
		{
			"picture height above 65536",
			build(func(w *bitWriter) {
				baseline(w).ue(2).ue(1).flag(false).ue(79).ue(4096).flag(true).flag(true).flag(false)
			}),
			"pic_height_in_map_units_minus1 4096 out of range",
		},
		{
			"cropping the whole width",
			build(func(w *bitWriter) {
				baseline(w).ue(2).ue(1).flag(false).ue(79).ue(44).flag(true).flag(true)
				w.flag(true).ue(320).ue(320).ue(0).ue(0)
			}),
			"leaves no picture",
		},
		{
			"cropping beyond the height",
			build(func(w *bitWriter) {
				baseline(w).ue(2).ue(1).flag(false).ue(79).ue(44).flag(true).flag(true)
				w.flag(true).ue(0).ue(0).ue(1<<32 - 2).ue(1<<32 - 2)
			}),
			"leaves no picture",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSPS(tt.nal)
			if err == nil {
				t.Fatalf("ParseSPS(%x) = %+v, want an error containing %q", tt.nal, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "h264: SPS: ") {
				t.Errorf("ParseSPS(%x) error = %q, want h264: SPS: ...%q...", tt.nal, err, tt.wantErr)
			}
		})
	}
}

func TestBitReaderDropsEmulationPreventionBytes(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"one", "0000030100", "00000100"},
		{"back to back", "000003000003", "00000000"},
		{"at the end", "000003", "0000"},
		{"only after two zeros", "0003000300", "0003000300"},
		{"the byte after is kept even if it is 3", "00000303", "000003"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bitReader{buf: mustHex(tt.in)}
			var got []byte
			for {
				b := byte(r.bits(8))
				if r.err != nil {
					break
				}
				got = append(got, b)
			}
			if hex.EncodeToString(got) != tt.want {
				t.Errorf("RBSP of %s = %x, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzParseSPS(f *testing.F) {
	f.Add(mustHex("6742c01fd9005005bb0110000003001000000303c0f1832480"))
	f.Add(mustHex("67f4001e919b281405ff138088000003000800000301e078b16cb0"))
	f.Add(mustHex("67640028acd94078044fde0220000003002000000783e2c5b2c0"))
	f.Add([]byte{0x67, 0x64, 0x00, 0x00, 0x03, 0x00})
	f.Fuzz(func(t *testing.T, nal []byte) {
		s, err := ParseSPS(nal)
		if err != nil {
			if s != (SPS{}) {
				t.Fatalf("ParseSPS(%x) = %+v with error %v, want zero SPS", nal, s, err)
			}
			return
		}
		if s.Width <= 0 || s.Width > 16*maxMbs || s.Height <= 0 || s.Height > 2*16*maxMbs {
			t.Fatalf("ParseSPS(%x) = %dx%d, out of range", nal, s.Width, s.Height)
		}
	})
}
