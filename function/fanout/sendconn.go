package fanout

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	// batchSize is the number of datagrams a writer's batch holds.
	batchSize = 64
	// slotSize is the largest datagram a batch holds; larger ones (none of
	// pion's: its MTU is 1200) are sent on their own.
	slotSize = 1500
	// maxGSOBytes bounds the payload of one segmented send (an IP packet).
	maxGSOBytes = 65000
)

// sendConn is the fan-out's UDP socket as pion's ICE mux sees it: every
// datagram pion writes (SRTP, SRTCP, STUN, DTLS) passes through WriteTo.
//
// Each viewer's remote address is routed to the writer of the pool that
// serves the viewer. While that writer is in a round, datagrams to the
// address are copied into the writer's batch instead of being sent; the
// round's end sends the batch with one sendmmsg. Consecutive datagrams to
// one address of one size (the last may be shorter) leave as one
// segmented send (UDP GSO), which the kernel's network stack handles once
// for the whole run. Outside its writer's rounds, or for an address
// without a route, a datagram is sent at once.
type sendConn struct {
	*net.UDPConn
	pc *ipv4.PacketConn

	routes  atomic.Pointer[map[netip.AddrPort]*sendBatch] // replaced, never changed, under routeMu
	routeMu sync.Mutex

	noGSO atomic.Bool // the socket refused a segmented send: send runs datagram by datagram

	calls, datagrams, segmented, errors atomic.Uint64
}

// sendBatch is one writer's batch: fixed slots, filled during its rounds.
type sendBatch struct {
	c *sendConn

	mu      sync.Mutex
	inRound bool
	n       int
	slots   []byte         // batchSize slots of slotSize bytes
	lens    [batchSize]int // datagram lengths
	addrs   [batchSize]net.Addr
	keys    [batchSize]netip.AddrPort
	out     []ipv4.Message // what one sendmmsg sends: datagrams or segmented runs
	oob     [batchSize][]byte
}

func newSendConn(conn *net.UDPConn) *sendConn {
	c := &sendConn{UDPConn: conn, pc: ipv4.NewPacketConn(conn)}
	c.routes.Store(&map[netip.AddrPort]*sendBatch{})
	return c
}

func (c *sendConn) newBatch() *sendBatch {
	b := &sendBatch{c: c, slots: make([]byte, batchSize*slotSize), out: make([]ipv4.Message, batchSize)}
	for i := range b.out {
		b.out[i].Buffers = make([][]byte, 0, batchSize)
		b.oob[i] = make([]byte, unix.CmsgSpace(2))
	}
	return b
}

// addrKey is the routing key of a remote address.
func addrKey(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// route sends the datagrams to addr through b; a nil b removes the route.
func (c *sendConn) route(addr netip.AddrPort, b *sendBatch) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	c.routeMu.Lock()
	defer c.routeMu.Unlock()
	old := *c.routes.Load()
	m := make(map[netip.AddrPort]*sendBatch, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if b == nil {
		delete(m, addr)
	} else {
		m[addr] = b
	}
	c.routes.Store(&m)
}

// WriteTo sends p to addr, or copies it into the batch of the writer the
// address is routed to while that writer is in a round.
func (c *sendConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) <= slotSize {
		if key, ok := addrKey(addr); ok {
			if b := (*c.routes.Load())[key]; b != nil {
				if n, queued := b.add(p, addr, key); queued {
					return n, nil
				}
			}
		}
	}
	return c.UDPConn.WriteTo(p, addr)
}

// add copies p into the batch if the batch is in a round.
func (b *sendBatch) add(p []byte, addr net.Addr, key netip.AddrPort) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.inRound {
		return 0, false
	}
	if b.n == batchSize {
		b.flushLocked()
	}
	copy(b.slots[b.n*slotSize:], p)
	b.lens[b.n] = len(p)
	b.addrs[b.n] = addr
	b.keys[b.n] = key
	b.n++
	return len(p), true
}

// beginRound starts batching the writer's datagrams.
func (b *sendBatch) beginRound() {
	b.mu.Lock()
	b.inRound = true
	b.mu.Unlock()
}

// endRound sends what the round batched.
func (b *sendBatch) endRound() {
	b.mu.Lock()
	b.inRound = false
	b.flushLocked()
	b.mu.Unlock()
}

// flushLocked sends the batch: runs of datagrams to one address become
// segmented sends, and everything leaves in as few sendmmsg calls as the
// kernel takes. Called with mu held.
func (b *sendBatch) flushLocked() {
	if b.n == 0 {
		return
	}
	c := b.c
	gso := !c.noGSO.Load()
	out := b.out[:0]
	for i := 0; i < b.n; {
		j := i + 1
		if gso {
			size, total := b.lens[i], b.lens[i]
			for j < b.n && b.keys[j] == b.keys[i] && b.lens[j] <= size && total+b.lens[j] <= maxGSOBytes {
				total += b.lens[j]
				j++
				if b.lens[j-1] < size {
					break // a shorter datagram ends a run
				}
			}
		}
		m := &b.out[len(out)]
		m.Buffers = m.Buffers[:0]
		for k := i; k < j; k++ {
			m.Buffers = append(m.Buffers, b.slots[k*slotSize:k*slotSize+b.lens[k]])
		}
		m.Addr = b.addrs[i]
		m.OOB = nil
		if j-i > 1 {
			m.OOB = gsoCmsg(b.oob[len(out)], b.lens[i])
		}
		out = out[:len(out)+1]
		i = j
	}
	for len(out) > 0 {
		n, err := c.pc.WriteBatch(out, 0)
		c.calls.Add(1)
		for _, m := range out[:n] {
			c.datagrams.Add(uint64(len(m.Buffers)))
			if len(m.Buffers) > 1 {
				c.segmented.Add(uint64(len(m.Buffers)))
			}
		}
		if err != nil && n < len(out) {
			// out[n] failed: an unreachable address or a closed socket, or
			// a kernel or device without UDP GSO. Without GSO its datagrams
			// go one by one; the rest of the batch still goes.
			m := &out[n]
			if len(m.Buffers) > 1 {
				c.noGSO.Store(true)
				for _, d := range m.Buffers {
					if _, err := c.UDPConn.WriteTo(d, m.Addr); err != nil {
						c.errors.Add(1)
					} else {
						c.datagrams.Add(1)
					}
				}
			} else {
				c.errors.Add(1)
			}
			n++
		}
		out = out[n:]
	}
	for i := range b.addrs[:b.n] {
		b.addrs[i] = nil
	}
	for i := range b.out {
		b.out[i].Addr = nil
	}
	b.n = 0
}

// gsoCmsg writes the UDP_SEGMENT control message for segments of size
// bytes into buf.
func gsoCmsg(buf []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(buf[unix.CmsgLen(0):], uint16(size))
	return buf[:unix.CmsgSpace(2)]
}

// sendStats are the socket's counts: sendmmsg calls, datagrams they sent
// (of which in segmented runs), and datagrams that failed.
func (c *sendConn) sendStats() (calls, datagrams, segmented, errors uint64) {
	return c.calls.Load(), c.datagrams.Load(), c.segmented.Load(), c.errors.Load()
}
