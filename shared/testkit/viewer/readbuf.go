package viewer

import (
	"net"
	"syscall"

	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
)

// readBuffer is the receive buffer asked for on a viewer's UDP sockets. A
// viewer joining late gets the cached keyframe and what follows it as a
// fast burst; the kernel's default (about 208 KB, some 90 datagrams) can
// overflow while a slow client (a test under the race detector) catches
// up, and audio lost there is never asked for again. Browsers keep larger
// buffers.
const readBuffer = 2 << 20

// bufferedNet makes the UDP sockets of a network with readBuffer.
type bufferedNet struct{ transport.Net }

func newBufferedNet(n transport.Net) (transport.Net, error) {
	if n == nil {
		std, err := stdnet.NewNet()
		if err != nil {
			return nil, err
		}
		n = std
	}
	return bufferedNet{n}, nil
}

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if sc, ok := c.(syscallConn); ok {
		setReadBuffer(sc, readBuffer)
	}
	return c, nil
}

// syscallConn is a UDP socket of the host, possibly wrapped.
type syscallConn interface {
	SetReadBuffer(bytes int) error
	SyscallConn() (syscall.RawConn, error)
}
