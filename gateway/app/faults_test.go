package app

// The fault suite's in-process cases: a publisher that drops and comes
// back, and loss and delay on the relay (gateway to function) and on the
// viewers' side (function to viewer). Each case has faultViewers pion WHEP
// viewers that count packets and sequence gaps, states in its comment what
// must hold, and logs its figure on one line starting with "FAULT <case>:"
// (go test -run TestFault -v | grep 'FAULT ' collects a run's figures).
//
// The kernels these tests run on have no netem: the relay's faults are
// made by the lossy forwarder, the viewers' by faultNet, a pion
// transport.Net whose sockets lose and delay what they receive.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/relay"
	"lightspeed/shared/h264"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/lossy"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/viewer"
	"lightspeed/shared/testkit/whipclient"
)

// faultViewers is how many viewers each case has.
const faultViewers = 10

// skipAfter is the recorder's rule for a hole nobody fills: it is skipped,
// as a receiver's jitter buffer would, once this many later packets of its
// track wait behind it (about a second of the test media's video).
const skipAfter = 256

// rx is one RTP packet as a viewer received it.
type rx struct {
	kind    string
	seq     uint16
	ts      uint32
	at      time.Time
	payload []byte // only when the viewer keeps payloads
}

// jitter is one track's reorder buffer: packets are consumed in sequence
// order; a hole is skipped by the recorder's rule.
type jitter struct {
	begun   bool
	last    uint16            // the last sequence number consumed or skipped
	lastTS  uint32            // the timestamp of the last packet consumed
	pending map[uint16]uint32 // received, not consumed: timestamp by sequence number
}

// faultViewer is one pion WHEP viewer (with interceptors: it NACKs) that
// counts what it receives: packets consumed in sequence order, holes
// skipped (gaps), timestamps that went back in that order, and every
// arrival with its time.
type faultViewer struct {
	v    *viewer.Viewer
	keep bool // keep every payload (for the recorder's checks afterwards)

	mu       sync.Mutex
	got      []rx
	tracks   map[string]*jitter
	consumed int
	gaps     int
	tsBack   int
}

func (f *faultViewer) onRTP(kind string, p *rtp.Packet) {
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	r := rx{kind: kind, seq: p.SequenceNumber, ts: p.Timestamp, at: now}
	if f.keep {
		r.payload = bytes.Clone(p.Payload)
	}
	f.got = append(f.got, r)
	j := f.tracks[kind]
	if j == nil {
		j = &jitter{pending: map[uint16]uint32{}}
		f.tracks[kind] = j
	}
	if !j.begun {
		j.begun, j.last, j.lastTS = true, p.SequenceNumber-1, p.Timestamp
	}
	if int16(p.SequenceNumber-j.last) <= 0 {
		return // consumed already (a duplicate) or skipped
	}
	j.pending[p.SequenceNumber] = p.Timestamp
	for {
		next := j.last + 1
		ts, ok := j.pending[next]
		if !ok {
			if len(j.pending) < skipAfter {
				break
			}
			f.gaps++
			j.last = next
			continue
		}
		delete(j.pending, next)
		j.last = next
		if int32(ts-j.lastTS) < 0 {
			f.tsBack++
		}
		j.lastTS = ts
		f.consumed++
	}
}

// counts returns the packets consumed and the gaps skipped so far.
func (f *faultViewer) counts() (consumed, gaps int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.consumed, f.gaps
}

// arrivals returns a copy of every packet received so far.
func (f *faultViewer) arrivals() []rx {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.got)
}

// joinViewers starts n WHEP viewers of channel 77 at once, each with its
// sockets from newNet (nil: the host's), and waits until all are
// connected. They are closed when the test ends, or by the returned close.
func joinViewers(t *testing.T, g *Gateway, region string, n int, keep bool, newNet func() transport.Net) ([]*faultViewer, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vs := make([]*faultViewer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range vs {
		f := &faultViewer{keep: keep, tracks: map[string]*jitter{}}
		vs[i] = f
		o := viewer.Options{Loopback: true, Region: region, OnRTP: f.onRTP, Interceptors: true, NoMDNS: true}
		if newNet != nil {
			o.Net = newNet()
		}
		wg.Go(func() {
			v, err := viewer.WHEP(ctx, whepURL(g), o)
			if err != nil {
				errs[i] = err
				return
			}
			f.v = v
			errs[i] = v.WaitConnected(ctx)
		})
	}
	wg.Wait()
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			var wg sync.WaitGroup
			for _, f := range vs {
				if f.v != nil {
					wg.Go(func() { f.v.Close() })
				}
			}
			wg.Wait()
			// Their DELETEs, sent at once, may leave a connection the
			// client dialed but did not use in its pool: the gateway's
			// HTTP server takes such a new connection for a busy one for
			// 5 s, and its shutdown would wait for it.
			http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		})
	}
	t.Cleanup(closeAll)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("viewers: %v", err)
	}
	return vs, closeAll
}

