package fanout

import (
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

const (
	// batchSize is the number of datagrams one sendmmsg call takes at most.
	batchSize = 64
	// batches is how many batches exist: one filling, the others queued
	// for the sender or being sent.
	batches = 4
	// slotSize is the largest datagram a batch holds; larger ones (none of
	// pion's: its MTU is 1200) are sent on their own.
	slotSize = 1500
)

// sendConn is the fan-out's UDP socket as pion's ICE mux sees it: every
// datagram pion writes (SRTP, SRTCP, STUN, DTLS) passes through WriteTo.
//
// The pool's writers open a round around the packets they write. While a
// round is open, WriteTo copies the datagram into the filling batch
// instead of sending it; a batch is handed to the sender goroutine, which
// sends it with one sendmmsg, when it is full or when a round ends. Outside
// rounds a datagram is sent at once, unless batches are still waiting:
// then it joins the queue, so that the socket sends the datagrams of one
// goroutine in the order it wrote them.
type sendConn struct {
	*net.UDPConn
	pc *ipv4.PacketConn

	mu     sync.Mutex
	rounds int    // open rounds
	cur    *batch // the filling batch, nil if none
	closed bool

	queued atomic.Int32 // batches handed to the sender and not yet sent
	free   chan *batch
	full   chan *batch
	done   chan struct{} // closed when the sender ended

	closeOnce sync.Once
	closeErr  error

	calls, datagrams, errors atomic.Uint64
}

// batch is a fixed array of datagram slots.
type batch struct {
	msgs []ipv4.Message
	buf  []byte // batchSize slots of slotSize bytes
	n    int
}

func newSendConn(conn *net.UDPConn) *sendConn {
	c := &sendConn{
		UDPConn: conn,
		pc:      ipv4.NewPacketConn(conn),
		free:    make(chan *batch, batches),
		full:    make(chan *batch, batches),
		done:    make(chan struct{}),
	}
	for range batches {
		b := &batch{msgs: make([]ipv4.Message, batchSize), buf: make([]byte, batchSize*slotSize)}
		for i := range b.msgs {
			b.msgs[i].Buffers = make([][]byte, 1)
		}
		c.free <- b
	}
	go c.send()
	return c
}

// WriteTo sends b to addr, or copies it into a batch (see sendConn).
func (c *sendConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if len(b) > slotSize {
		return c.UDPConn.WriteTo(b, addr)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.rounds == 0 && c.cur == nil && c.queued.Load() == 0 {
		c.mu.Unlock()
		return c.UDPConn.WriteTo(b, addr)
	}
	if c.cur == nil {
		c.cur = <-c.free // waits only while every batch is with the sender
	}
	bt := c.cur
	slot := bt.buf[bt.n*slotSize : bt.n*slotSize+len(b)]
	copy(slot, b)
	bt.msgs[bt.n].Buffers[0] = slot
	bt.msgs[bt.n].Addr = addr
	bt.n++
	if bt.n == batchSize || c.rounds == 0 {
		c.queueLocked()
	}
	c.mu.Unlock()
	return len(b), nil
}

// beginRound opens a round: datagrams are batched until it ends.
func (c *sendConn) beginRound() {
	c.mu.Lock()
	c.rounds++
	c.mu.Unlock()
}

// endRound closes a round and hands the filling batch to the sender.
func (c *sendConn) endRound() {
	c.mu.Lock()
	c.rounds--
	c.queueLocked()
	c.mu.Unlock()
}

// queueLocked hands the filling batch, if any, to the sender. Called with
// mu held. It never waits: there are only as many batches as full holds.
func (c *sendConn) queueLocked() {
	if c.cur == nil || c.closed {
		return
	}
	c.queued.Add(1)
	c.full <- c.cur
	c.cur = nil
}

// send is the sender goroutine: it sends each queued batch with sendmmsg
// and returns it to the free list.
func (c *sendConn) send() {
	defer close(c.done)
	for b := range c.full {
		msgs := b.msgs[:b.n]
		for len(msgs) > 0 {
			n, err := c.pc.WriteBatch(msgs, 0)
			c.calls.Add(1)
			if err != nil {
				// The datagram at msgs[n] failed (an unreachable address,
				// a closed socket); the rest still goes.
				c.errors.Add(1)
				n++
			} else {
				c.datagrams.Add(uint64(n))
			}
			msgs = msgs[min(n, len(msgs)):]
		}
		for i := range b.msgs[:b.n] {
			b.msgs[i].Addr = nil
		}
		b.n = 0
		c.queued.Add(-1)
		c.free <- b
	}
}

// Close sends what is queued, stops the sender and closes the socket.
func (c *sendConn) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.queueLocked()
		c.closed = true
		close(c.full)
		c.mu.Unlock()
		<-c.done
		c.closeErr = c.UDPConn.Close()
	})
	return c.closeErr
}

// sendStats are the socket's counts: sendmmsg calls, datagrams they sent,
// and datagrams that failed.
func (c *sendConn) sendStats() (calls, datagrams, errors uint64) {
	return c.calls.Load(), c.datagrams.Load(), c.errors.Load()
}
