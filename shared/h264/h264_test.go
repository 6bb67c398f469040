package h264

import (
	"bytes"
	"errors"
	"testing"
)

// Real parameter sets from an x264 1280x720 baseline stream.
var (
	testSPS = mustHex("6742c01fd9005005bb0110000003001000000303c0f1832480")
	testPPS = mustHex("68cb83cb20")
)

// stapA aggregates NAL units into a STAP-A payload.
func stapA(nals ...[]byte) []byte {
	p := []byte{0x78} // NRI 3, type 24
	for _, n := range nals {
		p = append(p, byte(len(n)>>8), byte(len(n)))
		p = append(p, n...)
	}
	return p
}

func TestInspect(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    PayloadInfo
		wantErr error
	}{
		{
			name:    "non-IDR slice is a complete non-key unit",
			payload: []byte{0x41, 0x9a, 0x01},
			want:    PayloadInfo{NALType: NALSlice, Start: true, End: true},
		},
		{
			name:    "IDR slice is a keyframe",
			payload: []byte{0x65, 0x88, 0x84},
			want:    PayloadInfo{NALType: NALIDR, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "SPS is a keyframe carrying an SPS",
			payload: testSPS,
			want:    PayloadInfo{NALType: NALSPS, Start: true, End: true, Keyframe: true, HasSPS: true},
		},
		{
			name:    "PPS is a keyframe without SPS",
			payload: testPPS,
			want:    PayloadInfo{NALType: NALPPS, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "SEI is not a keyframe",
			payload: []byte{0x06, 0x05, 0x01},
			want:    PayloadInfo{NALType: NALSEI, Start: true, End: true},
		},
		{
			name:    "forbidden_zero_bit is ignored",
			payload: []byte{0xe5, 0x88},
			want:    PayloadInfo{NALType: NALIDR, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "FU-A start of IDR is a keyframe",
			payload: []byte{0x7c, 0x85, 0x88, 0x84},
			want:    PayloadInfo{NALType: NALIDR, Start: true, Keyframe: true},
		},
		{
			name:    "FU-A middle of IDR is not a keyframe",
			payload: []byte{0x7c, 0x05, 0x11},
			want:    PayloadInfo{NALType: NALIDR},
		},
		{
			name:    "FU-A end of IDR is not a keyframe",
			payload: []byte{0x7c, 0x45, 0x11},
			want:    PayloadInfo{NALType: NALIDR, End: true},
		},
		{
			name:    "FU-A with S and E is accepted",
			payload: []byte{0x7c, 0xc5, 0x11},
			want:    PayloadInfo{NALType: NALIDR, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "FU-A of a whole SPS does not count as carrying an SPS",
			payload: append([]byte{0x7c, 0xc7}, testSPS[1:]...),
			want:    PayloadInfo{NALType: NALSPS, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "FU-A reserved R bit is ignored",
			payload: []byte{0x5c, 0xa1, 0x11},
			want:    PayloadInfo{NALType: NALSlice, Start: true},
		},
		{
			name:    "STAP-A with SPS and PPS is a keyframe carrying an SPS",
			payload: stapA(testSPS, testPPS),
			want:    PayloadInfo{NALType: NALSTAPA, Start: true, End: true, Keyframe: true, HasSPS: true},
		},
		{
			name:    "STAP-A with PPS and IDR is a keyframe without SPS",
			payload: stapA(testPPS, []byte{0x65, 0x88}),
			want:    PayloadInfo{NALType: NALSTAPA, Start: true, End: true, Keyframe: true},
		},
		{
			name:    "STAP-A of SEI and slice is not a keyframe",
			payload: stapA([]byte{0x06, 0x05}, []byte{0x41, 0x9a}),
			want:    PayloadInfo{NALType: NALSTAPA, Start: true, End: true},
		},
		{name: "empty payload", payload: nil, wantErr: errEmpty},
		{name: "type 0 is forbidden", payload: []byte{0x00, 0x01}, wantErr: errForbiddenType},
		{name: "type 30 is reserved", payload: []byte{0x1e, 0x01}, wantErr: errReservedType},
		{name: "type 31 is reserved", payload: []byte{0x1f, 0x01}, wantErr: errReservedType},
		{name: "STAP-B is interleaved mode only", payload: []byte{0x19, 0x00, 0x00, 0x00, 0x01, 0x41}, wantErr: errInterleaved},
		{name: "MTAP16 is interleaved mode only", payload: []byte{0x1a, 0x00}, wantErr: errInterleaved},
		{name: "MTAP24 is interleaved mode only", payload: []byte{0x1b, 0x00}, wantErr: errInterleaved},
		{name: "FU-B is interleaved mode only", payload: []byte{0x1d, 0x85, 0x00, 0x00, 0x01}, wantErr: errInterleaved},
		{name: "FU-A of 1 byte", payload: []byte{0x7c}, wantErr: errShortFUA},
		{name: "FU-A without data", payload: []byte{0x7c, 0x85}, wantErr: errShortFUA},
		{name: "FU-A of type 0", payload: []byte{0x7c, 0x80, 0x01}, wantErr: errFUAType},
		{name: "FU-A of a FU-A", payload: []byte{0x7c, 0x9c, 0x01}, wantErr: errFUAType},
		{name: "STAP-A without units", payload: []byte{0x78}, wantErr: errEmptySTAPA},
		{name: "STAP-A with half a length", payload: []byte{0x78, 0x00, 0x01, 0x41, 0x00}, wantErr: errSTAPALength},
		{name: "STAP-A with a zero-length unit", payload: []byte{0x78, 0x00, 0x00, 0x00, 0x01, 0x41}, wantErr: errSTAPAZeroUnit},
		{name: "STAP-A unit longer than the payload", payload: []byte{0x78, 0x00, 0x03, 0x41, 0x01}, wantErr: errSTAPALongUnit},
		{name: "STAP-A with a unit of type 0", payload: stapA([]byte{0x00, 0x01}), wantErr: errSTAPAUnitType},
		{name: "STAP-A inside STAP-A", payload: stapA(stapA(testPPS)), wantErr: errSTAPAUnitType},
		{name: "STAP-A with a FU-A unit", payload: stapA([]byte{0x7c, 0x85, 0x01}), wantErr: errSTAPAUnitType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Inspect(tt.payload)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Inspect(%x) error = %v, want %v", tt.payload, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Inspect(%x) = %+v, want %+v", tt.payload, got, tt.want)
			}
		})
	}
}

func TestSPSOf(t *testing.T) {
	idr := []byte{0x65, 0x88, 0x84}
	tests := []struct {
		name    string
		payload []byte
		want    []byte
	}{
		{"single SPS is returned whole", testSPS, testSPS},
		{"SPS inside STAP-A is found after other units", stapA(testPPS, testSPS, idr), testSPS},
		{"first of two SPS is returned", stapA(testSPS, append([]byte{0x67}, 0x64)), testSPS},
		{"IDR has no SPS", idr, nil},
		{"PPS has no SPS", testPPS, nil},
		{"STAP-A without SPS has none", stapA(testPPS, idr), nil},
		{"fragmented SPS is not complete", append([]byte{0x7c, 0xc7}, testSPS[1:]...), nil},
		{"truncated STAP-A yields nothing", stapA(testSPS)[:10], nil},
		{"empty payload has no SPS", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SPSOf(tt.payload)
			if !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Errorf("SPSOf(%x) = %x, want %x", tt.payload, got, tt.want)
			}
		})
	}
}

