//go:build linux

package udpbatch

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// refusedAddr is a loopback UDP address nobody listens on: sending to it
// brings back an ICMP port unreachable.
func refusedAddr(t *testing.T) net.Addr {
	t.Helper()
	gone, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := gone.LocalAddr()
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// onFD runs f on sock's file descriptor and fails the test on its error.
func onFD(t *testing.T, sock *net.UDPConn, f func(fd int) error) {
	t.Helper()
	rc, err := sock.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
}

// setRecvErr makes the kernel report the ICMP errors that come back for
// sock's sends on its next read (IP_RECVERR).
func setRecvErr(t *testing.T, sock *net.UDPConn) {
	t.Helper()
	onFD(t, sock, func(fd int) error { return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1) })
}

// waitSocketError blocks until the kernel has an error pending on sock,
// failing after a generous bound.
func waitSocketError(t *testing.T, sock *net.UDPConn) {
	t.Helper()
	var revents int16
	onFD(t, sock, func(fd int) error {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLERR}}
		for {
			if _, err := unix.Poll(fds, 10_000); !errors.Is(err, unix.EINTR) {
				revents = fds[0].Revents
				return err
			}
		}
	})
	if revents&unix.POLLERR == 0 {
		t.Fatalf("no error pending on the socket (revents %#x): the ICMP error did not come back", revents)
	}
}

func TestReadFromRetriesAReportedICMPError(t *testing.T) {
	sock := listenLoopback(t, 1)[0]
	c := New(sock)
	t.Cleanup(func() { c.Close() })
	setRecvErr(t, sock)

	// A datagram to a closed port: its ICMP error is what the next read
	// of the socket reports.
	if _, err := c.WriteTo([]byte("anyone?"), refusedAddr(t)); err != nil {
		t.Fatal(err)
	}
	waitSocketError(t, sock)

	peer := listenLoopback(t, 1)[0]
	want := []byte("a viewer's STUN")
	if _, err := peer.WriteTo(want, sock.LocalAddr()); err != nil {
		t.Fatal(err)
	}

	if err := sock.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn = c // as pion's mux reads it
	buf := make([]byte, 2048)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if !bytes.Equal(buf[:n], want) {
		t.Errorf("ReadFrom read %q, want %q", buf[:n], want)
	}
	if from.String() != peer.LocalAddr().String() {
		t.Errorf("ReadFrom read from %v, want %v", from, peer.LocalAddr())
	}
	if got := c.Stats().ReadErrors; got != 1 {
		t.Errorf("Stats().ReadErrors = %d, want 1", got)
	}
}

func TestReadFromAfterCloseReturnsErrClosed(t *testing.T) {
	sock := listenLoopback(t, 1)[0]
	c := New(sock)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.ReadFrom(make([]byte, 2048))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
	}
	if got := c.Stats().ReadErrors; got != 0 {
		t.Errorf("Stats().ReadErrors = %d, want 0", got)
	}
}

func TestReadFromReturnsADeadlineTimeout(t *testing.T) {
	sock := listenLoopback(t, 1)[0]
	c := New(sock)
	t.Cleanup(func() { c.Close() })
	if err := sock.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.ReadFrom(make([]byte, 2048))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom past its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestReadFromKnowsTransientErrors(t *testing.T) {
	wrap := func(errno error) error {
		return &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", errno)}
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{wrap(unix.ECONNREFUSED), true},
		{wrap(unix.EHOSTUNREACH), true},
		{wrap(unix.ENETUNREACH), true},
		{wrap(unix.ENOMEM), true},
		{wrap(unix.ENOBUFS), true},
		{wrap(unix.EBADF), false},
		{&net.OpError{Op: "read", Net: "udp", Err: net.ErrClosed}, false},
		{&net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}, false},
	} {
		if got := isTransientReadError(tt.err); got != tt.want {
			t.Errorf("isTransientReadError(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
