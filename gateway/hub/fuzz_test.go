package hub_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// The fuzz input is a program of operations, each a byte op followed by
// its arguments:
//
//	op%16 == 0: Release
//	op%16 == 1: Release, then a new Claim and Start
//	op%16 == 2: advance the clock by the next byte in ms, ReleaseExpired
//	op%16 == 3: add a FromKeyframe subscriber (at most two in all)
//	otherwise:  a packet of track op&1 with marker op&2, of video layer
//	            op>>4&3 (the publisher announces layers 0 to 2); arguments: seq
//	            step (int8), timestamp step (×100), payload length (uint16,
//	            mod 3000), the number k of payload bytes that follow; the
//	            payload is those k bytes padded with a counting pattern,
//	            which keeps inputs with large payloads small
const (
	opEnd = iota
	opStart
	opWait
	opJoin
	opPacket = 4
)

// packetOp encodes a packet of n payload bytes starting with prefix.
func packetOp(t hub.Track, marker bool, seqStep int8, tsStep byte, n int, prefix []byte) []byte {
	op := byte(opPacket) | byte(t)
	if marker {
		op |= 2
	}
	b := []byte{op, byte(seqStep), tsStep, byte(n >> 8), byte(n), byte(len(prefix))}
	return append(b, prefix...)
}

// padded is the payload a packetOp of n bytes starting with prefix carries.
func padded(n int, prefix []byte) []byte {
	payload := make([]byte, n)
	k := copy(payload, prefix)
	for i := k; i < n; i++ {
		payload[i] = byte(i)
	}
	return payload
}

// packetOf encodes payload as a packetOp, literally up to 8 bytes.
func packetOf(t hub.Track, marker bool, seqStep int8, tsStep byte, payload []byte) []byte {
	k := min(len(payload), 8)
	if !bytes.Equal(padded(len(payload), payload[:k]), payload) {
		k = len(payload)
	}
	return packetOp(t, marker, seqStep, tsStep, len(payload), payload[:k])
}

