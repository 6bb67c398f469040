package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func v2(cmd, fam byte, addrs []byte) []byte {
	b := append([]byte{}, v2Signature...)
	b = append(b, 0x20|cmd, fam, 0, 0)
	binary.BigEndian.PutUint16(b[14:], uint16(len(addrs)))
	return append(b, addrs...)
}

func TestReadHeader(t *testing.T) {
	ipv4 := []byte{192, 0, 2, 7, 10, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x94}
	ipv6 := append(append(netip.MustParseAddr("2001:db8::7").AsSlice(), netip.MustParseAddr("2001:db8::1").AsSlice()...), 0xc3, 0x50, 0x1f, 0x94)
	tests := []struct {
		name string
		in   []byte
		want string // "" = zero address
		err  bool
	}{
		{"v1 TCP4", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8084\r\nHMAC\r\n\r\n"), "192.0.2.7:51000", false},
		{"v1 TCP6", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 51000 8084\r\nHMAC"), "[2001:db8::7]:51000", false},
		{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\nHMAC"), "", false},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n"), "", true},
		{"v1 bad port", []byte("PROXY TCP4 192.0.2.7 10.0.0.1 port 8084\r\n"), "", true},
		{"v1 no CRLF", []byte("PROXY TCP4 " + strings.Repeat("1", 200)), "", true},
		{"v2 TCP4", append(v2(1, 0x11, ipv4), "HMAC"...), "192.0.2.7:8080", false},
		{"v2 TCP6", v2(1, 0x21, ipv6), "[2001:db8::7]:50000", false},
		{"v2 LOCAL", v2(0, 0x00, nil), "", false},
		{"v2 short addresses", v2(1, 0x11, ipv4[:6]), "", true},
		{"v2 truncated", v2(1, 0x11, ipv4)[:20], "", true},
		{"v2 bad command", v2(5, 0x11, ipv4), "", true},
		{"no header", []byte("HMAC\r\n\r\n"), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(tt.in))
			got, err := ReadHeader(r)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if tt.err {
				return
			}
			if (tt.want == "" && got.IsValid()) || (tt.want != "" && got.String() != tt.want) {
				t.Fatalf("got %v, want %q", got, tt.want)
			}
			if rest, _ := r.Peek(4); len(tt.in) > 0 && bytes.Contains(tt.in, []byte("HMAC")) && string(rest) != "HMAC" {
				t.Fatalf("header not consumed exactly: next bytes %q", rest)
			}
		})
	}
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n"))); !errors.Is(err, ErrNoHeader) {
		t.Fatalf("plain request: %v, want ErrNoHeader", err)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.7 10.0.0.1 51000 8084\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(v2(1, 0x11, []byte{192, 0, 2, 7, 10, 0, 0, 1, 0x1f, 0x90, 0x1f, 0x94}))
	f.Add(v2(1, 0x21, make([]byte, 36)))
	f.Add([]byte("HMAC\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		addr, err := ReadHeader(r)
		if err == nil && addr.IsValid() && !addr.Addr().IsValid() {
			t.Fatal("valid AddrPort with an invalid address")
		}
		if consumed := len(in) - r.Buffered(); consumed > maxV2 && err == nil {
			t.Fatalf("consumed %d bytes", consumed)
		}
	})
}
