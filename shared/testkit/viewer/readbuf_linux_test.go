package viewer

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The sockets a viewer's ICE agent listens on get readBuffer bytes of
// receive buffer, beyond net.core.rmem_max when running as root.
func TestViewerSocketsHaveALargeReadBuffer(t *testing.T) {
	if os.Geteuid() != 0 {
		b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
		if max, _ := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || max < readBuffer {
			t.Skip("not root, and net.core.rmem_max is below the buffer asked for")
		}
	}
	n, err := newBufferedNet(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	if got < readBuffer {
		t.Fatalf("SO_RCVBUF is %d, want at least %d", got, readBuffer)
	}
}