func program(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func FuzzWriteRTP(f *testing.F) {
	var fu []byte
	for i, p := range ftlPayloads(nal(5, 3000, 1)) {
		fu = append(fu, packetOp(hub.Video, false, 1, 0, len(p), p[:2+i%2])...)
	}
	f.Add(program(
		packetOf(hub.Video, false, 0, 0, spsHigh1080),
		packetOf(hub.Video, false, 1, 0, nal(8, 4, 0)),
		fu,
		packetOf(hub.Audio, false, 0, 0, []byte{0xfc, 1, 2}),
		[]byte{opJoin},
		packetOp(hub.Video, true, 1, 30, 1380, []byte{0x41}),
		packetOp(hub.Video, true, 1, 30, 2757, []byte{0x41}),
	))
	f.Add(program( // reordered, lost, late, jumps
		packetOp(hub.Video, true, 0, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 2, 30, 10, []byte{0x41}),
		packetOp(hub.Video, true, -1, 30, 10, []byte{0x41}),
		packetOp(hub.Video, true, 3, 30, 10, []byte{0x41}),
		[]byte{opWait, 50},
		packetOp(hub.Video, true, -1, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 100, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 127, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 127, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 127, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 127, 0, 10, []byte{0x41}),
		packetOp(hub.Video, true, 127, 0, 10, []byte{0x41}),
	))
	f.Add(program( // reconnect, oversized and aggregated payloads
		packetOp(hub.Audio, false, 0, 0, 3, nil),
		packetOp(hub.Audio, false, 2, 0, 3, nil),
		[]byte{opEnd, opWait, 200, opStart},
		packetOp(hub.Audio, false, 0x7f, 0, 1300, []byte{0x5c}),
		packetOp(hub.Video, false, -128, 0, 2999, []byte{0x7c}),
		packetOp(hub.Video, false, 1, 0, 1400, []byte{0x18, 0, 4, 0x67, 0x42, 0x05, 0xdc, 0x05, 0x6f, 0x41}),
	))
	layerOp := func(l int, op []byte) []byte { op[0] |= byte(l) << 4; return op }
	f.Add(program( // three layers (and a fourth the publisher did not announce), a late joiner
		layerOp(0, packetOf(hub.Video, false, 0, 0, spsHigh1080)),
		layerOp(0, packetOp(hub.Video, true, 1, 0, 2000, []byte{0x65})),
		layerOp(1, packetOp(hub.Video, true, 0, 0, 900, []byte{0x65})),
		packetOp(hub.Audio, false, 0, 0, 3, nil),
		layerOp(2, packetOp(hub.Video, true, 0, 0, 300, []byte{0x41})),
		layerOp(3, packetOp(hub.Video, true, 0, 0, 300, []byte{0x65})),
		layerOp(2, packetOp(hub.Video, true, 1, 30, 300, []byte{0x65})),
		[]byte{opJoin},
		layerOp(1, packetOp(hub.Video, true, 1, 30, 900, []byte{0x41})),
	))

	f.Fuzz(func(t *testing.T, data []byte) {
		clk := &clock{t: t0}
		r := hub.NewRegistry(testOptions(clk))
		defer r.Close()
		info := hub.PublisherInfo{Layers: []string{"0", "1", "2"}}
		pub := claim(t, r, 1, info)
		h := pub.Hub()
		tracks := map[hub.Track]relaywire.TrackInfo{}
		for _, ti := range h.Tracks() {
			tracks[ti.Flow.Track()] = ti
		}
		subs := []*fuzzSub{{s: h.Subscribe(hub.SubscribeOptions{Capacity: 1024})}}
		var seq [relaywire.NumTracks]uint16
		var ts [relaywire.NumTracks]uint32
		retrans := make([]byte, hub.MaxPacketSize)

		for len(data) > 0 {
			op := data[0]
			data = data[1:]
			switch {
			case op%16 == opEnd:
				pub.Release()
			case op%16 == opStart:
				pub.Release()
				pub = claim(t, r, 1, info)
			case op%16 == opWait:
				if len(data) > 0 {
					clk.Advance(time.Duration(data[0]) * time.Millisecond)
					data = data[1:]
				}
				h.ReleaseExpired(clk.Now())
			case op%16 == opJoin:
				if len(subs) < 3 {
					subs = append(subs, &fuzzSub{s: h.Subscribe(hub.SubscribeOptions{FromKeyframe: true})})
				}
			default:
				if len(data) < 5 {
					return
				}
				tr := hub.Track(op & 1)
				if tr == hub.Video {
					tr = relaywire.LayerTrack(int(op >> 4 & 3))
				}
				seq[tr] += uint16(int8(data[0]))
				ts[tr] += uint32(data[1]) * 100
				n := (int(data[2])<<8 | int(data[3])) % 3000
				k := min(int(data[4]), n, len(data)-5)
				payload := padded(n, data[5:5+k])
				data = data[5+k:]
				p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq[tr], Timestamp: ts[tr], Marker: op&2 != 0}, Payload: payload}
				pub.WriteRTP(tr, p, clk.Now())
			}

			for i, fs := range subs {
				for _, p := range drain(t, fs.s) {
					if len(p.Data) > hub.MaxPacketSize {
						t.Fatalf("output packet of %d bytes", len(p.Data))
					}
					info, ok := tracks[p.Track]
					if !ok || p.Track.Layer() > 2 || p.rtp.SSRC != info.SSRC || p.rtp.PayloadType != info.PayloadType || p.rtp.SequenceNumber != p.Seq {
						t.Fatalf("output header %+v of %v", p.rtp.Header, p.Track)
					}
					if fs.seen[p.Track] && int16(p.Seq-fs.last[p.Track]) <= 0 {
						t.Fatalf("subscriber %d: %v output seq %d after %d", i, p.Track, p.Seq, fs.last[p.Track])
					}
					fs.seen[p.Track], fs.last[p.Track] = true, p.Seq
					if i == 0 {
						r, ok := h.Retransmit(p.Track, p.Seq, retrans)
						if !ok || !bytes.Equal(r.Data, p.Data) || r.Keyframe != p.Keyframe || r.StreamStart != p.StreamStart ||
							r.Seq != p.Seq || r.Timestamp != p.Timestamp || r.Track != p.Track {
							t.Fatalf("Retransmit(%v, %d) = %v, differs from the packet sent", p.Track, p.Seq, ok)
						}
					}
				}
			}
		}
	})
}

