package relay

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sync/errgroup"

	"lightspeed/shared/relaywire"
)

// errConnLost ends what waited on a connection that is gone.
var errConnLost = errors.New("relay: connection lost")

// conn is one authenticated connection to the gateway.
type conn struct {
	c   *Client
	h   Handler
	qc  *quic.Conn
	str *quic.Stream // the control stream
	br  *bufio.Reader
	log *slog.Logger
	ctx context.Context // set by run; done when the connection ends

	wmu sync.Mutex // serialises control writes

	mu       sync.Mutex
	subs     map[uint32]*chanSub
	pending  map[string]*pendingSession
	draining bool

	keyframes chan relaywire.KeyframeRequest // keyframe requests waiting for sendKeyframes
	inbox     chan []byte                    // received datagrams, waiting to be handed on
	deliverMu sync.Mutex                     // one packet handed on at a time; guards pkt
	pkt       Packet                         // the packet being handed on (the handler keeps none)
	fmu       sync.Mutex                     // guards flows
	flows     map[relaywire.Flow]*flow
}

// chanSub is one channel subscribed on a connection.
type chanSub struct {
	answered chan struct{} // closed when subscribed arrived
	tracks   []relaywire.TrackInfo
	err      error
}

// failed reports whether the gateway refused the subscription.
func (s *chanSub) failed() bool {
	select {
	case <-s.answered:
		return s.err != nil
	default:
		return false
	}
}

// pendingSession is a session whose Handler.StartSession runs.
type pendingSession struct {
	cancel context.CancelFunc
	closed bool // the gateway closed it meanwhile
	reason string
	layer  *string // the layer of a session_layer that came meanwhile, handed on after
}

// handshake runs hello, challenge, auth and welcome on a new connection.
func (c *Client) handshake(ctx context.Context, qc *quic.Conn, h Handler) (*conn, error) {
	hctx, cancel := context.WithTimeout(ctx, relaywire.AuthTimeout)
	defer cancel()
	str, err := qc.OpenStreamSync(hctx)
	if err != nil {
		return nil, fmt.Errorf("relay: open control stream: %w", err)
	}
	deadline, _ := hctx.Deadline()
	str.SetDeadline(deadline)
	stop := context.AfterFunc(hctx, func() { str.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReader(str)

	read := func(want relaywire.MsgType) (relaywire.Message, error) {
		m, err := relaywire.ReadMessage(br)
		if err != nil {
			return nil, fmt.Errorf("relay: authenticate: %w", err)
		}
		if e, ok := m.(*relaywire.Error); ok {
			return nil, fmt.Errorf("relay: authenticate: gateway: %s", e.Message)
		}
		if m.Type() != want {
			return nil, fmt.Errorf("relay: authenticate: %s, want %s", m.Type(), want)
		}
		return m, nil
	}

	if err := relaywire.WriteMessage(str, c.hello()); err != nil {
		return nil, fmt.Errorf("relay: authenticate: %w", err)
	}
	m, err := read(relaywire.TypeChallenge)
	if err != nil {
		return nil, err
	}
	nonce, err := hex.DecodeString(m.(*relaywire.Challenge).Nonce)
	if err != nil || len(nonce) == 0 {
		return nil, errors.New("relay: authenticate: bad nonce")
	}
	state := qc.ConnectionState().TLS
	exporter, err := state.ExportKeyingMaterial(relaywire.ExporterLabel, nil, relaywire.ExporterLength)
	if err != nil {
		return nil, fmt.Errorf("relay: authenticate: tls exporter: %w", err)
	}
	mac := relaywire.AuthMAC(c.cfg.Secret, exporter, nonce)
	if err := relaywire.WriteMessage(str, &relaywire.Auth{MAC: hex.EncodeToString(mac)}); err != nil {
		return nil, fmt.Errorf("relay: authenticate: %w", err)
	}
	m, err = read(relaywire.TypeWelcome)
	if err != nil {
		return nil, err
	}
	if !stop() {
		return nil, fmt.Errorf("relay: authenticate: %w", context.Cause(hctx))
	}
	str.SetDeadline(time.Time{})
	id := m.(*relaywire.Welcome).FunctionID
	return &conn{
		c: c, h: h, qc: qc, str: str, br: br,
		log:       c.log.With("function", id),
		subs:      make(map[uint32]*chanSub),
		pending:   make(map[string]*pendingSession),
		flows:     make(map[relaywire.Flow]*flow),
		inbox:     make(chan []byte, inboxSize),
		keyframes: make(chan relaywire.KeyframeRequest, keyframeQueue),
	}, nil
}

// run serves the connection until it ends or ctx is done.
func (cc *conn) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	cc.ctx = gctx
	cc.c.setCurrent(cc)
	cc.log.Info("relay: connected to the gateway", "addr", cc.c.cfg.GatewayAddr)

	g.Go(cc.receiveDatagrams)
	g.Go(cc.deliverDatagrams)
	g.Go(cc.receiveStreams)
	g.Go(cc.readControl)
	g.Go(cc.sendNACKs)
	g.Go(cc.sendKeyframes)
	g.Go(cc.report)
	g.Go(func() error {
		<-gctx.Done()
		cc.qc.CloseWithError(relaywire.CodeNone, "function stopping")
		return errConnLost
	})
	cc.resubscribe()
	err := g.Wait()

	cc.c.mu.Lock()
	if cc.c.cur == cc {
		cc.c.cur = nil
		close(cc.c.changed)
		cc.c.changed = make(chan struct{})
	}
	cc.c.mu.Unlock()
	if ae := (*quic.ApplicationError)(nil); errors.As(err, &ae) && ae.Remote && ae.ErrorCode == relaywire.CodeReplaced {
		cc.log.Error("relay: another function with the same machine id connected", "machine", cc.c.cfg.MachineID)
	}
	return err
}

// write sends one control message; a gateway that does not read for
// relaywire.WriteTimeout loses the connection.
func (cc *conn) write(m relaywire.Message) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.str.SetWriteDeadline(time.Now().Add(relaywire.WriteTimeout))
	if err := relaywire.WriteMessage(cc.str, m); err != nil {
		cc.qc.CloseWithError(relaywire.CodeNone, "control stream stalled")
		return err
	}
	return nil
}