// waitViewers waits until cond holds for every viewer, at most d.
func waitViewers(t *testing.T, what string, vs []*faultViewer, d time.Duration, cond func(i int, f *faultViewer) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		done := 0
		for i, f := range vs {
			if cond(i, f) {
				done++
			}
		}
		if done == len(vs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s: %d of %d viewers there", d, what, done, len(vs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tapKey names one output packet of the hub.
type tapKey struct {
	kind string
	seq  uint16
}

// hubTap follows a hub's output as the relay does: when each packet was
// released, where each publisher session's stream started, and holes in
// the output's sequence numbers.
type hubTap struct {
	mu       sync.Mutex
	released map[tapKey]time.Time
	starts   []tapStart
	last     map[string]uint16
	holes    int
}

// tapStart is the first packet of one track in a publisher session.
type tapStart struct {
	kind    string
	seq     uint16
	ts      uint32
	prevSeq uint16 // the packet released before it, if hadPrev
	prevTS  uint32
	hadPrev bool
	at      time.Time
}

func tapHub(t *testing.T, h *hub.Hub) *hubTap {
	t.Helper()
	sub := h.Subscribe(hub.SubscribeOptions{Capacity: 8192})
	tap := &hubTap{released: map[tapKey]time.Time{}, last: map[string]uint16{}}
	lastTS := map[string]uint32{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			p, err := sub.Next(ctx)
			if err != nil {
				return
			}
			now := time.Now()
			kind := p.Track.String()
			tap.mu.Lock()
			tap.released[tapKey{kind, p.Seq}] = now
			prev, hadPrev := tap.last[kind]
			if hadPrev && p.Seq != prev+1 {
				tap.holes += int(p.Seq - prev - 1)
			}
			if p.StreamStart {
				tap.starts = append(tap.starts, tapStart{kind: kind, seq: p.Seq, ts: p.Timestamp,
					prevSeq: prev, prevTS: lastTS[kind], hadPrev: hadPrev, at: now})
			}
			tap.last[kind] = p.Seq
			lastTS[kind] = p.Timestamp
			tap.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; sub.Close() })
	return tap
}

// startsAfter returns the stream starts of both tracks released after
// since, once the tap has both.
func (tap *hubTap) startsAfter(since time.Time) (video, audio tapStart, ok bool) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	var v, a bool
	for _, s := range tap.starts {
		switch {
		case s.at.Before(since):
		case s.kind == "video" && !v:
			video, v = s, true
		case s.kind == "audio" && !a:
			audio, a = s, true
		}
	}
	return video, audio, v && a
}

func (tap *hubTap) releasedAt(k tapKey) (time.Time, bool) {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	at, ok := tap.released[k]
	return at, ok
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// faultPublisher is a publisher the case can drop without a goodbye.
type faultPublisher interface {
	drop()
}

type ftlPublisher struct {
	conn *ftlclient.Conn
	done chan struct{}
}

func (p *ftlPublisher) drop() {
	p.conn.Close() // both sockets, no DISCONNECT
	<-p.done
}

// startFTL publishes channel 77 over FTL, looping the test media. A
// refusal by the gateway is returned.
func startFTL(t *testing.T, g *Gateway) (*ftlPublisher, error) {
	t.Helper()
	nals, opus := sourceMedia(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: testKey})
	if err != nil {
		return nil, err
	}
	p := &ftlPublisher{conn: conn, done: make(chan struct{})}
	go func() { defer close(p.done); conn.Stream(context.Background(), nals, opus, 0) }()
	t.Cleanup(p.drop)
	return p, nil
}

type whipPublisher struct {
	pub    *whipclient.Publisher
	stop   context.CancelFunc
	done   chan struct{}
	delete bool // drop with the DELETE
	once   sync.Once
}

