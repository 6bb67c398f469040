package packetcache

import (
	"bytes"
	"testing"
)

// pk is a cache input in tests, with the hub's marks: kind "key" (the
// first packet of a keyframe), "new" (the first packet of a new stream),
// "newkey" (both), anything else none; marker on the last packet of a
// frame.
func pk(seq uint16, kind string, marker bool) Packet {
	p := Packet{Seq: seq, TS: 100, Marker: marker, Payload: []byte{byte(seq), byte(seq >> 8), 0xaa}}
	p.Keyframe = kind == "key" || kind == "newkey"
	p.StreamStart = kind == "new" || kind == "newkey"
	p.StreamFrom = seq
	return p
}

// from makes p, a stream start, say its stream begins at seq.
func from(p Packet, seq uint16) Packet {
	p.StreamFrom = seq
	return p
}

func TestPacketCacheKeyframes(t *testing.T) {
	tests := []struct {
		name     string
		in       []Packet
		wantFrom uint16
		wantN    int
		wantOK   bool
	}{
		{
			name:   "no keyframe yet: no GOP",
			in:     []Packet{pk(1, "p", true), pk(2, "p", true)},
			wantOK: false,
		},
		{
			name:     "the packet the hub marks starts a keyframe",
			in:       []Packet{pk(10, "key", false), pk(11, "idr", false), pk(12, "idr", true), pk(13, "p", true)},
			wantFrom: 10, wantN: 4, wantOK: true,
		},
		{
			name:     "the keyframe's first packet, lost and recovered late, still starts it",
			in:       []Packet{pk(11, "idr", false), pk(12, "idr", true), pk(13, "p", true), pk(10, "key", false)},
			wantFrom: 10, wantN: 4, wantOK: true,
		},
		{
			name:   "packets the hub did not mark start nothing, whatever they carry",
			in:     []Packet{pk(10, "idr", false), pk(11, "idr", true), pk(12, "p", true)},
			wantOK: false,
		},
		{
			name: "the newest keyframe wins",
			in: []Packet{
				pk(1, "p", true), pk(2, "key", false), pk(3, "idr", true),
				pk(4, "p", true), pk(5, "key", false), pk(6, "idr", true), pk(7, "p", true),
			},
			wantFrom: 5, wantN: 3, wantOK: true,
		},
		{
			name:     "an older keyframe coming late does not replace the newest",
			in:       []Packet{pk(5, "key", false), pk(6, "p", true), pk(2, "key", false)},
			wantFrom: 5, wantN: 2, wantOK: true,
		},
		{
			name:   "a new stream drops the keyframe before it",
			in:     []Packet{pk(1, "key", false), pk(2, "p", true), pk(3, "new", true), pk(4, "p", true)},
			wantOK: false,
		},
		{
			name:     "a new stream that starts with a keyframe keeps it",
			in:       []Packet{pk(1, "key", false), pk(2, "p", true), pk(3, "newkey", true), pk(4, "p", true)},
			wantFrom: 3, wantN: 2, wantOK: true,
		},
		{
			name:   "a keyframe of the old stream coming late is not taken",
			in:     []Packet{pk(1, "p", true), pk(4, "new", true), pk(5, "p", true), pk(2, "key", true)},
			wantOK: false,
		},
		{
			name:     "the new stream's next keyframe is taken",
			in:       []Packet{pk(1, "key", true), pk(4, "new", true), pk(5, "key", true), pk(6, "p", true)},
			wantFrom: 5, wantN: 2, wantOK: true,
		},
		{
			name:     "a new stream's keyframe, lost and recovered after its later packets, is taken",
			in:       []Packet{pk(1, "key", true), pk(2, "p", true), from(pk(5, "new", true), 3), pk(4, "p", true), pk(3, "key", false)},
			wantFrom: 3, wantN: 3, wantOK: true,
		},
		{
			name: "wrap-around of sequence numbers",
			in: []Packet{
				pk(65534, "p", true), pk(65535, "key", false), pk(0, "idr", true), pk(1, "p", true),
			},
			wantFrom: 65535, wantN: 3, wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(64, 64)
			for _, p := range tt.in {
				if ok, _ := c.Store(p); !ok {
					t.Fatalf("store(%d) refused", p.Seq)
				}
			}
			from, n, ok := c.GOP()
			if ok != tt.wantOK || (ok && (from != tt.wantFrom || n != tt.wantN)) {
				t.Fatalf("gop() = %d, %d, %v; want %d, %d, %v", from, n, ok, tt.wantFrom, tt.wantN, tt.wantOK)
			}
		})
	}
}

// A stream start far behind (farther than the ring reaches) no longer
// guards against older keyframes, also when the numbers wrapped around.
func TestPacketCacheForgetsAStreamStartFarBehind(t *testing.T) {
	c := New(8, 8)
	c.Store(pk(100, "new", true))
	for seq := uint16(101); seq != 100+40000; seq++ {
		c.Store(pk(seq, "p", true))
	}
	c.Store(pk(100+40000, "key", true))
	if from, _, ok := c.GOP(); !ok || from != 100+40000 {
		t.Fatalf("gop from %d (%v), want the keyframe at %d", from, ok, 100+40000)
	}
}

