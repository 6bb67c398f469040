//go:build linux

package main

import (
	"encoding/binary"
	"testing"
	"time"

	"lightspeed/shared/testkit/testmedia"
)

// benchPackets is one GOP of the test media as RTP packets of at most
// 1200 bytes, numbered from seq 0, 3000 timestamp ticks per frame. Long
// NAL units are cut in plain pieces, not FU-A: the per-packet work
// measured does not depend on it.
func benchPackets(b *testing.B) []rtpHeader {
	b.Helper()
	nals, err := testmedia.NALUnits()
	if err != nil {
		b.Fatal(err)
	}
	var out []rtpHeader
	frame := -1
	for i, nal := range nals {
		typ := nal[0] & 0x1f
		if typ == 7 || (typ <= 5 && (i == 0 || nals[i-1][0]&0x1f <= 5)) {
			frame++ // an SPS, or a slice right after a slice
		}
		if frame == 30 {
			break
		}
		for rest := nal; len(rest) > 0; {
			n := min(len(rest), 1188)
			out = append(out, rtpHeader{seq: uint16(len(out)), ts: uint32(frame) * 3000, payload: rest[:n]})
			rest = rest[n:]
		}
		out[len(out)-1].marker = typ <= 5 // one slice per frame
	}
	return out
}

// BenchmarkWatcherPacket is a viewer's work per received packet.
func BenchmarkWatcherPacket(b *testing.B) {
	pkts := benchPackets(b)
	w := newWatcher(time.Now())
	w.frames = newFrameLog(b.N/len(pkts)*30 + 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h := pkts[i%len(pkts)]
		loop := uint32(i / len(pkts))
		h.seq += uint16(loop) * uint16(len(pkts))
		h.ts += loop * 90000
		w.packet(true, h)
	}
}

// BenchmarkTapPacket is the tap's bookkeeping per publisher packet.
func BenchmarkTapPacket(b *testing.B) {
	pkts := benchPackets(b)
	buf := make([]byte, 1500)
	tp := &tap{}
	tp.frames.Store(newFrameLog(b.N/len(pkts)*30 + 64))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		h := pkts[i%len(pkts)]
		buf[0], buf[1] = 0x80, ftlVideoPT
		if h.marker {
			buf[1] |= 0x80
		}
		binary.BigEndian.PutUint16(buf[2:], h.seq)
		binary.BigEndian.PutUint32(buf[4:], h.ts+uint32(i/len(pkts))*90000)
		n := 12 + copy(buf[12:], h.payload)
		tp.packet(buf[:n], time.Duration(i))
	}
}