func (p *whipPublisher) drop() {
	p.once.Do(func() {
		p.stop()
		<-p.done
		if p.delete {
			p.pub.Close()
		} else {
			p.pub.Vanish()
		}
	})
}

// startWHIP publishes channel 77 over WHIP, looping the test media. A
// refusal by the gateway is returned.
func startWHIP(t *testing.T, g *Gateway, dropWithDelete bool) (*whipPublisher, error) {
	t.Helper()
	nals, opus := sourceMedia(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := whipclient.Publish(ctx, whipclient.Config{URL: whipURL(g), Token: testKey, Loopback: true})
	if err != nil {
		return nil, err
	}
	streamCtx, stop := context.WithCancel(context.Background())
	p := &whipPublisher{pub: pub, stop: stop, done: make(chan struct{}), delete: dropWithDelete}
	go func() { defer close(p.done); pub.Stream(streamCtx, nals, opus) }()
	t.Cleanup(func() { p.drop(); p.pub.Close() })
	return p, nil
}

// reconnectDelay is how long a dropped publisher waits before it comes
// back: an encoder's reconnect delay, within the "few seconds" of the case.
const reconnectDelay = 1500 * time.Millisecond

// TestFaultPublisherDropsAndReconnects: a publisher of channel 77 goes
// away without a goodbye mid-stream (FTL: both sockets closed, no
// DISCONNECT; WHIP: the PeerConnection closed without the DELETE, and also
// with it) and a new session of the same channel starts reconnectDelay
// later, retrying every 250 ms while the gateway refuses it. Must hold, for
// each of the 10 viewers:
//   - it keeps its PeerConnection: never failed or disconnected, and the
//     gateway and the function still count exactly the 10 sessions;
//   - its sequence numbers are continuous across the reconnect (no gap:
//     the hub numbers the new stream from last+1, which the tap of the
//     hub's output checks too) and its timestamps never go back (the
//     video's step forward across the outage);
//   - its first packet of the new stream is the new stream's first
//     keyframe start, and from there what it plays is a contiguous run of
//     the source (the recorder's checks): the decoder plays on, no reset.
//
// Figure: from the hub's release of the new stream's first packet to each
// viewer's first packet of it (max and median over viewers), the gaps, and
// how long the gateway refused the new publisher after the drop. Must hold
// too: the publisher coming back after its reconnect delay is taken at
// once, with no refusal (a WHIP session without media for a second is
// replaced by its publisher's new POST; before that rule, OBS got 409 for
// the 16 s of the old session's ICE timeouts).
func TestFaultPublisherDropsAndReconnects(t *testing.T) {
	cases := []struct {
		name  string
		start func(t *testing.T, g *Gateway) (faultPublisher, error)
	}{
		{"FTL", func(t *testing.T, g *Gateway) (faultPublisher, error) { return startFTL(t, g) }},
		{"WHIP without DELETE", func(t *testing.T, g *Gateway) (faultPublisher, error) { return startWHIP(t, g, false) }},
		{"WHIP with DELETE", func(t *testing.T, g *Gateway) (faultPublisher, error) { return startWHIP(t, g, true) }},
	}
	// Real-time media with 10 viewers under -race: one such test at a
	// time (the lock is taken once, for all three).
	netns.Exclusive(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := startGateway(t, stackConfig(t))
			first, err := c.start(t, g)
			if err != nil {
				t.Fatalf("first publisher: %v", err)
			}
			waitUntil(t, "channel 77 is live", func() bool {
				h := g.Hubs().Get(77)
				return h != nil && h.Stats().Live
			})
			tap := tapHub(t, g.Hubs().Get(77))
			vs, _ := joinViewers(t, g, "ams", faultViewers, true, nil)
			// About two seconds of the first stream at every viewer.
			waitViewers(t, "the viewers play the first stream", vs, 30*time.Second, func(_ int, f *faultViewer) bool {
				n, _ := f.counts()
				return n >= 500
			})

			dropped := time.Now()
			first.drop()
			time.Sleep(time.Until(dropped.Add(reconnectDelay))) // the encoder's reconnect delay: the outage
			refusals := 0
			var lastRefusal error
			for {
				_, err := c.start(t, g)
				if err == nil {
					break
				}
				var ftlErr *ftlclient.ReplyError
				var whipErr *whipclient.HTTPError
				if !errors.As(err, &ftlErr) && !errors.As(err, &whipErr) {
					t.Fatalf("new publisher: %v", err)
				}
				refusals++
				lastRefusal = err
				if time.Since(dropped) > 60*time.Second {
					t.Fatalf("the gateway still refuses a new publisher %v after the drop: %v", time.Since(dropped).Round(time.Millisecond), err)
				}
				time.Sleep(250 * time.Millisecond) // the encoder's retry interval
			}
			accepted := time.Since(dropped)
			var video, audio tapStart
			waitUntil(t, "the new stream leaves the hub", func() bool {
				var ok bool
				video, audio, ok = tap.startsAfter(dropped)
				return ok
			})
			newFrom := map[string]uint16{"video": video.seq, "audio": audio.seq}
			isNew := func(r rx) bool { return int16(r.seq-newFrom[r.kind]) >= 0 }
			firstAt := video.at
			if audio.at.Before(firstAt) {
				firstAt = audio.at
			}
			// About three seconds of the new stream at every viewer.
			waitViewers(t, "the viewers play the new stream", vs, 30*time.Second, func(_ int, f *faultViewer) bool {
				n := 0
				for _, r := range f.arrivals() {
					if isNew(r) {
						n++
					}
				}
				return n >= 750
			})

			for _, s := range []tapStart{video, audio} {
				if !s.hadPrev || s.seq != s.prevSeq+1 {
					t.Errorf("hub: the new %s stream starts at seq %d after %d, want last+1", s.kind, s.seq, s.prevSeq)
				}
				if int32(s.ts-s.prevTS) <= 0 {
					t.Errorf("hub: the new %s stream's timestamp %d does not step forward from %d", s.kind, s.ts, s.prevTS)
				}
			}
			tap.mu.Lock()
			hubHoles := tap.holes
			tap.mu.Unlock()
			if hubHoles != 0 {
				t.Errorf("hub: %d holes in the output's sequence numbers", hubHoles)
			}
			if n := g.signaling.Viewers(77); n != faultViewers {
				t.Errorf("the gateway counts %d viewer sessions, want the %d (a new session or a lost one)", n, faultViewers)
			}
			if n := g.Function().Fanout().Viewers(77); n != faultViewers {
				t.Errorf("the function serves %d viewers, want %d", n, faultViewers)
			}
			var lat []time.Duration
			gaps := 0
			for i, f := range vs {
				name := fmt.Sprintf("viewer %d", i)
				select {
				case <-f.v.Failed():
					t.Errorf("%s: its PeerConnection failed or disconnected", name)
				default:
				}
				f.mu.Lock()
				gaps += f.gaps
				if f.gaps != 0 || f.tsBack != 0 {
					t.Errorf("%s: %d sequence gaps, %d timestamps going back", name, f.gaps, f.tsBack)
				}
				got := slices.Clone(f.got)
				f.mu.Unlock()
				// The new stream as the viewer received it, from its
				// first packet: a keyframe start, then a run of the source.
				rec := newRecorder(t)
				firstNew := time.Time{}
				for _, r := range got {
					if !isNew(r) {
						continue
					}
					if firstNew.IsZero() {
						firstNew = r.at
					}
					if r.kind == "video" && r.seq == newFrom["video"] {
						if info, err := h264.Inspect(r.payload); err != nil || !info.Keyframe || !info.Start {
							t.Errorf("%s: the new stream's first video packet is not a keyframe start (%+v, %v)", name, info, err)
						}
					}
					p := rtp.Packet{Header: rtp.Header{SequenceNumber: r.seq, Timestamp: r.ts}, Payload: r.payload}
					rec.onRTP(r.kind, &p)
				}
				rec.check(t, name+", the new stream")
				lat = append(lat, firstNew.Sub(firstAt))
			}
			how := lastRefusal
			if how == nil {
				how = errors.New("none")
			}
			if refusals != 0 {
				t.Errorf("the publisher back %v after the drop was refused %d times (the last: %v)", reconnectDelay, refusals, lastRefusal)
			}
			t.Logf("FAULT publisher-reconnect/%s: %d viewers kept their PeerConnection; new stream at every viewer %v after its first packet left the hub (median %v); gaps %d; new publisher accepted %v after the drop (outage %v, %d refusals, the last: %v)",
				c.name, len(vs), slices.Max(lat).Round(time.Millisecond), median(lat).Round(time.Millisecond), gaps,
				accepted.Round(time.Millisecond), firstAt.Sub(dropped).Round(time.Millisecond), refusals, how)
		})
	}
}

