package h264

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pion/rtp/codecs"
)

// FTL's video packetization: a single NAL unit if it fits in 1380 bytes,
// else FU-A with 1378 bytes of the unit per fragment.
const (
	ftlMaxSingle   = 1380
	ftlFragmentLen = 1378
)

// ftlPayloads packetizes one NAL unit the way FTL clients do.
func ftlPayloads(nal []byte) [][]byte {
	if len(nal) <= ftlMaxSingle {
		return [][]byte{nal}
	}
	var out [][]byte
	data := nal[1:]
	for i := 0; i < len(data); i += ftlFragmentLen {
		end := min(i+ftlFragmentLen, len(data))
		hdr := nal[0] & typeMask
		if i == 0 {
			hdr |= fuStart
		}
		if end == len(data) {
			hdr |= fuEnd
		}
		out = append(out, append([]byte{nal[0]&^typeMask | NALFUA, hdr}, data[i:end]...))
	}
	return out
}

// depacketize returns the NAL units pion reassembles from payloads.
func depacketize(t testing.TB, payloads [][]byte) [][]byte {
	t.Helper()
	d := codecs.H264Packet{IsAVC: true}
	var nals [][]byte
	for _, p := range payloads {
		avc, err := d.Unmarshal(p)
		if err != nil {
			t.Fatalf("depacketize %x: %v", p, err)
		}
		for len(avc) > 0 {
			n := binary.BigEndian.Uint32(avc)
			nals = append(nals, avc[4:4+n])
			avc = avc[4+n:]
		}
	}
	return nals
}

// cut runs every payload through a Fragmenter and returns the pieces,
// failing if a piece is longer than limit (or 3) or the last flag is wrong.
func cut(t testing.TB, payloads [][]byte, limit int) [][]byte {
	t.Helper()
	var f Fragmenter
	buf := make([]byte, max(limit, 3))
	var pieces [][]byte
	for _, p := range payloads {
		f.Reset(p, limit)
		before, sawLast := len(pieces), false
		for {
			n, last := f.Next(buf)
			if n == 0 {
				break
			}
			if sawLast {
				t.Fatalf("cutting %x to %d: piece after the last one", p, limit)
			}
			if n > len(buf) {
				t.Fatalf("cutting %x to %d: piece of %d bytes", p, limit, n)
			}
			sawLast = last
			pieces = append(pieces, bytes.Clone(buf[:n]))
		}
		if !sawLast && len(pieces) > before {
			t.Fatalf("cutting %x to %d: no piece marked last", p, limit)
		}
	}
	return pieces
}

// randomNAL returns a NAL unit of size bytes with a random NRI and a
// type among those an encoder sends.
func randomNAL(rng *rand.Rand, size int) []byte {
	types := []uint8{NALSlice, NALIDR, NALSEI, NALSPS, NALPPS, NALAUD}
	nal := make([]byte, size)
	for i := range nal {
		nal[i] = byte(rng.Uint32())
	}
	nal[0] = byte(rng.IntN(4))<<5 | types[rng.IntN(len(types))]
	return nal
}

func TestFragmenterRoundTripsFTLPackets(t *testing.T) {
	for _, limit := range []int{1188, 1380, 100, 3} {
		t.Run(fmt.Sprintf("max %d", limit), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(limit)))
			for range 200 {
				var nals, payloads [][]byte
				for range 1 + rng.IntN(4) {
					nal := randomNAL(rng, 1+rng.IntN(20000))
					nals = append(nals, nal)
					payloads = append(payloads, ftlPayloads(nal)...)
				}
				got := depacketize(t, cut(t, payloads, limit))
				if !equalNALs(got, nals) {
					t.Fatalf("max %d: pieces of NAL units of sizes %v depacketize to sizes %v", limit, sizes(nals), sizes(got))
				}
			}
		})
	}
}

func TestFragmenterRoundTripsSTAPA(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, limit := range []int{1188, 100, 10, 3} {
		for range 100 {
			var nals [][]byte
			for range 1 + rng.IntN(5) {
				nals = append(nals, randomNAL(rng, 1+rng.IntN(300)))
			}
			got := depacketize(t, cut(t, [][]byte{stapA(nals...)}, limit))
			if !equalNALs(got, nals) {
				t.Fatalf("max %d: STAP-A of NAL units of sizes %v depacketizes to sizes %v", limit, sizes(nals), sizes(got))
			}
		}
	}
}

func equalNALs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sizes(nals [][]byte) []int {
	s := make([]int, len(nals))
	for i, n := range nals {
		s[i] = len(n)
	}
	return s
}

