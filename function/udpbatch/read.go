package udpbatch

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Transient read errors in a row, within one ReadFrom, before each further
// retry waits readErrorPause. A datagram or any other error ends the run.
//
// The kernel reports an ICMP error through a single pending-error slot, so
// each report fails one read; a burst of reports from viewers that went
// away fails a few reads in a row, then the queued datagrams come. A thousand
// failures with no datagram between them means reads keep failing (memory
// pressure, for one): waiting 10 ms before each retry then bounds the loop
// to about a hundred reads a second instead of spinning on a core. The
// datagrams that arrive meanwhile wait in the socket's receive buffer.
const (
	readErrorRun   = 1000
	readErrorPause = 10 * time.Millisecond
)

// transientReadErrors are the errors a UDP socket's read reports for
// something other than the socket: an ICMP error that came back for an
// earlier send (the kernel's ICMP to errno mapping, IPv4 and IPv6), or a
// short lack of kernel memory. The socket still works; the next read may
// return a datagram. On Unix these are the values golang.org/x/sys/unix
// names too; elsewhere no read returns them and nothing is retried.
var transientReadErrors = [...]error{
	syscall.ECONNREFUSED, // port unreachable
	syscall.EHOSTUNREACH, // host unreachable, filtered, time exceeded
	syscall.ENETUNREACH,  // network unreachable
	syscall.EHOSTDOWN,    // host unknown
	syscall.EACCES,       // administratively prohibited (IPv6)
	syscall.EMSGSIZE,     // fragmentation needed, packet too big
	syscall.EPROTO,       // parameter problem
	syscall.ENOPROTOOPT,  // protocol unreachable
	syscall.ENOMEM,
	syscall.ENOBUFS,
}

func isTransientReadError(err error) bool {
	for _, e := range transientReadErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ReadFrom reads a datagram, as the embedded socket's ReadFrom does, but
// retries reads that fail with a transient error, counting each: pion's
// ICE UDP mux ends, and with it every viewer's connection, on any read
// error other than a timeout. It is a guard: Linux reports ICMP errors to
// an unconnected UDP socket only when IP_RECVERR is set, which New does
// not set. Any other error (a closed socket, a passed deadline) is
// returned as it is, so closing the socket still ends its reader.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	for run := 1; ; run++ {
		n, addr, err := c.UDPConn.ReadFrom(p)
		if err == nil || !isTransientReadError(err) {
			return n, addr, err
		}
		c.readErrors.Add(1)
		if run >= readErrorRun {
			time.Sleep(readErrorPause)
		}
	}
}
