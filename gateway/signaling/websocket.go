package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/scheduler"
	"lightspeed/shared/relaywire"
)

// The original Lightspeed websocket protocol: every message is
// {"event": name, "data": JSON}. The server offers; the page answers;
// candidates flow both ways; "info" tells every page the viewer count.
//
// Two additions for simulcast, which pages that do not know them never
// meet: a page may send {"event":"layer","data":"<rid>"} to pin its
// session to a video layer ("" for the highest; ?layer=<rid> on the
// websocket's URL pins it from the start), which the server confirms with
// the same message; a layer it cannot take is answered
// {"event":"error","data":{"event":"layer","message":"…"}} and changes
// nothing.
const (
	wsMaxMessage   = 64 << 10
	wsWriteTimeout = 5 * time.Second
	wsPingInterval = 20 * time.Second
	wsSendQueue    = 32
	liveCheck      = time.Second // how often a page waiting for an offline channel checks again
)

// wsReadTimeout: a page that answers no ping (nor sends anything) this
// long is closed. A variable for tests.
var wsReadTimeout = wsPingInterval + 10*time.Second

type wsMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type sdpData struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// wsConn is one page on the websocket.
type wsConn struct {
	conn    *websocket.Conn
	channel uint32
	send    chan []byte // bounded; a page that cannot keep up is closed
	once    sync.Once
	done    chan struct{}
	// The viewer count is a state, not an event: the newest is written,
	// once the page is ready for it, and a burst of joins never fills
	// send with counts.
	viewers   atomic.Int64
	infoReady chan struct{} // one slot: a count waits to be written
}

// postInfo tells the page its channel's viewer count ("info"): the newest
// count replaces one not yet written.
func (c *wsConn) postInfo(n int) {
	c.viewers.Store(int64(n))
	select {
	case c.infoReady <- struct{}{}:
	default: // a count is waiting: it will be this one
	}
}

var upgrader = websocket.Upgrader{
	// The original web app may be served from another origin.
	CheckOrigin: func(*http.Request) bool { return true },
}

func (c *wsConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.conn.Close()
	})
}

// post queues a message for the page without blocking; a page whose queue
// is full is too slow to be worth waiting for and is closed.
func (c *wsConn) post(event string, data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		return
	}
	msg, _ := json.Marshal(wsMessage{Event: event, Data: raw})
	select {
	case c.send <- msg:
	case <-c.done:
	default:
		c.close()
	}
}

func (c *wsConn) writeLoop() {
	ping := time.NewTicker(wsPingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.done:
			return
		case msg := <-c.send:
			_ = c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.close()
				return
			}
		case <-c.infoReady:
			raw, _ := json.Marshal(map[string]int64{"no_connections": c.viewers.Load()})
			msg, _ := json.Marshal(wsMessage{Event: "info", Data: raw})
			_ = c.conn.SetWriteDeadline(time.Now().Add(wsWriteTimeout))
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				c.close()
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wsWriteTimeout)); err != nil {
				c.close()
				return
			}
		}
	}
}

// wsChannel is the channel a page watches: ?channel=, else the only live
// public channel, else the default channel.
func (s *Signaling) wsChannel(r *http.Request) (uint32, bool) {
	if v := r.URL.Query().Get("channel"); v != "" {
		return parseChannel(v)
	}
	var live []uint32
	for _, h := range s.cfg.Hubs.List() {
		if h.Stats().Live && !s.private(h.Channel()) {
			live = append(live, h.Channel())
		}
	}
	if len(live) == 1 {
		return live[0], true
	}
	return s.cfg.DefaultChannel, true
}

