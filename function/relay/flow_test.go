package relay

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"lightspeed/shared/nack"
	"lightspeed/shared/relaywire"
)

func TestFlowHandsOnEachPacketOnce(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name       string
		seqs       []uint16
		handedOn   []bool
		lost       uint64
		recovered  uint64
		duplicates uint64
	}{
		{"in order", []uint16{10, 11, 12}, []bool{true, true, true}, 0, 0, 0},
		{"a hole filled late", []uint16{10, 12, 11}, []bool{true, true, true}, 1, 1, 0},
		{"a duplicate", []uint16{10, 11, 11, 10}, []bool{true, true, false, false}, 0, 0, 2},
		{"a retransmission arriving twice", []uint16{10, 12, 11, 11}, []bool{true, true, true, false}, 1, 1, 1},
		{"wrap-around", []uint16{65534, 65535, 1, 0}, []bool{true, true, true, true}, 1, 1, 0},
		{"a forward jump is no loss", []uint16{10, 11, 11 + nack.MaxJump + 1, 11 + nack.MaxJump + 2}, []bool{true, true, true, true}, 0, 0, 0},
		// 39000 is far behind and was never missing: a stale duplicate
		// (a retransmission that came twice), dropped; the numbering
		// goes on from 40001.
		{"a stale duplicate far behind", []uint16{40000, 40001, 39000, 40002}, []bool{true, true, false, true}, 0, 0, 1},
		// 1511 opens the 510 holes 1001..1510. 1000, 511 behind, is still
		// in the window: a duplicate. 1001 fills the oldest hole: the flow
		// tracks up to nack.MaxTracked holes, so it was still asked for and
		// counts as recovered (the default 64 would have given it up: late).
		{"the edge of the window", []uint16{1000, 1511, 1000, 1001}, []bool{true, true, false, true}, 510, 1, 1},
		// 1001 comes back 599 behind the newest, beyond the window, but
		// its hole is still tracked: a retransmission, not a new numbering
		// (which would have made 1500 open 498 holes).
		{"a retransmission from behind the window", []uint16{1000, 1002, 1400, 1600, 1001, 1500},
			[]bool{true, true, true, true, true, true}, 1 + 397 + 199, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
			var st counters
			for i, seq := range tt.seqs {
				if got := f.accept(seq, testSSRC, t0, &st); got != tt.handedOn[i] {
					t.Errorf("packet %d (seq %d) handed on: %v, want %v", i, seq, got, tt.handedOn[i])
				}
			}
			if st.lost.Load() != tt.lost || st.recovered.Load() != tt.recovered || st.duplicates.Load() != tt.duplicates {
				t.Errorf("lost %d recovered %d duplicates %d, want %d %d %d", st.lost.Load(), st.recovered.Load(),
					st.duplicates.Load(), tt.lost, tt.recovered, tt.duplicates)
			}
		})
	}
}

// testSSRC is the SSRC of the flows' stream in tests.
const testSSRC = 0x1234abcd

// TestFlowFollowsANewStream: another SSRC is a new stream (the gateway's
// hub for the channel was made anew), with numbering of its own: the flow
// starts afresh at its first packet, wherever that falls, and the old
// stream's holes are no longer asked for.
func TestFlowFollowsANewStream(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, first := range []uint16{39000, 40001, 40100, 60000} {
		f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
		var st counters
		for _, seq := range []uint16{40000, 40002} { // 40001 missing
			f.accept(seq, testSSRC, t0, &st)
		}
		const newSSRC = 0x5555aaaa
		for _, seq := range []uint16{first, first + 1, first + 3} { // first+2 missing
			if !f.accept(seq, newSSRC, t0, &st) {
				t.Fatalf("new stream from %d: packet %d not handed on", first, seq)
			}
		}
		if f.accept(first+1, newSSRC, t0, &st) {
			t.Errorf("new stream from %d: a duplicate handed on", first)
		}
		// A straggler of the old stream, even its missing packet, is
		// dropped and changes nothing.
		if f.accept(40001, testSSRC, t0, &st) {
			t.Errorf("new stream from %d: the old stream's straggler handed on", first)
		}
		if f.tracker.Outstanding() != 1 || st.lost.Load() != 2 || st.duplicates.Load() != 2 {
			t.Errorf("new stream from %d: %d holes asked for, %d lost, %d duplicates; want 1 (the new stream's), 2, 2",
				first, f.tracker.Outstanding(), st.lost.Load(), st.duplicates.Load())
		}
		if !f.accept(first+2, newSSRC, t0, &st) || st.recovered.Load() != 1 {
			t.Errorf("new stream from %d: its retransmission not handed on as recovered", first)
		}
	}
}