// receiveDatagrams is the hot loop: it only moves datagrams from quic-go's
// receive queue, which holds 128 and drops silently beyond, to the inbox,
// which holds a whole keyframe cache.
func (cc *conn) receiveDatagrams() error {
	for {
		b, err := cc.qc.ReceiveDatagram(cc.ctx)
		if err != nil {
			return err
		}
		select {
		case cc.inbox <- b:
		default:
			cc.c.stats.overflows.Add(1)
		}
	}
}

// deliverDatagrams decodes, checks and hands on the datagrams of the inbox.
func (cc *conn) deliverDatagrams() error {
	for {
		select {
		case b := <-cc.inbox:
			cc.deliver(b)
		case <-cc.ctx.Done():
			return errConnLost
		}
	}
}

// receiveStreams reads the packets the gateway could not send as
// datagrams: one per unidirectional stream.
func (cc *conn) receiveStreams() error {
	for {
		st, err := cc.qc.AcceptUniStream(cc.ctx)
		if err != nil {
			return err
		}
		st.SetReadDeadline(time.Now().Add(relaywire.StreamTimeout))
		b, err := io.ReadAll(io.LimitReader(st, relaywire.MaxDatagramSize+1))
		if err != nil || len(b) > relaywire.MaxDatagramSize {
			st.CancelRead(0)
			continue
		}
		cc.deliver(b)
	}
}

// deliver hands one datagram's packet to the handler if its flow is
// subscribed and it is not a duplicate.
func (cc *conn) deliver(b []byte) {
	d, err := relaywire.ParseDatagram(b)
	if err != nil {
		return
	}
	cc.deliverMu.Lock()
	defer cc.deliverMu.Unlock()
	cc.deliverLocked(b, &d, false)
}