func TestFragmenterPieces(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		max     int
		want    []string
	}{
		{
			name:    "a payload that fits comes out unchanged",
			payload: mustHex("65aabbccdd"),
			max:     5,
			want:    []string{"65aabbccdd"},
		},
		{
			name:    "an invalid payload that fits comes out unchanged",
			payload: mustHex("1e0102"),
			max:     5,
			want:    []string{"1e0102"},
		},
		{
			name:    "a single NAL unit becomes FU-A keeping F and NRI",
			payload: mustHex("e5aabbccdd"),
			max:     4,
			want:    []string{"fc85aabb", "fc45ccdd"},
		},
		{
			name:    "an FU-A start keeps S on its first piece only",
			payload: mustHex("7c85aabbcc"),
			max:     4,
			want:    []string{"7c85aabb", "7c05cc"},
		},
		{
			name:    "an FU-A middle gets neither S nor E",
			payload: mustHex("7c05aabbcc"),
			max:     4,
			want:    []string{"7c05aabb", "7c05cc"},
		},
		{
			name:    "an FU-A end keeps E on its last piece only",
			payload: mustHex("7c45aabbcc"),
			max:     3,
			want:    []string{"7c05aa", "7c05bb", "7c45cc"},
		},
		{
			name:    "an FU-A with S and E is split between first and last pieces",
			payload: mustHex("5cc1aabbcc"),
			max:     3,
			want:    []string{"5c81aa", "5c01bb", "5c41cc"},
		},
		{
			name:    "an FU-A R bit is cleared",
			payload: mustHex("5ca1aabb"),
			max:     3,
			want:    []string{"5c81aa", "5c01bb"},
		},
		{
			name:    "a STAP-A is split into single NAL units and FU-A",
			payload: stapA(mustHex("6742"), mustHex("68cb"), mustHex("65aabbccdd")),
			max:     4,
			want:    []string{"6742", "68cb", "7c85aabb", "7c45ccdd"},
		},
		{
			name:    "an invalid payload that does not fit yields nothing",
			payload: mustHex("780005aabb"),
			max:     4,
		},
		{
			name:    "an empty payload yields nothing",
			payload: nil,
			max:     4,
		},
		{
			name:    "max below 3 is treated as 3",
			payload: mustHex("41aabbcc"),
			max:     1,
			want:    []string{"5c81aa", "5c01bb", "5c41cc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Fragmenter
			f.Reset(tt.payload, tt.max)
			buf := make([]byte, 3+tt.max)
			var got []string
			for {
				n, last := f.Next(buf)
				if n == 0 {
					break
				}
				got = append(got, fmt.Sprintf("%x", buf[:n]))
				if last != (len(got) == len(tt.want)) {
					t.Errorf("piece %d: last = %v", len(got), last)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("pieces of %x cut to %d = %v, want %v", tt.payload, tt.max, got, tt.want)
			}
		})
	}
}

func TestFragmenterZeroValueYieldsNothing(t *testing.T) {
	var f Fragmenter
	if n, last := f.Next(make([]byte, 10)); n != 0 || last {
		t.Errorf("Next on a zero Fragmenter = %d, %v, want 0, false", n, last)
	}
}

func TestFragmenterDoesNotAllocate(t *testing.T) {
	payloads := [][]byte{
		randomNAL(rand.New(rand.NewPCG(3, 3)), 1380),
		ftlPayloads(randomNAL(rand.New(rand.NewPCG(4, 4)), 5000))[1],
		stapA(testSPS, testPPS, make([]byte, 1500)),
		{0x1e, 0x00},
	}
	payloads[2][len(payloads[2])-1500] = 0x65
	var f Fragmenter
	buf := make([]byte, 1188)
	allocs := testing.AllocsPerRun(100, func() {
		for _, p := range payloads {
			for f.Reset(p, 1188); ; {
				if n, _ := f.Next(buf); n == 0 {
					break
				}
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Fragmenter allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkFragmenter(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	benchmarks := []struct {
		name    string
		payload []byte
	}{
		{"fits", randomNAL(rng, 1000)},
		{"single NAL", randomNAL(rng, 1380)},
		{"FU-A", ftlPayloads(randomNAL(rng, 5000))[1]},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			var f Fragmenter
			buf := make([]byte, 1188)
			b.ReportAllocs()
			b.SetBytes(int64(len(bm.payload)))
			for b.Loop() {
				for f.Reset(bm.payload, 1188); ; {
					if n, _ := f.Next(buf); n == 0 {
						break
					}
				}
			}
		})
	}
}

// FuzzFragmenter checks on any payload and max that Next never writes
// more than max bytes, and that the pieces of a payload Inspect accepts
// depacketize to the same NAL units as the payload itself.
func FuzzFragmenter(f *testing.F) {
	f.Add(mustHex("65aabbccdd"), 4)
	f.Add(mustHex("7c05aabbcc"), 3)
	f.Add(mustHex("7c85aabbccdd"), 4)
	f.Add(stapA(testSPS, testPPS, mustHex("65aabbccdd")), 10)
	f.Add(mustHex("780005aabb"), 4)
	f.Fuzz(func(t *testing.T, payload []byte, limit int) {
		limit = max(limit%2000, 3)
		pieces := cut(t, [][]byte{payload}, limit)
		for _, p := range pieces {
			if len(p) > limit {
				t.Fatalf("piece %x longer than %d", p, limit)
			}
		}
		info, err := Inspect(payload)
		if err != nil {
			if len(payload) > limit && len(pieces) > 0 {
				t.Fatalf("invalid %x (%v) cut to %d gave %d pieces, want none", payload, err, limit, len(pieces))
			}
			return
		}
		// pion drops the forbidden_zero_bit when it reassembles FU-A.
		clearF := func(nals [][]byte) [][]byte {
			for _, n := range nals {
				n[0] &^= 0x80
			}
			return nals
		}
		want := clearF(depacketize(t, [][]byte{bytes.Clone(payload)}))
		got := clearF(depacketize(t, pieces))
		if !equalNALs(got, want) {
			t.Fatalf("pieces %x of %x depacketize to %x, want %x", pieces, payload, got, want)
		}
		if info.NALType == NALSTAPA || payload[0]&typeMask != NALFUA {
			return
		}
		// A fragment of a NAL unit keeps its indicator, type, S and E.
		for i, p := range pieces {
			start := p[1]&fuStart != 0
			end := p[1]&fuEnd != 0
			if p[0] != payload[0] || p[1]&typeMask != info.NALType ||
				start != (info.Start && i == 0) || end != (info.End && i == len(pieces)-1) {
				t.Fatalf("piece %d of %x is %x", i, payload, p)
			}
		}
	})
}
