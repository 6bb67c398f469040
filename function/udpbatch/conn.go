// Package udpbatch is a UDP socket that sends to many receivers in
// batches. A sender serving many receivers in rounds (a writer writing
// each of its viewers' packets in turn) gets a Batch; datagrams to the
// addresses routed to that batch wait in it during a round and leave at
// the round's end in as few sendmmsg calls as the kernel takes, each
// receiver's consecutive datagrams as one segmented send (UDP GSO) on
// Linux. Its reads skip the transient errors a UDP socket reports for
// something else than itself (ICMP reports of an earlier send).
package udpbatch

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

const (
	// batchSize is the number of datagrams a batch holds.
	batchSize = 64
	// slotSize is the largest datagram a batch holds; larger ones (none of
	// pion's: its MTU is 1200) are sent on their own.
	slotSize = 1500
	// maxGSOBytes bounds the payload of one segmented send (an IP packet).
	maxGSOBytes = 65000
)

// Conn is a UDP socket whose sends to routed addresses are batched. It
// is a net.PacketConn (pion's ICE UDP mux reads and writes every datagram
// of its PeerConnections through it: SRTP, SRTCP, STUN, DTLS) and is safe
// for concurrent use.
//
// Each receiver's address is routed to the Batch of the sender that
// serves it. While that batch is in a round, datagrams to the address are
// copied into the batch instead of being sent; the round's end sends the
// batch with one sendmmsg. On Linux, consecutive datagrams to one address
// of one size (the last may be shorter) leave as one segmented send (UDP
// GSO), which the kernel's network stack handles once for the whole run.
// Outside its batch's rounds, or for an address without a route, a
// datagram is sent at once.
type Conn struct {
	*net.UDPConn
	out sendSocket // where batches leave (platform specific)

	routes  atomic.Pointer[map[netip.AddrPort]*Batch] // replaced, never changed, under routeMu
	routeMu sync.Mutex

	noGSO atomic.Bool // the kernel refused a segmented send: runs go datagram by datagram

	calls, datagrams, segmented, errors atomic.Uint64
	readErrors                          atomic.Uint64 // transient read errors ReadFrom retried
}

// Stats are a Conn's counts since New.
type Stats struct {
	Calls      uint64 // sendmmsg calls that sent batches
	Datagrams  uint64 // datagrams sent in batches
	Segmented  uint64 // of those, sent in segmented runs (UDP GSO)
	Errors     uint64 // batched datagrams that could not be sent
	ReadErrors uint64 // transient read errors (ICMP reports, lack of kernel memory) ReadFrom skipped
}

// Batch is the batch of one sender (one goroutine sending in rounds):
// fixed slots, filled during its rounds. Its methods are safe for
// concurrent use with the Conn's WriteTo.
type Batch struct {
	c *Conn

	mu      sync.Mutex
	inRound bool
	n       int
	slots   []byte // batchSize slots of slotSize bytes
	lens    [batchSize]int
	addrs   [batchSize]net.Addr
	keys    [batchSize]netip.AddrPort
	msgs    batchMsgs // the platform's message headers
}

// New returns conn as a Conn, with no routes. The Conn owns conn: its
// Close closes it.
func New(conn *net.UDPConn) *Conn {
	c := &Conn{UDPConn: conn}
	c.out = openSendSocket(conn)
	c.routes.Store(&map[netip.AddrPort]*Batch{})
	return c
}

// NewBatch returns a new batch of c, outside any round and routed to by
// no address.
func (c *Conn) NewBatch() *Batch {
	return &Batch{c: c, slots: make([]byte, batchSize*slotSize)}
}

// Close closes the send socket, if it has one of its own, and the socket.
func (c *Conn) Close() error {
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

// Route sends the datagrams to addr through b; a nil b removes the
// route. An IPv4-mapped IPv6 address is the IPv4 address.
func (c *Conn) Route(addr netip.AddrPort, b *Batch) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	c.routeMu.Lock()
	defer c.routeMu.Unlock()
	old := *c.routes.Load()
	m := make(map[netip.AddrPort]*Batch, len(old)+1)
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

// WriteTo sends p to addr, or copies it into the batch the address is
// routed to while that batch is in a round.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
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
func (b *Batch) add(p []byte, addr net.Addr, key netip.AddrPort) (int, bool) {
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

// BeginRound starts a round: from now on datagrams to the addresses
// routed to b wait in b.
func (b *Batch) BeginRound() {
	b.mu.Lock()
	b.inRound = true
	b.mu.Unlock()
}

// EndRound ends the round and sends what it batched.
func (b *Batch) EndRound() {
	b.mu.Lock()
	b.inRound = false
	b.flushLocked()
	b.mu.Unlock()
}

// flushLocked sends the batch and empties it. Called with mu held.
func (b *Batch) flushLocked() {
	if b.n == 0 {
		return
	}
	b.send()
	clear(b.addrs[:b.n])
	b.n = 0
}

// slot is the i-th datagram of the batch.
func (b *Batch) slot(i int) []byte {
	return b.slots[i*slotSize : i*slotSize+b.lens[i]]
}

// runEnd returns the end of the run of datagrams starting at i that can
// leave as one segmented send: to the same address, of the first one's
// size, the last one possibly shorter, within maxGSOBytes.
func (b *Batch) runEnd(i int) int {
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

// Stats returns the socket's counts.
func (c *Conn) Stats() Stats {
	return Stats{
		Calls:      c.calls.Load(),
		Datagrams:  c.datagrams.Load(),
		Segmented:  c.segmented.Load(),
		Errors:     c.errors.Load(),
		ReadErrors: c.readErrors.Load(),
	}
}