// deliverLocked is deliver of the parsed datagram d of b, with deliverMu
// held. A datagram that waits for its subscription's answer is held; one
// held and replayed (replay) is not held again, nor counted again.
func (cc *conn) deliverLocked(b []byte, d *relaywire.Datagram, replay bool) {
	now := time.Now()
	cc.fmu.Lock()
	fl := cc.flows[d.Flow]
	ok := false
	if fl != nil {
		if !replay && fl.waits(d) && fl.hold(b) {
			cc.fmu.Unlock()
			cc.c.stats.received.Add(1)
			return
		}
		cc.pkt, ok = fl.receive(d, now, &cc.c.stats)
	}
	cc.fmu.Unlock()
	if fl == nil {
		return // not subscribed (any more)
	}
	if !replay {
		cc.c.stats.received.Add(1)
	}
	if ok {
		cc.h.WriteRTP(&cc.pkt)
	}
}

// sendNACKs asks for the holes the trackers found.
func (cc *conn) sendNACKs() error {
	t := time.NewTicker(nackInterval)
	defer t.Stop()
	var seqs []uint16
	for {
		select {
		case <-cc.ctx.Done():
			return errConnLost
		case now := <-t.C:
			var msgs []relaywire.NACK
			cc.fmu.Lock()
			for id, fl := range cc.flows {
				seqs = fl.tracker.Due(now, seqs[:0])
				if len(seqs) > 0 {
					msgs = append(msgs, relaywire.NACK{Flow: id, Seqs: slices.Clone(seqs)})
				}
			}
			cc.fmu.Unlock()
			for i := range msgs {
				if err := cc.write(&msgs[i]); err != nil {
					return err
				}
				cc.c.stats.nacks.Add(uint64(len(msgs[i].Seqs)))
			}
		}
	}
}

// sendKeyframes writes the keyframe requests Client.RequestKeyframe
// queued: the fan-out's RTCP readers never wait for the control stream.
func (cc *conn) sendKeyframes() error {
	for {
		select {
		case <-cc.ctx.Done():
			return errConnLost
		case req := <-cc.keyframes:
			if err := cc.write(&req); err != nil {
				return err
			}
			cc.c.stats.keyframes.Add(1)
		}
	}
}

// report sends the load every second and subscribes again the remembered
// channels the gateway refused (no stream yet).
func (cc *conn) report() error {
	t := time.NewTicker(loadInterval)
	defer t.Stop()
	for {
		if err := cc.write(&relaywire.LoadReport{Load: cc.h.Load()}); err != nil {
			return err
		}
		select {
		case <-cc.ctx.Done():
			return errConnLost
		case <-t.C:
			cc.resubscribe()
		}
	}
}

// resubscribe subscribes every remembered channel that is not subscribed
// on this connection, or was refused.
func (cc *conn) resubscribe() {
	for _, ch := range cc.c.wanted() {
		cc.mu.Lock()
		s := cc.subs[ch]
		cc.mu.Unlock()
		if s == nil || s.failed() {
			cc.startSubscribe(ch)
		}
	}
}

// startSubscribe sends subscribe for ch unless one is pending or active,
// and returns its state.
func (cc *conn) startSubscribe(ch uint32) *chanSub {
	cc.mu.Lock()
	s := cc.subs[ch]
	if s != nil && !s.failed() {
		cc.mu.Unlock()
		return s
	}
	s = &chanSub{answered: make(chan struct{})}
	cc.subs[ch] = s
	cc.mu.Unlock()
	// Datagrams may come before subscribed: the flows of every track the
	// answer may list (the audio and up to MaxLayers video layers) exist
	// from now on. A flow that gets no packet costs a few words.
	cc.fmu.Lock()
	for t := range relaywire.Track(relaywire.NumTracks) {
		id := relaywire.FlowOf(ch, t)
		if cc.flows[id] == nil {
			cc.flows[id] = newFlow(ch, t, cc.c.numberingOf(id))
		}
	}
	cc.fmu.Unlock()
	cc.write(&relaywire.Subscribe{Channel: ch}) // on failure the connection ends, and with it the waiters
	return s
}

