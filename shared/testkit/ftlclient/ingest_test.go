package ftlclient

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIngest is a minimal FTL ingest on 127.0.0.1: it answers the
// handshake like the real one (or with the replies a test sets), answers
// PINGs, records every byte and datagram the client sends and, if asked,
// echoes media pings.
type fakeIngest struct {
	t         *testing.T
	tcp       net.Listener
	udp       *net.UDPConn
	challenge []byte
	secret    string
	opts      ingestOptions

	wg sync.WaitGroup

	mu       sync.Mutex
	conn     net.Conn       // the accepted control connection
	control  []byte         // everything received on it
	hungUp   bool           // the client closed it
	packets  [][]byte       // datagrams received, in order
	client   netip.AddrPort // where they came from
	commands chan string    // each command line as it arrives
}

type ingestOptions struct {
	hmacReply    string // instead of "200 <challenge>\n"
	connectReply string // instead of checking the HMAC
	dotReply     string // instead of "200 hi. Use UDP port <port>\n"
	silent       bool   // never reply to anything
	echoPings    bool   // send media pings back
	noPingReply  bool   // do not answer PING with 201
}

func startIngest(t *testing.T, opts ingestOptions) *fakeIngest {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	udp.SetReadBuffer(8 << 20) // the OS may cap it; loopback rarely needs it
	f := &fakeIngest{
		t:         t,
		tcp:       tcp,
		udp:       udp,
		challenge: make([]byte, 128),
		secret:    "secret",
		opts:      opts,
		commands:  make(chan string, 1024),
	}
	for i := range f.challenge {
		f.challenge[i] = byte(i)
	}
	f.wg.Add(2)
	go f.acceptControl()
	go f.readMedia()
	t.Cleanup(func() {
		tcp.Close()
		udp.Close()
		f.mu.Lock()
		if f.conn != nil {
			f.conn.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeIngest) addr() string { return f.tcp.Addr().String() }

func (f *fakeIngest) mediaPort() int { return f.udp.LocalAddr().(*net.UDPAddr).Port }

func (f *fakeIngest) acceptControl() {
	defer f.wg.Done()
	conn, err := f.tcp.Accept()
	if err != nil {
		return
	}
	f.mu.Lock()
	f.conn = conn
	f.mu.Unlock()
	var pending []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		f.mu.Lock()
		f.control = append(f.control, buf[:n]...)
		f.mu.Unlock()
		pending = append(pending, buf[:n]...)
		for {
			i := bytes.Index(pending, []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			cmd := string(pending[:i])
			pending = pending[i+4:]
			select {
			case f.commands <- cmd:
			default: // nobody is watching
			}
			if reply := f.reply(cmd); reply != "" {
				conn.Write([]byte(reply))
				if reply[0] == '4' || reply[0] == '5' {
					conn.Close()
					return
				}
			}
		}
		if err != nil {
			f.mu.Lock()
			f.hungUp = err == io.EOF
			f.mu.Unlock()
			return
		}
	}
}

func (f *fakeIngest) reply(cmd string) string {
	if f.opts.silent {
		return ""
	}
	switch {
	case cmd == "HMAC":
		if f.opts.hmacReply != "" {
			return f.opts.hmacReply
		}
		return "200 " + hex.EncodeToString(f.challenge) + "\n"
	case strings.HasPrefix(cmd, "CONNECT "):
		if f.opts.connectReply != "" {
			return f.opts.connectReply
		}
		mac := hmac.New(sha512.New, []byte(f.secret))
		mac.Write(f.challenge)
		if cmd != "CONNECT 77 $"+hex.EncodeToString(mac.Sum(nil)) {
			return "401\n"
		}
		return "200\n"
	case cmd == ".":
		if f.opts.dotReply != "" {
			return f.opts.dotReply
		}
		return fmt.Sprintf("200 hi. Use UDP port %d\n", f.mediaPort())
	case strings.HasPrefix(cmd, "PING "):
		if f.opts.noPingReply {
			return ""
		}
		return "201\n"
	}
	return ""
}

func (f *fakeIngest) readMedia() {
	defer f.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b := bytes.Clone(buf[:n])
		f.mu.Lock()
		f.packets = append(f.packets, b)
		f.client = from
		f.mu.Unlock()
		if f.opts.echoPings && isPing(b) {
			f.udp.WriteToUDPAddrPort(b, from)
		}
	}
}

// sendControl writes a line on the control connection.
func (f *fakeIngest) sendControl(line string) {
	f.mu.Lock()
	conn := f.conn
	f.mu.Unlock()
	if _, err := conn.Write([]byte(line)); err != nil {
		f.t.Error(err)
	}
}

// sendMedia sends a datagram to the client's media socket.
func (f *fakeIngest) sendMedia(b []byte) {
	f.mu.Lock()
	to := f.client
	f.mu.Unlock()
	if _, err := f.udp.WriteToUDPAddrPort(b, to); err != nil {
		f.t.Error(err)
	}
}

func (f *fakeIngest) controlBytes() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.control)
}

func (f *fakeIngest) received() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.packets...)
}

func (f *fakeIngest) clientHungUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hungUp
}

// mediaPackets returns the RTP media packets received (not pings, not
// sender reports).
func (f *fakeIngest) mediaPackets() [][]byte {
	var media [][]byte
	for _, b := range f.received() {
		if isMedia(b) {
			media = append(media, b)
		}
	}
	return media
}

func isPing(b []byte) bool { return len(b) >= 2 && b[0] == 0x81 && b[1] == pingPT }

func isSenderReport(b []byte) bool { return len(b) >= 2 && b[0]>>6 == 2 && b[1] == 200 }

func isMedia(b []byte) bool {
	return len(b) >= rtpHeaderLen && b[0]>>6 == 2 && (b[1]&0x7f == videoPT || b[1]&0x7f == audioPT)
}

// waitFor waits until cond holds, failing the test after ten seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// dial connects a client to f with the test key, closing it at the end of
// the test.
func dial(t *testing.T, f *fakeIngest, cfg Config) *Conn {
	t.Helper()
	cfg.Addr = f.addr()
	if cfg.StreamKey == "" {
		cfg.StreamKey = "77-secret"
	}
	if cfg.Rate == 0 {
		cfg.Rate = 8
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// syntheticMedia is a few NAL units chosen to hit each packetization case,
// and a few Opus packets: frames [SPS PPS IDR] [P] [P] [P].
func syntheticMedia() (nals, opus [][]byte) {
	unit := func(header, second byte, size int) []byte {
		b := make([]byte, size)
		b[0], b[1] = header, second
		for i := 2; i < size; i++ {
			b[i] = byte(i*7 + size)
		}
		return b
	}
	nals = [][]byte{
		{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8},
		{0x68, 0xce, 0x3c, 0x80},
		unit(0x65, 0x88, 3000), // FU-A: 1378 + 1378 + 243
		unit(0x41, 0x9a, 500),  // single
		unit(0x41, 0x9a, 1380), // the largest single
		unit(0x41, 0x9a, 1381), // the smallest FU-A: 1378 + 2
	}
	for i := range 5 {
		opus = append(opus, bytes.Repeat([]byte{0xfc, byte(i)}, 40+i))
	}
	return nals, opus
}
