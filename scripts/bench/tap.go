//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ftlVideoPT is the payload type the FTL SDK and OBS give video.
const ftlVideoPT = 96

// tap sits between the publisher and the gateway's FTL media socket on
// loopback: the gateway announces the tap's port to the publisher, the
// tap stamps every video packet as it arrives and forwards it at once.
// What the gateway sends back (NACKs, ping echoes) goes to the publisher
// unchanged. The stamps are the gateway's receive times as the bench
// sees them.
type tap struct {
	epoch time.Time
	front *net.UDPConn // the publisher sends here
	back  *net.UDPConn // connected to the gateway's media socket

	frames atomic.Pointer[frameLog] // the current publisher session's frames
	peer   atomic.Pointer[netip.AddrPort]
}

// newTap binds the tap on loopback, forwarding to the gateway's media
// address gateway.
func newTap(epoch time.Time, gateway string) (*tap, error) {
	to, err := net.ResolveUDPAddr("udp4", gateway)
	if err != nil {
		return nil, fmt.Errorf("tap: gateway %q: %w", gateway, err)
	}
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("tap: listen: %w", err)
	}
	back, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, to)
	if err != nil {
		front.Close()
		return nil, fmt.Errorf("tap: dial %s: %w", gateway, err)
	}
	t := &tap{epoch: epoch, front: front, back: back}
	t.frames.Store(newFrameLog(0))
	return t, nil
}

// Port is the UDP port the gateway must announce to publishers.
func (t *tap) Port() int { return t.front.LocalAddr().(*net.UDPAddr).Port }

// startSession starts a new log of sent frames (a new publisher
// connection: its timestamps start afresh) and returns it.
func (t *tap) startSession(capacity int) *frameLog {
	l := newFrameLog(capacity)
	t.frames.Store(l)
	return l
}

// run forwards both ways until ctx is done, then closes the sockets.
func (t *tap) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(t.forward)
	wg.Go(t.backward)
	<-ctx.Done()
	t.front.Close()
	t.back.Close()
	wg.Wait()
}

// forward carries the publisher's packets to the gateway.
func (t *tap) forward() {
	buf := make([]byte, 2048)
	for {
		n, from, err := t.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if p := t.peer.Load(); p == nil || *p != from {
			t.peer.Store(&from)
		}
		t.back.Write(buf[:n])
		// On loopback the gateway's socket has the packet once the write
		// returns: that is its receive time, whenever this goroutine got
		// to run.
		t.packet(buf[:n], time.Since(t.epoch))
	}
}

// packet records a publisher packet seen at now if it is video.
func (t *tap) packet(b []byte, now time.Duration) {
	if h, ok := parseRTP(b); ok && h.pt == ftlVideoPT {
		t.frames.Load().note(h.ts, h.marker, h.payload, now)
	}
}

// backward carries the gateway's packets to the publisher.
func (t *tap) backward() {
	buf := make([]byte, 2048)
	for {
		n, err := t.back.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable while the gateway starts
		}
		if p := t.peer.Load(); p != nil {
			t.front.WriteToUDPAddrPort(buf[:n], *p)
		}
	}
}

// rtpHeader is what the bench needs of an RTP packet.
type rtpHeader struct {
	pt      uint8
	marker  bool
	seq     uint16
	ts      uint32
	payload []byte // aliases the packet
}

// parseRTP reads the fixed RTP header, skips CSRCs and a header
// extension, and strips padding. It does not allocate.
func parseRTP(b []byte) (rtpHeader, bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return rtpHeader{}, false
	}
	h := rtpHeader{
		marker: b[1]&0x80 != 0,
		pt:     b[1] & 0x7f,
		seq:    binary.BigEndian.Uint16(b[2:4]),
		ts:     binary.BigEndian.Uint32(b[4:8]),
	}
	n := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < n+4 {
			return rtpHeader{}, false
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(b[n+2:n+4]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 {
		end -= int(b[end-1])
	}
	if n > end {
		return rtpHeader{}, false
	}
	h.payload = b[n:end]
	return h, true
}