// faultRow is one setting of loss and delay.
type faultRow struct {
	name  string
	loss  float64       // fraction of packets lost, at random
	delay time.Duration // added one way
	// maxLoss bounds the unrecovered loss at the viewers, a fraction of
	// the packets of the stream.
	maxLoss float64
}

// faultRows are the settings of both loss-and-delay cases, one fault at a
// time; the first, without a fault, is the baseline the added delay is
// measured from.
var faultRows = []faultRow{
	{name: "none", maxLoss: 0},
	// Runs so far: at most 0.5 % (5 %) and 0.05 % (20 %) unrecovered, at
	// the viewers' side (that 5 % loses more than 20 % there is not
	// understood yet); 0 on the relay.
	{name: "5% loss", loss: 0.05, maxLoss: 0.01},
	{name: "20% loss", loss: 0.20, maxLoss: 0.01},
	{name: "40ms delay", delay: 40 * time.Millisecond, maxLoss: 0},
	{name: "150ms delay", delay: 150 * time.Millisecond, maxLoss: 0},
}

// rowPackets is how many packets of the stream (a few seconds of the test
// media) each viewer must get through a row.
const rowPackets = 1500

// rowFigure is what one row measured over all its viewers.
type rowFigure struct {
	packets, gaps int
	delay         time.Duration // median from the hub's release to a viewer's receipt
}