// TestFlowAnchorAsksForPacketsBeforeTheFirstReceived: the gateway's
// answer says where the subscription starts; packets from there to the
// first one received are asked for, whichever came first, the answer or
// the datagrams.
func TestFlowAnchorAsksForPacketsBeforeTheFirstReceived(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	due := func(f *flow) []uint16 { return f.tracker.Due(t0.Add(nackPolicy.Retry), nil) }
	tests := []struct {
		name        string
		before      []uint16 // received before the answer
		first       uint16
		ssrc        uint32
		after       []uint16 // received after it
		asked       []uint16
		lost        uint64
		handedOnAll bool
	}{
		{"answer first", nil, 65534, testSSRC, []uint16{0, 1}, []uint16{65534, 65535}, 2, true},
		{"datagrams first", []uint16{103, 104, 106}, 100, testSSRC, nil, []uint16{100, 101, 102, 105}, 4, true},
		{"nothing lost", []uint16{100, 101}, 100, testSSRC, []uint16{102}, nil, 0, true},
		{"another stream's answer", []uint16{103, 104}, 100, 0x99, nil, nil, 0, true},
		{"first far behind", []uint16{1000}, 1000 - window, testSSRC, nil, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
			var st counters
			for _, seq := range tt.before {
				if !f.accept(seq, testSSRC, t0, &st) {
					t.Fatalf("packet %d not handed on", seq)
				}
			}
			f.anchor(tt.first, tt.ssrc, t0, &st)
			for _, seq := range tt.after {
				if !f.accept(seq, testSSRC, t0, &st) {
					t.Fatalf("packet %d not handed on", seq)
				}
			}
			if got := due(f); !slices.Equal(got, tt.asked) {
				t.Errorf("asked for %v, want %v", got, tt.asked)
			}
			if st.lost.Load() != tt.lost {
				t.Errorf("lost %d, want %d", st.lost.Load(), tt.lost)
			}
			for _, seq := range tt.asked {
				if !f.accept(seq, testSSRC, t0, &st) {
					t.Errorf("retransmission %d not handed on", seq)
				}
			}
			if st.recovered.Load() != uint64(len(tt.asked)) {
				t.Errorf("recovered %d, want %d", st.recovered.Load(), len(tt.asked))
			}
		})
	}
}

// TestFlowFollowsAJumpOfHalfTheSequenceSpace: numbering that jumps ahead
// by 2^15 or more reads as far behind. Such packets are dropped as stale
// duplicates at first; staleLimit of them in a row, nothing handed on in
// between, and the flow follows the new numbering instead of dropping
// everything until it wraps around.
func TestFlowFollowsAJumpOfHalfTheSequenceSpace(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	var st counters
	for seq := uint16(1000); seq < 1010; seq++ {
		f.accept(seq, testSSRC, t0, &st)
	}
	jump := uint16(1010 + 40000)
	for i := range staleLimit - 1 {
		if f.accept(jump+uint16(i), testSSRC, t0, &st) {
			t.Fatalf("packet %d of the jump handed on before %d in a row", i, staleLimit)
		}
	}
	for i := staleLimit - 1; i < staleLimit+10; i++ {
		if !f.accept(jump+uint16(i), testSSRC, t0, &st) {
			t.Fatalf("packet %d of the jump not handed on", i)
		}
	}
	if f.tracker.Outstanding() != 0 {
		t.Errorf("%d holes asked for after following the jump", f.tracker.Outstanding())
	}
	// A stale duplicate now and then, between packets handed on, never
	// adds up to staleLimit.
	g := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	next := uint16(5000)
	g.accept(next, testSSRC, t0, &st)
	for range 3 * staleLimit {
		next++
		if !g.accept(next, testSSRC, t0, &st) {
			t.Fatalf("packet %d not handed on", next)
		}
		if g.accept(next-window-10, testSSRC, t0, &st) {
			t.Fatalf("stale duplicate %d handed on", next-window-10)
		}
	}
}

