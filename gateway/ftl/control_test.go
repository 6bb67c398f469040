package ftl

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
)

// staticKeys is a KeyStore over a map.
type staticKeys map[uint32]string

func (k staticKeys) Secret(ch uint32) (string, bool) { s, ok := k[ch]; return s, ok }

const testSecret = "testsecret-abc"

type testServer struct {
	*Server
	hubs *hub.Registry
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	cfg.ControlAddr = "127.0.0.1:0"
	if cfg.MediaAddr == "" {
		cfg.MediaAddr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	hubs := hub.NewRegistry(hub.Options{Logger: cfg.Logger})
	s := NewServer(cfg, staticKeys{77: testSecret, 78: "other-secret"}, hubs)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		hubs.Close()
	})
	return &testServer{Server: s, hubs: hubs}
}

// client is a raw FTL control connection speaking as the FTL SDK does.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, s *testServer) *client {
	t.Helper()
	c, err := net.Dial("tcp", s.ControlAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

// send writes one command with the SDK's "\r\n\r\n" ending.
func (c *client) send(line string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(line + "\r\n\r\n")); err != nil {
		c.t.Fatalf("send %q: %v", line, err)
	}
}

// read returns the next reply line, with its "\n".
func (c *client) read() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v (got %q)", err, line)
	}
	return line
}

// expectClosed fails unless the server closes the connection with nothing
// more to say.
func (c *client) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.ReadString('\n')
		c.t.Fatalf("want close, got more bytes %q", string(b)+rest)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection still open")
	}
}

// auth runs HMAC and CONNECT with secret and returns CONNECT's reply.
func (c *client) auth(channel uint32, secret string) string {
	c.t.Helper()
	c.send("HMAC")
	line := c.read()
	if !strings.HasPrefix(line, "200 ") || !strings.HasSuffix(line, "\n") {
		c.t.Fatalf("HMAC reply %q", line)
	}
	challenge, err := hex.DecodeString(strings.TrimSuffix(line[4:], "\n"))
	if err != nil || len(challenge) != 128 {
		c.t.Fatalf("challenge %q: %v (%d bytes)", line, err, len(challenge))
	}
	m := hmac.New(sha512.New, []byte(secret))
	m.Write(challenge)
	c.send(fmt.Sprintf("CONNECT %d $%s", channel, hex.EncodeToString(m.Sum(nil))))
	return c.read()
}

// sdkAttributes are the attribute lines OBS sends for channel 77.
var sdkAttributes = []string{
	"ProtocolVersion: 0.9",
	"VendorName: OBS Studio",
	"VendorVersion: 29.1.3",
	"Video: true",
	"VideoCodec: H264",
	"VideoHeight: 720",
	"VideoWidth: 1280",
	"VideoPayloadType: 96",
	"VideoIngestSSRC: 78",
	"Audio: true",
	"AudioCodec: OPUS",
	"AudioPayloadType: 97",
	"AudioIngestSSRC: 77",
}

// publish authenticates as channel 77 and starts the stream; it returns
// the announced UDP port.
func (c *client) publish(channel uint32, secret string, attrs []string) string {
	c.t.Helper()
	if got := c.auth(channel, secret); got != "200\n" {
		c.t.Fatalf("CONNECT reply %q", got)
	}
	for _, a := range attrs {
		c.send(a)
	}
	c.send(".")
	return c.read()
}

func TestHandshakeAsTheFTLSDKSpeaksIt(t *testing.T) {
	s := startServer(t, Config{})
	c := dial(t, s)
	port := s.MediaAddr().(*net.UDPAddr).Port
	// Attributes get no reply: the first line after "." is the port line.
	if got, want := c.publish(77, testSecret, sdkAttributes), fmt.Sprintf("200 hi. Use UDP port %d\n", port); got != want {
		t.Fatalf("port line %q, want %q", got, want)
	}
	var n int
	if _, err := fmt.Sscanf(strings.SplitN(fmt.Sprintf("200 hi. Use UDP port %d\n", port), ".", 2)[1], " Use UDP port %d", &n); err != nil || n != port {
		t.Fatalf("the SDK's sscanf pattern does not find the port: %v", err)
	}
	c.send("PING 77")
	if got := c.read(); got != "201\n" {
		t.Fatalf("PING reply %q", got)
	}
	if h := s.hubs.Get(77); h == nil || !h.Stats().Live {
		t.Fatal("channel 77 is not live after the handshake")
	}
	c.send("DISCONNECT")
	c.expectClosed()
}

