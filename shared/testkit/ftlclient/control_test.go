package ftlclient

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// goldenHandshake is what OBS sends for stream key 77-secret when the
// challenge is the bytes 0 to 127. The HMAC was computed apart from this
// code (Python's hmac module).
const goldenHandshake = "HMAC\r\n\r\n" +
	"CONNECT 77 $0b5d927a243a0a0a0985617b7cb977db19dcee8006cdb76642d615f73a446b2f" +
	"0544f13661cb0d7b0c3ef6481a01e82a1f772d9583e597a280e8182197216a9d\r\n\r\n" +
	"ProtocolVersion: 0.9\r\n\r\n" +
	"VendorName: lightspeed-ftlsend\r\n\r\n" +
	"VendorVersion: 1.2.3\r\n\r\n" +
	"Video: true\r\n\r\n" +
	"VideoCodec: H264\r\n\r\n" +
	"VideoHeight: 720\r\n\r\n" +
	"VideoWidth: 1280\r\n\r\n" +
	"VideoPayloadType: 96\r\n\r\n" +
	"VideoIngestSSRC: 78\r\n\r\n" +
	"Audio: true\r\n\r\n" +
	"AudioCodec: OPUS\r\n\r\n" +
	"AudioPayloadType: 97\r\n\r\n" +
	"AudioIngestSSRC: 77\r\n\r\n" +
	".\r\n\r\n"

func TestDialSendsTheHandshakeOfTheFTLSDK(t *testing.T) {
	// The fake ingest answers only HMAC, CONNECT and ".": a client waiting
	// for a reply to an attribute line would never get to ".".
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{VendorVersion: "1.2.3"})

	if got := f.controlBytes(); !bytes.Equal(got, []byte(goldenHandshake)) {
		t.Errorf("control bytes:\n got %q\nwant %q", got, goldenHandshake)
	}
	if c.Channel() != 77 {
		t.Errorf("Channel() = %d, want 77", c.Channel())
	}
	want := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: f.mediaPort()}
	if got := c.MediaAddr(); !got.IP.Equal(want.IP) || got.Port != want.Port {
		t.Errorf("MediaAddr() = %v, want %v (the control peer and the announced port)", got, want)
	}
}

func TestDialReturnsTheIngestsRefusalAsAReplyError(t *testing.T) {
	tests := []struct {
		name     string
		key      string
		opts     ingestOptions
		wantCode int
	}{
		{"HMAC refused", "77-secret", ingestOptions{hmacReply: "500\n"}, 500},
		{"wrong secret", "77-wrong", ingestOptions{}, 401},
		{"invalid stream key", "77-secret", ingestOptions{connectReply: "405\n"}, 405},
		{"channel in use", "77-secret", ingestOptions{connectReply: "406 channel in use\n"}, 406},
		{"attributes refused", "77-secret", ingestOptions{dotReply: "400\n"}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startIngest(t, tt.opts)
			_, err := Dial(context.Background(), Config{Addr: f.addr(), StreamKey: tt.key})
			var re *ReplyError
			if !errors.As(err, &re) {
				t.Fatalf("Dial error %v, want a *ReplyError", err)
			}
			if re.Code != tt.wantCode {
				t.Errorf("Code = %d, want %d", re.Code, tt.wantCode)
			}
			for _, part := range []string{"channel 77", strconv.Itoa(tt.wantCode)} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not name %q", err, part)
				}
			}
		})
	}
}

func TestDialRejectsMalformedReplies(t *testing.T) {
	tests := []struct {
		name string
		opts ingestOptions
	}{
		{"odd number of hex digits", ingestOptions{hmacReply: "200 abc\n"}},
		{"challenge not hex", ingestOptions{hmacReply: "200 zz\n"}},
		{"empty challenge", ingestOptions{hmacReply: "200 \n"}},
		{"challenge ending in CRLF", ingestOptions{hmacReply: "200 abcd\r\n"}},
		{"no UDP port", ingestOptions{dotReply: "200 hi\n"}},
		{"port zero", ingestOptions{dotReply: "200 hi. Use UDP port 0\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startIngest(t, tt.opts)
			_, err := Dial(context.Background(), Config{Addr: f.addr(), StreamKey: "77-secret"})
			var re *ReplyError
			if err == nil || errors.As(err, &re) {
				t.Errorf("Dial error %v, want a protocol error that is not a refusal", err)
			}
		})
	}
}

func TestDialRefusesMalformedStreamKeys(t *testing.T) {
	for _, key := range []string{
		"", "77", "77-", "-secret", "x-secret", "4294967296-secret", "77-" + strings.Repeat("s", 129),
	} {
		// Nothing listens there: the key must be refused before dialing.
		_, err := Dial(context.Background(), Config{Addr: "127.0.0.1:1", StreamKey: key})
		if err == nil || !strings.Contains(err.Error(), "stream key") {
			t.Errorf("key %q: error %v, want a stream key error", key, err)
		}
	}
}

