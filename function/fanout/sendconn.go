package fanout

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
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
// round's end sends the batch with one sendmmsg. On Linux, consecutive
// datagrams to one address of one size (the last may be shorter) leave as
// one segmented send (UDP GSO), which the kernel's network stack handles
// once for the whole run. Outside its writer's rounds, or for an address
// without a route, a datagram is sent at once.
type sendConn struct {
	*net.UDPConn
	out sendSocket // where batches leave (platform specific)

	routes  atomic.Pointer[map[netip.AddrPort]*sendBatch] // replaced, never changed, under routeMu
	routeMu sync.Mutex

	noGSO atomic.Bool // the kernel refused a segmented send: runs go datagram by datagram

	calls, datagrams, segmented, errors atomic.Uint64
	readErrors                          atomic.Uint64 // transient read errors ReadFrom retried
}

// sendBatch is one writer's batch: fixed slots, filled during its rounds.
type sendBatch struct {
	c *sendConn

	mu      sync.Mutex
	inRound bool
	n       int
	slots   []byte // batchSize slots of slotSize bytes
	lens    [batchSize]int
	addrs   [batchSize]net.Addr
	keys    [batchSize]netip.AddrPort
	msgs    batchMsgs // the platform's message headers
}

func newSendConn(conn *net.UDPConn) *sendConn {
	c := &sendConn{UDPConn: conn}
	c.out = openSendSocket(conn)
	c.routes.Store(&map[netip.AddrPort]*sendBatch{})
	return c
}

func (c *sendConn) newBatch() *sendBatch {
	return &sendBatch{c: c, slots: make([]byte, batchSize*slotSize)}
}

// Close closes the send socket, if it has one of its own, and the socket.
func (c *sendConn) Close() error {
	c.out.close()
	return c.UDPConn.Close()
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

// flushLocked sends the batch and empties it. Called with mu held.
func (b *sendBatch) flushLocked() {
	if b.n == 0 {
		return
	}
	b.send()
	clear(b.addrs[:b.n])
	b.n = 0
}

// slot is the i-th datagram of the batch.
func (b *sendBatch) slot(i int) []byte {
	return b.slots[i*slotSize : i*slotSize+b.lens[i]]
}

// runEnd returns the end of the run of datagrams starting at i that can
// leave as one segmented send: to the same address, of the first one's
// size, the last one possibly shorter, within maxGSOBytes.
func (b *sendBatch) runEnd(i int) int {
	size, total := b.lens[i], b.lens[i]
	j := i + 1
	for j < b.n && b.keys[j] == b.keys[i] && b.lens[j] <= size && total+b.lens[j] <= maxGSOBytes {
		total += b.lens[j]
		j++
		if b.lens[j-1] < size {
			break // a shorter datagram ends a run
		}
	}
	return j
}

// sendStats are the socket's counts: sendmmsg calls, datagrams they sent
// (of which in segmented runs), and datagrams that failed.
func (c *sendConn) sendStats() (calls, datagrams, segmented, errors uint64) {
	return c.calls.Load(), c.datagrams.Load(), c.segmented.Load(), c.errors.Load()
}
