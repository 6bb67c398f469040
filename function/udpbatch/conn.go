// Package udpbatch is a UDP socket that sends to many receivers in
// batches. A sender serving many receivers in rounds (a writer writing
// each of its viewers' packets in turn) gets a Batch; datagrams to the
// addresses routed to that batch wait in it during a round and leave at
// the round's end in as few sendmmsg calls as the kernel takes, each
// receiver's datagrams together, runs of one size as one segmented send
// (UDP GSO) on Linux. Its reads skip the transient errors a UDP socket reports for
// something else than itself (ICMP reports of an earlier send).
package udpbatch

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

const (
	// batchSize is the number of datagrams a batch holds: a frame of 8
	// packets to 32 viewers, or 4 full runs (below), in one sendmmsg call.
	batchSize = 256
	// slotSize is the largest datagram a batch holds; larger ones (none of
	// pion's: its MTU is 1200) are sent on their own.
	slotSize = 1500
	// maxGSOBytes bounds the payload of one segmented send (an IP packet:
	// 65,507 bytes of UDP payload over IPv4).
	maxGSOBytes = 65000
	// maxSegments is the most datagrams the kernel cuts one segmented
	// send into (UDP_MAX_SEGMENTS; more fails with EINVAL).
	maxSegments = 64
	// sendBuffer is the socket's send buffer New asks for (the kernel
	// caps it at net.core.wmem_max, and doubles it). A batch's sendmmsg
	// holds up to ~310 KB of SRTP, more than Linux's default 208 KB; on
	// a network device, whose datagrams hold the buffer until it sent
	// them, a full buffer fails the rest of a call (EAGAIN), and the
	// failed message's datagrams go one by one.
	sendBuffer = 1 << 20
)

// Conn is a UDP socket whose sends to routed addresses are batched. It
// is a net.PacketConn (pion's ICE UDP mux reads and writes every datagram
// of its PeerConnections through it: SRTP, SRTCP, STUN, DTLS) and is safe
// for concurrent use.
//
// Each receiver's address is routed to the Batch of the sender that
// serves it. While that batch is in a round, datagrams to the address are
// copied into the batch instead of being sent; the round's end sends the
// batch with one sendmmsg. Each address's datagrams leave together, in
// the order they came, whatever came between them. On Linux, consecutive
// datagrams to one address of one size (the last may be shorter) leave as
// one segmented send (UDP GSO), which the kernel's network stack handles
// once for the whole run; a batch that fills up keeps the run being
// written, so that a run is never cut by the batch's size. Outside its
// batch's rounds, or for an address without a route, a datagram is sent
// at once.
type Conn struct {
	*net.UDPConn
	out sendSocket // where batches leave (platform specific)

	routes  atomic.Pointer[map[netip.AddrPort]*route] // replaced, never changed, under routeMu
	routeMu sync.Mutex

	noGSO atomic.Bool // the kernel refused a segmented send: runs go datagram by datagram

	calls, messages, datagrams, segmented, errors atomic.Uint64
	readErrors                                    atomic.Uint64 // transient read errors ReadFrom retried
}

// Stats are a Conn's counts since New.
type Stats struct {
	Calls      uint64 // sendmmsg calls that sent batches
	Messages   uint64 // their messages: a datagram, or a segmented run of them
	Datagrams  uint64 // datagrams sent in batches
	Segmented  uint64 // of those, sent in segmented runs (UDP GSO)
	Errors     uint64 // batched datagrams that could not be sent
	ReadErrors uint64 // transient read errors (ICMP reports, lack of kernel memory) ReadFrom skipped
}

// route is the way of one address's datagrams: the batch they wait in,
// and where they stand in its current fill (guarded by the batch's mu).
type route struct {
	b *Batch

	fill        uint64 // the batch's fill first and last are of; another: none of its datagrams is held
	first, last int16  // positions of its oldest and newest held datagrams
}

