package ftl

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"lightspeed/gateway/hub"
)

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newFuzzHubs() *hub.Registry { return hub.NewRegistry(hub.Options{Logger: discardLog}) }

// discardConn is a net.Conn that swallows writes and has nothing to read.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzControlLines runs arbitrary control input through the line reader
// and the handshake state machine: nothing panics, and a line over the
// limit is refused rather than buffered.
func FuzzControlLines(f *testing.F) {
	f.Add([]byte("HMAC\r\n\r\n"))
	f.Add([]byte("HMAC\r\n\r\nCONNECT 77 $" + string(bytes.Repeat([]byte("ab"), 64)) + "\r\n\r\n"))
	f.Add([]byte("ProtocolVersion: 0.9\r\n\r\nVideo: true\r\n\r\n.\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n"))
	f.Add([]byte("PING 77\r\n\r\nDISCONNECT\r\n\r\n"))
	f.Add(bytes.Repeat([]byte("A"), maxLine+1))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := NewServer(Config{Logger: discardLog}, staticKeys{77: testSecret}, newFuzzHubs())
		c := &control{srv: s, conn: discardConn{}, remote: netip.MustParseAddrPort("127.0.0.1:1"), attrs: map[string]string{}}
		r := bufio.NewReaderSize(bytes.NewReader(in), maxLine)
		for i := 0; ; i++ {
			line, err := readLine(r)
			if err != nil {
				if err == bufio.ErrBufferFull && len(in) < maxLine {
					t.Fatalf("buffer full on %d bytes of input", len(in))
				}
				break
			}
			if len(line) > maxLine {
				t.Fatalf("line of %d bytes accepted", len(line))
			}
			if c.handle(line) != nil {
				break
			}
		}
		if c.sess != nil {
			c.sess.end("fuzz", 0)
		}
	})
}
