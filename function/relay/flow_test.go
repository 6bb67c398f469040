package relay

import (
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
		{"numbering restarted far behind", []uint16{40000, 40001, 39000, 39001}, []bool{true, true, true, true}, 0, 0, 0},
		{"the edge of the window", []uint16{1000, 1511, 1000, 1001}, []bool{true, true, false, true}, 510, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &flow{tracker: nack.Tracker{Policy: nackPolicy}}
			var st counters
			for i, seq := range tt.seqs {
				if got := f.accept(seq, t0, &st); got != tt.handedOn[i] {
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

func TestFlowHandsOnAPacketArrivingAfterItsNACKsWereGivenUp(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	f := &flow{tracker: nack.Tracker{Policy: nackPolicy}}
	var st counters
	f.accept(10, t0, &st)
	f.accept(12, t0, &st)
	now := t0
	for range nackPolicy.Tries + 1 {
		f.tracker.Due(now, nil)
		now = now.Add(nackPolicy.Retry)
	}
	if f.tracker.Outstanding() != 0 {
		t.Fatalf("%d holes still asked for", f.tracker.Outstanding())
	}
	if !f.accept(11, now, &st) {
		t.Fatal("the late packet was not handed on")
	}
	if f.accept(11, now, &st) {
		t.Fatal("its duplicate was handed on")
	}
	if st.late.Load() != 1 || st.recovered.Load() != 0 || st.duplicates.Load() != 1 {
		t.Errorf("late %d recovered %d duplicates %d", st.late.Load(), st.recovered.Load(), st.duplicates.Load())
	}
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

func (nopHandler) WriteRTP(uint32, relaywire.Track, []byte) {}

// BenchmarkDeliver is the per-packet work of the receive loop.
func BenchmarkDeliver(b *testing.B) {
	cc := &conn{c: NewClient(Config{}), h: nopHandler{}, flows: make(map[relaywire.Flow]*flow)}
	id := relaywire.FlowOf(77, relaywire.Video)
	cc.flows[id] = &flow{channel: 77, track: relaywire.Video, tracker: nack.Tracker{Policy: nackPolicy}}
	pkt := make([]byte, 1200)
	pkt[0] = 0x80
	d := relaywire.AppendDatagram(nil, id, pkt)
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
