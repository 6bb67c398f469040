package ftlclient

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Timeouts of the control connection, as the FTL SDK sets them on its
// socket.
const (
	replyTimeout = 5 * time.Second
	sendTimeout  = 1 * time.Second
)

// maxReplyLen bounds one reply line; the SDK reads the HMAC challenge into
// a 2048-byte buffer.
const maxReplyLen = 2048

// maxSecretLen is the longest secret the SDK's HMAC accepts (the SHA-512
// block size: it never hashes a long key).
const maxSecretLen = 128

// ReplyError is a reply of the ingest that ends the connection: a status
// code other than 200 (or 201 to a PING).
type ReplyError struct {
	Code int    // the status code, e.g. 405; 0 when the line has none
	Line string // the reply line without its line ending
}

// Error implements error.
func (e *ReplyError) Error() string {
	if text := replyText(e.Code); text != "" {
		return fmt.Sprintf("server replied %d (%s)", e.Code, text)
	}
	return fmt.Sprintf("server replied %q", e.Line)
}

// replyText names the status codes of the FTL SDK.
func replyText(code int) string {
	switch code {
	case 200:
		return "ok"
	case 201:
		return "ping"
	case 400:
		return "bad request"
	case 401:
		return "unauthorized"
	case 402:
		return "old version"
	case 403:
		return "audio SSRC collision"
	case 404:
		return "video SSRC collision"
	case 405:
		return "invalid stream key"
	case 406:
		return "channel in use"
	case 407:
		return "region unsupported"
	case 408:
		return "no media timeout"
	case 409:
		return "game blocked"
	case 410:
		return "server terminated the stream"
	case 500:
		return "internal server error"
	}
	return ""
}

// streamKey is a parsed stream key, "<channel id>-<secret>".
type streamKey struct {
	channel uint32
	secret  string
}

func parseStreamKey(key string) (streamKey, error) {
	id, secret, ok := strings.Cut(key, "-")
	if !ok || secret == "" {
		return streamKey{}, errors.New("ftl: stream key: want <channel id>-<secret>")
	}
	channel, err := strconv.ParseUint(id, 10, 32)
	if err != nil {
		return streamKey{}, fmt.Errorf("ftl: stream key: channel id %q: not a number", id)
	}
	if len(secret) > maxSecretLen {
		return streamKey{}, fmt.Errorf("ftl: stream key: secret longer than %d bytes", maxSecretLen)
	}
	return streamKey{channel: uint32(channel), secret: secret}, nil
}

// control is the TCP control connection. Lines go out ending in
// "\r\n\r\n", replies come back ending in "\n". Writes may come from
// several goroutines; reads from one at a time.
type control struct {
	conn net.Conn
	r    *bufio.Reader
	// partial holds the start of a reply line whose end has not arrived
	// when a read timed out.
	partial []byte

	wmu sync.Mutex
}

func newControl(conn net.Conn) *control {
	return &control{conn: conn, r: bufio.NewReaderSize(conn, maxReplyLen)}
}

// send writes one command line, like the SDK: each line in its own write,
// with a one-second deadline.
func (c *control) send(line string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	_, err := c.conn.Write([]byte(line + "\r\n\r\n"))
	return err
}

// readLine reads one reply line, including its "\n", waiting at most five
// seconds. After a timeout the bytes read so far are kept for the next
// call.
func (c *control) readLine() (string, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(replyTimeout)); err != nil {
		return "", err
	}
	for {
		frag, err := c.r.ReadSlice('\n')
		c.partial = append(c.partial, frag...)
		if len(c.partial) >= maxReplyLen {
			return "", fmt.Errorf("reply longer than %d bytes", maxReplyLen)
		}
		switch {
		case err == nil:
			line := string(c.partial)
			c.partial = c.partial[:0]
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return "", err
		}
	}
}

// request sends a command and reads its reply; a reply whose code is not
// 200 is a *ReplyError.
func (c *control) request(line string) (string, error) {
	if err := c.send(line); err != nil {
		return "", err
	}
	reply, err := c.readLine()
	if err != nil {
		return "", err
	}
	if code, _ := parseReplyCode(reply); code != 200 {
		return "", replyError(reply)
	}
	return reply, nil
}

func replyError(line string) *ReplyError {
	code, _ := parseReplyCode(line)
	return &ReplyError{Code: code, Line: strings.TrimRight(line, "\r\n")}
}