func TestDialStopsWhenItsContextIsDone(t *testing.T) {
	f := startIngest(t, ingestOptions{silent: true})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, Config{Addr: f.addr(), StreamKey: "77-secret"})
		errc <- err
	}()
	if cmd := <-f.commands; cmd != "HMAC" {
		t.Fatalf("first command %q, want HMAC", cmd)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Dial error %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial did not return after its context was cancelled")
	}
}

func TestDisconnectSendsDISCONNECTAndHangsUp(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{})
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to hang up", f.clientHungUp)
	if got := f.controlBytes(); !bytes.HasSuffix(got, []byte(".\r\n\r\nDISCONNECT\r\n\r\n")) {
		t.Errorf("control bytes end in %q, want DISCONNECT after the handshake", got[max(0, len(got)-40):])
	}
	if err := c.Disconnect(); err != nil {
		t.Errorf("second Disconnect: %v", err)
	}
}

func TestCloseHangsUpWithoutDISCONNECT(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client to hang up", f.clientHungUp)
	if got := f.controlBytes(); !bytes.HasSuffix(got, []byte(".\r\n\r\n")) {
		t.Errorf("control bytes end in %q, want nothing after the handshake", got[max(0, len(got)-40):])
	}
	nals, opus := syntheticMedia()
	if err := c.Stream(context.Background(), nals, opus, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Stream after Close: %v, want ErrClosed", err)
	}
}

func TestKeepalivePINGsAreAnswered(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{keepalive: 5 * time.Millisecond})
	waitFor(t, "three answered PINGs", func() bool { return c.Stats().KeepalivesAnswered >= 3 })
	if got := f.controlBytes(); !bytes.Contains(got, []byte(".\r\n\r\nPING 77\r\n\r\nPING 77\r\n\r\n")) {
		t.Errorf("control bytes %q, want PING 77 lines after the handshake", got)
	}
}

func TestAnIngestReplyOtherThan201EndsTheStream(t *testing.T) {
	f := startIngest(t, ingestOptions{})
	c := dial(t, f, Config{})
	nals, opus := syntheticMedia()
	errc := make(chan error, 1)
	go func() { errc <- c.Stream(context.Background(), nals, opus, 0) }()
	f.sendControl("201\n200\n410\n")
	select {
	case err := <-errc:
		var re *ReplyError
		if !errors.As(err, &re) || re.Code != 410 {
			t.Errorf("Stream error %v, want a *ReplyError with code 410", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stream did not end after the ingest replied 410")
	}
}

func TestParseReplyCodeReadsLikeScanf(t *testing.T) {
	tests := []struct {
		line string
		code int
		ok   bool
	}{
		{"200\n", 200, true},
		{"201\n", 201, true},
		{"405 invalid key\n", 405, true},
		{"  200 hi\n", 200, true},
		{"+200\n", 200, true},
		{"200abc\n", 200, true},
		{"\n", 0, false},
		{"OK 200\n", 0, false},
		{"99999999999\n", 0, false},
	}
	for _, tt := range tests {
		code, ok := parseReplyCode(tt.line)
		if code != tt.code || ok != tt.ok {
			t.Errorf("parseReplyCode(%q) = %d, %v; want %d, %v", tt.line, code, ok, tt.code, tt.ok)
		}
	}
}

func TestParseMediaPortReadsLikeTheSDK(t *testing.T) {
	tests := []struct {
		line string
		port int
		ok   bool
	}{
		{"200 hi. Use UDP port 8084\n", 8084, true},
		{"200 Hello there. Use UDP port 65535\n", 65535, true},
		{"200. Use UDP port 9000\n", 9000, true},
		{"200 hi.Use UDP port 9000\n", 9000, true},       // a space in the pattern matches none
		{"200 hi.  Use  UDP  port   9000\n", 9000, true}, // or several
		{"200 hi. Use UDP port 9000 now\n", 9000, true},
		{". Use UDP port 9000\n", 0, false}, // nothing before the dot
		{"200 hi. use UDP port 9000\n", 0, false},
		{"200 hi. Use UDP port\n", 0, false},
		{"200 hi. Use UDP port 0\n", 0, false},
		{"200 hi. Use UDP port 65536\n", 0, false},
		{"200 hi. Use UDP port -1\n", 0, false},
		{"200 hi\n", 0, false},
	}
	for _, tt := range tests {
		port, ok := parseMediaPort(tt.line)
		if port != tt.port || ok != tt.ok {
			t.Errorf("parseMediaPort(%q) = %d, %v; want %d, %v", tt.line, port, ok, tt.port, tt.ok)
		}
	}
}
