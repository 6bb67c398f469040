package relay

import (
	"context"
	"fmt"
	"sync"

	"lightspeed/shared/relaywire"
)

// Session is one viewer session signalled through a function.
type Session struct {
	ID         string
	FunctionID string
	Channel    uint32
	Type       string // "answer" or "offer": what the function sent
	SDP        string // the function's answer, or its offer when the viewer sent none

	fn    *function
	sdp   chan *relaywire.SessionSDP // the function's reply, once
	cands chan relaywire.Candidate
	done  chan struct{}

	once sync.Once
	err  error // why it ended; set before done is closed
}

// Candidates returns the ICE candidates the function trickles. The buffer
// is bounded; candidates nobody reads in time are dropped.
func (ss *Session) Candidates() <-chan relaywire.Candidate { return ss.cands }

// Done is closed when the function ends the session or disconnects, or
// CloseSession is called.
func (ss *Session) Done() <-chan struct{} { return ss.done }

// end closes Done once, recording why.
func (ss *Session) end(err error) {
	ss.once.Do(func() {
		ss.err = err
		close(ss.done)
	})
}

// StartSession asks a function to start a viewer session of channel with
// the viewer's SDP offer (or to make the offer itself when offer is ""),
// pinned to the video layer of rid layer ("": the highest), and waits for its complete answer (or offer) until ctx is done. It fails
// with ErrFunctionGone when the function is not connected or disconnects
// meanwhile, and with the function's error text when it refuses.
func (s *Server) StartSession(ctx context.Context, functionID string, channel uint32, offer, layer string) (*Session, error) {
	s.mu.Lock()
	f := s.funcs[functionID]
	if f == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("relay: function %s: %w", functionID, ErrFunctionGone)
	}
	ss := &Session{
		ID:         newID(),
		FunctionID: functionID,
		Channel:    channel,
		fn:         f,
		sdp:        make(chan *relaywire.SessionSDP, 1),
		cands:      make(chan relaywire.Candidate, candidateBuffer),
		done:       make(chan struct{}),
	}
	s.sessions[ss.ID] = ss
	s.mu.Unlock()

	log := f.log.With("session", ss.ID, "channel", channel)
	if err := f.write(&relaywire.SessionStart{Session: ss.ID, Channel: channel, Offer: offer, Layer: layer}); err != nil {
		s.removeSession(ss, ErrFunctionGone)
		return nil, fmt.Errorf("relay: function %s: session %s: %w", functionID, ss.ID, ErrFunctionGone)
	}
	select {
	case r := <-ss.sdp:
		if r.Error != "" {
			s.removeSession(ss, ErrNoSession)
			log.Info("relay: session refused", "err", r.Error)
			return nil, fmt.Errorf("relay: function %s: session %s: %s", functionID, ss.ID, r.Error)
		}
		ss.Type, ss.SDP = r.SDPType, r.SDP
		log.Info("relay: session started", "type", r.SDPType)
		return ss, nil
	case <-ss.done:
		return nil, fmt.Errorf("relay: function %s: session %s: %w", functionID, ss.ID, ss.err)
	case <-ctx.Done():
		s.CloseSession(ss.ID, "cancelled")
		return nil, fmt.Errorf("relay: function %s: session %s: %w", functionID, ss.ID, context.Cause(ctx))
	}
}

// session returns the session of id, or nil.
func (s *Server) session(id string) *Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[id]
}

// removeSession forgets ss and closes its Done.
func (s *Server) removeSession(ss *Session, err error) {
	s.mu.Lock()
	if s.sessions[ss.ID] == ss {
		delete(s.sessions, ss.ID)
	}
	s.mu.Unlock()
	ss.end(err)
}

// SetAnswer sends the viewer's answer to the offer a function made.
func (s *Server) SetAnswer(ctx context.Context, sessionID, sdp string) error {
	ss := s.session(sessionID)
	if ss == nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrNoSession)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, err)
	}
	if err := ss.fn.write(&relaywire.SessionAnswer{Session: sessionID, SDP: sdp}); err != nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrFunctionGone)
	}
	return nil
}

// AddCandidate trickles a viewer's ICE candidate to the session's
// function; an empty Candidate string ends the candidates.
func (s *Server) AddCandidate(sessionID string, c relaywire.Candidate) error {
	ss := s.session(sessionID)
	if ss == nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrNoSession)
	}
	if err := ss.fn.write(&relaywire.CandidateMsg{Session: sessionID, Candidate: c}); err != nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrFunctionGone)
	}
	return nil
}

// SetLayer pins a session to the video layer of rid layer ("": the
// highest); the viewer switches at that layer's next keyframe.
func (s *Server) SetLayer(sessionID, layer string) error {
	ss := s.session(sessionID)
	if ss == nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrNoSession)
	}
	if err := ss.fn.write(&relaywire.SessionLayer{Session: sessionID, Layer: layer}); err != nil {
		return fmt.Errorf("relay: session %s: %w", sessionID, ErrFunctionGone)
	}
	return nil
}

// CloseSession ends a session: the function is told, Done closes. Unknown
// sessions are ignored.
func (s *Server) CloseSession(sessionID, reason string) {
	ss := s.session(sessionID)
	if ss == nil {
		return
	}
	s.removeSession(ss, fmt.Errorf("%w: closed: %s", ErrNoSession, reason))
	ss.fn.write(&relaywire.SessionClose{Session: sessionID, Reason: reason})
	ss.fn.log.Info("relay: session closed", "session", sessionID, "reason", reason)
}

// sessionOf returns the session id of f, or nil for a session that is not
// (or no longer) f's.
func (s *Server) sessionOf(f *function, id string) *Session {
	ss := s.session(id)
	if ss == nil || ss.fn != f {
		return nil
	}
	return ss
}

func (s *Server) sessionSDP(f *function, m *relaywire.SessionSDP) {
	ss := s.sessionOf(f, m.Session)
	if ss == nil {
		f.log.Debug("relay: session_sdp for an unknown session", "session", m.Session)
		return
	}
	select {
	case ss.sdp <- m:
	default: // answered already
	}
}

func (s *Server) sessionCandidate(f *function, m *relaywire.CandidateMsg) {
	ss := s.sessionOf(f, m.Session)
	if ss == nil {
		return
	}
	select {
	case ss.cands <- m.Candidate:
	default:
		f.log.Debug("relay: candidate dropped, nobody reads", "session", m.Session)
	}
}

func (s *Server) sessionClosed(f *function, m *relaywire.SessionClose) {
	ss := s.sessionOf(f, m.Session)
	if ss == nil {
		return
	}
	s.removeSession(ss, fmt.Errorf("%w: closed by the function: %s", ErrNoSession, m.Reason))
	f.log.Info("relay: session closed by the function", "session", m.Session, "reason", m.Reason)
}