func TestFlowHandsOnAPacketArrivingAfterItsNACKsWereGivenUp(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	var st counters
	f.accept(10, testSSRC, t0, &st)
	f.accept(12, testSSRC, t0, &st)
	now := t0
	for range nackPolicy.Tries + 1 {
		f.tracker.Due(now, nil)
		now = now.Add(nackPolicy.Retry)
	}
	if f.tracker.Outstanding() != 0 {
		t.Fatalf("%d holes still asked for", f.tracker.Outstanding())
	}
	if !f.accept(11, testSSRC, now, &st) {
		t.Fatal("the late packet was not handed on")
	}
	if f.accept(11, testSSRC, now, &st) {
		t.Fatal("its duplicate was handed on")
	}
	if st.late.Load() != 1 || st.recovered.Load() != 0 || st.duplicates.Load() != 1 {
		t.Errorf("late %d recovered %d duplicates %d", st.late.Load(), st.recovered.Load(), st.duplicates.Load())
	}
}

// TestFlowAsksForEachPacketLostInABurst loses 300 consecutive datagrams of
// a keyframe cache, as an overflowing datagram queue does, and runs the
// NACK ticker's steps on the flow: every lost packet is asked for, in
// messages the gateway accepts, and each retransmission is handed on,
// though it comes 600 to 900 behind the newest, beyond the window.
func TestFlowAsksForEachPacketLostInABurst(t *testing.T) {
	const first, lost, total = 100, 300, 1000 // datagrams first..first+lost-1 are lost
	t0 := time.Unix(1_700_000_000, 0)
	id := relaywire.FlowOf(77, relaywire.Video)
	start := func() (*flow, *counters) {
		f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
		st := new(counters)
		for seq := range uint16(total) {
			if seq < first || seq >= first+lost {
				if !f.accept(seq, testSSRC, t0, st) {
					t.Fatalf("packet %d not handed on", seq)
				}
			}
		}
		if st.lost.Load() != lost {
			t.Fatalf("%d counted lost, want %d", st.lost.Load(), lost)
		}
		return f, st
	}
	// due is one tick of the NACK ticker: the flow's due sequence numbers,
	// sent through the wire format as one nack message.
	due := func(f *flow, now time.Time) []uint16 {
		t.Helper()
		seqs := f.tracker.Due(now, nil)
		if len(seqs) == 0 {
			return nil
		}
		b, err := relaywire.AppendMessage(nil, &relaywire.NACK{Flow: id, Seqs: seqs})
		if err != nil {
			t.Fatal(err)
		}
		m, err := relaywire.ReadMessage(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("the gateway refuses a nack of %d sequence numbers: %v", len(seqs), err)
		}
		return m.(*relaywire.NACK).Seqs
	}

	t.Run("retransmissions arrive", func(t *testing.T) {
		f, st := start()
		asked := make(map[uint16]int)
		now := t0
		for range 2 * lost / relaywire.MaxNACKSeqs {
			now = now.Add(nackInterval)
			for _, seq := range due(f, now) {
				asked[seq]++
				// The retransmission comes before the next tick.
				if !f.accept(seq, testSSRC, now.Add(nackInterval/2), st) {
					t.Fatalf("retransmission %d not handed on", seq)
				}
			}
		}
		for seq := uint16(first); seq < first+lost; seq++ {
			if asked[seq] != 1 {
				t.Errorf("packet %d asked for %d times, want once", seq, asked[seq])
			}
		}
		if len(asked) != lost || st.recovered.Load() != lost || st.late.Load() != 0 || f.tracker.Outstanding() != 0 {
			t.Errorf("asked for %d, recovered %d, late %d, still outstanding %d; want %d, %d, 0, 0",
				len(asked), st.recovered.Load(), st.late.Load(), f.tracker.Outstanding(), lost, lost)
		}
	})

	t.Run("nothing comes back", func(t *testing.T) {
		// Every packet still gets all its tries before the timeout, though
		// one message carries at most relaywire.MaxNACKSeqs of them.
		f, _ := start()
		asked := make(map[uint16]int)
		for now := t0.Add(nackInterval); now.Sub(t0) <= nackPolicy.Timeout; now = now.Add(nackInterval) {
			for _, seq := range due(f, now) {
				asked[seq]++
			}
		}
		for seq := uint16(first); seq < first+lost; seq++ {
			if asked[seq] != nackPolicy.Tries {
				t.Errorf("packet %d asked for %d times, want %d", seq, asked[seq], nackPolicy.Tries)
			}
		}
		if len(asked) != lost || f.tracker.Outstanding() != 0 {
			t.Errorf("asked for %d packets, %d still outstanding; want %d, 0", len(asked), f.tracker.Outstanding(), lost)
		}
	})
}