func TestControlFailures(t *testing.T) {
	long := strings.Repeat("A", maxLine+10)
	tests := []struct {
		name   string
		cfg    Config
		script func(c *client) string // returns the reply line
		code   string
	}{
		{"attribute before authentication", Config{}, func(c *client) string { c.send("VideoCodec: H264"); return c.read() }, "400\n"},
		{"CONNECT before HMAC", Config{}, func(c *client) string { c.send("CONNECT 77 $00"); return c.read() }, "400\n"},
		{"PING before authentication", Config{}, func(c *client) string { c.send("PING 77"); return c.read() }, "400\n"},
		{"dot before authentication", Config{}, func(c *client) string { c.send("."); return c.read() }, "400\n"},
		{"bad hex", Config{}, func(c *client) string {
			c.send("HMAC")
			c.read()
			c.send("CONNECT 77 $" + strings.Repeat("zz", 64))
			return c.read()
		}, "400\n"},
		{"short hmac", Config{}, func(c *client) string {
			c.send("HMAC")
			c.read()
			c.send("CONNECT 77 $abcd")
			return c.read()
		}, "400\n"},
		{"bad channel id", Config{}, func(c *client) string {
			c.send("HMAC")
			c.read()
			c.send("CONNECT seventy $" + strings.Repeat("ab", 64))
			return c.read()
		}, "400\n"},
		{"unknown channel", Config{}, func(c *client) string { return c.auth(99, testSecret) }, "405\n"},
		{"wrong hmac", Config{}, func(c *client) string { return c.auth(77, "wrong") }, "401\n"},
		{"missing attributes at dot", Config{}, func(c *client) string {
			c.auth(77, testSecret)
			c.send("Video: true")
			c.send("VideoCodec: H264")
			c.send(".")
			return c.read()
		}, "400\n"},
		{"no video announced", Config{}, func(c *client) string {
			c.auth(77, testSecret)
			c.send(".")
			return c.read()
		}, "400\n"},
		{"unsupported codec", Config{}, func(c *client) string {
			c.auth(77, testSecret)
			c.send("VideoCodec: VP8")
			return c.read()
		}, "400\n"},
		{"bad payload type", Config{}, func(c *client) string {
			c.auth(77, testSecret)
			c.send("VideoPayloadType: 300")
			return c.read()
		}, "400\n"},
		{"same SSRC for audio and video", Config{}, func(c *client) string {
			c.auth(77, testSecret)
			for _, a := range sdkAttributes {
				c.send(strings.Replace(a, "VideoIngestSSRC: 78", "VideoIngestSSRC: 77", 1))
			}
			c.send(".")
			return c.read()
		}, "400\n"},
		{"no authentication in time", Config{AuthTimeout: 200 * time.Millisecond}, func(c *client) string { return c.read() }, "408\n"},
		{"no media in time", Config{MediaTimeout: 200 * time.Millisecond}, func(c *client) string {
			if got := c.publish(77, testSecret, sdkAttributes); !strings.HasPrefix(got, "200 hi.") {
				c.t.Fatalf("port line %q", got)
			}
			return c.read()
		}, "408\n"},
		{"line over 4 KiB", Config{}, func(c *client) string { c.send(long); return c.read() }, "400\n"},
		{"HTTP request", Config{}, func(c *client) string { c.send("GET / HTTP/1.1\r\nHost: x"); return c.read() }, "400\n"},
		{"binary garbage", Config{}, func(c *client) string {
			c.conn.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n"))
			return c.read()
		}, "400\n"},
		{"DISCONNECT before the stream", Config{}, func(c *client) string { c.send("DISCONNECT"); return c.read() }, "400\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, tt.cfg)
			c := dial(t, s)
			if got := tt.script(c); got != tt.code {
				t.Fatalf("reply %q, want %q", got, tt.code)
			}
			c.expectClosed()
			if h := s.hubs.Get(77); h != nil && h.Stats().Live {
				t.Fatal("channel 77 left live after a refused connection")
			}
		})
	}
}

