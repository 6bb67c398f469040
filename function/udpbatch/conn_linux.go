//go:build linux

package udpbatch

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is the kernel's struct mmsghdr (Go pads it as C does).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// cmsgMax holds one UDP_SEGMENT control message on any architecture.
const cmsgMax = 32

// batchMsgs are a batch's sendmmsg messages: one per datagram or
// segmented run, with its iovecs, destination and GSO control message.
type batchMsgs struct {
	hdrs  [batchSize]mmsghdr
	iovs  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6 // room for either family
	oob   [batchSize][cmsgMax]byte
	from  [batchSize]int // where each message's datagrams start in the order sent
	segs  [batchSize]int // datagrams of each message
}

// sendSocket is the socket file descriptor batches leave on: the UDP
// socket itself. sendmmsg is called directly, without entering Go's
// scheduler (a batch takes well under a millisecond, and the socket does
// not block: MSG_DONTWAIT).
type sendSocket struct {
	fd int // -1 when the descriptor could not be had: batches go one by one
}

func openSendSocket(conn *net.UDPConn) sendSocket {
	s := sendSocket{fd: -1}
	rc, err := conn.SyscallConn()
	if err != nil {
		return s
	}
	rc.Control(func(fd uintptr) { s.fd = int(fd) })
	return s
}

func (s sendSocket) close() {}

// gso reports whether runs go as segmented sends.
func (c *Conn) gso() bool { return c.out.fd >= 0 && !c.noGSO.Load() }

// send sends the datagrams at the positions of order, in that order:
// runs of datagrams to one address become segmented sends, and
// everything leaves in as few sendmmsg calls as the kernel takes.
func (b *Batch) send(order []int16) {
	c := b.c
	if c.out.fd < 0 {
		b.sendEach(order)
		return
	}
	gso := c.gso()
	m := &b.msgs
	nmsg := 0
	for i := 0; i < len(order); {
		j := i + 1
		if gso {
			j = b.runEnd(order, i)
		}
		h := &m.hdrs[nmsg].hdr
		*h = unix.Msghdr{}
		for k := i; k < j; k++ {
			p := order[k]
			iov := &m.iovs[k]
			iov.Base = &b.slots[int(b.slot[p])*slotSize]
			iov.SetLen(b.lens[p])
		}
		h.Iov = &m.iovs[i]
		h.SetIovlen(j - i)
		h.Name, h.Namelen = putSockaddr(&m.names[nmsg], b.keys[order[i]])
		if j-i > 1 {
			oob := gsoCmsg(m.oob[nmsg][:], b.lens[order[i]])
			h.Control = &oob[0]
			h.SetControllen(len(oob))
		}
		m.from[nmsg], m.segs[nmsg] = i, j-i
		nmsg++
		i = j
	}
	for first := 0; first < nmsg; {
		n, err := sendmmsg(c.out.fd, m.hdrs[first:nmsg])
		c.calls.Add(1)
		c.messages.Add(uint64(n))
		for k := first; k < first+n; k++ {
			c.datagrams.Add(uint64(m.segs[k]))
			if m.segs[k] > 1 {
				c.segmented.Add(uint64(m.segs[k]))
			}
		}
		first += n
		if err == nil {
			continue
		}
		// Message first failed: an unreachable address, a full socket
		// buffer (then WriteTo waits for room), or a kernel or device
		// without UDP GSO. Its datagrams go one by one; if they all
		// went, the kernel refused the segmented send: GSO is turned
		// off. The rest still goes.
		from, segs := m.from[first], m.segs[first]
		sent := b.sendEach(order[from : from+segs])
		if segs > 1 && sent == segs && (errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
			c.noGSO.Store(true)
		}
		first++
	}
	for k := range m.iovs[:len(order)] {
		m.iovs[k].Base = nil
	}
	for k := range m.hdrs[:nmsg] {
		m.hdrs[k].hdr = unix.Msghdr{}
	}
}

// sendEach sends the datagrams at the positions of order one by one and
// returns how many were sent.
func (b *Batch) sendEach(order []int16) int {
	c := b.c
	sent := 0
	for _, i := range order {
		if _, err := c.UDPConn.WriteTo(b.slotOf(i), b.addrs[i]); err != nil {
			c.errors.Add(1)
		} else {
			c.datagrams.Add(1)
			sent++
		}
	}
	return sent
}

// sendmmsg sends msgs on fd and returns how many were sent, or the error
// of msgs[0]. (When a later message fails, the kernel returns the count
// of those before it; the next call, starting at the failed one, reports
// its error.)
func sendmmsg(fd int, msgs []mmsghdr) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// putSockaddr writes addr as a sockaddr into sa and returns it for a
// Msghdr. IPv4 goes as AF_INET, which an IPv6 socket takes too.
func putSockaddr(sa *unix.RawSockaddrInet6, addr netip.AddrPort) (*byte, uint32) {
	*sa = unix.RawSockaddrInet6{}
	port := addr.Port()
	ip := addr.Addr()
	if ip.Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], port)
		sa4.Addr = ip.As4()
		return (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
	sa.Addr = ip.As16()
	return (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6
}

// gsoCmsg writes the UDP_SEGMENT control message for segments of size
// bytes into buf.
func gsoCmsg(buf []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(buf[unix.CmsgLen(0):], uint16(size))
	return buf[:unix.CmsgSpace(2)]
}