// subscribe subscribes ch on this connection and waits for the answer.
func (cc *conn) subscribe(ctx context.Context, ch uint32) ([]relaywire.TrackInfo, error) {
	s := cc.startSubscribe(ch)
	select {
	case <-s.answered:
		return s.tracks, s.err
	case <-cc.ctx.Done():
		return nil, errConnLost
	case <-ctx.Done():
		return nil, fmt.Errorf("relay: subscribe channel %d: %w", ch, context.Cause(ctx))
	}
}

func (cc *conn) unsubscribe(ch uint32) {
	cc.mu.Lock()
	s, ok := cc.subs[ch]
	delete(cc.subs, ch)
	if ok {
		select {
		case <-s.answered:
		default: // a Subscribe still waits: it ends now
			s.err = fmt.Errorf("relay: subscribe channel %d: unsubscribed meanwhile", ch)
			close(s.answered)
		}
	}
	cc.mu.Unlock()
	cc.removeFlows(ch)
	if ok {
		cc.write(&relaywire.Unsubscribe{Channel: ch})
	}
}

func (cc *conn) removeFlows(ch uint32) {
	cc.fmu.Lock()
	for t := range relaywire.Track(relaywire.NumTracks) {
		delete(cc.flows, relaywire.FlowOf(ch, t))
	}
	cc.fmu.Unlock()
}

// subscribed records the gateway's answer to subscribe.
func (cc *conn) subscribed(m *relaywire.Subscribed) {
	cc.mu.Lock()
	s := cc.subs[m.Channel]
	if s == nil {
		cc.mu.Unlock()
		return // unsubscribed meanwhile
	}
	select {
	case <-s.answered:
		cc.mu.Unlock()
		return // an answer to a repeated subscribe
	default:
	}
	if m.Error != "" {
		s.err = fmt.Errorf("relay: subscribe channel %d: %s", m.Channel, m.Error)
	} else {
		s.tracks = m.Tracks
	}
	close(s.answered)
	cc.mu.Unlock()
	if m.Error != "" {
		cc.removeFlows(m.Channel)
		cc.log.Info("relay: subscription refused", "channel", m.Channel, "err", m.Error)
		return
	}
	now := time.Now()
	// deliverMu before fmu, as deliver takes them: the held datagrams are
	// handed on before any newer one.
	cc.deliverMu.Lock()
	defer cc.deliverMu.Unlock()
	cc.fmu.Lock()
	var held [][]byte
	for _, ti := range m.Tracks {
		fl := cc.flows[ti.Flow]
		if fl == nil || ti.Flow.Channel() != m.Channel {
			continue
		}
		if ti.ClockRate != 0 {
			fl.out.clock = ti.ClockRate
		}
		if ti.FirstSeq != nil {
			fl.anchor(*ti.FirstSeq, ti.SSRC, now, &cc.c.stats)
		}
		fl.anchored = true // answered, with a first_seq or not
		held = append(held, fl.held...)
		fl.held = nil
	}
	cc.fmu.Unlock()
	for _, b := range held {
		if d, err := relaywire.ParseDatagram(b); err == nil {
			cc.deliverLocked(b, &d, true)
		}
	}
	cc.log.Info("relay: subscribed", "channel", m.Channel)
}

