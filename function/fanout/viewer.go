package fanout

import (
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/function/packetcache"
	"lightspeed/shared/relaywire"
)

// Who owns a viewer's fields. Each group has one owner:
//
//   - Fixed: set by newViewer, and tracks by negotiate before the
//     viewer's goroutines start; never changed, read without a lock. A
//     track's binding is an atomic pointer that pion's Bind sets.
//   - sess: the session's state, guarded by Fanout.mu. The session
//     methods and pion's callbacks change it; no pion call is made with
//     the lock held.
//   - videoLive, videoStarted, cur, prev, hasPrev, target and the
//     burst's range: the channel's, guarded by channel.mu. The channel
//     sets them when the viewer joins, as video comes and as the viewer
//     is aimed at another layer; the starter reads the burst's range
//     once joined is closed, which happens after the join.
//   - out: the sending goroutine's scratch, no lock: the starter's until
//     it hands the viewer to its writer (writer.add, under writer.mu), that
//     writer's from then on.
//
// counters and running are atomics, the queue has its own lock. Fanout.mu
// is taken before channel.mu, never after.

// burstSpeedup is how much faster than real time a late joiner's cached
// keyframe and the packets after it are sent: a 4 s GOP goes out in about
// 0.3 s, fast enough to start at once, slow enough not to flood the path.
const burstSpeedup = 12

// srtpWait bounds how long the writer waits for pion's SRTP context after
// `connected` (pion drops writes silently until it exists).
const srtpWait = 5 * time.Second

// viewer is one viewer's session: its PeerConnection, its two tracks, its
// queue and the goroutines that serve it (a starter that sends the burst,
// a reader of the video sender's RTCP; then its writer of the pool).
//
// Its video track is fed from one video layer of the channel at a time
// (the only one without simulcast). A switch to another layer waits for
// a keyframe start of that layer and keeps the viewer's video one stream:
// the same SSRC and payload type, sequence numbers that go on from the
// last one, timestamps that go on by the wall-clock time. The new layer's
// packets go out shifted by the offsets of the switch (layerMap), which
// their queue entries name by a gen (queue.offs); the packets of the
// layer a viewer started with go out as they are.
type viewer struct {
	// Fixed.
	f      *Fanout
	id     string
	ch     *channel
	tracks [2]*viewerTrack // by kind: relaywire.Video, relaywire.Audio
	queue  *queue
	w      *writer       // the writer that drains queue
	joined chan struct{} // closed when the viewer joined the live stream
	done   chan struct{} // closed when the session ends

	joinOnce  sync.Once
	closeOnce sync.Once
	running   atomic.Int32 // goroutines still running; the last one retires the viewer

	sess viewerSession // guarded by Fanout.mu

	// The channel's, guarded by channel.mu.
	videoLive    bool     // live video packets of cur.track are queued (from a keyframe on)
	videoStarted bool     // video was queued (burst or live): a switch goes on from its numbering
	cur          layerMap // the layer whose packets are queued, and how
	// prev is the layer before the last switch, when hasPrev: the
	// viewer's NACKs may name its packets.
	prev    layerMap
	hasPrev bool
	// target is the layer the viewer is to get: cur.track, or the one it
	// switches to at that layer's next keyframe.
	target relaywire.Track
	// The cached keyframe's range at join, of cur.track then: the burst.
	burstTrack relaywire.Track
	burstFrom  uint16
	burstLen   int

	out sendScratch // the sending goroutine's

	counters viewerCounters
}

// layerMap is how a viewer's video maps onto one video layer: packet seq
// of track goes out as seq+seqOff with timestamp ts+tsOff, with the
// offsets of gen (0: none), from the viewer's sequence number from on
// (set once video went out of it).
type layerMap struct {
	track  relaywire.Track
	gen    uint8
	seqOff uint16
	tsOff  uint32
	from   uint16
}

// goLive has v's live video of its layer queued from the packet of
// sequence number seq (the layer's) on. Called with channel.mu held.
func (v *viewer) goLive(seq uint16) {
	v.videoLive = true
	if !v.videoStarted {
		v.videoStarted = true
		v.cur.from = seq + v.cur.seqOff
	}
}

