package relay

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// function is one authenticated function connection.
type function struct {
	s         *Server
	id        string
	hello     relaywire.Hello
	qc        *quic.Conn
	ctx       context.Context // done when the connection is
	str       *quic.Stream    // the control stream
	log       *slog.Logger
	connected time.Time
	nacks     chan relaywire.NACK

	unregistered bool // guarded by Server.mu

	wmu sync.Mutex // serialises control writes

	mu       sync.Mutex
	load     relaywire.Load
	draining bool
	subs     map[uint32]*forward

	wg sync.WaitGroup // forwarders and the retransmitter
}

// forward is one subscribed channel of a function. keyframes belongs to
// the goroutine that reads the function's control stream (serve), which
// also makes the forward.
type forward struct {
	channel   uint32
	hub       *hub.Hub
	sub       *hub.Subscription
	cancel    context.CancelFunc
	keyframes [relaywire.NumTracks]keyframeLimit // per video layer
}

// refusal is a reason to close a connection before welcome.
type refusal struct {
	code   quic.ApplicationErrorCode
	reason string // metric label
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// serveConn runs one connection: authentication, then the control stream
// until the connection ends.
func (s *Server) serveConn(qc *quic.Conn) {
	log := s.log.With("remote", qc.RemoteAddr().String())
	f, br, err := s.authenticate(qc, log)
	if err != nil {
		var r *refusal
		if errors.As(err, &r) {
			s.metrics.authFailures.WithLabelValues(r.reason).Inc()
			log.Warn("relay: function refused", "err", err)
			f.refuse(qc, r)
		} else {
			log.Debug("relay: connection ended before welcome", "err", err)
		}
		qc.CloseWithError(relaywire.CodeNone, "")
		return
	}
	s.register(f)
	f.log.Info("relay: function connected", "region", f.hello.Region, "machine", f.hello.MachineID,
		"media_addr", f.hello.MediaAddr, "capacity", f.hello.Capacity)

	err = f.serve(br)

	f.qc.CloseWithError(relaywire.CodeNone, "")
	f.mu.Lock()
	subs := f.subs
	f.subs = nil
	f.mu.Unlock()
	for _, fw := range subs {
		f.stop(fw)
	}
	f.wg.Wait()
	s.unregister(f)
	f.log.Info("relay: function disconnected", "err", err)
}

// refuse tells the function why and closes the connection with r's code.
func (f *function) refuse(qc *quic.Conn, r *refusal) {
	if f != nil && f.str != nil {
		f.str.SetWriteDeadline(time.Now().Add(time.Second))
		relaywire.WriteMessage(f.str, &relaywire.Error{Message: r.msg})
	}
	qc.CloseWithError(r.code, r.msg)
}

// authenticate runs hello, challenge, auth and welcome within
// relaywire.AuthTimeout.
// On a refusal it also returns the partial function, whose control stream
// carries the error message.
func (s *Server) authenticate(qc *quic.Conn, log *slog.Logger) (*function, *bufio.Reader, error) {
	ctx, cancel := context.WithTimeout(qc.Context(), relaywire.AuthTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	timeout := &refusal{code: relaywire.CodeUnauthorized, reason: "timeout", msg: "authentication timeout"}

	str, err := qc.AcceptStream(ctx)
	if err != nil {
		if qc.Context().Err() == nil {
			return nil, nil, timeout
		}
		return nil, nil, err
	}
	f := &function{s: s, qc: qc, ctx: qc.Context(), str: str}
	str.SetDeadline(deadline)
	br := bufio.NewReader(str)

	// read reads the next message, which must be of type T.
	read := func(want relaywire.MsgType) (relaywire.Message, error) {
		m, err := relaywire.ReadMessage(br)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, timeout
		case errors.Is(err, relaywire.ErrProtocol):
			return nil, &refusal{code: relaywire.CodeProtocol, reason: "protocol", msg: err.Error()}
		case err != nil:
			return nil, err
		case m.Type() != want:
			return nil, &refusal{code: relaywire.CodeProtocol, reason: "protocol",
				msg: fmt.Sprintf("relay: %s before welcome, want %s", m.Type(), want)}
		}
		return m, nil
	}

	m, err := read(relaywire.TypeHello)
	if err != nil {
		return f, nil, err
	}
	hello := m.(*relaywire.Hello)
	if hello.Version != relaywire.Version {
		return f, nil, &refusal{code: relaywire.CodeProtocol, reason: "protocol",
			msg: fmt.Sprintf("relay: the function speaks relay protocol version %d, this gateway %d: run the same release on both", hello.Version, relaywire.Version)}
	}
	nonce := make([]byte, relaywire.NonceSize)
	rand.Read(nonce)
	if err := relaywire.WriteMessage(str, &relaywire.Challenge{Nonce: hex.EncodeToString(nonce)}); err != nil {
		return f, nil, err
	}
	m, err = read(relaywire.TypeAuth)
	if err != nil {
		return f, nil, err
	}
	mac, err := hex.DecodeString(m.(*relaywire.Auth).MAC)
	if err != nil {
		mac = nil
	}
	state := qc.ConnectionState().TLS
	exporter, err := state.ExportKeyingMaterial(relaywire.ExporterLabel, nil, relaywire.ExporterLength)
	if err != nil {
		return f, nil, fmt.Errorf("relay: tls exporter: %w", err)
	}
	if !hmac.Equal(mac, relaywire.AuthMAC(s.cfg.Secret, exporter, nonce)) {
		return f, nil, &refusal{code: relaywire.CodeUnauthorized, reason: "bad_mac", msg: "unauthorized"}
	}

	f.hello = *hello
	f.id = hello.MachineID
	if f.id == "" {
		f.id = newID()
	}
	f.log = s.log.With("function", f.id)
	f.connected = time.Now()
	f.nacks = make(chan relaywire.NACK, nackQueue)
	f.subs = make(map[uint32]*forward)
	if err := relaywire.WriteMessage(str, &relaywire.Welcome{FunctionID: f.id}); err != nil {
		return f, nil, err
	}
	str.SetDeadline(time.Time{})
	return f, br, nil
}

// serve reads the control stream until it ends or breaks the protocol.
func (f *function) serve(br *bufio.Reader) error {
	f.wg.Add(1)
	go f.retransmit()
	for {
		m, err := relaywire.ReadMessage(br)
		if err != nil {
			switch {
			case errors.Is(err, relaywire.ErrProtocol):
				f.qc.CloseWithError(relaywire.CodeProtocol, err.Error())
			case errors.Is(err, io.EOF):
				err = nil // the function closed the control stream: it is leaving
			}
			return err
		}
		switch m := m.(type) {
		case *relaywire.LoadReport:
			f.mu.Lock()
			f.load = m.Load
			f.mu.Unlock()
		case *relaywire.Subscribe:
			f.subscribe(m.Channel)
		case *relaywire.Unsubscribe:
			f.unsubscribe(m.Channel)
		case *relaywire.KeyframeRequest:
			f.keyframeRequest(m.Channel, m.Track)
		case *relaywire.NACK:
			f.s.metrics.nacks.Add(float64(len(m.Seqs)))
			select {
			case f.nacks <- *m:
			default:
				f.s.metrics.unrecoverable.Add(float64(len(m.Seqs)))
			}
		case *relaywire.SessionSDP:
			f.s.sessionSDP(f, m)
		case *relaywire.CandidateMsg:
			f.s.sessionCandidate(f, m)
		case *relaywire.SessionClose:
			f.s.sessionClosed(f, m)
		default:
			err := fmt.Errorf("%w: %s from a function", relaywire.ErrProtocol, m.Type())
			f.qc.CloseWithError(relaywire.CodeProtocol, err.Error())
			return err
		}
	}
}

// write sends one control message. A function that does not read its
// control stream for relaywire.WriteTimeout is disconnected.
func (f *function) write(m relaywire.Message) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.str.SetWriteDeadline(time.Now().Add(relaywire.WriteTimeout))
	if err := relaywire.WriteMessage(f.str, m); err != nil {
		f.qc.CloseWithError(relaywire.CodeNone, "control stream stalled")
		return fmt.Errorf("relay: function %s: %w", f.id, err)
	}
	return nil
}

