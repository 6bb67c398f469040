package hub_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/gateway/hub"
)

// clock is an injected clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// t0 is aligned to the 100 ms buckets of the rate windows.
var t0 = time.Unix(1_700_000_000, 0)

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func testOptions(clk *clock) hub.Options {
	return hub.Options{
		MaxHold: 40 * time.Millisecond,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now:     clk.Now,
	}
}

// obs is the publisher of the tests' sessions.
var obs = hub.PublisherInfo{Software: "OBS Studio 29.1.3", Remote: "127.0.0.1:50000", VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97}

// claim claims channel in r and starts the session with info.
func claim(t testing.TB, r *hub.Registry, channel uint32, info hub.PublisherInfo) *hub.Publisher {
	t.Helper()
	pub, err := r.Claim(channel)
	if err != nil {
		t.Fatalf("Claim(%d): %v", channel, err)
	}
	pub.Start(info)
	return pub
}

// newLiveHub returns the hub of channel 77 of a new registry, its
// publisher with a session started at t0, and the hub's clock.
func newLiveHub(t testing.TB) (*hub.Hub, *hub.Publisher, *clock) {
	t.Helper()
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	t.Cleanup(r.Close)
	pub := claim(t, r, 77, obs)
	return pub.Hub(), pub, clk
}

func subscribe(t testing.TB, h *hub.Hub, o hub.SubscribeOptions) *hub.Subscription {
	t.Helper()
	s := h.Subscribe(o)
	t.Cleanup(s.Close)
	return s
}

// out is one output packet as a subscriber saw it.
type out struct {
	hub.Packet
	rtp rtp.Packet
}

// drain returns the packets queued in s, without waiting.
func drain(t testing.TB, s *hub.Subscription) []out {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var got []out
	for {
		p, err := s.Next(ctx)
		if errors.Is(err, context.Canceled) {
			return got
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		o := out{Packet: p}
		o.Data = bytes.Clone(p.Data)
		if err := o.rtp.Unmarshal(o.Data); err != nil {
			t.Fatalf("output packet %d does not parse: %v", p.Seq, err)
		}
		got = append(got, o)
	}
}

// onlyTrack returns the packets of track tr.
func onlyTrack(pkts []out, tr hub.Track) []out {
	var r []out
	for _, p := range pkts {
		if p.Track == tr {
			r = append(r, p)
		}
	}
	return r
}

func seqsOf(pkts []out) []uint16 {
	var r []uint16
	for _, p := range pkts {
		r = append(r, p.Seq)
	}
	return r
}

// nal returns a synthetic NAL unit of type typ and size bytes.
func nal(typ byte, size int, seed byte) []byte {
	b := make([]byte, size)
	b[0] = 0x60 | typ
	for i := 1; i < size; i++ {
		b[i] = byte(i*7) + seed
	}
	return b
}

func pkt(seq uint16, ts uint32, marker bool, payload []byte) *rtp.Packet {
	return &rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, Marker: marker, SSRC: 78},
		Payload: payload,
	}
}

// small returns a distinct small video payload (a non-IDR slice) for seq.
func small(seq uint16) []byte { return []byte{0x41, byte(seq >> 8), byte(seq), 0xaa} }

// writeSeqs writes one small single-NAL video packet per seq, one frame each.
func writeSeqs(pub *hub.Publisher, arrival time.Time, seqs ...uint16) {
	for _, s := range seqs {
		pub.WriteRTP(hub.Video, pkt(s, uint32(s)*3000, true, small(s)), arrival)
	}
}

// payloadSeqs returns the publisher seq each output packet carried (see small).
func payloadSeqs(pkts []out) []uint16 {
	var r []uint16
	for _, p := range pkts {
		r = append(r, uint16(p.rtp.Payload[1])<<8|uint16(p.rtp.Payload[2]))
	}
	return r
}

func contiguous(t *testing.T, pkts []out) {
	t.Helper()
	for i := 1; i < len(pkts); i++ {
		if pkts[i].Seq != pkts[i-1].Seq+1 {
			t.Fatalf("output seq %d follows %d, want contiguous: %v", pkts[i].Seq, pkts[i-1].Seq, seqsOf(pkts))
		}
	}
}