func (s *Signaling) serveWebsocket(w http.ResponseWriter, r *http.Request) {
	ip := s.clientIP(r)
	if !s.admit(w, r, "websocket", ip) {
		return
	}
	channel, ok := s.wsChannel(r)
	if !ok || !s.known(channel) {
		httpError(w, http.StatusNotFound, "unknown channel %q", r.URL.Query().Get("channel"))
		return
	}
	layer, why := queryLayer(r.URL.Query())
	if why != "" {
		httpError(w, http.StatusBadRequest, "%s", why)
		return
	}
	// Refused before the upgrade: the page sees the status and nothing
	// is held for it.
	if !s.authorize(w, r, "websocket", channel, r.URL.Query().Get("token")) {
		return
	}
	// The page holds its slot from here to its close, waiting for the
	// channel to go live included.
	release := s.takeSlot(w, "websocket", ip, channel)
	if release == nil {
		return
	}
	defer release()
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	conn.SetReadLimit(wsMaxMessage)
	// Every ping is answered by a live page (browsers answer by
	// themselves): one that neither answers nor sends anything for
	// wsReadTimeout is gone, or a slowloris, and is closed.
	alive := func() error { return conn.SetReadDeadline(time.Now().Add(wsReadTimeout)) }
	_ = alive()
	conn.SetPongHandler(func(string) error { return alive() })
	c := &wsConn{conn: conn, channel: channel, send: make(chan []byte, wsSendQueue), done: make(chan struct{}),
		infoReady: make(chan struct{}, 1)}
	s.mu.Lock()
	s.sockets[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sockets, c)
		s.mu.Unlock()
		c.close()
	}()
	go c.writeLoop()
	c.postInfo(s.Viewers(channel))

	// Read in the background so a closed page is noticed while waiting.
	msgs := make(chan wsMessage)
	go func() {
		defer c.close()
		for {
			var m wsMessage
			if err := conn.ReadJSON(&m); err != nil {
				if errors.Is(err, websocket.ErrReadLimit) {
					// gorilla has sent the close frame (1009, message too big).
					s.refusedWS.Inc(ratelimit.ReasonMessageSize)
					s.log.Info("signaling: websocket message too large; closed", "ip", ip, "channel", channel, "max_bytes", wsMaxMessage)
				}
				return
			}
			_ = alive()
			select {
			case msgs <- m:
			case <-c.done:
				return
			}
		}
	}()

	// Wait for the channel to go live: the page stays until it does.
	tick := time.NewTicker(liveCheck)
	defer tick.Stop()
	for !s.live(channel) {
		select {
		case <-c.done:
			return
		case m := <-msgs: // only a layer to remember, for the session to come
			if next, ok := c.takeLayer(s, m); ok {
				layer = next
				c.post("layer", layer)
			}
		case <-tick.C:
		}
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { <-c.done; cancel() }()
	sess, err := s.start(ctx, "websocket", scheduler.RegionFromRequest(r), channel, "", layer, nil)
	if err != nil {
		s.log.Warn("signaling: websocket session failed", "channel", channel, "err", err)
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "no media server available"), time.Now().Add(time.Second))
		return
	}
	defer s.cfg.Relay.CloseSession(sess.ID, "page left")
	c.post("offer", sdpData{Type: sess.Type, SDP: sess.SDP})

	for {
		select {
		case <-c.done:
			return
		case <-sess.Done():
			return // the function is gone: the page reconnects and lands elsewhere
		case cand := <-sess.Candidates():
			c.post("candidate", cand)
		case m := <-msgs:
			switch m.Event {
			case "answer":
				var a sdpData
				if json.Unmarshal(m.Data, &a) != nil || a.Type != "answer" || a.SDP == "" {
					s.log.Info("signaling: websocket sent a bad answer", "session", sess.ID)
					return
				}
				if !sess.addSDP(a.SDP) {
					c.tooManyCandidates(s, sess.ID)
					return
				}
				actx, acancel := context.WithTimeout(ctx, s.cfg.SessionTimeout)
				err := s.cfg.Relay.SetAnswer(actx, sess.ID, a.SDP)
				acancel()
				if err != nil {
					s.log.Info("signaling: answer refused", "session", sess.ID, "err", err)
					return
				}
			case "candidate":
				var cand relaywire.Candidate
				if json.Unmarshal(m.Data, &cand) != nil {
					s.log.Info("signaling: websocket sent a bad candidate", "session", sess.ID)
					return
				}
				if !sess.addTrickled(cand) {
					c.tooManyCandidates(s, sess.ID)
					return
				}
				if err := s.cfg.Relay.AddCandidate(sess.ID, cand); err != nil {
					return
				}
			case "layer":
				next, ok := c.takeLayer(s, m)
				if !ok {
					continue
				}
				if next != layer {
					if err := s.cfg.Relay.SetLayer(sess.ID, next); err != nil {
						// The session is over: Done ends the page.
						s.log.Info("signaling: layer not set", "session", sess.ID, "layer", next, "err", err)
						c.post("error", wsError{Event: "layer", Message: "the session has ended"})
						continue
					}
					s.log.Debug("signaling: viewer layer set", "session", sess.ID, "layer", next)
					layer = next
				}
				c.post("layer", layer)
			}
		}
	}
}

// takeLayer reads the layer of m, a page's message, when it is a "layer"
// message: the rid, or "" for the highest layer, and true. A layer it
// cannot take is answered with an "error" message (logged at debug level
// only: a page may send many) and reported false, as any other message
// is. The caller confirms a layer taken with a "layer" message.
func (c *wsConn) takeLayer(s *Signaling, m wsMessage) (string, bool) {
	if m.Event != "layer" {
		return "", false
	}
	layer, why := messageLayer(m.Data)
	if why != "" {
		s.log.Debug("signaling: websocket sent a bad layer", "channel", c.channel, "why", why)
		c.post("error", wsError{Event: "layer", Message: why})
		return "", false
	}
	return layer, true
}

// tooManyCandidates ends a page's socket with a policy-violation close
// frame that says why: its candidates passed relaywire.MaxCandidates
// addresses or relaywire.MaxTrickle messages.
func (c *wsConn) tooManyCandidates(s *Signaling, session string) {
	s.log.Info("signaling: websocket sent too many ICE candidates", "session", session,
		"max_addresses", relaywire.MaxCandidates, "max_trickled", relaywire.MaxTrickle)
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "too many ICE candidates"), time.Now().Add(time.Second))
}

// broadcastInfo tells every page how many viewers its channel has.
func (s *Signaling) broadcastInfo() {
	s.mu.Lock()
	socks := make([]*wsConn, 0, len(s.sockets))
	for c := range s.sockets {
		socks = append(socks, c)
	}
	counts := make(map[uint32]int, len(s.viewers))
	for ch, n := range s.viewers {
		counts[ch] = n
	}
	s.mu.Unlock()
	for _, c := range socks {
		c.postInfo(counts[c.channel])
	}
}
