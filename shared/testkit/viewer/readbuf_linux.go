package viewer

import "golang.org/x/sys/unix"

// setReadBuffer asks for size bytes of receive buffer; above the system's
// limit (net.core.rmem_max) it forces the size when allowed to (as root).
func setReadBuffer(c syscallConn, size int) {
	_ = c.SetReadBuffer(size)
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		// The kernel doubles the asked size for its bookkeeping.
		if got, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); err == nil && got < 2*size {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		}
	})
}