func TestInOrderPacketsPassThroughWithContiguousSequenceNumbers(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	tracks := h.Tracks()

	for i := range 10 {
		seq := uint16(1000 + i)
		pub.WriteRTP(hub.Video, pkt(seq, 90000+uint32(i)*3000, i%2 == 1, small(seq)), t0)
		pub.WriteRTP(hub.Audio, pkt(uint16(500+i), 48000+uint32(i)*960, false, []byte{0xfc, byte(i), 1, 2, 3}), t0)
	}
	got := drain(t, s)
	if len(got) != 20 {
		t.Fatalf("got %d packets, want 20", len(got))
	}
	for _, tr := range []hub.Track{hub.Video, hub.Audio} {
		pkts := onlyTrack(got, tr)
		contiguous(t, pkts)
		info := tracks[tr]
		for i, p := range pkts {
			h := p.rtp.Header
			if h.SSRC != info.SSRC || h.PayloadType != info.PayloadType || h.Extension || len(h.CSRC) != 0 || h.Padding {
				t.Errorf("%v packet %d header %+v, want SSRC %d PT %d, no extension, CSRC or padding", tr, i, h, info.SSRC, info.PayloadType)
			}
			if h.Timestamp-pkts[0].rtp.Timestamp != p.Timestamp-pkts[0].Timestamp || p.Timestamp != h.Timestamp || p.Seq != h.SequenceNumber {
				t.Errorf("%v packet %d: Packet fields %d/%d disagree with header %d/%d", tr, i, p.Seq, p.Timestamp, h.SequenceNumber, h.Timestamp)
			}
		}
	}
	video := onlyTrack(got, hub.Video)
	for i, p := range video {
		if want := uint32(i) * 3000; p.Timestamp-video[0].Timestamp != want {
			t.Errorf("video packet %d timestamp step %d, want %d", i, p.Timestamp-video[0].Timestamp, want)
		}
		if p.rtp.Marker != (i%2 == 1) {
			t.Errorf("video packet %d marker %v, want %v", i, p.rtp.Marker, i%2 == 1)
		}
		if want := small(uint16(1000 + i)); !bytes.Equal(p.rtp.Payload, want) {
			t.Errorf("video packet %d payload %x, want %x", i, p.rtp.Payload, want)
		}
	}
	if tracks[hub.Video].SSRC == tracks[hub.Audio].SSRC {
		t.Errorf("video and audio share SSRC %d", tracks[hub.Video].SSRC)
	}
	st := h.Stats()
	if st.PacketsIn != 20 || st.PacketsOut != 20 || st.Lost != 0 || st.Late != 0 {
		t.Errorf("stats in/out/lost/late = %d/%d/%d/%d, want 20/20/0/0", st.PacketsIn, st.PacketsOut, st.Lost, st.Late)
	}
}

func TestReorderWithinHoldRestoresPublisherOrder(t *testing.T) {
	tests := []struct {
		name string
		seqs []uint16
	}{
		{"two swapped", []uint16{10, 12, 11, 13}},
		{"four reversed", []uint16{10, 15, 14, 13, 12, 11, 16}},
		{"two holes", []uint16{10, 12, 14, 11, 13, 15}},
		{"across the wrap-around", []uint16{65533, 0, 65535, 65534, 2, 1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pub, _ := newLiveHub(t)
			s := subscribe(t, h, hub.SubscribeOptions{})
			writeSeqs(pub, t0, tt.seqs...)
			got := drain(t, s)
			contiguous(t, got)
			for i, seq := range payloadSeqs(got) {
				if want := tt.seqs[0] + uint16(i); seq != want {
					t.Fatalf("output %d carries publisher seq %d, want %d (all: %v)", i, seq, want, payloadSeqs(got))
				}
			}
			if len(got) != len(tt.seqs) {
				t.Errorf("got %d packets, want %d", len(got), len(tt.seqs))
			}
			if st := h.Stats(); st.Lost != 0 || st.Late != 0 {
				t.Errorf("lost %d late %d, want 0 0", st.Lost, st.Late)
			}
		})
	}
}

