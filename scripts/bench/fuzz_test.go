//go:build linux

package main

import (
	"testing"
	"time"
)

// FuzzParseRTP feeds the RTP reader of the tap (FTL packets from the
// publisher) and of the viewers' sockets (SRTP from the server) any
// bytes.
func FuzzParseRTP(f *testing.F) {
	f.Add([]byte{0x80, 0xe0, 0, 1, 0, 1, 0x5f, 0x90, 0, 0, 0x11, 0x11, 0x67, 0x42, 0xc0, 0x1f})
	f.Add([]byte{0x91, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0, 1, 1, 2, 3, 4, 'x'})
	f.Add([]byte{0xa0, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0xff})
	f.Add([]byte{0x90, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1, 0xbe, 0xde, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := parseRTP(b)
		if !ok {
			return
		}
		if len(h.payload) > len(b)-12 {
			t.Fatalf("payload of %d bytes in a %d-byte packet", len(h.payload), len(b))
		}
		tp := &tap{}
		tp.frames.Store(newFrameLog(0))
		tp.packet(b, time.Second)
		c := &stampedConn{arrivals: newFrameLog(0)}
		c.stamp(b, 1)
	})
}

// FuzzViewerPackets feeds a viewer's per-packet path (sequence counting,
// keyframe check, frame log) a stream of packets made from the input:
// each is a flags byte (bit 0 video, bit 1 marker, bit 2 new timestamp),
// a sequence step, a payload length and the payload.
func FuzzViewerPackets(f *testing.F) {
	f.Add([]byte{5, 1, 4, 0x67, 0x42, 0xc0, 0x1f, 1, 1, 3, 0x7c, 0x85, 1, 3, 1, 3, 0x7c, 0x45, 2, 0, 1, 2, 0xfc, 1})
	f.Add([]byte{5, 1, 4, 0x67, 0x42, 0xc0, 0x1f, 1, 2, 3, 0x7c, 0x85, 1, 7, 255, 2, 0x41, 0x9a})
	f.Add([]byte{1, 0, 0, 3, 128, 1, 28})
	f.Fuzz(func(t *testing.T, b []byte) {
		w := newWatcher(time.Now())
		var seq [2]uint16
		var ts uint32
		for len(b) >= 3 {
			flags, step, n := b[0], b[1], int(b[2])
			b = b[3:]
			if n > len(b) {
				n = len(b)
			}
			payload := b[:n]
			b = b[n:]
			video := flags&1 != 0
			k := 0
			if video {
				k = 1
			}
			seq[k] += uint16(step)
			if flags&4 != 0 {
				ts += 3000
			}
			w.packet(video, rtpHeader{seq: seq[k], ts: ts, marker: flags&2 != 0, payload: payload})
		}
		if got := w.keys.Load(); got > 0 && w.firstKey.Load() == 0 {
			t.Fatalf("%d keyframes but no first one", got)
		}
	})
}