// kindOf is the viewer track that sends the packets of track t: audio,
// or video for every layer.
func kindOf(t relaywire.Track) relaywire.Track {
	if t == relaywire.Audio {
		return relaywire.Audio
	}
	return relaywire.Video
}

// viewerSession is a viewer's session state, guarded by Fanout.mu.
type viewerSession struct {
	pc        *webrtc.PeerConnection
	audioRTCP *webrtc.RTPSender // drained by the reporter
	closed    bool
	remoteSet bool                      // the viewer's SDP is set: its candidates can be added
	route     netip.AddrPort            // the remote address routed to w's batch
	pending   []webrtc.ICECandidateInit // remote candidates that came before it
	remote    relaywire.CandidateSet    // the addresses its candidates name, in its SDP and trickled
	// layer is the rid the session pinned (SessionStart.Layer, or a
	// SetLayer before the start layer was set), until layerSet: the start
	// layer is set (once the subscription answered) and SetLayer aims the
	// viewer from then on.
	layer    string
	layerSet bool
}

// sendScratch is the header and payload buffer of the packet being sent,
// so that sending allocates nothing.
type sendScratch struct {
	hdr       [2]rtp.Header // by kind
	playout   [3]byte       // playout-delay min = max = 0
	playoutID [2]uint8      // the extension id set in hdr[t].Extensions
	buf       [packetcache.MaxPayload]byte
	srtpSeen  bool // pion wrote a packet or RTCP for the viewer: its SRTP is ready
}

// viewerCounters are a viewer's counts; they are added to the fan-out's
// totals when the viewer retires.
type viewerCounters struct {
	// RTP packets written per track (kind) and their payload octets, as
	// the track's sender reports count them: the writer adds, the reporter
	// reads.
	packets, octets [2]atomic.Uint64

	bytes, retransmits, misses, nacked, plis, firs atomic.Uint64
}

// sent is the number of RTP packets written to the viewer.
func (c *viewerCounters) sent() uint64 {
	return c.packets[relaywire.Video].Load() + c.packets[relaywire.Audio].Load()
}

func newViewer(f *Fanout, id string, ch *channel, queueSize int, w *writer) *viewer {
	v := &viewer{
		f:      f,
		id:     id,
		ch:     ch,
		queue:  newQueue(queueSize, w.wake),
		w:      w,
		joined: make(chan struct{}),
		done:   make(chan struct{}),
	}
	for i := range v.out.hdr {
		v.out.hdr[i] = rtp.Header{Version: 2}
	}
	return v
}

// join starts the viewer: from now on it gets the channel's packets, video
// from the cached keyframe on.
func (v *viewer) join() {
	v.joinOnce.Do(func() {
		v.ch.join(v)
		close(v.joined)
	})
}

// connected reports whether the viewer joined its channel's live stream.
func (v *viewer) connected() bool {
	select {
	case <-v.joined:
		return true
	default:
		return false
	}
}

// exit is deferred by each of the viewer's goroutines.
func (v *viewer) exit() {
	if v.running.Add(-1) == 0 {
		v.f.retire(v)
	}
}

// start is the viewer's starter goroutine: it waits for the viewer to
// join (and ends the session if that takes longer than ConnectTimeout),
// sends the burst, waits for pion's SRTP context on pc (none: no wait),
// then hands the viewer to its writer, which drains its queue from then
// on.
func (v *viewer) start(pc *webrtc.PeerConnection) {
	defer v.exit()
	timeout := time.NewTimer(v.f.cfg.ConnectTimeout)
	select {
	case <-v.joined:
		timeout.Stop()
	case <-v.done:
		timeout.Stop()
		return
	case <-timeout.C:
		v.f.closeViewer(v, "not connected in time", true)
		return
	}
	if !v.sendBurst() || !v.awaitSRTP(pc) {
		return
	}
	v.running.Add(1) // the writer's hold, given back by its exit
	if !v.w.add(v) {
		v.exit()
	}
}