func TestMissingPacketIsSkippedAfterMaxHoldLeavingAGap(t *testing.T) {
	h, pub, clk := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})

	writeSeqs(pub, t0, 1, 2)
	writeSeqs(pub, t0.Add(5*time.Millisecond), 4, 5) // 3 is missing; hold runs from 4's arrival
	writeSeqs(pub, t0.Add(10*time.Millisecond), 7)   // 6 is missing too
	before := drain(t, s)
	if got := payloadSeqs(before); len(got) != 2 {
		t.Fatalf("before MaxHold got publisher seqs %v, want [1 2]", got)
	}

	h.ReleaseExpired(clk.Advance(44 * time.Millisecond)) // 39 ms after 4 arrived
	if got := drain(t, s); len(got) != 0 {
		t.Fatalf("1 ms before MaxHold released %v", payloadSeqs(got))
	}
	h.ReleaseExpired(clk.Advance(time.Millisecond))
	after := drain(t, s)
	if got := payloadSeqs(after); !equal(got, []uint16{4, 5}) {
		t.Fatalf("after MaxHold got publisher seqs %v, want [4 5]", got)
	}
	if d := after[0].Seq - before[1].Seq; d != 2 {
		t.Errorf("output seq after the hole is last+%d, want last+2 (one unused number per lost packet)", d)
	}

	// The hold of 6 runs from the arrival of 7, the first packet behind it.
	h.ReleaseExpired(clk.Advance(4 * time.Millisecond))
	if got := drain(t, s); len(got) != 0 {
		t.Fatalf("1 ms before MaxHold of the second hole released %v", payloadSeqs(got))
	}
	h.ReleaseExpired(clk.Advance(time.Millisecond))
	last := drain(t, s)
	if got := payloadSeqs(last); !equal(got, []uint16{7}) {
		t.Fatalf("after MaxHold of the second hole got publisher seqs %v, want [7]", got)
	}
	if d := last[0].Seq - after[1].Seq; d != 2 {
		t.Errorf("output seq after the second hole is last+%d, want last+2", d)
	}
	if st := h.Stats(); st.Lost != 2 {
		t.Errorf("Lost = %d, want 2", st.Lost)
	}

	// The missing packet arriving now is late.
	writeSeqs(pub, clk.Now(), 3)
	if got := drain(t, s); len(got) != 0 {
		t.Errorf("late retransmission released %v", payloadSeqs(got))
	}
	if st := h.Stats(); st.Late != 1 {
		t.Errorf("Late = %d, want 1", st.Late)
	}
}

func TestRetransmissionBeforeMaxHoldFillsTheHole(t *testing.T) {
	h, pub, clk := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})

	writeSeqs(pub, t0, 1, 2, 4, 5)
	writeSeqs(pub, clk.Advance(39*time.Millisecond), 3)
	h.ReleaseExpired(clk.Advance(100 * time.Millisecond))
	got := drain(t, s)
	contiguous(t, got)
	if seqs := payloadSeqs(got); len(seqs) != 5 || seqs[2] != 3 || seqs[4] != 5 {
		t.Fatalf("got publisher seqs %v, want [1 2 3 4 5]", seqs)
	}
	if st := h.Stats(); st.Lost != 0 {
		t.Errorf("Lost = %d, want 0", st.Lost)
	}
}

func TestHoldTimerReleasesWithoutReleaseExpiredCalls(t *testing.T) {
	opts := hub.Options{MaxHold: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r := hub.NewRegistry(opts)
	defer r.Close()
	pub := claim(t, r, 1, hub.PublisherInfo{})
	h := pub.Hub()
	s := h.Subscribe(hub.SubscribeOptions{})
	now := time.Now()
	writeSeqs(pub, now, 1, 3)
	writeSeqs(pub, now.Add(5*time.Millisecond), 5) // held after 3 is released: the timer is armed again

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, want := range []uint16{1, 3, 5} {
		p, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v (the hold timer never released publisher seq %d)", err, want)
		}
		if got := uint16(p.Data[13])<<8 | uint16(p.Data[14]); got != want {
			t.Fatalf("got publisher seq %d, want %d", got, want)
		}
	}
}