// readControl reads the control stream until it ends.
func (cc *conn) readControl() error {
	for {
		m, err := relaywire.ReadMessage(cc.br)
		if err != nil {
			if errors.Is(err, relaywire.ErrProtocol) {
				cc.qc.CloseWithError(relaywire.CodeProtocol, err.Error())
			}
			if errors.Is(err, io.EOF) {
				err = errConnLost
			}
			return err
		}
		switch m := m.(type) {
		case *relaywire.Subscribed:
			cc.subscribed(m)
		case *relaywire.SessionStart:
			cc.startSession(m)
		case *relaywire.SessionAnswer:
			if err := cc.h.SetAnswer(m.Session, m.SDP); err != nil {
				cc.log.Info("relay: set answer", "session", m.Session, "err", err)
			}
		case *relaywire.CandidateMsg:
			if err := cc.h.AddCandidate(m.Session, m.Candidate); err != nil {
				cc.log.Debug("relay: add candidate", "session", m.Session, "err", err)
			}
		case *relaywire.SessionClose:
			cc.sessionClosed(m)
		case *relaywire.SessionLayer:
			cc.setLayer(m)
		case *relaywire.Drain:
			cc.mu.Lock()
			cc.draining = true
			cc.mu.Unlock()
			cc.log.Info("relay: draining", "reason", m.Reason)
		case *relaywire.Error:
			cc.log.Error("relay: gateway error", "message", m.Message)
		default:
			err := fmt.Errorf("%w: %s from the gateway", relaywire.ErrProtocol, m.Type())
			cc.qc.CloseWithError(relaywire.CodeProtocol, err.Error())
			return err
		}
	}
}

func (cc *conn) isDraining() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.draining
}

// startSession runs Handler.StartSession in its own goroutine and sends
// its result.
func (cc *conn) startSession(m *relaywire.SessionStart) {
	log := cc.log.With("session", m.Session, "channel", m.Channel)
	if cc.isDraining() {
		cc.write(&relaywire.SessionSDP{Session: m.Session, Error: "function is draining"})
		return
	}
	ctx, cancel := context.WithCancel(cc.ctx)
	ps := &pendingSession{cancel: cancel}
	cc.mu.Lock()
	cc.pending[m.Session] = ps
	cc.mu.Unlock()
	cc.c.starts.Add(1)
	go func() {
		defer cc.c.starts.Done()
		defer cancel()
		typ, sdp, err := cc.h.StartSession(ctx, m.Session, m.Channel, m.Offer, m.Layer)
		cc.mu.Lock()
		delete(cc.pending, m.Session)
		closed, reason, layer := ps.closed, ps.reason, ps.layer
		cc.mu.Unlock()
		if closed {
			if err == nil {
				cc.h.CloseSession(m.Session, reason)
			}
			return
		}
		reply := &relaywire.SessionSDP{Session: m.Session, SDPType: typ, SDP: sdp}
		if err != nil {
			reply = &relaywire.SessionSDP{Session: m.Session, Error: err.Error()}
			log.Info("relay: session failed", "err", err)
		}
		if werr := cc.write(reply); werr != nil && err == nil {
			cc.h.CloseSession(m.Session, "relay disconnected")
			return
		}
		if err == nil && layer != nil {
			cc.handLayer(m.Session, *layer)
		}
	}()
}

// setLayer hands a session_layer to the handler, or keeps it for when
// the session's StartSession returned (which the handler may not know of
// yet).
func (cc *conn) setLayer(m *relaywire.SessionLayer) {
	cc.mu.Lock()
	if ps := cc.pending[m.Session]; ps != nil {
		layer := m.Layer
		ps.layer = &layer
		cc.mu.Unlock()
		return
	}
	cc.mu.Unlock()
	cc.handLayer(m.Session, m.Layer)
}

// handLayer calls Handler.SetLayer.
func (cc *conn) handLayer(session, layer string) {
	if err := cc.h.SetLayer(session, layer); err != nil {
		cc.log.Debug("relay: set layer", "session", session, "layer", layer, "err", err)
	}
}

// sessionClosed ends a session the gateway closed: a pending start is
// cancelled, a running session closed.
func (cc *conn) sessionClosed(m *relaywire.SessionClose) {
	cc.mu.Lock()
	ps := cc.pending[m.Session]
	if ps != nil {
		ps.closed, ps.reason = true, m.Reason
		ps.cancel()
	}
	cc.mu.Unlock()
	if ps == nil {
		cc.h.CloseSession(m.Session, m.Reason)
	}
}