func (f *function) info() Function {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Function{
		ID:        f.id,
		Region:    f.hello.Region,
		MachineID: f.hello.MachineID,
		MediaAddr: f.hello.MediaAddr,
		Capacity:  f.hello.Capacity,
		Viewers:   f.load.Viewers,
		EgressBps: f.load.EgressBps,
		CPU:       f.load.CPU,
		Draining:  f.draining,
		Connected: f.connected,
	}
}

// subscribe starts sending channel to the function, from the last keyframe
// on, and answers with its tracks. Subscribing again only answers.
func (f *function) subscribe(channel uint32) {
	log := f.log.With("channel", channel)
	f.mu.Lock()
	fw := f.subs[channel]
	f.mu.Unlock()
	h := f.s.hubs.Get(channel)
	if fw != nil {
		h = fw.hub
	}
	if h == nil {
		log.Info("relay: subscribe to a channel without stream")
		f.write(&relaywire.Subscribed{Channel: channel, Error: fmt.Sprintf("channel %d has no stream", channel)})
		return
	}
	if fw == nil {
		ctx, cancel := context.WithCancel(f.ctx)
		fw = &forward{channel: channel, hub: h, cancel: cancel,
			sub: h.Subscribe(hub.SubscribeOptions{Capacity: subscriptionCapacity, FromKeyframe: true})}
		f.s.trackSub(fw.sub)
		f.mu.Lock()
		f.subs[channel] = fw
		f.mu.Unlock()
		f.wg.Add(1)
		go f.forward(ctx, fw)
		log.Info("relay: subscribed")
	}
	f.write(&relaywire.Subscribed{Channel: channel, Tracks: trackInfos(h.Tracks(), fw.sub)})
}

