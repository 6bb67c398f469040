package fanout

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/function/relay"
	"lightspeed/shared/relaywire"
)

// fakeWriter stands in for pion's SRTP writer of one viewer: it marshals
// the header and copies the payload, as pion does before encrypting.
type fakeWriter struct {
	buf     [1500]byte
	packets atomic.Uint64
}

func (w *fakeWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	n, err := h.MarshalTo(w.buf[:])
	if err != nil {
		return 0, err
	}
	n += copy(w.buf[n:], payload)
	w.packets.Add(1)
	return n, nil
}

func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }

// addFakeViewer adds a joined viewer whose tracks are bound to w, with its
// starter goroutine running (it hands the viewer to its writer), but no
// PeerConnection.
func addFakeViewer(tb testing.TB, f *Fanout, id string, w webrtc.TrackLocalWriter) *viewer {
	tb.Helper()
	v, err := f.reserve(id, testChannel, relaywire.CandidateSet{}, "")
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.subscribe(context.Background(), v); err != nil {
		tb.Fatal(err)
	}
	for t := range v.tracks {
		v.tracks[t] = &viewerTrack{}
		v.tracks[t].bound.Store(&binding{ssrc: 1000 + uint32(t), pt: 102 + uint8(t), writer: w})
	}
	f.mu.Lock()
	f.running[v] = struct{}{}
	v.running.Store(1)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		v.start(nil)
	}()
	f.mu.Unlock()
	v.join()
	return v
}

// BenchmarkWriteRTP measures the whole per-packet path with N viewers
// bound to fake writers (no PeerConnections, no SRTP, no sockets): cache, queue to every viewer, and each viewer's writer copying the packet
// out of the cache and writing it. The writers are drained every 256
// packets so no queue overflows; ns/op is wall time per relayed packet.
func BenchmarkWriteRTP(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("viewers=%d", n), func(b *testing.B) {
			f, err := New(Config{UDPAddr: "127.0.0.1:0", Logger: testLogger()}, newFakeUpstream())
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			writers := make([]*fakeWriter, n)
			for i := range writers {
				writers[i] = &fakeWriter{}
				addFakeViewer(b, f, fmt.Sprint("v", i), writers[i])
			}
			// One GOP's worth of packets, renumbered as the benchmark loops.
			syn := newSynth()
			var pkts [][]byte
			for i := 0; len(pkts) < 300; i++ {
				if i%30 == 0 {
					pkts = append(pkts, syn.keyframe()...)
				} else {
					pkts = append(pkts, syn.delta(i)...)
				}
			}
			delivered := func() uint64 {
				var sum uint64
				for _, w := range writers {
					sum += w.packets.Load()
				}
				return sum
			}
			drain := func(want uint64) {
				for delivered() < want {
					runtime.Gosched()
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			relayed := make([]*relay.Packet, len(pkts))
			for i, p := range pkts {
				relayed[i] = asRelayed(relaywire.Video, p)
			}
			seq, ts := uint16(0), uint32(0)
			for i := range b.N {
				p := relayed[i%len(relayed)]
				p.Seq, p.Timestamp = seq, ts
				seq++
				if p.Marker {
					ts += 3000
				}
				f.WriteRTP(p)
				if i%256 == 255 {
					drain(uint64(i+1) * uint64(n))
				}
			}
			drain(uint64(b.N) * uint64(n))
			b.StopTimer()
			s := f.Stats()
			if s.QueueDrops != 0 || s.CacheMisses != 0 {
				b.Fatalf("dropped %d, missed %d", s.QueueDrops, s.CacheMisses)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}