// awaitSRTP waits until pion can encrypt for the viewer: until then pion
// drops writes without an error, and it offers no signal of readiness, so
// this polls with an empty receiver report (harmless RTCP) every 2 ms, up
// to srtpWait. A burst that was sent already proved it.
func (v *viewer) awaitSRTP(pc *webrtc.PeerConnection) bool {
	if v.out.srtpSeen || pc == nil {
		return true
	}
	var ssrc uint32
	if b := v.tracks[relaywire.Video].bound.Load(); b != nil {
		ssrc = b.ssrc
	}
	deadline := time.Now().Add(srtpWait)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if err := pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverReport{SSRC: ssrc}}); err == nil {
			break
		}
		select {
		case <-v.done:
			return false
		case <-tick.C:
		}
	}
	v.out.srtpSeen = true
	return true
}

// sendBurst sends the cached packets from the keyframe on, paced at
// burstSpeedup times their timestamps' pace.
func (v *viewer) sendBurst() bool {
	if v.burstLen == 0 {
		return true
	}
	clock := time.Duration(v.ch.clock(v.burstTrack))
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		start    time.Time
		ts0      uint32
		furthest time.Duration
		first    = true
	)
	for i := 0; i < v.burstLen; i++ {
		seq := v.burstFrom + uint16(i)
		m, ok := v.ch.load(v.burstTrack, seq, v.out.buf[:])
		if !ok {
			continue
		}
		if first {
			// The first write may wait for pion's SRTP context: the pace
			// starts when it went out.
			if !v.writeRTP(relaywire.Video, m, true) {
				return false
			}
			start, ts0, first = time.Now(), m.TS, false
			continue
		}
		if d := time.Duration(int32(m.TS-ts0)) * time.Second / clock / burstSpeedup; d > furthest {
			furthest = d
			if wait := time.Until(start.Add(d)); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-v.done:
					return false
				}
			}
		}
		if !v.writeRTP(relaywire.Video, m, true) {
			return false
		}
	}
	return true
}

// send writes the packet of j from the shared cache, with j's offsets.
func (v *viewer) send(j *job) bool {
	m, ok := v.ch.load(j.track, j.seq, v.out.buf[:])
	if !ok {
		v.counters.misses.Add(1)
		return true
	}
	m.Seq += j.dseq
	m.TS += j.dts
	return v.writeRTP(kindOf(j.track), m, false)
}

