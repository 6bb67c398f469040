package fanout

import (
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/function/packetcache"
	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// relayedVideo is a video packet as the relay hands it to the fan-out,
// with its marks: "key" (the first packet of a keyframe), "new" (the
// first of a new relayed stream), "newkey" (both), "pub" (the first of a
// publisher's new session, the hub's mark), anything else none.
func relayedVideo(seq uint16, ts uint32, marker bool, marks string, payload ...byte) *relay.Packet {
	return &relay.Packet{
		Channel: testChannel, Track: relaywire.Video, Seq: seq, Timestamp: ts, Marker: marker,
		Keyframe:    marks == "key" || marks == "newkey",
		StreamStart: marks == "new" || marks == "newkey" || marks == "pub",
		StreamFrom:  seq,
		Renumbered:  marks == "new" || marks == "newkey",
		Payload:     payload,
	}
}

// meta is the cache's description of a packet with the given sequence
// number, payload length, timestamp and marker bit, as a cache holding it
// gives it.
func meta(seq, n uint16, ts uint32, marker bool) packetcache.Meta {
	c := packetcache.New(8, 8)
	c.Store(packetcache.Packet{Seq: seq, TS: ts, Marker: marker, Payload: make([]byte, n)})
	m, _ := c.Lookup(seq)
	return m
}

// asRelayed is an RTP packet of the test synth as the relay hands it on.
// The synth's keyframes start with an SPS, which is where the hub marks
// them.
func asRelayed(t relaywire.Track, pkt []byte) *relay.Packet {
	d, err := relaywire.ParseDatagram(relaywire.AppendDatagram(nil, relaywire.FlowOf(testChannel, t), 0, pkt))
	if err != nil {
		panic(err)
	}
	return &relay.Packet{
		Channel: testChannel, Track: t, Seq: d.Seq, Timestamp: d.Timestamp, Marker: d.Marker,
		Keyframe: t.IsVideo() && len(d.Payload) > 0 && d.Payload[0]&0x1f == 7,
		Payload:  d.Payload,
	}
}

func drainQueue(v *viewer) []job {
	var out []job
	var batch [16]job
	for n := v.queue.pop(batch[:]); n > 0; n = v.queue.pop(batch[:]) {
		out = append(out, batch[:n]...)
	}
	return out
}

// TestStreamStartMakesViewersWaitForItsKeyframe: a packet marked as a new
// stream's first drops the cached keyframe before it; after a new relayed
// stream (a restarted gateway's) live viewers wait for its keyframe, which
// may be that packet, while after a publisher's restart they go on.
func TestStreamStartMakesViewersWaitForItsKeyframe(t *testing.T) {
	for _, tt := range []struct {
		marks string
		want  []uint16
		gop   uint16
	}{
		{marks: "new", want: []uint16{500, 501, 503, 504}, gop: 503},
		{marks: "newkey", want: []uint16{500, 501, 502, 503, 504}, gop: 503},
		// A publisher's restart: viewers go on (the hub kept the numbering),
		// the keyframe cached before it is dropped all the same.
		{marks: "pub", want: []uint16{500, 501, 502, 503, 504}, gop: 503},
	} {
		t.Run(tt.marks, func(t *testing.T) {
			ch := newChannel(testChannel)
			v := newViewer(nil, "v", ch, 64, testWriter())
			ch.join(v)
			t0 := time.Unix(1000, 0)
			aud, slice := []byte{0x09, 0xf0}, []byte{0x41, 1}
			ch.ingest(relayedVideo(500, 9000, false, "key", aud...), t0)
			ch.ingest(relayedVideo(501, 9000, true, "", slice...), t0)
			ch.ingest(relayedVideo(502, 12000, true, tt.marks, slice...), t0.Add(time.Second))
			if _, _, ok := ch.media[relaywire.Video].cache.GOP(); ok != (tt.marks == "newkey") {
				t.Fatalf("a GOP is cached after the stream start: %v", ok)
			}
			ch.ingest(relayedVideo(503, 15000, false, "key", aud...), t0.Add(time.Second))
			ch.ingest(relayedVideo(504, 15000, true, "", slice...), t0.Add(time.Second))
			var got []uint16
			for _, e := range drainQueue(v) {
				got = append(got, e.seq)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("queued %v, want %v", got, tt.want)
			}
			if from, _, ok := ch.media[relaywire.Video].cache.GOP(); !ok || from != tt.gop {
				t.Fatalf("GOP from %d (%v), want %d", from, ok, tt.gop)
			}
		})
	}
}

// headerWriter records the headers written through it.
type headerWriter struct{ headers []rtp.Header }

func (w *headerWriter) WriteRTP(h *rtp.Header, _ []byte) (int, error) {
	w.headers = append(w.headers, h.Clone())
	return 12, nil
}

func (w *headerWriter) Write(b []byte) (int, error) { return len(b), nil }

func TestBurstPacketsCarryPlayoutDelayZeroAndLivePacketsNone(t *testing.T) {
	ch := newChannel(testChannel)
	v := newViewer(nil, "v", ch, 64, testWriter())
	w := &headerWriter{}
	v.tracks[relaywire.Video] = &viewerTrack{}
	v.tracks[relaywire.Video].bound.Store(&binding{ssrc: 77, pt: 102, playoutID: 5, writer: w})
	m := meta(9, 0, 3000, true)
	v.writeRTP(relaywire.Video, m, true)
	v.writeRTP(relaywire.Video, m, false)
	v.writeRTP(relaywire.Video, m, true)
	if len(w.headers) != 3 {
		t.Fatalf("%d writes", len(w.headers))
	}
	for i, h := range w.headers {
		burst := i != 1
		ext := h.GetExtension(5)
		if burst != (ext != nil) || (burst && string(ext) != "\x00\x00\x00") {
			t.Fatalf("write %d (burst %v): playout-delay %x", i, burst, ext)
		}
		if h.SSRC != 77 || h.PayloadType != 102 || h.SequenceNumber != 9 || h.Timestamp != 3000 || !h.Marker {
			t.Fatalf("write %d: header %+v", i, h)
		}
	}
}

// TestRevealedKeyframeStartsAWaitingViewerOnlyIfItFits: a keyframe whose
// first packet comes late starts a waiting viewer from the SPS on, in order, when
// the packets since it fit in the viewer's queue; a viewer whose queue
// could not take them all keeps waiting for the next keyframe instead of
// getting a keyframe with its newest packets dropped.
func TestRevealedKeyframeStartsAWaitingViewerOnlyIfItFits(t *testing.T) {
	ch := newChannel(testChannel)
	roomy := newViewer(nil, "roomy", ch, 64, testWriter())
	tight := newViewer(nil, "tight", ch, 4, testWriter())
	ch.join(roomy)
	ch.join(tight)
	t0 := time.Unix(1000, 0)
	sps, idr, slice := []byte{0x67, 0x42}, []byte{0x65, 1}, []byte{0x41, 1}

	// The keyframe's first packet (100) is lost; the rest of the keyframe
	// and a frame come.
	ch.ingest(relayedVideo(101, 9000, false, "", idr...), t0)
	ch.ingest(relayedVideo(102, 9000, false, "", idr...), t0)
	ch.ingest(relayedVideo(103, 9000, true, "", idr...), t0)
	ch.ingest(relayedVideo(104, 12000, true, "", slice...), t0)
	if n := len(drainQueue(roomy)) + len(drainQueue(tight)); n != 0 {
		t.Fatalf("%d packets queued before any keyframe", n)
	}
	// Its first packet comes back: the keyframe is 100..104, five packets.
	ch.ingest(relayedVideo(100, 9000, false, "key", sps...), t0)
	ch.ingest(relayedVideo(105, 15000, true, "", slice...), t0)

	var got []uint16
	for _, e := range drainQueue(roomy) {
		got = append(got, e.seq)
	}
	if want := []uint16{100, 101, 102, 103, 104, 105}; !slices.Equal(got, want) {
		t.Errorf("roomy viewer got %v, want %v", got, want)
	}
	if q := drainQueue(tight); len(q) != 0 {
		t.Errorf("tight viewer got %v, want nothing until the next keyframe", q)
	}
	// The next keyframe starts the tight viewer.
	ch.ingest(relayedVideo(106, 18000, false, "key", sps...), t0)
	if q := drainQueue(tight); len(q) != 1 || q[0].seq != 106 {
		t.Errorf("tight viewer got %v at the next keyframe, want 106", q)
	}
}
