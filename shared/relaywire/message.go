package relaywire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// ErrProtocol marks a control message that breaks the protocol: too long,
// of an unknown type, or with a body that does not decode. The connection
// is then closed with CodeProtocol.
var ErrProtocol = errors.New("relaywire: protocol error")

// MaxMessageSize bounds a control message (its type byte and JSON body).
const MaxMessageSize = 64 << 10

// MaxNACKSeqs bounds the sequence numbers of one NACK message.
const MaxNACKSeqs = 64

// MsgType is the type byte of a control message.
type MsgType uint8

// The control message types (docs/relay.md).
const (
	TypeHello         MsgType = 1
	TypeChallenge     MsgType = 2
	TypeAuth          MsgType = 3
	TypeWelcome       MsgType = 4
	TypeLoad          MsgType = 5
	TypeSubscribe     MsgType = 6
	TypeSubscribed    MsgType = 7
	TypeUnsubscribe   MsgType = 8
	TypeSessionStart  MsgType = 9
	TypeSessionSDP    MsgType = 10
	TypeSessionAnswer MsgType = 11
	TypeCandidate     MsgType = 12
	TypeSessionClose  MsgType = 13
	TypeNACK          MsgType = 14
	TypeDrain         MsgType = 15
	TypeError         MsgType = 16
	TypeKeyframe      MsgType = 17 // since Version 3
	TypeLayer         MsgType = 18 // since Version 4
)

var typeNames = [...]string{
	TypeHello: "hello", TypeChallenge: "challenge", TypeAuth: "auth", TypeWelcome: "welcome",
	TypeLoad: "load", TypeSubscribe: "subscribe", TypeSubscribed: "subscribed",
	TypeUnsubscribe: "unsubscribe", TypeSessionStart: "session_start", TypeSessionSDP: "session_sdp",
	TypeSessionAnswer: "session_answer", TypeCandidate: "candidate", TypeSessionClose: "session_close",
	TypeNACK: "nack", TypeDrain: "drain", TypeError: "error", TypeKeyframe: "keyframe_request",
	TypeLayer: "session_layer",
}