func (r rowFigure) lossPct() float64 {
	if r.packets+r.gaps == 0 {
		return 0
	}
	return 100 * float64(r.gaps) / float64(r.packets+r.gaps)
}

// measureRow arms the fault (arm), lets rowPackets packets of the stream
// through every viewer and measures them: the gaps skipped against the
// stream's packets since arming, and the delay from the hub's release of
// each packet (released from 200 ms after arming on) to its first receipt.
func measureRow(t *testing.T, tap *hubTap, vs []*faultViewer, arm func()) rowFigure {
	t.Helper()
	armed := time.Now()
	arm()
	base := make([][2]int, len(vs))
	for i, f := range vs {
		base[i][0], base[i][1] = f.counts()
	}
	waitViewers(t, fmt.Sprintf("every viewer gets %d packets", rowPackets), vs, 40*time.Second, func(i int, f *faultViewer) bool {
		n, gaps := f.counts()
		return n+gaps-base[i][0]-base[i][1] >= rowPackets
	})
	var fig rowFigure
	var delays []time.Duration
	from := armed.Add(200 * time.Millisecond)
	for i, f := range vs {
		n, gaps := f.counts()
		fig.packets += n - base[i][0]
		fig.gaps += gaps - base[i][1]
		seen := map[tapKey]bool{}
		for _, r := range f.arrivals() {
			k := tapKey{r.kind, r.seq}
			if seen[k] {
				continue
			}
			seen[k] = true
			if at, ok := tap.releasedAt(k); ok && !at.Before(from) {
				delays = append(delays, r.at.Sub(at))
			}
		}
	}
	fig.delay = median(delays)
	return fig
}

// checkRow asserts a row's bounds and logs its figure.
func checkRow(t *testing.T, fault string, row faultRow, fig, baseline rowFigure, extra string) {
	t.Helper()
	added := fig.delay - baseline.delay
	t.Logf("FAULT %s/%s: unrecovered loss %.3f%% of %d packets at %d viewers (%d gaps); median delay %v, added %v; %s",
		fault, row.name, fig.lossPct(), fig.packets+fig.gaps, faultViewers, fig.gaps, fig.delay.Round(100*time.Microsecond), added.Round(100*time.Microsecond), extra)
	if got := fig.lossPct() / 100; got > row.maxLoss {
		t.Errorf("unrecovered loss %.3f%%, want at most %.3f%%", 100*got, 100*row.maxLoss)
	}
	// The added delay is the fault's, give or take the machine's jitter
	// (under -race) and the packets recovered late that the median
	// crosses.
	slack := max(25*time.Millisecond, row.delay/4)
	if d := added - row.delay; d < -slack || d > slack {
		t.Errorf("added delay %v, want %v ± %v", added, row.delay, slack)
	}
}

