//go:build linux

package main

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// opusPT is the payload type pion's default codecs give Opus; every
// other RTP payload type a viewer receives is video.
const opusPT = 111

// stampNet is the standard network whose UDP sockets note the kernel's receive time of every video packet in
// arrivals: the SRTP header is not encrypted, so the sequence number,
// timestamp and marker can be read before pion decrypts. A packet waits
// in the socket for the viewer's goroutines to read it; on a busy
// machine that wait, not the server, makes most of the delay, so the
// server's latency is measured to the kernel's stamp.
//
// The sockets also count every datagram they receive (wire), SRTP apart
// from the rest.
type stampNet struct {
	*stdnet.Net
	epoch    time.Time
	arrivals *frameLog
	wire     *wireCount // nil: not counted
}

// ListenUDP implements transport.Net.
func (n stampNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UDPConn)
	if !ok || (laddr != nil && laddr.IP.IsMulticast()) {
		return c, nil
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return c, nil
	}
	// Without timestamps (an error here) the socket still counts: its
	// packets carry no SCM_TIMESTAMPNS, so none is noted.
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	})
	return &stampedConn{UDPConn: uc, epoch: n.epoch, arrivals: n.arrivals, wire: n.wire}, nil
}

// stampedConn is a viewer's UDP socket with kernel receive times. Pion
// reads it from one goroutine.
type stampedConn struct {
	*net.UDPConn
	epoch    time.Time
	arrivals *frameLog
	wire     *wireCount
	oob      [128]byte
	from     netip.AddrPort
	fromAddr *net.UDPAddr // from as a net.Addr, kept so reading allocates nothing
}

// ReadFrom implements net.PacketConn.
func (c *stampedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, oobn, _, from, err := c.ReadMsgUDPAddrPort(b, c.oob[:])
	if err != nil {
		return n, nil, err
	}
	c.wire.datagram(b[:n])
	if at, ok := kernelTime(c.oob[:oobn]); ok {
		c.stamp(b[:n], at)
	}
	if c.fromAddr == nil || from != c.from {
		c.from, c.fromAddr = from, net.UDPAddrFromAddrPort(from)
	}
	return n, c.fromAddr, nil
}

// stamp notes an SRTP video packet received at the wall-clock time at
// (Unix nanoseconds). Other packets (STUN, DTLS, RTCP, audio) are
// ignored (RFC 7983 demultiplexing, RFC 5761 for RTCP).
func (c *stampedConn) stamp(b []byte, at int64) {
	if len(b) < 12 || b[0] < 128 || b[0] > 191 {
		return
	}
	if b[1] >= 192 && b[1] <= 223 {
		return // RTCP
	}
	h, ok := parseRTP(b)
	if !ok || h.pt == opusPT {
		return
	}
	c.arrivals.note(h.ts, h.marker, nil, time.Unix(0, at).Sub(c.epoch))
}

// kernelTime finds the SCM_TIMESTAMPNS control message (a struct
// timespec) in oob and returns it as Unix nanoseconds.
func kernelTime(oob []byte) (int64, bool) {
	const hdr = 16 // struct cmsghdr on 64-bit Linux: len (8), level (4), type (4)
	for len(oob) >= hdr {
		l := int(binary.NativeEndian.Uint64(oob[0:8]))
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if l < hdr || l > len(oob) {
			return 0, false
		}
		if level == syscall.SOL_SOCKET && typ == syscall.SO_TIMESTAMPNS && l >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(oob[hdr : hdr+8]))
			nsec := int64(binary.NativeEndian.Uint64(oob[hdr+8 : hdr+16]))
			return sec*1e9 + nsec, true
		}
		oob = oob[min(len(oob), (l+7)&^7):]
	}
	return 0, false
}