func TestFingerprintAcceptsColonsAndUppercase(t *testing.T) {
	const fp = "AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89"
	c := NewClient(Config{Fingerprint: fp})
	if _, err := c.tlsConfig(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"abcd", "zz" + fp[2:], fp + "00"} {
		c := NewClient(Config{Fingerprint: bad})
		if _, err := c.tlsConfig(); err == nil {
			t.Errorf("fingerprint %q accepted", bad)
		}
	}
}

// nopHandler takes packets and does nothing.
type nopHandler struct{ Handler }

func (nopHandler) WriteRTP(*Packet) {}

// BenchmarkDeliver is the per-packet work of the receive loop.
func BenchmarkDeliver(b *testing.B) {
	cc := &conn{c: NewClient(Config{}), h: nopHandler{}, flows: make(map[relaywire.Flow]*flow)}
	id := relaywire.FlowOf(77, relaywire.Video)
	cc.flows[id] = newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	d := relaywire.AppendDatagram(nil, id, 0, pkt)
	n := len(d) - len(pkt) // the RTP packet starts here
	b.ReportAllocs()
	b.SetBytes(int64(len(d)))
	var seq uint16
	for b.Loop() {
		seq++
		d[n+2], d[n+3] = byte(seq>>8), byte(seq)
		cc.deliver(d)
	}
}

