package fanout

import (
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/shared/relaywire"
)

func rawVideo(seq uint16, ts, ssrc uint32, marker bool, payload ...byte) []byte {
	b := make([]byte, 12, 12+len(payload))
	b[0] = 0x80
	if marker {
		b[1] = 0x80
	}
	binary.BigEndian.PutUint16(b[2:], seq)
	binary.BigEndian.PutUint32(b[4:], ts)
	binary.BigEndian.PutUint32(b[8:], ssrc)
	return append(b, payload...)
}

func drainQueue(v *viewer) []entry {
	var out []entry
	var batch [16]entry
	for n := v.queue.pop(batch[:]); n > 0; n = v.queue.pop(batch[:]) {
		out = append(out, batch[:n]...)
	}
	return out
}

func TestRestartedStreamContinuesTheViewersNumbering(t *testing.T) {
	ch := newChannel(testChannel)
	v := newViewer(nil, "v", ch, 64, testWriter())
	ch.join(v)
	t0 := time.Unix(1000, 0)
	sps, slice := []byte{0x67, 0x42}, []byte{0x41, 1}

	ch.ingest(relaywire.Video, rawVideo(500, 9000, 0xaaaa, true, sps...), t0)
	ch.ingest(relaywire.Video, rawVideo(501, 12000, 0xaaaa, true, slice...), t0.Add(33*time.Millisecond))
	// The gateway restarted: a new SSRC, new numbering, starting at a keyframe
	// one second later.
	ch.ingest(relaywire.Video, rawVideo(40000, 7, 0xbbbb, false, sps...), t0.Add(time.Second+33*time.Millisecond))
	ch.ingest(relaywire.Video, rawVideo(40001, 7, 0xbbbb, true, slice...), t0.Add(time.Second+34*time.Millisecond))
	// A straggler of the old stream is dropped.
	ch.ingest(relaywire.Video, rawVideo(502, 15000, 0xaaaa, true, slice...), t0.Add(time.Second+35*time.Millisecond))

	got := drainQueue(v)
	want := []uint16{500, 501, 502, 503}
	if len(got) != len(want) {
		t.Fatalf("queued %v, want seqs %v", got, want)
	}
	buf := make([]byte, maxPayload)
	for i, e := range got {
		if e.seq != want[i] {
			t.Fatalf("queued %v, want seqs %v", got, want)
		}
		if _, ok := ch.load(relaywire.Video, e.seq, buf); !ok {
			t.Fatalf("seq %d not in the cache", e.seq)
		}
	}
	m, _ := ch.load(relaywire.Video, 502, buf)
	if m.ts != 12000+90000 {
		t.Fatalf("first timestamp after the restart %d, want %d (one second on)", m.ts, 12000+90000)
	}
	if from, _, ok := ch.media[relaywire.Video].cache.gop(); !ok || from != 502 {
		t.Fatalf("GOP from %d (%v), want the new stream's keyframe at 502", from, ok)
	}
	if ch.duplicates.Load() != 1 {
		t.Fatalf("%d packets dropped, want the straggler", ch.duplicates.Load())
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
	m := cached{seq: 9, ts: 3000, flags: slotUsed | slotMarker}
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
// SPS comes late starts a waiting viewer from the SPS on, in order, when
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

	// The SPS (100) is lost; the rest of the keyframe and a frame come.
	ch.ingest(relaywire.Video, rawVideo(101, 9000, 0xaaaa, false, idr...), t0)
	ch.ingest(relaywire.Video, rawVideo(102, 9000, 0xaaaa, false, idr...), t0)
	ch.ingest(relaywire.Video, rawVideo(103, 9000, 0xaaaa, true, idr...), t0)
	ch.ingest(relaywire.Video, rawVideo(104, 12000, 0xaaaa, true, slice...), t0)
	if n := len(drainQueue(roomy)) + len(drainQueue(tight)); n != 0 {
		t.Fatalf("%d packets queued before any keyframe", n)
	}
	// The SPS comes back: the keyframe is 100..104, five packets.
	ch.ingest(relaywire.Video, rawVideo(100, 9000, 0xaaaa, false, sps...), t0)
	ch.ingest(relaywire.Video, rawVideo(105, 15000, 0xaaaa, true, slice...), t0)

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
	ch.ingest(relaywire.Video, rawVideo(106, 18000, 0xaaaa, false, sps...), t0)
	if q := drainQueue(tight); len(q) != 1 || q[0].seq != 106 {
		t.Errorf("tight viewer got %v at the next keyframe, want 106", q)
	}
}