// writeRTP writes the payload in v.out.buf described by m with the
// viewer's SSRC and payload type of its track t (a kind: Video or Audio).
// It reports false when the session ended.
func (v *viewer) writeRTP(t relaywire.Track, m packetcache.Meta, burst bool) bool {
	b := v.tracks[t].bound.Load()
	if b == nil {
		return true // the track was not negotiated
	}
	o := &v.out
	h := &o.hdr[t]
	h.Marker = m.Marker()
	h.PayloadType = b.pt
	h.SequenceNumber = m.Seq
	h.Timestamp = m.TS
	h.SSRC = b.ssrc
	h.Extension = false
	if burst && b.playoutID != 0 {
		if o.playoutID[t] != b.playoutID { // once per binding: SetExtension appends
			h.Extensions = h.Extensions[:0]
			_ = h.SetExtension(b.playoutID, o.playout[:])
			o.playoutID[t] = b.playoutID
		}
		h.Extension = true
	}
	payload := o.buf[:m.N]
	var deadline time.Time
	for {
		n, err := b.writer.WriteRTP(h, payload)
		if err != nil {
			select {
			case <-v.done:
				return false
			default:
				return true // lost; the viewer may NACK it
			}
		}
		if n > 0 {
			o.srtpSeen = true
			c := &v.counters
			c.packets[t].Add(1)
			c.octets[t].Add(uint64(len(payload)))
			c.bytes.Add(uint64(n))
			return true
		}
		if o.srtpSeen {
			return true // dropped by pion, which had no SRTP context after all: not counted
		}
		// pion returns 0 without error until its SRTP context exists.
		if deadline.IsZero() {
			deadline = time.Now().Add(srtpWait)
		} else if time.Now().After(deadline) {
			o.srtpSeen = true
			return true
		}
		select {
		case <-v.done:
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// maxDrain bounds the RTCP packets drainRTCP reads at once: a viewer
// sends a few a second. drainWait is how long it waits for one more once
// the queued ones are read (pion's read fails at once on a deadline that
// has passed, even with packets queued, so the deadline is just ahead).
const (
	maxDrain  = 64
	drainWait = 100 * time.Microsecond
)

// drainRTCP reads the RTCP the viewer sent about track t since the last
// call, and handles it.
func (v *viewer) drainRTCP(t relaywire.Track, s *webrtc.RTPSender, buf []byte) {
	if err := s.SetReadDeadline(time.Now().Add(drainWait)); err == nil {
		v.serveRTCP(t, s, buf, maxDrain) // ends at the deadline: nothing more for now
	}
}

// readRTCP reads the RTCP the viewer sends about track t until the sender
// stops.
func (v *viewer) readRTCP(t relaywire.Track, s *webrtc.RTPSender) {
	defer v.exit()
	v.serveRTCP(t, s, make([]byte, 1500), -1)
}

// serveRTCP reads and handles the RTCP of sender s about track t, at most
// limit packets (no bound when negative), until a read fails.
func (v *viewer) serveRTCP(t relaywire.Track, s *webrtc.RTPSender, buf []byte, limit int) {
	for i := 0; limit < 0 || i < limit; i++ {
		n, _, err := s.Read(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			continue // larger than pion's receive MTU: not from a real viewer
		}
		if err != nil {
			return
		}
		v.handleRTCP(t, buf[:n])
	}
}

// handleRTCP answers the generic NACKs about track t (a kind) from the
// shared cache (through the viewer's queue), and hands a PLI or FIR about
// the video to the fan-out's keyframe requests of the viewer's layer (one
// per RTCP packet, however many it carries).
func (v *viewer) handleRTCP(t relaywire.Track, raw []byte) {
	pkts, err := rtcp.Unmarshal(raw)
	if err != nil {
		return
	}
	b := v.tracks[t].bound.Load()
	if b == nil {
		return
	}
	keyframe := false
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.TransportLayerNack:
			if p.MediaSSRC != b.ssrc {
				continue
			}
			v.queueNACKs(t, p.Nacks)
		case *rtcp.PictureLossIndication:
			if p.MediaSSRC == b.ssrc {
				v.counters.plis.Add(1)
				keyframe = true
			}
		case *rtcp.FullIntraRequest:
			if p.MediaSSRC == b.ssrc {
				v.counters.firs.Add(1)
				keyframe = true
			}
		}
	}
	if keyframe && t == relaywire.Video {
		v.f.requestKeyframe(v.ch, v.ch.layerOf(v))
	}
}

// queueNACKs queues the packets of track t (a kind) the viewer asked for
// again, from the shared cache. A video sequence number is the viewer's:
// it maps back to the layer and sequence number it was sent from through
// the layer the viewer gets now or the one before the last switch (their
// offsets are kept while NACKs may name them); one from before that is
// dropped.
func (v *viewer) queueNACKs(t relaywire.Track, pairs []rtcp.NackPair) {
	if t == relaywire.Video {
		// Held while the entries are queued: their gens stay.
		v.ch.mu.RLock()
		defer v.ch.mu.RUnlock()
	}
	for _, pair := range pairs {
		pair.Range(func(seq uint16) bool {
			v.counters.nacked.Add(1)
			e, ok := entry{track: t, seq: seq}, true
			if t == relaywire.Video {
				e, ok = v.videoSource(seq)
			}
			if ok && v.queue.push(e) {
				v.counters.retransmits.Add(1)
			}
			return true
		})
	}
}

// videoSource is the queue entry of the viewer's video packet seq, and
// false for one sent before the previous layer (or before its stream
// wrapped half the sequence space since). Called with channel.mu held.
func (v *viewer) videoSource(seq uint16) (entry, bool) {
	m := &v.cur
	if v.hasPrev && int16(seq-v.cur.from) < 0 {
		if int16(seq-v.prev.from) < 0 {
			return entry{}, false
		}
		m = &v.prev
	}
	return entry{track: m.track, gen: m.gen, seq: seq - m.seqOff}, true
}