func TestLateAndDuplicatePacketsAreDropped(t *testing.T) {
	tests := []struct {
		name     string
		seqs     []uint16
		wantOut  []uint16
		wantLate uint64
	}{
		{"duplicate of a released packet", []uint16{1, 2, 2, 3}, []uint16{1, 2, 3}, 1},
		{"duplicate of a held packet", []uint16{1, 3, 3, 2}, []uint16{1, 2, 3}, 1},
		{"packet older than the first", []uint16{5, 6, 4, 7}, []uint16{5, 6, 7}, 1},
		{"old duplicates across the wrap-around", []uint16{65535, 0, 1, 65535, 0}, []uint16{65535, 0, 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, pub, _ := newLiveHub(t)
			s := subscribe(t, h, hub.SubscribeOptions{})
			writeSeqs(pub, t0, tt.seqs...)
			got := drain(t, s)
			contiguous(t, got)
			if seqs := payloadSeqs(got); !equal(seqs, tt.wantOut) {
				t.Errorf("got publisher seqs %v, want %v", seqs, tt.wantOut)
			}
			if st := h.Stats(); st.Late != tt.wantLate || st.PacketsIn != uint64(len(tt.seqs)) {
				t.Errorf("Late %d PacketsIn %d, want %d %d", st.Late, st.PacketsIn, tt.wantLate, len(tt.seqs))
			}
		})
	}
}

func equal(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSequenceNumbersWrapAroundOnInputAndOutput(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})

	// More than 2^16 packets: whatever the hub's first output number,
	// both numberings pass 65535 → 0.
	const n = 1<<16 + 100
	seq := uint16(65000)
	var prev out
	outWrapped := false
	for i := range n {
		if i == 0 {
			writeSeqs(pub, t0, seq, seq+1) // the first packet sets the expected numbering
		} else if i%2 == 0 && i+1 < n {
			// swap each pair so that the reorder buffer works across the wrap too
			writeSeqs(pub, t0, seq+1, seq)
		} else if i%2 == 0 {
			writeSeqs(pub, t0, seq)
		}
		if i%2 == 1 || i+1 == n {
			for _, p := range drain(t, s) {
				if prev.Data != nil {
					if p.Seq != prev.Seq+1 {
						t.Fatalf("output seq %d after %d", p.Seq, prev.Seq)
					}
					if got := payloadSeqs([]out{p})[0]; got != payloadSeqs([]out{prev})[0]+1 {
						t.Fatalf("publisher seq %d after %d", got, payloadSeqs([]out{prev})[0])
					}
					outWrapped = outWrapped || p.Seq == 0
				}
				prev = p
			}
		}
		seq++
	}
	if !outWrapped {
		t.Error("output sequence numbers never passed 65535 → 0")
	}
	if st := h.Stats(); st.PacketsOut != n || st.Lost != 0 || st.Late != 0 {
		t.Errorf("out %d lost %d late %d, want %d 0 0", st.PacketsOut, st.Lost, st.Late, n)
	}
}

