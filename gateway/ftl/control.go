package ftl

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/proxyproto"
)

// Reply codes of the FTL control protocol (ftl-sdk ftl_private.h).
const (
	codeOK           = 200
	codePing         = 201
	codeBadRequest   = 400
	codeUnauthorized = 401
	codeAudioSSRC    = 403
	codeVideoSSRC    = 404
	codeInvalidKey   = 405
	codeChannelInUse = 406
	codeNoMedia      = 408
	codeTerminated   = 410
	codeInternal     = 500
	maxLine          = 4096 // longest control line accepted, with its line ending
	challengeSize    = 128  // random bytes of the HMAC challenge
	hmacHexLen       = 2 * sha512.Size
)

// replyError is a failure that ends a control connection with code.
type replyError struct {
	code int
	msg  string
}

func (e *replyError) Error() string { return fmt.Sprintf("%d %s", e.code, e.msg) }

func reject(code int, format string, args ...any) error {
	return &replyError{code: code, msg: fmt.Sprintf(format, args...)}
}

var (
	errAudioSSRC = reject(codeAudioSSRC, "audio SSRC in use by another stream")
	errVideoSSRC = reject(codeVideoSSRC, "video SSRC in use by another stream")
)

// state is how far a control connection has come.
type state int

const (
	stateNew       state = iota // waiting for HMAC
	stateChallenge              // challenge sent, waiting for CONNECT
	stateAuthed                 // authenticated, reading attributes until "."
	stateLive                   // media flowing; PING and DISCONNECT only
)

// control is one publisher's control connection.
type control struct {
	srv       *Server
	conn      net.Conn
	remote    netip.AddrPort
	state     state
	challenge []byte
	channel   uint32
	attrs     map[string]string
	sess      *session

	wmu sync.Mutex // replies come from the reader and from the media watchdog
}

func (s *Server) handleControl(conn net.Conn) {
	s.metrics.connections.Inc()
	remote, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	c := &control{srv: s, conn: conn, remote: remote, attrs: make(map[string]string)}
	defer conn.Close()

	r := bufio.NewReaderSize(conn, maxLine)
	deadline := time.Now().Add(s.cfg.AuthTimeout)
	if s.cfg.ProxyProtocol {
		_ = conn.SetReadDeadline(deadline)
		client, err := proxyproto.ReadHeader(r)
		if err != nil {
			s.log.Warn("ftl: connection refused", "remote", remote.String(), "code", codeBadRequest, "reason", err.Error())
			c.reply(strconv.Itoa(codeBadRequest))
			linger(conn)
			return
		}
		if client.IsValid() {
			c.remote = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		}
	}
	log := s.log.With("remote", c.remote.String())
	for {
		if c.state == stateLive {
			deadline = time.Now().Add(s.cfg.IdleTimeout)
		}
		_ = conn.SetReadDeadline(deadline)
		line, err := readLine(r)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				err = reject(codeBadRequest, "control line longer than %d bytes", maxLine)
			case errors.As(err, &ne) && ne.Timeout() && c.state == stateLive:
				err = reject(codeNoMedia, "no PING for %v", s.cfg.IdleTimeout)
			case errors.As(err, &ne) && ne.Timeout():
				err = reject(codeNoMedia, "handshake not finished within %v", s.cfg.AuthTimeout)
			default:
				// Connection closed or reset: the stream ends below.
				if c.sess != nil {
					c.sess.end("control connection lost", 0)
				}
				if c.state != stateLive {
					log.Info("ftl: connection closed during handshake", "err", err)
				}
				return
			}
		}
		if err == nil {
			err = c.handle(line)
		}
		if err == nil {
			continue
		}
		if errors.Is(err, errDisconnect) {
			// Media sent just before DISCONNECT may still be on its way.
			c.sess.drain(time.Now())
			return
		}
		var re *replyError
		if !errors.As(err, &re) {
			re = &replyError{code: codeInternal, msg: err.Error()}
		}
		if c.sess != nil {
			c.sess.end(re.msg, re.code)
		} else {
			c.reply(strconv.Itoa(re.code))
		}
		log.Warn("ftl: connection refused", "channel", c.channel, "code", re.code, "reason", re.msg)
		linger(conn)
		return
	}
}

