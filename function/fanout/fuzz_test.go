package fanout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtcp"

	"lightspeed/function/packetcache"
	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// The FuzzIngest input is a program of relayed packets, each an op byte,
// a sequence number step (int8), a payload length (byte) and the payload:
//
//	op&1:    track (0 video, 1 audio)
//	op&2:    marker bit
//	op&4:    the hub's stream-start mark
//	op&8:    the hub's keyframe mark
//	op&16:   the payload is 1201 bytes, over the cache's slots
//	op>>5:   with a stream start, how many packets before it the stream begins
//	op>>6:   the video layer (relaywire.LayerTrack)
//
// A second viewer is aimed at another layer every seventh packet.
func fuzzProgram(ops ...[]byte) []byte {
	var b []byte
	for _, op := range ops {
		b = append(b, op...)
	}
	return b
}

func FuzzIngest(f *testing.F) {
	aud := []byte{0x09, 0xf0}
	sps := []byte{0x67, 0x42, 0xc0, 0x1f}
	idrEnd := []byte{0x7c, 0x45, 4, 5}
	slice := []byte{0x41, 9, 9}
	pkt := func(op byte, step int8, payload []byte) []byte {
		return append([]byte{op, byte(step), byte(len(payload))}, payload...)
	}
	f.Add(fuzzProgram(pkt(8, 1, aud), pkt(0, 1, sps), pkt(2, 1, idrEnd), pkt(2, 1, slice), pkt(1, 1, []byte{0xfc, 1})))
	f.Add(fuzzProgram(pkt(2, 1, slice), pkt(8, 2, sps), pkt(2, -1, slice), pkt(2, 3, idrEnd), pkt(4, 1, sps), pkt(14, 1, idrEnd)))
	f.Add(fuzzProgram(pkt(8, 1, sps), pkt(16, 1, slice), pkt(2, 100, slice), pkt(12, -90, aud)))
	f.Fuzz(func(t *testing.T, prog []byte) {
		ch := newChannel(testChannel)
		v := newViewer(nil, "fuzz", ch, 8, testWriter())
		ch.join(v)
		sw := newViewer(nil, "switcher", ch, 8, testWriter())
		ch.join(sw)
		seq := [relaywire.NumTracks]uint16{100, 200, 300, 400, 500}
		now := time.Unix(1000, 0)
		buf := make([]byte, packetcache.MaxPayload)
		big := make([]byte, packetcache.MaxPayload+1)
		var out [8]job
		for i := 0; len(prog) >= 3; i++ {
			op := prog[0]
			tr := relaywire.Track(op & 1)
			if tr == relaywire.Video {
				tr = relaywire.LayerTrack(int(op >> 6))
			}
			if i%7 == 6 {
				ch.mu.Lock()
				ch.aim(sw, relaywire.LayerTrack(i/7%3))
				ch.mu.Unlock()
			}
			seq[tr] += uint16(int8(prog[1]))
			n := min(int(prog[2]), len(prog)-3)
			payload := prog[3 : 3+n]
			prog = prog[3+n:]
			if op&16 != 0 {
				payload = big
			}
			p := relay.Packet{
				Channel: testChannel, Track: tr, Seq: seq[tr], Timestamp: uint32(seq[tr]) * 3000,
				Marker: op&2 != 0, StreamStart: op&4 != 0, StreamFrom: seq[tr] - uint16(op>>5), Keyframe: op&8 != 0, Payload: payload,
			}
			now = now.Add(10 * time.Millisecond)
			ch.ingest(&p, now)

			for i := range ch.media {
				c := ch.media[i].cache
				if c == nil {
					continue
				}
				if from, n, ok := c.GOP(); ok {
					m, held := c.Lookup(from)
					if !held || !m.Keyframe() || n < 1 || n > c.Slots() {
						t.Fatalf("track %d: GOP from %d (%d packets) does not start at a held keyframe: %+v", i, from, n, m)
					}
				}
			}
			for _, v := range []*viewer{v, sw} {
				for n := v.queue.pop(out[:]); n > 0; n = v.queue.pop(out[:]) {
					for _, e := range out[:n] {
						if m, ok := ch.load(e.track, e.seq, buf); ok && (m.Seq != e.seq || int(m.N) > packetcache.MaxPayload) {
							t.Fatalf("queued %+v loads %+v", e, m)
						}
						if e.track.IsVideo() && e.track != v.cur.track && (!v.hasPrev || e.track != v.prev.track) {
							t.Fatalf("%s: queued %+v of a layer it does not get (now %d)", v.id, e, v.cur.track)
						}
					}
				}
				if v.queue.refs != [gens]int{} {
					t.Fatalf("%s: refs %v with an empty queue", v.id, v.queue.refs)
				}
			}
		}
	})
}