// Batch is the batch of one sender (one goroutine sending in rounds):
// fixed slots, filled during its rounds. Its methods are safe for
// concurrent use with the Conn's WriteTo.
//
// Held datagrams have positions, in the order they came. Each address's
// datagrams are chained by position from its route, and the addresses
// listed in the order their first datagram came, so that sending puts
// each address's datagrams together without a lookup.
type Batch struct {
	c *Conn

	mu      sync.Mutex
	inRound bool
	fill    uint64            // counts the batch's fills (a flush starts the next one)
	n       int               // datagrams held
	slots   []byte            // batchSize slots of slotSize bytes
	slot    [batchSize]uint16 // the slot of each position; those from n on are free
	lens    [batchSize]int
	addrs   [batchSize]net.Addr
	keys    [batchSize]netip.AddrPort
	next    [batchSize]int16 // the position of the same route's next datagram, or -1
	firsts  [batchSize]int16 // each route's first position, in the order they came
	nfirst  int
	order   [batchSize]int16 // positions in the order they are sent (arrange)
	msgs    batchMsgs        // the platform's message headers
}

// New returns conn as a Conn, with no routes, and asks for a send buffer
// of sendBuffer bytes. The Conn owns conn: its Close closes it.
func New(conn *net.UDPConn) *Conn {
	c := &Conn{UDPConn: conn}
	_ = conn.SetWriteBuffer(sendBuffer) // best effort: the default still works, less well
	c.out = openSendSocket(conn)
	c.routes.Store(&map[netip.AddrPort]*route{})
	return c
}

// NewBatch returns a new batch of c, outside any round and routed to by
// no address.
func (c *Conn) NewBatch() *Batch {
	b := &Batch{c: c, fill: 1, slots: make([]byte, batchSize*slotSize)}
	for i := range b.slot {
		b.slot[i] = uint16(i)
	}
	return b
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
	if r := old[addr]; r != nil && r.b == b {
		return // the route stays, with its place in b
	}
	m := make(map[netip.AddrPort]*route, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if b == nil {
		delete(m, addr)
	} else {
		m[addr] = &route{b: b}
	}
	c.routes.Store(&m)
}

// WriteTo sends p to addr, or copies it into the batch the address is
// routed to while that batch is in a round.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(p) <= slotSize {
		if key, ok := addrKey(addr); ok {
			if r := (*c.routes.Load())[key]; r != nil {
				if n, queued := r.b.add(p, addr, key, r); queued {
					return n, nil
				}
			}
		}
	}
	return c.UDPConn.WriteTo(p, addr)
}

// add copies p, to key by r, into the batch if the batch is in a round.
func (b *Batch) add(p []byte, addr net.Addr, key netip.AddrPort, r *route) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.inRound {
		return 0, false
	}
	if b.n == batchSize {
		b.flushLocked(r, len(p))
	}
	i := b.n
	copy(b.slots[int(b.slot[i])*slotSize:], p)
	b.lens[i] = len(p)
	b.addrs[i] = addr
	b.keys[i] = key
	b.next[i] = -1
	if r.fill == b.fill {
		b.next[r.last] = int16(i)
	} else {
		r.fill, r.first = b.fill, int16(i)
		b.firsts[b.nfirst] = int16(i)
		b.nfirst++
	}
	r.last = int16(i)
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
	b.flushLocked(nil, 0)
	b.mu.Unlock()
}

// flushLocked sends the batch and starts its next fill. A full batch
// flushed for a datagram of size bytes to r keeps r's run if the
// datagram would continue it (nil r: it keeps nothing). Called with mu
// held.
func (b *Batch) flushLocked(r *route, size int) {
	if b.n == 0 {
		return
	}
	keep := b.arrange(r, size)
	b.send(b.order[:b.n-keep])
	b.refill(b.order[b.n-keep:b.n], r)
}