var errDisconnect = errors.New("ftl: disconnect")

// linger closes conn's sending side and reads what the peer still sends,
// briefly and bounded, so the kernel does not answer unread bytes with a
// reset that would destroy the reply before the peer reads it.
func linger(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, conn, 64<<10)
}

// readLine returns the next non-empty line without its line ending. Lines
// end in "\n"; the client's "\r\n\r\n" gives one line and one empty line.
func readLine(r *bufio.Reader) (string, error) {
	for {
		b, err := r.ReadSlice('\n')
		if err != nil {
			return "", err
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) > 0 {
			return string(b), nil
		}
	}
}

func (c *control) reply(line string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.conn.Write([]byte(line + "\n"))
}

// handle acts on one control line.
func (c *control) handle(line string) error {
	cmd, arg, _ := strings.Cut(line, " ")
	switch {
	case line == "HMAC":
		if c.state != stateNew {
			return reject(codeBadRequest, "HMAC out of order")
		}
		c.challenge = make([]byte, challengeSize)
		if _, err := rand.Read(c.challenge); err != nil {
			return fmt.Errorf("ftl: challenge: %w", err)
		}
		c.state = stateChallenge
		c.reply("200 " + hex.EncodeToString(c.challenge))
		return nil
	case cmd == "CONNECT":
		return c.connect(arg)
	case line == ".":
		return c.start()
	case cmd == "PING":
		if c.state < stateAuthed {
			return reject(codeBadRequest, "PING before authentication")
		}
		if c.sess != nil {
			c.sess.touch(time.Now())
		}
		c.reply(strconv.Itoa(codePing))
		return nil
	case line == "DISCONNECT":
		if c.state != stateLive {
			return reject(codeBadRequest, "DISCONNECT before the stream started")
		}
		return errDisconnect
	case strings.Contains(line, ": "):
		return c.attribute(line)
	}
	return reject(codeBadRequest, "not an FTL command: %q", truncate(line, 64))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// connect checks "CONNECT <channel> $<hex hmac>".
func (c *control) connect(arg string) error {
	s := c.srv
	if c.state != stateChallenge {
		return reject(codeBadRequest, "CONNECT before HMAC")
	}
	idText, mac, ok := strings.Cut(arg, " ")
	if !ok || !strings.HasPrefix(mac, "$") {
		return reject(codeBadRequest, "CONNECT wants <channel> $<hmac>")
	}
	id, err := strconv.ParseUint(idText, 10, 32)
	if err != nil || id == 0 {
		return reject(codeBadRequest, "bad channel id %q", truncate(idText, 16))
	}
	c.channel = uint32(id)
	got, err := hex.DecodeString(mac[1:])
	if err != nil || len(mac)-1 != hmacHexLen {
		return reject(codeBadRequest, "hmac is not %d hex digits", hmacHexLen)
	}
	ip := c.remote.Addr()
	if ok, _ := s.limiter.Allow(ip, time.Now()); !ok {
		s.metrics.authFailures.WithLabelValues("rate_limited").Inc()
		return reject(codeUnauthorized, "too many failed authentications from %s", ip)
	}
	secret, ok := s.keys.Secret(c.channel)
	if !ok {
		s.limiter.Fail(ip, time.Now())
		s.metrics.authFailures.WithLabelValues("unknown_channel").Inc()
		return reject(codeInvalidKey, "no stream key for channel %d", c.channel)
	}
	m := hmac.New(sha512.New, []byte(secret))
	m.Write(c.challenge)
	if !hmac.Equal(m.Sum(nil), got) {
		s.limiter.Fail(ip, time.Now())
		s.metrics.authFailures.WithLabelValues("hmac_mismatch").Inc()
		return reject(codeUnauthorized, "hmac mismatch")
	}
	sess := newSession(s, c, c.channel, ip)
	if err := s.claim(sess); errors.Is(err, hub.ErrInUse) {
		return reject(codeChannelInUse, "%v", err)
	} else if err != nil {
		return reject(codeTerminated, "%v", err) // the gateway is shutting down
	}
	c.sess = sess
	c.state = stateAuthed
	s.log.Info("ftl: publisher authenticated", "channel", c.channel, "remote", c.remote.String())
	c.reply(strconv.Itoa(codeOK))
	return nil
}

// knownAttributes are the attribute lines the FTL SDK sends; the value
// check returns a reason when the value is unusable.
var knownAttributes = map[string]func(string) string{
	"ProtocolVersion":  func(v string) string { return checkPrefix(v, "0.", "protocol version") },
	"VendorName":       func(string) string { return "" },
	"VendorVersion":    func(string) string { return "" },
	"Video":            checkBool,
	"Audio":            checkBool,
	"VideoCodec":       func(v string) string { return checkOneOf(v, "H264") },
	"AudioCodec":       func(v string) string { return checkOneOf(v, "OPUS") },
	"VideoHeight":      func(v string) string { return checkUint(v, 1, 16384) },
	"VideoWidth":       func(v string) string { return checkUint(v, 1, 16384) },
	"VideoPayloadType": func(v string) string { return checkUint(v, 96, 127) },
	"AudioPayloadType": func(v string) string { return checkUint(v, 96, 127) },
	"VideoIngestSSRC":  func(v string) string { return checkUint(v, 1, 1<<32-1) },
	"AudioIngestSSRC":  func(v string) string { return checkUint(v, 1, 1<<32-1) },
}

func checkBool(v string) string {
	if v != "true" && v != "false" {
		return "want true or false"
	}
	return ""
}

func checkOneOf(v string, want string) string {
	if v != want {
		return "unsupported, want " + want
	}
	return ""
}

func checkPrefix(v, prefix, what string) string {
	if !strings.HasPrefix(v, prefix) {
		return "unsupported " + what
	}
	return ""
}

func checkUint(v string, lo, hi uint64) string {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return fmt.Sprintf("want a number from %d to %d", lo, hi)
	}
	return ""
}