func (f *function) unsubscribe(channel uint32) {
	f.mu.Lock()
	fw := f.subs[channel]
	delete(f.subs, channel)
	f.mu.Unlock()
	if fw != nil {
		f.stop(fw)
		f.log.Info("relay: unsubscribed", "channel", channel)
	}
}

// stop ends a forward; its goroutine returns soon after.
func (f *function) stop(fw *forward) {
	fw.cancel()
	fw.sub.Close()
	f.s.untrackSub(fw.sub)
}

// hub returns the hub of a subscribed channel, or nil.
func (f *function) hub(channel uint32) *hub.Hub {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fw := f.subs[channel]; fw != nil {
		return fw.hub
	}
	return nil
}

// keyframeRequest asks the publisher of a subscribed channel for a
// keyframe, for a viewer of the function whose decoder needs one. It runs
// on the control reader: the hub's request returns at once (a WHIP
// publisher's PLI or FIR is one RTCP write, which the ingest throttles to
// one a second).
func (f *function) keyframeRequest(channel uint32, t relaywire.Track) {
	f.mu.Lock()
	fw := f.subs[channel]
	f.mu.Unlock()
	switch {
	case !t.IsVideo() || t >= relaywire.NumTracks:
		f.s.metrics.keyframes.WithLabelValues("cannot").Inc()
		f.log.Debug("relay: keyframe request for a track that is not video", "channel", channel, "track", t)
	case fw == nil:
		f.s.metrics.keyframes.WithLabelValues("unsubscribed").Inc()
		f.log.Debug("relay: keyframe request for a channel not subscribed", "channel", channel)
	case !fw.keyframes[t].allow(f.s.now()):
		f.s.metrics.keyframes.WithLabelValues("throttled").Inc()
		f.log.Debug("relay: keyframe request over the limit", "channel", channel)
	case fw.hub.RequestKeyframe(t):
		f.s.metrics.keyframes.WithLabelValues("asked").Inc()
	default: // an FTL publisher, or none live: keyframes come when they come
		f.s.metrics.keyframes.WithLabelValues("cannot").Inc()
	}
}

// The keyframe requests of one function for one channel reach the hub at
// most keyframeBurst at once and keyframeRate a second after that (a
// token bucket). The function sends at most one a second per channel;
// the burst absorbs the jitter between its clock and the gateway's, so an
// honest function is never throttled, and a misbehaving one costs each
// publisher at most one request a second (which the WHIP ingest throttles
// again). The bound per function is thus one a second per channel it
// subscribed.
const (
	keyframeBurst = 2
	keyframeRate  = 1.0 // per second
)

// keyframeLimit is a token bucket of keyframe requests.
type keyframeLimit struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date; zero: never used
}