func TestReconnectContinuesSequenceNumbersAndTimestamps(t *testing.T) {
	tests := []struct {
		track     hub.Track
		clockRate uint32
		step      uint32 // publisher ticks between packets
		pause     time.Duration
		wantTS    uint32 // output ts step from the last packet before to the first after
	}{
		{hub.Video, 90000, 3000, 5 * time.Second, 5 * 90000},
		{hub.Audio, 48000, 960, 1500 * time.Millisecond, 1500 * 48},
		{hub.Video, 90000, 3000, time.Millisecond, 3000}, // at least one frame
		{hub.Audio, 48000, 960, 0, 960},
	}
	for _, tt := range tests {
		t.Run(tt.track.String()+" after "+tt.pause.String(), func(t *testing.T) {
			clk := &clock{t: t0}
			r := hub.NewRegistry(testOptions(clk))
			defer r.Close()
			pub := claim(t, r, 77, obs)
			h := pub.Hub()
			s := subscribe(t, h, hub.SubscribeOptions{})
			ssrcs := h.Tracks()

			for i := range 10 {
				pub.WriteRTP(tt.track, pkt(uint16(40000+i), 123456+uint32(i)*tt.step, true, small(uint16(i))), clk.Advance(20*time.Millisecond))
			}
			pub.Release()
			if st := h.Stats(); st.Live {
				t.Error("Live after Release")
			}
			pub.WriteRTP(tt.track, pkt(40010, 0, true, small(99)), clk.Now()) // between sessions: dropped

			clk.Advance(tt.pause)
			next := claim(t, r, 77, hub.PublisherInfo{Software: "OBS Studio 30.0.0"})
			for i := range 3 {
				next.WriteRTP(tt.track, pkt(uint16(i), uint32(i)*tt.step, true, small(uint16(100+i))), clk.Now())
				clk.Advance(20 * time.Millisecond)
			}

			got := drain(t, s)
			if len(got) != 13 {
				t.Fatalf("got %d packets, want 13 (10 + 3, none from between sessions)", len(got))
			}
			contiguous(t, got)
			last, first := got[9], got[10]
			if d := first.Timestamp - last.Timestamp; d != tt.wantTS {
				t.Errorf("timestamp step across the reconnect %d, want %d", d, tt.wantTS)
			}
			for i := 11; i < 13; i++ {
				if d := got[i].Timestamp - got[i-1].Timestamp; d != tt.step {
					t.Errorf("timestamp step after the reconnect %d, want %d", d, tt.step)
				}
			}
			if h.Tracks()[tt.track].SSRC != ssrcs[tt.track].SSRC || first.rtp.SSRC != last.rtp.SSRC {
				t.Error("SSRC changed across the reconnect")
			}
			st := h.Stats()
			if !st.Live || st.Publishes != 2 || st.Publisher.Software != "OBS Studio 30.0.0" || !st.Since.Equal(t0.Add(200*time.Millisecond+tt.pause)) {
				t.Errorf("stats live %v publishes %d publisher %q since %v", st.Live, st.Publishes, st.Publisher.Software, st.Since)
			}
		})
	}
}

func TestReleaseLetsHeldPacketsGo(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	writeSeqs(pub, t0, 1, 3, 4)
	pub.Release()
	got := drain(t, s)
	if seqs := payloadSeqs(got); !equal(seqs, []uint16{1, 3, 4}) {
		t.Fatalf("got publisher seqs %v, want [1 3 4]", seqs)
	}
	if got[1].Seq != got[0].Seq+2 {
		t.Errorf("no gap for the lost packet: %v", seqsOf(got))
	}
	if st := h.Stats(); st.Lost != 1 {
		t.Errorf("Lost = %d, want 1", st.Lost)
	}
}

func TestPublisherNumberingJumpIsADiscontinuity(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	writeSeqs(pub, t0, 1, 2, 4, 30000, 30001)
	got := drain(t, s)
	if seqs := payloadSeqs(got); !equal(seqs, []uint16{1, 2, 4, 30000, 30001}) {
		t.Fatalf("got publisher seqs %v, want [1 2 4 30000 30001]", seqs)
	}
	if want := []uint16{0, 1, 3, 5, 6}; !equal(relative(got), want) {
		t.Errorf("output seqs %v relative to the first, want %v (a gap for 3, one for the jump)", relative(got), want)
	}
	if st := h.Stats(); st.Discontinuities != 1 || st.Lost != 1 {
		t.Errorf("Discontinuities %d Lost %d, want 1 1", st.Discontinuities, st.Lost)
	}
}

func TestPublisherRestartingItsNumberingIsFollowed(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{})
	var seqs []uint16
	for i := range 100 {
		seqs = append(seqs, uint16(20000+i))
	}
	for i := range 100 {
		seqs = append(seqs, uint16(i)) // 20000 behind: not a retransmission
	}
	writeSeqs(pub, t0, seqs...)
	got := payloadSeqs(drain(t, s))
	if len(got) < 100+100-16 || got[len(got)-1] != 99 {
		t.Errorf("got %d packets ending with publisher seq %d, want the new numbering followed after a few", len(got), got[len(got)-1])
	}
}

func relative(pkts []out) []uint16 {
	var r []uint16
	for _, p := range pkts {
		r = append(r, p.Seq-pkts[0].Seq)
	}
	return r
}