// attribute records one "Key: Value" line. Attributes get no reply: the
// SDK does not read one, and an extra line would confuse it.
func (c *control) attribute(line string) error {
	if c.state != stateAuthed {
		return reject(codeBadRequest, "attribute before authentication")
	}
	k, v, _ := strings.Cut(line, ": ")
	check, known := knownAttributes[k]
	if !known {
		c.srv.log.Debug("ftl: unknown attribute ignored", "channel", c.channel, "attribute", truncate(k, 32))
		return nil
	}
	if why := check(v); why != "" {
		return reject(codeBadRequest, "attribute %s %q: %s", k, truncate(v, 32), why)
	}
	c.attrs[k] = v
	return nil
}

// start handles ".": the attributes are complete and media may flow.
func (c *control) start() error {
	if c.state != stateAuthed {
		return reject(codeBadRequest, `"." before authentication`)
	}
	sess := c.sess
	for _, t := range []struct {
		kind  string
		track *trackState
	}{{"Video", &sess.video}, {"Audio", &sess.audio}} {
		if c.attrs[t.kind] != "true" {
			continue
		}
		for _, k := range []string{t.kind + "Codec", t.kind + "PayloadType", t.kind + "IngestSSRC"} {
			if c.attrs[k] == "" {
				return reject(codeBadRequest, "missing attribute %s", k)
			}
		}
		pt, _ := strconv.ParseUint(c.attrs[t.kind+"PayloadType"], 10, 8)
		ssrc, _ := strconv.ParseUint(c.attrs[t.kind+"IngestSSRC"], 10, 32)
		t.track.enabled, t.track.pt, t.track.ssrc = true, uint8(pt), uint32(ssrc)
	}
	if !sess.video.enabled {
		return reject(codeBadRequest, "no video announced (Video: true with codec, payload type and SSRC)")
	}
	if sess.audio.enabled && sess.audio.ssrc == sess.video.ssrc {
		return reject(codeBadRequest, "audio and video SSRC are the same")
	}
	if sess.audio.enabled && sess.audio.pt == sess.video.pt {
		return reject(codeBadRequest, "audio and video payload type are the same")
	}
	sess.software = strings.TrimSpace(c.attrs["VendorName"] + " " + c.attrs["VendorVersion"])
	if err := c.srv.register(sess); err != nil {
		return err
	}
	c.state = stateLive
	sess.begin()
	c.reply(fmt.Sprintf("%d hi. Use UDP port %d", codeOK, c.srv.port))
	return nil
}
