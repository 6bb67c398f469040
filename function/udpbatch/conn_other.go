//go:build !linux

package udpbatch

import "net"

// batchMsgs has nothing to hold where batches go datagram by datagram.
type batchMsgs struct{}

// sendSocket: outside Linux there is no sendmmsg or UDP GSO here; a batch
// is sent datagram by datagram at the round's end.
type sendSocket struct{}

func openSendSocket(*net.UDPConn) sendSocket { return sendSocket{} }

func (sendSocket) close() {}

// gso reports whether runs go as segmented sends: never here.
func (c *Conn) gso() bool { return false }

// send sends the datagrams at the positions of order one by one.
func (b *Batch) send(order []int16) {
	c := b.c
	for _, i := range order {
		if _, err := c.UDPConn.WriteTo(b.slotOf(i), b.addrs[i]); err != nil {
			c.errors.Add(1)
		} else {
			c.datagrams.Add(1)
		}
	}
	c.calls.Add(uint64(len(order)))
	c.messages.Add(uint64(len(order)))
}
