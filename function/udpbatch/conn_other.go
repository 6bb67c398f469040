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

// send sends the batch datagram by datagram.
func (b *Batch) send() {
	c := b.c
	for k := range b.n {
		if _, err := c.UDPConn.WriteTo(b.slot(k), b.addrs[k]); err != nil {
			c.errors.Add(1)
		} else {
			c.datagrams.Add(1)
		}
	}
	c.calls.Add(uint64(b.n))
}