// String returns the name of the type as docs/relay.md spells it.
func (t MsgType) String() string {
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Message is a control message.
type Message interface {
	Type() MsgType
}

// Hello opens the control stream (function to gateway).
type Hello struct {
	Version   int    `json:"version"`
	Region    string `json:"region"`
	MachineID string `json:"machine_id"`
	MediaAddr string `json:"media_addr"` // public ip:port of the function's WebRTC UDP mux
	Capacity  int    `json:"capacity"`   // max viewers
}

// Challenge carries the gateway's nonce (gateway to function).
type Challenge struct {
	Nonce string `json:"nonce"` // hex
}

// Auth proves the function knows the secret (function to gateway).
type Auth struct {
	MAC string `json:"mac"` // hex, see AuthMAC
}

// Welcome accepts the function (gateway to function).
type Welcome struct {
	FunctionID string `json:"function_id"`
}

// LoadReport is the function's load, sent every second.
type LoadReport struct {
	Load
}

// Subscribe asks for a channel's tracks as datagrams.
type Subscribe struct {
	Channel uint32 `json:"channel"`
}

// Subscribed answers Subscribe with the tracks, or an error.
type Subscribed struct {
	Channel uint32      `json:"channel"`
	Tracks  []TrackInfo `json:"tracks,omitempty"`
	Error   string      `json:"error,omitempty"`
}

// Unsubscribe stops a channel's datagrams.
type Unsubscribe struct {
	Channel uint32 `json:"channel"`
}

// SessionStart asks the function to start a viewer session. An empty Offer
// asks the function to make the offer.
type SessionStart struct {
	Session string `json:"session"`
	Channel uint32 `json:"channel"`
	Offer   string `json:"offer,omitempty"`
	// Layer pins the viewer to the video layer of this rid, as long as
	// the channel has it; empty: the highest layer.
	Layer string `json:"layer,omitempty"`
}

// SessionLayer pins a running session to another video layer (empty: the
// highest). The viewer switches at that layer's next keyframe.
type SessionLayer struct {
	Session string `json:"session"`
	Layer   string `json:"layer,omitempty"`
}

// SessionSDP is the function's complete answer (or offer) for a session,
// or the error that prevented it.
type SessionSDP struct {
	Session string `json:"session"`
	SDPType string `json:"type,omitempty"` // "answer" or "offer"
	SDP     string `json:"sdp,omitempty"`
	Error   string `json:"error,omitempty"`
}

// SessionAnswer carries the viewer's answer to the function's offer.
type SessionAnswer struct {
	Session string `json:"session"`
	SDP     string `json:"sdp"`
}

// CandidateMsg trickles one ICE candidate of a session, in either
// direction.
type CandidateMsg struct {
	Session   string    `json:"session"`
	Candidate Candidate `json:"candidate"`
}

// SessionClose ends a session, in either direction.
type SessionClose struct {
	Session string `json:"session"`
	Reason  string `json:"reason,omitempty"`
}

// NACK asks the gateway to send packets of a flow again.
type NACK struct {
	Flow Flow     `json:"flow"`
	Seqs []uint16 `json:"seqs"` // at most MaxNACKSeqs
}

// Drain tells the function to take no new sessions and keep the current
// ones.
type Drain struct {
	Reason string `json:"reason,omitempty"`
}

// Error is sent by the gateway before it closes the connection.
type Error struct {
	Message string `json:"message"`
}

// KeyframeRequest tells the gateway that a viewer of a subscribed channel
// needs a keyframe (its decoder sent a PLI or FIR). The function sends at
// most one a second per channel; the gateway asks the channel's publisher,
// when it can be asked.
type KeyframeRequest struct {
	Channel uint32 `json:"channel"`
	Track   Track  `json:"track,omitempty"` // the video layer; Video when absent
}

// Type implements Message.
func (*Hello) Type() MsgType { return TypeHello }

// Type implements Message.
func (*Challenge) Type() MsgType { return TypeChallenge }

// Type implements Message.
func (*Auth) Type() MsgType { return TypeAuth }

// Type implements Message.
func (*Welcome) Type() MsgType { return TypeWelcome }

// Type implements Message.
func (*LoadReport) Type() MsgType { return TypeLoad }

// Type implements Message.
func (*Subscribe) Type() MsgType { return TypeSubscribe }

// Type implements Message.
func (*Subscribed) Type() MsgType { return TypeSubscribed }

// Type implements Message.
func (*Unsubscribe) Type() MsgType { return TypeUnsubscribe }

// Type implements Message.
func (*SessionStart) Type() MsgType { return TypeSessionStart }

// Type implements Message.
func (*SessionSDP) Type() MsgType { return TypeSessionSDP }

// Type implements Message.
func (*SessionAnswer) Type() MsgType { return TypeSessionAnswer }

// Type implements Message.
func (*CandidateMsg) Type() MsgType { return TypeCandidate }

// Type implements Message.
func (*SessionClose) Type() MsgType { return TypeSessionClose }

// Type implements Message.
func (*NACK) Type() MsgType { return TypeNACK }

// Type implements Message.
func (*Drain) Type() MsgType { return TypeDrain }

// Type implements Message.
func (*Error) Type() MsgType { return TypeError }

// Type implements Message.
func (*KeyframeRequest) Type() MsgType { return TypeKeyframe }

// Type implements Message.
func (*SessionLayer) Type() MsgType { return TypeLayer }

// newMessage returns an empty message of type t, or nil for an unknown
// type.
func newMessage(t MsgType) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeChallenge:
		return new(Challenge)
	case TypeAuth:
		return new(Auth)
	case TypeWelcome:
		return new(Welcome)
	case TypeLoad:
		return new(LoadReport)
	case TypeSubscribe:
		return new(Subscribe)
	case TypeSubscribed:
		return new(Subscribed)
	case TypeUnsubscribe:
		return new(Unsubscribe)
	case TypeSessionStart:
		return new(SessionStart)
	case TypeSessionSDP:
		return new(SessionSDP)
	case TypeSessionAnswer:
		return new(SessionAnswer)
	case TypeCandidate:
		return new(CandidateMsg)
	case TypeSessionClose:
		return new(SessionClose)
	case TypeNACK:
		return new(NACK)
	case TypeDrain:
		return new(Drain)
	case TypeError:
		return new(Error)
	case TypeKeyframe:
		return new(KeyframeRequest)
	case TypeLayer:
		return new(SessionLayer)
	}
	return nil
}