// fuzzSub follows the output numbering one subscriber sees.
type fuzzSub struct {
	s    *hub.Subscription
	seen [relaywire.NumTracks]bool
	last [relaywire.NumTracks]uint16
}

// FuzzRecut feeds FU-A fragments of arbitrary sizes, some lost, to the
// re-cutter: one NAL unit per frame, each frame 4 bytes of the input (NAL
// unit size, fragment size, which of its first 8 fragments are lost).
// Every output packet fits; a NAL unit whose fragments all came out
// depacketizes to itself, in at most as many packets as fragments or
// ceil(data / 1186), whichever is more; the numbering never goes back.
func FuzzRecut(f *testing.F) {
	f.Add([]byte{0x13, 0x88, 128, 0, 0x4e, 0x20, 128, 4, 0x01, 0x00, 10, 0})
	f.Add([]byte{0x04, 0x00, 255, 0, 0x27, 0x10, 1, 0x81, 0x00, 0x10, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, pub, clk := newLiveHub(t)
		s := subscribe(t, h, hub.SubscribeOptions{Capacity: 1 << 14})
		type frame struct {
			nal      []byte
			complete bool
			frags    int
		}
		var frames []frame
		var seq uint16
		firstTS := -1 // the publisher timestamp of the first packet written
		for i := 0; len(data) >= 4 && i < 16; i++ {
			size := 2 + (int(data[0])<<8|int(data[1]))%12000
			fragSize := 100 + int(data[2])*5 // at most 1,375: a held packet is at most 1,500 bytes
			lost := data[3]
			data = data[4:]
			n := nal(5, size, byte(i))
			fr := frame{nal: n, complete: true}
			for k, rest, start := 0, n[1:], true; len(rest) > 0; k, start = k+1, false {
				c := min(fragSize, len(rest))
				hdr := n[0] & 0x1f
				if start {
					hdr |= 0x80
				}
				if c == len(rest) {
					hdr |= 0x40
				}
				p := append([]byte{n[0]&0xe0 | 28, hdr}, rest[:c]...)
				rest = rest[c:]
				fr.frags++
				if k < 8 && lost&(1<<k) != 0 {
					fr.complete = false
				} else {
					if firstTS < 0 {
						firstTS = i * 3000
					}
					pub.WriteRTP(hub.Video, pkt(seq, uint32(i)*3000, len(rest) == 0, p), clk.t)
				}
				seq++
			}
			frames = append(frames, fr)
		}
		h.ReleaseExpired(clk.Advance(time.Second))
		pub.Release()
		got := drain(t, s)
		byTS := map[uint32][]out{}
		for i, p := range got {
			if len(p.Data) > hub.MaxPacketSize {
				t.Fatalf("a packet of %d bytes", len(p.Data))
			}
			if i > 0 && int16(p.Seq-got[i-1].Seq) <= 0 {
				t.Fatalf("seq %d after %d", p.Seq, got[i-1].Seq)
			}
			ts := p.Timestamp - got[0].Timestamp + uint32(firstTS) // the publisher's
			byTS[ts] = append(byTS[ts], p)
		}
		for i, fr := range frames {
			if !fr.complete {
				continue
			}
			pkts := byTS[uint32(i)*3000]
			var depack codecs.H264Packet
			var stream []byte
			for _, p := range pkts {
				b, err := depack.Unmarshal(p.rtp.Payload)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				stream = append(stream, b...)
			}
			if !bytes.Equal(stream, annexB(fr.nal)) {
				t.Fatalf("frame %d (%d bytes in %d fragments) does not depacketize to itself", i, len(fr.nal), fr.frags)
			}
			if len(pkts) > max(fr.frags, fuaCount(len(fr.nal))) {
				t.Fatalf("frame %d: %d packets for %d fragments of a %d-byte NAL unit", i, len(pkts), fr.frags, len(fr.nal))
			}
		}
	})
}
