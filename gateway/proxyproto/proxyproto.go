// Package proxyproto reads the PROXY protocol header (versions 1 and 2,
// haproxy.org/download/2.0/doc/proxy-protocol.txt) that a TCP proxy such
// as Fly.io's puts before a connection's first byte, to learn the real
// client address.
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// v2Signature starts every version 2 header.
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	maxV1 = 107 // longest version 1 line, with its CRLF
	maxV2 = 16 + 216
)

// ErrNoHeader means the connection did not start with a PROXY header.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

// ReadHeader consumes the PROXY header from r and returns the client's
// address. It returns the zero AddrPort for a header that carries no
// address (v1 UNKNOWN, v2 LOCAL or an unsupported family): the connection
// is then the proxy's own.
func ReadHeader(r *bufio.Reader) (netip.AddrPort, error) {
	head, err := r.Peek(len(v2Signature))
	if err != nil && len(head) < 6 {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: read header: %w", err)
	}
	switch {
	case bytes.Equal(head, v2Signature):
		return readV2(r)
	case bytes.HasPrefix(head, []byte("PROXY ")):
		return readV1(r)
	}
	return netip.AddrPort{}, ErrNoHeader
}

func readV1(r *bufio.Reader) (netip.AddrPort, error) {
	var line []byte
	for len(line) < maxV1 {
		b, err := r.ReadByte()
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("proxyproto: v1: %w", err)
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return netip.AddrPort{}, errors.New("proxyproto: v1: line too long or not ended by CRLF")
	}
	f := strings.Split(s, " ")
	if len(f) >= 2 && f[1] == "UNKNOWN" {
		return netip.AddrPort{}, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v1: malformed header %q", s)
	}
	ip, err := netip.ParseAddr(f[2])
	if err != nil || ip.Is4() != (f[1] == "TCP4") {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v1: bad source address %q", f[2])
	}
	port, err := strconv.ParseUint(f[4], 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v1: bad source port %q", f[4])
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func readV2(r *bufio.Reader) (netip.AddrPort, error) {
	hdr := make([]byte, 16)
	if _, err := readFull(r, hdr); err != nil {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v2: %w", err)
	}
	if hdr[12]>>4 != 2 {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v2: version %d", hdr[12]>>4)
	}
	n := int(binary.BigEndian.Uint16(hdr[14:16]))
	if 16+n > maxV2 {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v2: %d address bytes is too many", n)
	}
	body := make([]byte, n)
	if _, err := readFull(r, body); err != nil {
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v2: %w", err)
	}
	switch cmd := hdr[12] & 0x0F; cmd {
	case 0: // LOCAL: the proxy's own connection (health checks)
		return netip.AddrPort{}, nil
	case 1: // PROXY
	default:
		return netip.AddrPort{}, fmt.Errorf("proxyproto: v2: command %d", cmd)
	}
	switch hdr[13] {
	case 0x11: // TCP over IPv4
		if n < 12 {
			return netip.AddrPort{}, errors.New("proxyproto: v2: short IPv4 addresses")
		}
		ip := netip.AddrFrom4([4]byte(body[0:4]))
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[8:10])), nil
	case 0x21: // TCP over IPv6
		if n < 36 {
			return netip.AddrPort{}, errors.New("proxyproto: v2: short IPv6 addresses")
		}
		ip := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(body[32:34])), nil
	}
	return netip.AddrPort{}, nil // UNSPEC or a family we do not use
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