// AppendMessage appends the framing of m to dst: the varint length of
// what follows, the type byte and the JSON body.
func AppendMessage(dst []byte, m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return dst, fmt.Errorf("relaywire: encode %s: %w", m.Type(), err)
	}
	if 1+len(body) > MaxMessageSize {
		return dst, fmt.Errorf("relaywire: encode %s: %d bytes, limit %d", m.Type(), 1+len(body), MaxMessageSize)
	}
	dst = quicvarint.Append(dst, uint64(1+len(body)))
	dst = append(dst, byte(m.Type()))
	return append(dst, body...), nil
}

// WriteMessage writes m to w in one Write call, so writers that share w
// under a mutex never interleave.
func WriteMessage(w io.Writer, m Message) error {
	b, err := AppendMessage(nil, m)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("relaywire: write %s: %w", m.Type(), err)
	}
	return nil
}

// Reader is what ReadMessage reads from; a *bufio.Reader is one.
type Reader interface {
	io.Reader
	io.ByteReader
}

// ReadMessage reads one control message. It returns io.EOF at a clean end
// of the stream, an error wrapping io.ErrUnexpectedEOF in the middle of a
// message, and an error wrapping ErrProtocol for a message longer than
// MaxMessageSize, of an unknown type, or whose body is not a JSON object of
// that type. It allocates at most the announced length once it has checked
// it.
func ReadMessage(r Reader) (Message, error) {
	n, err := readVarint(r)
	if err != nil {
		return nil, err
	}
	if n == 0 || n > MaxMessageSize {
		return nil, fmt.Errorf("%w: message of %d bytes (1 to %d)", ErrProtocol, n, MaxMessageSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("relaywire: read message: %w", err)
	}
	return DecodeMessage(b)
}

// DecodeMessage decodes the type byte and JSON body of one message (the
// bytes after its length).
func DecodeMessage(b []byte) (Message, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty message", ErrProtocol)
	}
	t := MsgType(b[0])
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrProtocol, b[0])
	}
	body := bytes.TrimLeft(b[1:], " \t\r\n")
	if len(body) == 0 || body[0] != '{' {
		return nil, fmt.Errorf("%w: %s: body is not a JSON object", ErrProtocol, t)
	}
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrProtocol, t, err)
	}
	if n, ok := m.(*NACK); ok && len(n.Seqs) > MaxNACKSeqs {
		return nil, fmt.Errorf("%w: nack of %d sequence numbers (limit %d)", ErrProtocol, len(n.Seqs), MaxNACKSeqs)
	}
	return m, nil
}

// readVarint reads a QUIC variable-length integer: io.EOF before its first
// byte, io.ErrUnexpectedEOF inside it.
func readVarint(r io.ByteReader) (uint64, error) {
	b, err := r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("relaywire: read length: %w", err)
	}
	v := uint64(b & 0x3f)
	for range 1<<(b>>6) - 1 {
		b, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("relaywire: read length: %w", err)
		}
		v = v<<8 | uint64(b)
	}
	return v, nil
}