// datagram returns the parsed datagram of a video packet of channel 77.
func datagram(t *testing.T, seq uint16, ts, ssrc uint32, flags relaywire.Flags) *relaywire.Datagram {
	t.Helper()
	pkt := make([]byte, 13)
	pkt[0] = 0x80
	binary.BigEndian.PutUint16(pkt[2:], seq)
	binary.BigEndian.PutUint32(pkt[4:], ts)
	binary.BigEndian.PutUint32(pkt[8:], ssrc)
	pkt[12] = byte(seq)
	d, err := relaywire.ParseDatagram(relaywire.AppendDatagram(nil, relaywire.FlowOf(77, relaywire.Video), flags, pkt))
	if err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestFlowPassesTheHubsMarksOn: the keyframe and stream-start marks of a
// datagram reach the fan-out as they were sent; the fan-out never looks
// at the media to find them.
func TestFlowPassesTheHubsMarksOn(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	var st counters
	for i, flags := range []relaywire.Flags{relaywire.FlagStreamStart | relaywire.FlagKeyframe, 0, relaywire.FlagKeyframe, relaywire.FlagStreamStart} {
		p, ok := f.receive(datagram(t, uint16(10+i), 3000, testSSRC, flags), t0, &st)
		if !ok || p.Keyframe != flags.Keyframe() || p.StreamStart != flags.StreamStart() || p.Renumbered || p.Seq != uint16(10+i) ||
			p.Channel != 77 || p.Track != relaywire.Video || !bytes.Equal(p.Payload, []byte{byte(10 + i)}) {
			t.Errorf("packet %d with flags %d: %+v, %v", i, flags, p, ok)
		}
	}
}

// TestFlowNumbersANewStreamAfterTheLast: another SSRC (a restarted
// gateway's hub) continues the output numbering: the first new packet
// follows the newest old one, its timestamp advanced by the pause, and
// it is marked as a stream start; the old stream's stragglers are dropped.
func TestFlowNumbersANewStreamAfterTheLast(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	out := newNumbering(relaywire.Video)
	f := newFlow(77, relaywire.Video, out)
	var st counters
	for i := range 3 {
		if p, ok := f.receive(datagram(t, uint16(100+i), 9000+uint32(i)*3000, testSSRC, 0), t0.Add(time.Duration(i)*33*time.Millisecond), &st); !ok || p.Seq != uint16(100+i) || p.StreamStart {
			t.Fatalf("old stream packet %d: %+v %v", i, p, ok)
		}
	}
	const newSSRC = 0x5555aaaa
	at := t0.Add(66*time.Millisecond + 2*time.Second)
	f.anchor(40000, newSSRC, at, &st) // the subscription's answer
	p, ok := f.receive(datagram(t, 40000, 777, newSSRC, relaywire.FlagKeyframe), at, &st)
	if !ok || p.Seq != 103 || !p.StreamStart || !p.Renumbered || p.StreamFrom != 103 || !p.Keyframe || p.Timestamp != 15000+2*90000 {
		t.Fatalf("first packet of the new stream: seq %d ts %d stream start %v (%v), want 103, %d, true", p.Seq, p.Timestamp, p.StreamStart, ok, 15000+2*90000)
	}
	p, ok = f.receive(datagram(t, 40001, 777, newSSRC, 0), at, &st)
	if !ok || p.Seq != 104 || p.StreamStart || p.Timestamp != 15000+2*90000 {
		t.Fatalf("second packet of the new stream: %+v %v", p, ok)
	}
	if _, ok := f.receive(datagram(t, 99, 9000, testSSRC, 0), at, &st); ok {
		t.Error("a straggler of the old stream was handed on")
	}

	// A new connection to the same gateway: the same stream goes on with
	// the same numbering, no stream start.
	g := newFlow(77, relaywire.Video, out)
	p, ok = g.receive(datagram(t, 40005, 3777, newSSRC, 0), at.Add(time.Second), &st)
	if !ok || p.Seq != 108 || p.StreamStart || p.Timestamp != 15000+2*90000+3000 {
		t.Fatalf("after a reconnect: %+v %v, want seq 108 without a stream start", p, ok)
	}
}

// TestFlowNumbersANewStreamFromWhereTheGatewaySaysItStarts: when the
// subscription's answer tells where a new stream starts, its first
// packets, lost and recovered after later ones, still fit before them.
func TestFlowNumbersANewStreamFromWhereTheGatewaySaysItStarts(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	out := newNumbering(relaywire.Video)
	f := newFlow(77, relaywire.Video, out)
	var st counters
	f.receive(datagram(t, 500, 1000, testSSRC, 0), t0, &st)

	const newSSRC = 0x5555aaaa
	g := newFlow(77, relaywire.Video, out) // the connection to the restarted gateway
	g.anchor(7000, newSSRC, t0, &st)
	p, ok := g.receive(datagram(t, 7002, 50, newSSRC, 0), t0.Add(time.Second), &st)
	if !ok || p.Seq != 503 || !p.StreamStart || p.StreamFrom != 501 {
		t.Fatalf("first packet received: %+v %v, want seq 503 of a stream from 501 (two lost before it)", p, ok)
	}
	for i, want := range []uint16{501, 502} {
		p, ok := g.receive(datagram(t, 7000+uint16(i), 50, newSSRC, relaywire.Flags(1-i)), t0.Add(time.Second), &st)
		if !ok || p.Seq != want || p.StreamStart {
			t.Errorf("recovered packet %d: %+v %v, want seq %d", 7000+i, p, ok, want)
		}
	}
}

// TestFlowNumbersAJumpAsANewStream: numbering that jumped by half the
// sequence space or more (the flow follows it after staleLimit packets)
// continues the output numbering too, marked as a stream start.
func TestFlowNumbersAJumpAsANewStream(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := newFlow(77, relaywire.Video, newNumbering(relaywire.Video))
	var st counters
	f.receive(datagram(t, 40000, 0, testSSRC, 0), t0, &st)
	var last Packet
	for i := range staleLimit {
		p, ok := f.receive(datagram(t, 30000+uint16(i), 0, testSSRC, 0), t0, &st)
		if ok {
			last = p
			if i != staleLimit-1 {
				t.Fatalf("far-behind packet %d handed on", i)
			}
		}
	}
	if last.Seq != 40001 || !last.StreamStart {
		t.Fatalf("the packet that makes the jump: %+v, want seq 40001 and a stream start", last)
	}
	if p, ok := f.receive(datagram(t, 30000+staleLimit, 0, testSSRC, 0), t0, &st); !ok || p.Seq != 40002 || p.StreamStart {
		t.Fatalf("the next one: %+v %v", p, ok)
	}
}

// TestFlowHoldsANewStreamBackUntilTheSubscriptionSaysWhereItStarts: on a
// connection to a restarted gateway, datagrams may come before the answer
// to the subscription. Numbered then, the stream's first packets,
// recovered later, would get the numbers the old stream used: the flow
// does not hand them on (the connection holds them, up to maxHeld, and
// replays them after the answer); one not held becomes a hole once the
// answer anchors the stream, and is asked for again.
func TestFlowHoldsANewStreamBackUntilTheSubscriptionSaysWhereItStarts(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	out := newNumbering(relaywire.Video)
	var st counters
	old := newFlow(77, relaywire.Video, out)
	for seq := uint16(500); seq <= 502; seq++ {
		old.receive(datagram(t, seq, 1000, testSSRC, 0), t0, &st)
	}

	const newSSRC = 0x5555aaaa
	g := newFlow(77, relaywire.Video, out)
	early := datagram(t, 7002, 50, newSSRC, 0)
	if !g.waits(early) {
		t.Fatal("a new stream's packet does not wait for the subscription's answer")
	}
	if _, ok := g.receive(early, t0, &st); ok {
		t.Fatal("a new stream's packet was handed on before the subscription's answer")
	}
	for i := range maxHeld {
		if !g.hold([]byte{byte(i)}) {
			t.Fatalf("held %d datagrams, want %d", i, maxHeld)
		}
	}
	if g.hold([]byte{1}) {
		t.Fatalf("held more than %d datagrams", maxHeld)
	}
	g.anchor(7000, newSSRC, t0, &st)
	p, ok := g.receive(datagram(t, 7003, 50, newSSRC, 0), t0, &st)
	if !ok || p.Seq != 506 || !p.StreamStart || p.StreamFrom != 503 {
		t.Fatalf("first packet after the answer: %+v %v, want 506 of a stream from 503", p, ok)
	}
	due := g.tracker.Due(t0.Add(time.Second), nil)
	if !slices.Equal(due, []uint16{7000, 7001, 7002}) {
		t.Fatalf("asked again for %v, want the three before it", due)
	}
	p, ok = g.receive(datagram(t, 7000, 50, newSSRC, relaywire.FlagKeyframe), t0, &st)
	if !ok || p.Seq != 503 || !p.Keyframe {
		t.Fatalf("the recovered keyframe: %+v %v, want seq 503", p, ok)
	}
}

// TestFlowTakesAStreamFarAheadAfterAReconnectAsANewStream: after a long
// outage the same gateway's stream has moved on by tens of thousands of
// packets; continuing the numbering would read as going backwards, so the
// connection's first packet starts a new stream. A reconnect that resends
// the keyframe cache (a few thousand back) continues it.
func TestFlowTakesAStreamFarAheadAfterAReconnectAsANewStream(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	out := newNumbering(relaywire.Video)
	var st counters
	f := newFlow(77, relaywire.Video, out)
	f.receive(datagram(t, 10000, 0, testSSRC, 0), t0, &st)

	near := newFlow(77, relaywire.Video, out)
	if p, ok := near.receive(datagram(t, 10000-3000, 0, testSSRC, 0), t0, &st); !ok || p.StreamStart || p.Seq != 7000 {
		t.Fatalf("the keyframe cache after a reconnect: %+v %v, want the same numbering", p, ok)
	}
	far := newFlow(77, relaywire.Video, out)
	p, ok := far.receive(datagram(t, 10000+40000, 0, testSSRC, 0), t0, &st)
	if !ok || !p.StreamStart || p.Seq != 10001 {
		t.Fatalf("the stream 40000 ahead: %+v %v, want a new stream from 10001", p, ok)
	}
}