// randomLoss drops each packet it is asked about with probability p.
func randomLoss(p float64) lossy.Rule {
	return func([]byte) bool { return rand.Float64() < p }
}

// TestFaultRelayLossAndDelay: a second function (syd) reaches the gateway
// through the lossy forwarder, which loses packets from the gateway to the
// function at random (media datagrams and QUIC packets alike; it drops
// only that way) and delays every packet both ways. Per row of faultRows
// a new syd function connects (each row has a relay connection of its
// own: see below), 10 new viewers of it join without the fault, then the
// fault is set. Must hold: the viewers' unrecovered loss (holes the
// recorder skips) is at most the row's maxLoss of the stream's packets
// (the relay's NACKs recover the rest), and the median delay from the hub
// to the viewers grows by the forwarder's delay, within max(25 ms, a
// quarter of it). Figure: unrecovered loss against the packets of the
// stream, the median added delay.
//
// Not in the table, because it does not hold today: loss and delay
// together, or a long delay on a relay connection that lost packets
// before. The relay's datagrams are paced by quic-go's loss-based
// congestion control, which at 5 % loss and 40 ms each way (or at 150 ms
// after a lossy spell) carries less than the test stream's 2 Mbit/s: the
// backlog waits in the hub subscription, and viewers fell 1.2 to 10 s
// behind, with 16 % of the packets lost at 20 % and 40 ms.
func TestFaultRelayLossAndDelay(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	fwd := lossyRelay(t, g)
	streamForever(t, g)
	tap := tapHub(t, g.Hubs().Get(77))
	var baseline rowFigure
	for _, row := range faultRows {
		t.Run(row.name, func(t *testing.T) {
			fwd.SetRule(nil)
			fwd.SetDelay(0)
			waitUntil(t, "the last row's function leaves", func() bool {
				return !slices.ContainsFunc(g.Relay().Functions(), func(f relay.Function) bool { return f.MachineID == "syd-test" })
			})
			syd, _ := startFunction(t, g, "syd", 100, fwd)
			vs, closeViewers := joinViewers(t, g, "syd", faultViewers, false, nil)
			defer closeViewers()
			for i, f := range vs {
				if n := f.v.ServedBy(); !strings.HasPrefix(n, "syd") {
					t.Fatalf("viewer %d served by %q, want the syd function", i, n)
				}
			}
			fwdBefore, relayBefore := fwd.Stats(), syd.Client().Stats()
			fig := measureRow(t, tap, vs, func() {
				if row.loss > 0 {
					fwd.SetRule(randomLoss(row.loss))
				}
				fwd.SetDelay(row.delay)
			})
			fwd.SetRule(nil)
			fwd.SetDelay(0)
			if row.name == "none" {
				baseline = fig
			}
			fs, rs := fwd.Stats(), syd.Client().Stats()
			dropped := fs.Dropped - fwdBefore.Dropped
			if row.loss > 0 && dropped == 0 {
				t.Errorf("the forwarder dropped nothing")
			}
			checkRow(t, "relay-loss-delay", row, fig, baseline, fmt.Sprintf("forwarder dropped %d of %d, overflowed %d; relay client: %d NACKed, %d recovered, %d late",
				dropped, dropped+fs.Passed-fwdBefore.Passed, fs.Overflowed-fwdBefore.Overflowed,
				rs.NACKsSent-relayBefore.NACKsSent, rs.Recovered-relayBefore.Recovered, rs.Late-relayBefore.Late))
		})
	}
}

// faultNet is the host's network for pion, but what its UDP sockets
// receive is lost at random and delayed, once set.
type faultNet struct {
	transport.Net
	loss            atomic.Uint64 // math.Float64bits of the fraction lost
	delay           atomic.Int64  // time.Duration added to every packet received
	passed, dropped atomic.Uint64
	overflowed      atomic.Uint64
}

func newFaultNet(t *testing.T) *faultNet {
	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	return &faultNet{Net: std}
}

// set makes the sockets lose the fraction loss of what they receive from
// now on and deliver the rest delay late.
func (n *faultNet) set(loss float64, delay time.Duration) {
	n.loss.Store(math.Float64bits(loss))
	n.delay.Store(int64(delay))
}