func FuzzHandleRTCP(f *testing.F) {
	nack, _ := (&rtcp.TransportLayerNack{MediaSSRC: 1000, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{1, 3, 20})}).Marshal()
	pli, _ := (&rtcp.PictureLossIndication{MediaSSRC: 1000}).Marshal()
	rr, _ := (&rtcp.ReceiverReport{SSRC: 5, Reports: []rtcp.ReceptionReport{{SSRC: 1001}}}).Marshal()
	f.Add(append(rr, nack...))
	f.Add(pli)
	f.Add([]byte{0x81, 0xcd, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0x03, 0xe8, 0, 1, 0xff, 0xff})
	fan := &Fanout{up: newFakeUpstream(), now: time.Now}
	ch := newChannel(1)
	f.Fuzz(func(t *testing.T, raw []byte) {
		v := newViewer(fan, "fuzz", ch, 16, testWriter())
		before := fan.keyframes.sent.Load() + fan.keyframes.throttled.Load()
		for i := range v.tracks {
			v.tracks[i] = &viewerTrack{}
			v.tracks[i].bound.Store(&binding{ssrc: 1000 + uint32(i), writer: &fakeWriter{}})
		}
		v.handleRTCP(relaywire.Video, raw)
		v.handleRTCP(relaywire.Audio, raw)
		c := &v.counters
		// One keyframe request at most, for the video's RTCP only.
		requests := fan.keyframes.sent.Load() + fan.keyframes.throttled.Load() - before
		if requests > 1 || (requests == 1 && c.plis.Load()+c.firs.Load() == 0) {
			t.Fatalf("%d keyframe requests after %d PLIs and %d FIRs", requests, c.plis.Load(), c.firs.Load())
		}
		if c.retransmits.Load() > c.nacked.Load() || c.retransmits.Load() > 16 {
			t.Fatalf("retransmits %d of %d NACKed, queue of 16", c.retransmits.Load(), c.nacked.Load())
		}
		var out [32]job
		if n := v.queue.pop(out[:]); uint64(n) != c.retransmits.Load() {
			t.Fatalf("%d queued, %d counted", n, c.retransmits.Load())
		}
	})
}

// FuzzDropUnreachable filters a viewer's SDP: it must never panic, keep
// every line but candidate lines, in order, and leave no candidate that
// names an address no viewer can have.
func FuzzDropUnreachable(f *testing.F) {
	f.Add("v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=candidate:2 1 udp 1 198.51.100.7 9 typ host\r\n")
	f.Add("a=candidate: 1 UDP 1 fe80::1%eth0 9 typ host\na=candidate:3 1 udp 1 ::ffff:224.0.0.1 9 typ host")
	f.Add("a=candidate:\r\na=end-of-candidates\r\n")
	f.Fuzz(func(t *testing.T, sdp string) {
		fan := &Fanout{}
		out, dropped := fan.dropUnreachable(sdp)
		var kept []string
		for line := range strings.Lines(sdp) {
			if strings.HasPrefix(line, "a=candidate:") {
				continue
			}
			kept = append(kept, line)
		}
		var got []string
		candidates := 0
		for line := range strings.Lines(out) {
			v, ok := strings.CutPrefix(line, "a=candidate:")
			if !ok {
				got = append(got, line)
				continue
			}
			candidates++
			if a, ok := relaywire.CheckedAddr(strings.TrimRight(v, "\r\n")); ok && fan.unreachable(a.Addr()) {
				t.Fatalf("kept %q", line)
			}
		}
		if !slices.Equal(got, kept) {
			t.Fatalf("other lines changed:\n%q\nwant\n%q", got, kept)
		}
		if candidates+dropped != strings.Count("\n"+sdp, "\na=candidate:") {
			t.Fatalf("%d kept + %d dropped candidate lines", candidates, dropped)
		}
	})
}