func TestSPSOfCannotBeAppendedOverPayload(t *testing.T) {
	payload := stapA(testSPS, testPPS)
	before := bytes.Clone(payload)
	sps := SPSOf(payload)
	_ = append(sps, 0xff)
	if !bytes.Equal(payload, before) {
		t.Errorf("appending to the SPS changed the payload: %x, want %x", payload, before)
	}
}

func TestInspectDoesNotAllocate(t *testing.T) {
	payloads := [][]byte{testSPS, stapA(testSPS, testPPS), {0x7c, 0x85, 0x88}, {0x1e}, {0x78, 0x00}}
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range payloads {
			_, _ = Inspect(p)
			_ = SPSOf(p)
		}
	})
	if allocs != 0 {
		t.Errorf("Inspect and SPSOf allocate %v times per run, want 0", allocs)
	}
}

func BenchmarkInspect(b *testing.B) {
	benchmarks := []struct {
		name    string
		payload []byte
	}{
		{"single", append([]byte{0x41}, make([]byte, 1000)...)},
		{"FU-A", append([]byte{0x7c, 0x85}, make([]byte, 1376)...)},
		{"STAP-A", stapA(testSPS, testPPS)},
		{"malformed", []byte{0x78, 0x00, 0x09, 0x41}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Inspect(bm.payload)
			}
		})
	}
}

func FuzzInspect(f *testing.F) {
	f.Add(testSPS)
	f.Add(testPPS)
	f.Add([]byte{0x7c, 0x85, 0x88, 0x84})
	f.Add(stapA(testSPS, testPPS))
	f.Add([]byte{0x78, 0x00, 0x09, 0x41})
	f.Fuzz(func(t *testing.T, payload []byte) {
		info, err := Inspect(payload)
		sps := SPSOf(payload)
		if err != nil {
			if info != (PayloadInfo{}) {
				t.Fatalf("Inspect(%x) = %+v with error %v, want zero info", payload, info, err)
			}
			return
		}
		if (sps != nil) != info.HasSPS {
			t.Fatalf("Inspect(%x).HasSPS = %v but SPSOf = %x", payload, info.HasSPS, sps)
		}
		if sps != nil && sps[0]&typeMask != NALSPS {
			t.Fatalf("SPSOf(%x) = %x, not an SPS", payload, sps)
		}
		if info.HasSPS && !info.Keyframe {
			t.Fatalf("Inspect(%x) = %+v: an SPS must make a keyframe", payload, info)
		}
	})
}