// allow takes a token at now, if one is left.
func (l *keyframeLimit) allow(now time.Time) bool {
	if l.at.IsZero() {
		l.tokens = keyframeBurst
	} else if d := now.Sub(l.at); d > 0 {
		l.tokens = min(keyframeBurst, l.tokens+d.Seconds()*keyframeRate)
	}
	if l.at.Before(now) {
		l.at = now
	}
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// trackInfos is the hub's description of its tracks, each with the first
// sequence number the subscription sends.
func trackInfos(tracks []relaywire.TrackInfo, sub *hub.Subscription) []relaywire.TrackInfo {
	for i := range tracks {
		first := sub.First(tracks[i].Flow.Track())
		tracks[i].FirstSeq = &first
	}
	return tracks
}

// forward moves the packets of one subscription to the function. When the
// function is slow, SendDatagram blocks here only and the subscription
// drops what it cannot queue.
func (f *function) forward(ctx context.Context, fw *forward) {
	defer f.wg.Done()
	buf := make([]byte, 0, relaywire.MaxDatagramSize)
	var pace pacer
	for {
		p, err := fw.sub.Next(ctx)
		if err != nil {
			if errors.Is(err, hub.ErrClosed) && ctx.Err() == nil {
				f.log.Info("relay: channel hub closed", "channel", fw.channel)
			}
			return
		}
		buf = relaywire.AppendDatagram(buf[:0], relaywire.FlowOf(fw.channel, p.Track), flagsOf(p), p.Data)
		if fw.sub.Pending() >= paceBacklog {
			if d := pace.delay(time.Now()); d > 0 {
				time.Sleep(d)
			}
		}
		if err := f.send(buf); err != nil {
			return
		}
	}
}

// flagsOf is what the hub decided about p, as the datagram carries it.
func flagsOf(p hub.Packet) relaywire.Flags {
	var f relaywire.Flags
	if p.Keyframe {
		f |= relaywire.FlagKeyframe
	}
	if p.StreamStart {
		f |= relaywire.FlagStreamStart
	}
	return f
}

// Pacing of a forward: the keyframe cache a subscription starts with
// (thousands of packets at once) is spread out, so that it does not
// overflow quic-go's 128-datagram receive queue at the function, which
// drops silently. Only while paceBacklog packets or more wait is a
// subscription paced (after a burst of paceBurst): live streams (a few
// thousand packets a second, a keyframe of a few dozen at once, which the
// forwarding keeps up with) pass untouched: pacing every packet delayed a
// live keyframe's last packets (docs/bench.md).
const (
	paceRate    = 10000 // datagrams per second
	paceBurst   = 64    // datagrams sent back to back
	paceBacklog = 32    // queued packets that make a burst: its last 31 go unpaced, a quarter of quic-go's 128-datagram receive queue
)

// pacer spaces datagrams to paceRate after a burst of paceBurst (a
// generic cell rate algorithm).
type pacer struct {
	tat time.Time // theoretical arrival time of the next datagram
}

// delay accounts for one datagram sent at now and returns how long to wait
// before sending it.
func (p *pacer) delay(now time.Time) time.Duration {
	const interval = time.Second / paceRate
	if p.tat.Before(now) {
		p.tat = now
	}
	d := p.tat.Sub(now) - (paceBurst-1)*interval
	p.tat = p.tat.Add(interval)
	return max(d, 0)
}

// retransmit answers NACKs from the hubs' retransmission rings.
func (f *function) retransmit() {
	defer f.wg.Done()
	var pkt [hub.MaxPacketSize]byte
	buf := make([]byte, 0, relaywire.MaxDatagramSize)
	for {
		select {
		case <-f.ctx.Done():
			return
		case n := <-f.nacks:
			h := f.hub(n.Flow.Channel())
			for _, seq := range n.Seqs {
				if h == nil {
					f.s.metrics.unrecoverable.Inc()
					continue
				}
				p, ok := h.Retransmit(n.Flow.Track(), seq, pkt[:])
				if !ok {
					f.s.metrics.unrecoverable.Inc()
					continue
				}
				buf = relaywire.AppendDatagram(buf[:0], n.Flow, flagsOf(p), p.Data)
				if err := f.send(buf); err != nil {
					return
				}
				f.s.metrics.retransmitted.Inc()
			}
		}
	}
}

// send sends one datagram; one that does not fit goes on a stream of its
// own. It fails only when the connection is gone.
func (f *function) send(d []byte) error {
	err := f.qc.SendDatagram(d)
	if err == nil {
		f.s.metrics.datagrams.Inc()
		return nil
	}
	if tooLarge := new(quic.DatagramTooLargeError); errors.As(err, &tooLarge) {
		return f.sendStream(d)
	}
	return err
}

// sendStream sends one datagram's bytes on a new unidirectional stream.
func (f *function) sendStream(d []byte) error {
	st, err := f.qc.OpenUniStreamSync(f.ctx)
	if err != nil {
		return err
	}
	st.SetWriteDeadline(time.Now().Add(relaywire.WriteTimeout))
	if _, err := st.Write(d); err != nil {
		st.CancelWrite(0)
		return f.ctx.Err() // a stalled stream loses one packet; a closed connection ends the forward
	}
	st.Close()
	f.s.metrics.streamed.Inc()
	return nil
}