// arrange writes the positions of the held datagrams into b.order in the
// order they are to be sent: address after address, in the order their
// first datagrams came, each address's in the order they came. When a
// datagram of size bytes to r would continue r's last run (segmented
// sends only), that run goes last in b.order, and arrange returns its
// length: it is to stay in the batch.
func (b *Batch) arrange(r *route, size int) (keep int) {
	from, to := -1, 0 // r's datagrams in b.order
	k := 0
	for _, f := range b.firsts[:b.nfirst] {
		if r != nil && r.fill == b.fill && f == r.first {
			from = k
		}
		for i := f; i >= 0; i = b.next[i] {
			b.order[k] = i
			k++
		}
		if from >= 0 && to == 0 {
			to = k
		}
	}
	if from < 0 || !b.c.gso() {
		return 0
	}
	start := from // of r's last run
	for end := b.runEnd(b.order[:to], from); end < to; end = b.runEnd(b.order[:to], end) {
		start = end
	}
	run := b.order[start:to]
	first, last := b.lens[run[0]], b.lens[run[len(run)-1]]
	total := 0
	for _, i := range run {
		total += b.lens[i]
	}
	if last < first || size > first || len(run) >= maxSegments || total+size > maxGSOBytes {
		return 0 // closed: p starts a run of its own
	}
	// Move the run to the end, after the addresses that follow r's.
	var held [maxSegments]int16
	n := copy(held[:], run)
	copy(b.order[start:], b.order[to:b.n])
	copy(b.order[b.n-n:b.n], held[:n])
	return n
}

// refill starts the batch's next fill, holding the datagrams at the
// positions kept (r's run, in order) at its first positions.
func (b *Batch) refill(kept []int16, r *route) {
	b.fill++
	n := b.n
	b.n, b.nfirst = 0, 0
	if len(kept) > 0 {
		var (
			slots [maxSegments]uint16
			lens  [maxSegments]int
			addrs [maxSegments]net.Addr
			keys  [maxSegments]netip.AddrPort
			taken [batchSize]bool
		)
		for j, i := range kept {
			slots[j], lens[j], addrs[j], keys[j] = b.slot[i], b.lens[i], b.addrs[i], b.keys[i]
			taken[b.slot[i]] = true
		}
		// The slots of the kept datagrams come first, then the others.
		free := len(kept)
		for s := range batchSize {
			if !taken[s] {
				b.slot[free] = uint16(s)
				free++
			}
		}
		k := len(kept)
		copy(b.slot[:k], slots[:k])
		copy(b.lens[:k], lens[:k])
		copy(b.addrs[:k], addrs[:k])
		copy(b.keys[:k], keys[:k])
		for j := range k {
			b.next[j] = int16(j + 1)
		}
		b.next[k-1] = -1
		b.firsts[0] = 0
		b.n, b.nfirst = k, 1
		r.fill, r.first, r.last = b.fill, 0, int16(k-1)
	}
	clear(b.addrs[b.n:n])
}

// slotOf is the datagram at position i.
func (b *Batch) slotOf(i int16) []byte {
	s := int(b.slot[i]) * slotSize
	return b.slots[s : s+b.lens[i]]
}

// runEnd returns the end of the run of order[i:] that can leave as one
// segmented send: datagrams to one address, of the first one's size, the
// last one possibly shorter, at most maxSegments of them and maxGSOBytes.
func (b *Batch) runEnd(order []int16, i int) int {
	p := order[i]
	size, total := b.lens[p], b.lens[p]
	j := i + 1
	for j < len(order) && j-i < maxSegments {
		q := order[j]
		if b.keys[q] != b.keys[p] || b.lens[q] > size || total+b.lens[q] > maxGSOBytes {
			break
		}
		total += b.lens[q]
		j++
		if b.lens[q] < size {
			break // a shorter datagram ends a run
		}
	}
	return j
}

// Stats returns the socket's counts.
func (c *Conn) Stats() Stats {
	return Stats{
		Calls:      c.calls.Load(),
		Messages:   c.messages.Load(),
		Datagrams:  c.datagrams.Load(),
		Segmented:  c.segmented.Load(),
		Errors:     c.errors.Load(),
		ReadErrors: c.readErrors.Load(),
	}
}