func TestSecondPublisherOnALiveChannelIsRefused(t *testing.T) {
	s := startServer(t, Config{})
	first := dial(t, s)
	first.publish(77, testSecret, sdkAttributes)
	second := dial(t, s)
	if got := second.auth(77, testSecret); got != "406\n" {
		t.Fatalf("second publisher got %q, want 406", got)
	}
	second.expectClosed()
	// Another channel is not affected.
	third := dial(t, s)
	attrs := strings.NewReplacer("SSRC: 78", "SSRC: 1079", "SSRC: 77", "SSRC: 1078")
	var a78 []string
	for _, a := range sdkAttributes {
		a78 = append(a78, attrs.Replace(a))
	}
	if got := third.publish(78, "other-secret", a78); !strings.HasPrefix(got, "200 hi.") {
		t.Fatalf("channel 78: %q", got)
	}
}

func TestChannelHeldByAnotherIngestIsRefusedUntilReleased(t *testing.T) {
	s := startServer(t, Config{})
	other, err := s.hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	other.Start(hub.PublisherInfo{Software: "another ingest"})
	c := dial(t, s)
	if got := c.auth(77, testSecret); got != "406\n" {
		t.Fatalf("publisher of a held channel got %q, want 406", got)
	}
	c.expectClosed()
	if st := s.hubs.Get(77).Stats(); !st.Live || st.Publisher.Software != "another ingest" {
		t.Fatalf("the refused publisher disturbed the holder: live %v, publisher %q", st.Live, st.Publisher.Software)
	}

	other.Release()
	c = dial(t, s)
	if got := c.publish(77, testSecret, sdkAttributes); !strings.HasPrefix(got, "200 hi.") {
		t.Fatalf("publisher after the release got %q", got)
	}
	if st := s.hubs.Get(77).Stats(); !st.Live || st.Publishes != 2 {
		t.Fatalf("after the release: live %v, publishes %d, want true 2", st.Live, st.Publishes)
	}
}

func TestDeadPublisherIsReplaced(t *testing.T) {
	s := startServer(t, Config{})
	first := dial(t, s)
	first.publish(77, testSecret, sdkAttributes)
	// The first publisher's connection looks dead: nothing from it for
	// longer than the silence timeout.
	var old *session
	s.mu.Lock()
	for sess := range s.sessions {
		old = sess
	}
	s.mu.Unlock()
	old.touched.Store(time.Now().Add(-2 * s.cfg.SilenceTimeout).UnixNano())
	second := dial(t, s)
	if got := second.publish(77, testSecret, sdkAttributes); !strings.HasPrefix(got, "200 hi.") {
		t.Fatalf("second publisher got %q", got)
	}
	if got := first.read(); got != "410\n" {
		t.Fatalf("the replaced publisher got %q, want 410", got)
	}
	first.expectClosed()
}

func TestFailedAuthenticationsAreRateLimitedPerIP(t *testing.T) {
	s := startServer(t, Config{})
	for i := 0; i < keys.MaxFailures; i++ {
		c := dial(t, s)
		if got := c.auth(77, "wrong"); got != "401\n" {
			t.Fatalf("try %d: %q", i, got)
		}
		c.expectClosed()
	}
	// Now even the right secret is refused from this IP.
	c := dial(t, s)
	if got := c.auth(77, testSecret); got != "401\n" {
		t.Fatalf("after %d failures the right key got %q, want 401", keys.MaxFailures, got)
	}
	c.expectClosed()
}

func TestProxyProtocolGivesThePublisherAddress(t *testing.T) {
	s := startServer(t, Config{ProxyProtocol: true})
	c := dial(t, s)
	c.conn.Write([]byte("PROXY TCP4 127.0.0.5 127.0.0.1 40000 8084\r\n"))
	c.publish(77, testSecret, sdkAttributes)
	// Media must now come from the proxied client's IP, not the proxy's.
	pub := udpFrom(t, s, "127.0.0.5")
	send(t, pub, rtpBytes(t, 78, 96, 1, 0, true, idrPayload))
	barrier(t, pub)
	if got := s.hubs.Get(77).Stats().PacketsIn; got != 1 {
		t.Fatalf("media from the proxied address: hub got %d packets, want 1", got)
	}
	direct := udpFrom(t, s, "127.0.0.1")
	send(t, direct, rtpBytes(t, 78, 96, 2, 0, true, idrPayload))
	barrier(t, pub)
	if got := s.hubs.Get(77).Stats().PacketsIn; got != 1 {
		t.Fatalf("media from the proxy's address reached the hub")
	}
}

func TestProxyProtocolRequiredWhenEnabled(t *testing.T) {
	s := startServer(t, Config{ProxyProtocol: true})
	c := dial(t, s)
	c.send("HMAC")
	if got := c.read(); got != "400\n" {
		t.Fatalf("reply %q, want 400", got)
	}
	c.expectClosed()
}