// parseReplyCode reads the status code at the start of a reply line the
// way the SDK's sscanf("%d") does: leading white space, an optional sign,
// digits.
func parseReplyCode(line string) (int, bool) {
	s := strings.TrimLeft(line, " \t\n\v\f\r")
	end := 0
	if end < len(s) && (s[end] == '+' || s[end] == '-') {
		end++
	}
	digits := end
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	if end == digits {
		return 0, false
	}
	code, err := strconv.ParseInt(s[:end], 10, 32)
	if err != nil {
		return 0, false
	}
	return int(code), true
}

// parseChallenge reads the reply to HMAC, "200 <hex>\n", the way the SDK
// does: the hex digits are the line but for its first four bytes ("200 ")
// and its last ("\n"); an odd count is refused. Unlike the SDK it also
// refuses non-hex digits and an empty challenge.
func parseChallenge(line string) ([]byte, error) {
	if code, _ := parseReplyCode(line); code != 200 {
		return nil, replyError(line)
	}
	if len(line) < 5 {
		return nil, errors.New("hmac challenge: empty")
	}
	digits := line[4 : len(line)-1]
	if len(digits)%2 != 0 {
		return nil, fmt.Errorf("hmac challenge: odd number of hex digits (%d)", len(digits))
	}
	challenge, err := hex.DecodeString(digits)
	if err != nil {
		return nil, fmt.Errorf("hmac challenge: %w", err)
	}
	if len(challenge) == 0 {
		return nil, errors.New("hmac challenge: empty")
	}
	return challenge, nil
}

// signChallenge returns the lowercase hex of HMAC-SHA512(key = secret,
// message = challenge), what CONNECT carries after its "$".
func signChallenge(secret string, challenge []byte) string {
	mac := hmac.New(sha512.New, []byte(secret))
	mac.Write(challenge)
	return hex.EncodeToString(mac.Sum(nil))
}

// parseMediaPort reads the UDP port from the reply to ".", the way the
// SDK's sscanf("%*[^.]. Use UDP port %d") does: at least one byte up to
// the first '.', then the words, where each space of the pattern matches
// any white space, even none. The port must be a valid one.
func parseMediaPort(line string) (int, bool) {
	dot := strings.IndexByte(line, '.')
	if dot <= 0 {
		return 0, false
	}
	s := line[dot+1:]
	for _, word := range []string{"Use", "UDP", "port"} {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
		rest, ok := strings.CutPrefix(s, word)
		if !ok {
			return 0, false
		}
		s = rest
	}
	port, ok := parseReplyCode(s)
	if !ok || port < 1 || port > 65535 {
		return 0, false
	}
	return port, true
}

// handshake runs the FTL SDK's handshake on the control connection and
// returns the UDP port the ingest announced.
func (c *control) handshake(key streamKey, vendorName, vendorVersion string) (int, error) {
	if err := c.send("HMAC"); err != nil {
		return 0, fmt.Errorf("hmac: %w", err)
	}
	reply, err := c.readLine()
	if err != nil {
		return 0, fmt.Errorf("hmac: %w", err)
	}
	challenge, err := parseChallenge(reply)
	if err != nil {
		return 0, fmt.Errorf("hmac: %w", err)
	}
	connect := fmt.Sprintf("CONNECT %d $%s", key.channel, signChallenge(key.secret, challenge))
	if _, err := c.request(connect); err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	// The attributes get no reply: the SDK sends them one after the other.
	for _, attr := range attributes(key.channel, vendorName, vendorVersion) {
		if err := c.send(attr); err != nil {
			return 0, fmt.Errorf("attributes: %w", err)
		}
	}
	reply, err = c.request(".")
	if err != nil {
		return 0, fmt.Errorf("attributes: %w", err)
	}
	port, ok := parseMediaPort(reply)
	if !ok {
		return 0, fmt.Errorf("attributes: no UDP port in reply %q", strings.TrimRight(reply, "\r\n"))
	}
	return port, nil
}

// attributes are the lines OBS sends after CONNECT, in its order. The SDK
// always announces 1280x720, whatever the encoder makes.
func attributes(channel uint32, vendorName, vendorVersion string) []string {
	return []string{
		"ProtocolVersion: 0.9",
		"VendorName: " + vendorName,
		"VendorVersion: " + vendorVersion,
		"Video: true",
		"VideoCodec: H264",
		"VideoHeight: 720",
		"VideoWidth: 1280",
		"VideoPayloadType: " + strconv.Itoa(videoPT),
		"VideoIngestSSRC: " + strconv.FormatUint(uint64(channel+1), 10),
		"Audio: true",
		"AudioCodec: OPUS",
		"AudioPayloadType: " + strconv.Itoa(audioPT),
		"AudioIngestSSRC: " + strconv.FormatUint(uint64(channel), 10),
	}
}

// isTimeout reports whether err is a read deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