func TestRetransmitReturnsExactBytesUntilOverwritten(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := subscribe(t, h, hub.SubscribeOptions{Capacity: 4096})
	writeSeqs(pub, t0, 1, 2, 3)
	got := drain(t, s)

	buf := make([]byte, hub.MaxPacketSize)
	for _, p := range got {
		r, ok := h.Retransmit(hub.Video, p.Seq, buf)
		if !ok || !bytes.Equal(r.Data, p.Data) || r.Seq != p.Seq || r.Timestamp != p.Timestamp ||
			r.Keyframe != p.Keyframe || r.StreamStart != p.StreamStart {
			t.Fatalf("Retransmit(%d) = %+v %v, want %+v", p.Seq, r, ok, p.Packet)
		}
	}
	if !got[0].StreamStart {
		t.Error("the session's first packet is not marked as a stream start, so its retransmission could not be either")
	}
	if _, ok := h.Retransmit(hub.Audio, got[0].Seq, buf); ok {
		t.Error("Retransmit found a video packet on the audio track")
	}
	if _, ok := h.Retransmit(hub.Video, got[2].Seq+1, buf); ok {
		t.Error("Retransmit found a packet not sent yet")
	}
	if _, ok := h.Retransmit(hub.Video, got[0].Seq, buf[:5]); ok {
		t.Error("Retransmit into a too small buffer succeeded")
	}

	// The ring holds the last 2048 packets.
	for i := range uint16(2045) {
		writeSeqs(pub, t0, 4+i)
	}
	if r, ok := h.Retransmit(hub.Video, got[0].Seq, buf); !ok || !bytes.Equal(r.Data, got[0].Data) {
		t.Fatal("the first packet is gone after 2048 packets")
	}
	writeSeqs(pub, t0, 4+2045)
	if _, ok := h.Retransmit(hub.Video, got[0].Seq, buf); ok {
		t.Error("Retransmit returned a packet overwritten by the ring")
	}
	if r, ok := h.Retransmit(hub.Video, got[1].Seq, buf); !ok || !bytes.Equal(r.Data, got[1].Data) {
		t.Error("the second packet is gone too early")
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	s := h.Subscribe(hub.SubscribeOptions{})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	h.Close()
	if err := <-errc; !errors.Is(err, hub.ErrClosed) {
		t.Errorf("waiting Next after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Next(context.Background()); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
	if _, err := h.Subscribe(hub.SubscribeOptions{}).Next(context.Background()); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Next of a subscription to a closed hub: %v, want ErrClosed", err)
	}
	writeSeqs(pub, t0, 1) // ignored, no panic
	if st := h.Stats(); st.Live || st.Subscribers != 0 {
		t.Errorf("closed hub: live %v, %d subscribers", st.Live, st.Subscribers)
	}
}

func TestSubscriptionCloseEndsItsNextOnly(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	a := h.Subscribe(hub.SubscribeOptions{})
	b := subscribe(t, h, hub.SubscribeOptions{})
	a.Close()
	if _, err := a.Next(context.Background()); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Next after Close: %v, want ErrClosed", err)
	}
	writeSeqs(pub, t0, 1)
	if got := drain(t, b); len(got) != 1 {
		t.Errorf("the other subscription got %d packets, want 1", len(got))
	}
	if st := h.Stats(); st.Subscribers != 1 {
		t.Errorf("Subscribers = %d, want 1", st.Subscribers)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next on an empty queue with a cancelled context: %v", err)
	}
}

// TestStreamStartMarksTheFirstPacketOfEachTrackInEachSession: the first
// packet a publisher session releases in each track carries StreamStart,
// in the live output, in the keyframe cache a subscriber starts with and
// in the retransmission ring; no other packet does.
func TestStreamStartMarksTheFirstPacketOfEachTrackInEachSession(t *testing.T) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	t.Cleanup(r.Close)
	pub := claim(t, r, 77, obs)
	h := pub.Hub()
	s := subscribe(t, h, hub.SubscribeOptions{Capacity: 256})
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
	session := func(pub *hub.Publisher, at time.Time) {
		pub.WriteRTP(hub.Video, pkt(1, 0, false, sps), at)
		pub.WriteRTP(hub.Video, pkt(2, 0, true, []byte{0x65, 0x88, 1, 2}), at)
		pub.WriteRTP(hub.Audio, pkt(10, 0, false, []byte{0xfc, 1}), at)
		pub.WriteRTP(hub.Video, pkt(3, 3000, true, small(3)), at)
		pub.WriteRTP(hub.Audio, pkt(11, 960, false, []byte{0xfc, 2}), at)
	}
	startsOf := func(pkts []out) (starts []hub.Track) {
		for _, p := range pkts {
			if p.StreamStart {
				starts = append(starts, p.Track)
			}
		}
		return starts
	}
	session(pub, t0)
	first := drain(t, s)
	if got := startsOf(first); !slices.Equal(got, []hub.Track{hub.Video, hub.Audio}) || !first[0].StreamStart {
		t.Fatalf("first session: stream starts on %v, first packet %+v; want its first video and audio packet", got, first[0].Packet)
	}
	buf := make([]byte, hub.MaxPacketSize)
	for _, p := range first {
		if r, ok := h.Retransmit(p.Track, p.Seq, buf); !ok || r.StreamStart != p.StreamStart || r.Keyframe != p.Keyframe {
			t.Fatalf("retransmission of %v %d: %+v %v, want the marks it was sent with", p.Track, p.Seq, r, ok)
		}
	}

	pub.Release()
	clk.t = t0.Add(2 * time.Second)
	next := claim(t, r, 77, obs)
	session(next, clk.t)
	second := drain(t, s)
	if got := startsOf(second); !slices.Equal(got, []hub.Track{hub.Video, hub.Audio}) || !second[0].StreamStart || !second[0].Keyframe {
		t.Fatalf("second session: stream starts on %v, first packet %+v; want its first video (a keyframe) and audio packet", got, second[0].Packet)
	}

	// A subscriber that joins now starts with the cached keyframe, whose
	// first packet is the session's stream start.
	late := subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	cached := drain(t, late)
	if len(cached) == 0 || !cached[0].StreamStart || !cached[0].Keyframe {
		t.Fatalf("the keyframe cache starts with %+v, want the session's first packet, marked", cached)
	}
}

