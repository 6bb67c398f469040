package hub_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/gateway/hub"
)

// benchGOP returns the video and audio packets of one second at 30 frames/s,
// about 6 Mbit/s, as the FTL client sends them: a keyframe then 29 frames,
// one audio packet per 20 ms.
func benchGOP() (video, audio []*rtp.Packet) {
	var v, a publisher
	for k := range 30 {
		nals := [][]byte{nal(1, 24000, byte(k))}
		if k == 0 {
			nals = [][]byte{spsHigh1080, nal(8, 4, 0), nal(5, 90000, 0)}
		}
		video = append(video, v.frame(uint32(k)*3000, nals...)...)
	}
	for k := range 50 {
		audio = append(audio, a.frame(uint32(k)*960, nal(1, 160, byte(k)))...)
	}
	return video, audio
}

// BenchmarkWriteRTP measures one publisher packet through the hub:
// reordering, re-fragmentation, the retransmission ring, the GOP cache and
// two subscriptions, whose queues are read as a relay would.
func BenchmarkWriteRTP(b *testing.B) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(hub.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clk.Now})
	defer r.Close()
	pub := claim(b, r, 1, hub.PublisherInfo{})
	h := pub.Hub()
	subs := []*hub.Subscription{h.Subscribe(hub.SubscribeOptions{}), h.Subscribe(hub.SubscribeOptions{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Next returns queued packets without waiting

	video, audio := benchGOP()
	type input struct {
		t   hub.Track
		pkt rtp.Packet
	}
	var in []input // interleaved as they arrive
	for i, p := range video {
		in = append(in, input{hub.Video, *p})
		if i%(len(video)/len(audio)) == 0 && len(in) < len(video)+len(audio) {
			in = append(in, input{hub.Audio, *audio[min(i/(len(video)/len(audio)), len(audio)-1)]})
		}
	}
	var seq [2]uint16
	var ts [2]uint32
	step := [2]uint32{30 * 3000, 50 * 960} // one GOP of timestamps
	arrival := t0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := &in[i%len(in)]
		if i%len(in) == 0 && i > 0 {
			ts[hub.Video] += step[hub.Video]
			ts[hub.Audio] += step[hub.Audio]
		}
		pkt := p.pkt
		pkt.SequenceNumber = seq[p.t]
		pkt.Timestamp += ts[p.t]
		seq[p.t]++
		arrival = arrival.Add(200 * time.Microsecond)
		pub.WriteRTP(p.t, &pkt, arrival)
		i++
		if i%32 == 0 {
			for _, s := range subs {
				for {
					if _, err := s.Next(ctx); err != nil {
						break
					}
				}
			}
		}
	}
	b.StopTimer()
	if st := h.Stats(); st.Dropped != 0 || st.Lost != 0 {
		b.Fatalf("dropped %d lost %d", st.Dropped, st.Lost)
	}
}

// BenchmarkRetransmit measures copying one packet out of the ring.
func BenchmarkRetransmit(b *testing.B) {
	h, pub, _ := newLiveHub(b)
	var seqs []uint16
	for i := range 100 {
		seqs = append(seqs, uint16(i))
	}
	s := subscribe(b, h, hub.SubscribeOptions{})
	writeSeqs(pub, t0, seqs...)
	p, err := s.Next(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]byte, hub.MaxPacketSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.Retransmit(hub.Video, p.Seq, dst); !ok {
			b.Fatal("packet not found")
		}
	}
}