func (n *faultNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	fc := &faultConn{UDPConn: c, net: n, in: make(chan inbound, 8192)}
	go fc.pump()
	return fc, nil
}

// inbound is a received packet on its way through the delay.
type inbound struct {
	p    []byte
	from net.Addr
	due  time.Time
}

// faultConn is a UDP socket of a faultNet. A goroutine reads the socket,
// drops by the net's loss and queues the rest with their due time; reads
// take them from the queue, in order, when due.
type faultConn struct {
	transport.UDPConn
	net      *faultNet
	in       chan inbound
	readErr  error // why the socket's reader ended, before in is closed
	deadline atomic.Int64
}

func (c *faultConn) pump() {
	defer close(c.in)
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.UDPConn.ReadFrom(buf)
		if err != nil {
			c.readErr = err
			return
		}
		if loss := math.Float64frombits(c.net.loss.Load()); loss > 0 && rand.Float64() < loss {
			c.net.dropped.Add(1)
			continue
		}
		c.net.passed.Add(1)
		select {
		case c.in <- inbound{p: bytes.Clone(buf[:n]), from: from, due: time.Now().Add(time.Duration(c.net.delay.Load()))}:
		default:
			c.net.overflowed.Add(1)
		}
	}
}

func (c *faultConn) ReadFrom(p []byte) (int, net.Addr, error) {
	var timeout <-chan time.Time
	if dl := c.deadline.Load(); dl != 0 {
		tm := time.NewTimer(time.Until(time.Unix(0, dl)))
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case m, ok := <-c.in:
		if !ok {
			return 0, nil, c.readErr
		}
		if wait := time.Until(m.due); wait > 0 {
			time.Sleep(wait) // the delay itself
		}
		return copy(p, m.p), m.from, nil
	case <-timeout:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

func (c *faultConn) Read(p []byte) (int, error) {
	n, _, err := c.ReadFrom(p)
	return n, err
}

func (c *faultConn) ReadFromUDP(p []byte) (int, *net.UDPAddr, error) {
	n, from, err := c.ReadFrom(p)
	udp, _ := from.(*net.UDPAddr)
	return n, udp, err
}

func (c *faultConn) ReadMsgUDP(p, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, addr, err = c.ReadFromUDP(p)
	return n, 0, 0, addr, err
}

func (c *faultConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		c.deadline.Store(0)
	} else {
		c.deadline.Store(t.UnixNano())
	}
	return nil
}

func (c *faultConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.UDPConn.SetWriteDeadline(t)
}

// SyscallConn is the socket's, so that the viewer can size its buffer.
func (c *faultConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.UDPConn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("faultConn: no system socket")
}

// TestFaultViewerLossAndDelay: the viewers' sockets lose what they
// receive at random (media, retransmissions, RTCP and ICE alike) and
// delay the rest (faultNet); what they send is untouched. Per row of
// faultRows, 10 new viewers of the embedded function join without the
// fault, then it is set. Must hold: the viewers' unrecovered loss (holes
// the recorder skips) is at most the row's maxLoss of the stream's packets
// (the viewers' NACKs and the function's retransmissions recover the
// rest), and the median delay from the hub to the viewers grows by the
// sockets' delay, within max(25 ms, a quarter of it). Figure: unrecovered
// loss against the packets of the stream, the median added delay.
func TestFaultViewerLossAndDelay(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	streamForever(t, g)
	tap := tapHub(t, g.Hubs().Get(77))
	var baseline rowFigure
	for _, row := range faultRows {
		t.Run(row.name, func(t *testing.T) {
			fn := newFaultNet(t)
			vs, closeViewers := joinViewers(t, g, "ams", faultViewers, false, func() transport.Net { return fn })
			defer closeViewers()
			fig := measureRow(t, tap, vs, func() { fn.set(row.loss, row.delay) })
			fn.set(0, 0)
			if row.name == "none" {
				baseline = fig
			}
			if row.loss > 0 && fn.dropped.Load() == 0 {
				t.Errorf("the viewers' sockets dropped nothing")
			}
			checkRow(t, "viewer-loss-delay", row, fig, baseline, fmt.Sprintf("sockets dropped %d of %d received, overflowed %d",
				fn.dropped.Load(), fn.dropped.Load()+fn.passed.Load(), fn.overflowed.Load()))
		})
	}
}