// TestASubscriberFindingNoKeyframeAsksThePublisherForOne: a subscriber
// that wants to start at a keyframe while none is cached makes the hub ask
// the publisher (once per such subscriber); one that finds a keyframe
// cached, or does not want one, asks nothing; RequestKeyframe asks a live
// publisher that can be asked and says when none can.
func TestASubscriberFindingNoKeyframeAsksThePublisherForOne(t *testing.T) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	t.Cleanup(r.Close)
	var asked int
	pub := claim(t, r, 77, obs)
	pub.SetKeyframeRequester(func(tr hub.Track) {
		if tr != hub.Video {
			t.Errorf("asked for a keyframe of %s, want video", tr)
		}
		asked++
	})
	h := pub.Hub()
	subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	subscribe(t, h, hub.SubscribeOptions{})
	if asked != 1 {
		t.Fatalf("asked %d times, want once: for the subscriber that wants a keyframe", asked)
	}
	if !h.RequestKeyframe(hub.Video) || asked != 2 {
		t.Fatalf("RequestKeyframe: asked %d times, want 2", asked)
	}

	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
	pub.WriteRTP(hub.Video, pkt(1, 0, false, sps), clk.t)
	pub.WriteRTP(hub.Video, pkt(2, 0, true, []byte{0x65, 0x88, 1, 2}), clk.t)
	subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	if asked != 2 {
		t.Fatalf("asked %d times, want no more with a keyframe cached", asked)
	}

	pub.Release()
	if h.RequestKeyframe(hub.Video) || asked != 2 {
		t.Fatalf("RequestKeyframe without a publisher asked (%d)", asked)
	}
	ftl := claim(t, r, 77, obs) // cannot be asked
	defer ftl.Release()
	if h.RequestKeyframe(hub.Video) {
		t.Fatal("RequestKeyframe reports asking a publisher that cannot be asked")
	}
}
