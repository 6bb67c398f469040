package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/scheduler"
	"lightspeed/shared/relaywire"
)

// The original Lightspeed websocket protocol: every message is
// {"event": name, "data": JSON}. The server offers; the page answers;
// candidates flow both ways; "info" tells every page the viewer count.
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
	c := &wsConn{conn: conn, channel: channel, send: make(chan []byte, wsSendQueue), done: make(chan struct{})}
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
	c.post("info", map[string]int{"no_connections": s.Viewers(channel)})

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
		case <-msgs: // nothing to answer yet
		case <-tick.C:
		}
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { <-c.done; cancel() }()
	sess, err := s.start(ctx, "websocket", scheduler.RegionFromRequest(r), channel, "", nil)
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
			}
		}
	}
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
		c.post("info", map[string]int{"no_connections": counts[c.channel]})
	}
}