func TestPacketCacheReportsKeyframeStartOnlyForTheNewestPacket(t *testing.T) {
	c := New(64, 64)
	steps := []struct {
		p    Packet
		want bool
	}{
		{pk(1, "p", true), false},
		{pk(2, "key", false), true},
		{pk(3, "idr", true), false},
		{pk(6, "p", true), false},
		{pk(5, "key", false), false}, // late: it becomes the cached keyframe, but viewers already passed it
		{pk(4, "key", false), false}, // late and older than 5
	}
	for _, s := range steps {
		if _, got := c.Store(s.p); got != s.want {
			t.Fatalf("store(%d) keyframeStart = %v, want %v", s.p.Seq, got, s.want)
		}
	}
	if from, _, ok := c.GOP(); !ok || from != 5 {
		t.Fatalf("gop starts at %d (%v), want 5", from, ok)
	}
}

func TestPacketCacheStoreAndLoad(t *testing.T) {
	c := New(8, 8)
	buf := make([]byte, MaxPayload)

	t.Run("a stored payload loads byte for byte", func(t *testing.T) {
		p := pk(100, "p", true)
		c.Store(p)
		m, ok := c.Load(100, buf)
		if !ok || !bytes.Equal(buf[:m.N], p.Payload) || m.TS != p.TS || !m.Marker() || m.Seq != 100 {
			t.Fatalf("load = %+v %v %x", m, ok, buf[:m.N])
		}
	})
	t.Run("a duplicate is refused", func(t *testing.T) {
		if ok, _ := c.Store(pk(100, "p", true)); ok {
			t.Fatal("duplicate stored")
		}
	})
	t.Run("a packet older than its slot's is refused", func(t *testing.T) {
		c.Store(pk(108, "p", true)) // same slot as 100, newer
		if ok, _ := c.Store(pk(100, "p", true)); ok {
			t.Fatal("old packet overwrote a newer one")
		}
		if _, ok := c.Load(100, buf); ok {
			t.Fatal("100 still loads after 108 took its slot")
		}
	})
	t.Run("a payload longer than a slot is refused", func(t *testing.T) {
		p := pk(109, "p", true)
		p.Payload = make([]byte, MaxPayload+1)
		if ok, _ := c.Store(p); ok {
			t.Fatal("oversize payload stored")
		}
	})
	t.Run("an unknown sequence number does not load", func(t *testing.T) {
		if _, ok := c.Load(7, buf); ok {
			t.Fatal("loaded a packet never stored")
		}
	})
}

func TestPacketCacheForgetsAKeyframeItOverwrote(t *testing.T) {
	c := New(8, 8)
	c.Store(pk(1, "p", true))
	c.Store(pk(2, "key", false))
	c.Store(pk(3, "idr", true))
	for seq := uint16(4); seq < 10; seq++ {
		c.Store(pk(seq, "p", true))
		if _, _, ok := c.GOP(); !ok {
			t.Fatalf("GOP lost at %d while the cache still holds it", seq)
		}
	}
	c.Store(pk(10, "p", true)) // slot of 2
	if _, _, ok := c.GOP(); ok {
		t.Fatal("GOP still offered after its keyframe was overwritten")
	}
}

func TestPacketCacheGOPLongerThanTheCacheAfterAJump(t *testing.T) {
	c := New(8, 8)
	c.Store(pk(1, "p", true))
	c.Store(pk(2, "key", true))
	c.Store(pk(20, "p", true)) // a jump past the ring, not touching slot 2
	if _, _, ok := c.GOP(); ok {
		t.Fatal("GOP offered though it spans more than the cache")
	}
}

// A GOP longer than the cache grows it, by doubling up to its maximum,
// and keeps every packet of the GOP with its payload.
func TestPacketCacheGrowsToHoldTheGOP(t *testing.T) {
	c := New(8, 32)
	c.Store(pk(1, "p", true))
	c.Store(pk(2, "key", false))
	for seq := uint16(3); seq <= 22; seq++ {
		c.Store(pk(seq, "p", true))
	}
	if len(c.meta) != 32 {
		t.Fatalf("%d slots after a GOP of 21 packets, want 32", len(c.meta))
	}
	from, n, ok := c.GOP()
	if !ok || from != 2 || n != 21 {
		t.Fatalf("gop() = %d, %d, %v; want 2, 21, true", from, n, ok)
	}
	buf := make([]byte, MaxPayload)
	for seq := uint16(2); seq <= 22; seq++ { // 1, before the keyframe, gave its slot to 9
		m, ok := c.Load(seq, buf)
		if !ok || !bytes.Equal(buf[:m.N], pk(seq, "p", true).Payload) {
			t.Fatalf("packet %d after growing: held %v, payload % x", seq, ok, buf[:m.N])
		}
	}
}

// A GOP longer than the cache's maximum is not kept, as with a fixed cache.
func TestPacketCacheGrowsNoFurtherThanItsMaximum(t *testing.T) {
	c := New(8, 16)
	c.Store(pk(1, "key", false))
	for seq := uint16(2); seq <= 40; seq++ {
		c.Store(pk(seq, "p", true))
	}
	if len(c.meta) != 16 {
		t.Fatalf("%d slots, want the maximum 16", len(c.meta))
	}
	if _, _, ok := c.GOP(); ok {
		t.Fatal("a GOP of 40 packets offered by a cache of 16")
	}
}

// A stream whose GOPs fit never grows the cache.
func TestPacketCacheKeepsItsSizeWhileGOPsFit(t *testing.T) {
	c := New(8, 64)
	for seq := uint16(1); seq <= 200; seq++ {
		kind := "p"
		if seq%6 == 1 {
			kind = "key"
		}
		c.Store(pk(seq, kind, true))
	}
	if len(c.meta) != 8 {
		t.Fatalf("%d slots with GOPs of 6 packets, want 8", len(c.meta))
	}
	if from, n, ok := c.GOP(); !ok || from != 199 || n != 2 {
		t.Fatalf("gop() = %d, %d, %v; want 199, 2, true", from, n, ok)
	}
}
