// Package lossy is a UDP forwarder on loopback that loses packets on
// purpose. A client sends to the forwarder's address instead of the
// server's; the forwarder passes everything the client sends and drops,
// by a rule, some of what the server sends back. Tests of the relay use it
// to lose gateway datagrams on the wire, where QUIC must recover its own
// packets and the relay's NACKs the media.
//
// It can also delay every packet, both ways, by a fixed time: the kernels
// this runs on have no netem, so a long path between two namespaces is
// made in user space.
package lossy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxDelayed bounds the packets on their way through a delay; more are
// dropped and counted, as a router's full queue would.
const maxDelayed = 8192

// Rule decides whether the forwarder drops p, one packet the server sent
// towards a client. The forwarder asks it about one packet at a time, in
// the order it reads them, so a rule may keep state without locking.
type Rule func(p []byte) bool

// EveryNth drops the nth packet it is asked about, the 2nth, and so on.
func EveryNth(n int) Rule {
	i := 0
	return func([]byte) bool {
		i++
		return i%n == 0
	}
}

// First drops the first n packets it is asked about.
func First(n int) Rule {
	i := 0
	return func([]byte) bool {
		i++
		return i <= n
	}
}

// Sized asks r about the packets of least to most bytes and passes the
// others without asking. QUIC acknowledgements are tens of bytes and
// quic-go's path MTU probes larger than the 1280 bytes it starts with, so
// a band between them picks the packets that carry a test's media
// datagrams (one or more each).
func Sized(least, most int, r Rule) Rule {
	return func(p []byte) bool {
		return len(p) >= least && len(p) <= most && r(p)
	}
}

// Stats counts the packets the server sent towards clients.
type Stats struct {
	Passed  uint64 // forwarded to the client
	Dropped uint64 // dropped by the rule
	// Overflowed counts packets, either way, dropped because maxDelayed
	// were already on their way through the delay.
	Overflowed uint64
}

// Forwarder forwards UDP between clients and one server, each client
// through its own socket towards the server, and drops server packets by
// its rule.
type Forwarder struct {
	ln     *net.UDPConn
	server *net.UDPAddr
	wg     sync.WaitGroup

	mu      sync.Mutex
	rule    Rule // nil passes everything
	delay   time.Duration
	delayed chan delayed // started by the first SetDelay
	clients map[netip.AddrPort]*net.UDPConn
	stats   Stats
	closed  bool
}

// New listens on a free port of 127.0.0.1 and forwards to server (host:port).
// It passes everything until SetRule.
func New(server string) (*Forwarder, error) {
	addr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, fmt.Errorf("lossy: server %q: %w", server, err)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("lossy: listen: %w", err)
	}
	f := &Forwarder{ln: ln, server: addr, clients: make(map[netip.AddrPort]*net.UDPConn)}
	f.wg.Add(1)
	go f.fromClients()
	return f, nil
}

// Addr is the address clients send to instead of the server's.
func (f *Forwarder) Addr() string { return f.ln.LocalAddr().String() }

// SetRule makes r decide about the server packets read from now on; nil
// passes them all.
func (f *Forwarder) SetRule(r Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rule = r
}

// SetDelay delays every packet read from now on, either way, by d before
// it is sent on. Packets keep their order.
func (f *Forwarder) SetDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
	if f.delayed == nil && !f.closed {
		f.delayed = make(chan delayed, maxDelayed)
		f.wg.Add(1)
		go f.deliver(f.delayed)
	}
}

// delayed is a packet on its way through the delay.
type delayed struct {
	due  time.Time
	p    []byte
	send func([]byte)
}

// deliver sends each delayed packet when it is due. All packets wait the
// same delay, so the queue's order is the order they are due in.
func (f *Forwarder) deliver(q <-chan delayed) {
	defer f.wg.Done()
	for d := range q {
		if wait := time.Until(d.due); wait > 0 {
			time.Sleep(wait)
		}
		d.send(d.p)
	}
}

// forward sends p by send now, or queues a copy of it when there is a
// delay.
func (f *Forwarder) forward(p []byte, send func([]byte)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if f.delay <= 0 {
		f.mu.Unlock()
		send(p)
		f.mu.Lock()
		return
	}
	select {
	case f.delayed <- delayed{due: time.Now().Add(f.delay), p: append([]byte(nil), p...), send: send}:
	default:
		f.stats.Overflowed++
	}
}

// Stats returns the counts so far.
func (f *Forwarder) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Close stops forwarding and returns when its goroutines have ended.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	err := f.ln.Close()
	for _, up := range f.clients {
		up.Close()
	}
	if f.delayed != nil {
		close(f.delayed) // what is on its way fails to send, to closed sockets
	}
	f.mu.Unlock()
	f.wg.Wait()
	return err
}

// fromClients passes what clients send to the server.
func (f *Forwarder) fromClients() {
	defer f.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := f.ln.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if up := f.upstream(from); up != nil {
			f.forward(buf[:n], func(p []byte) { up.Write(p) })
		}
	}
}

// upstream returns the client's socket towards the server, opening it and
// its reader on the client's first packet; nil once closed.
func (f *Forwarder) upstream(client netip.AddrPort) *net.UDPConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	if up := f.clients[client]; up != nil {
		return up
	}
	up, err := net.DialUDP("udp", nil, f.server)
	if err != nil {
		return nil
	}
	f.clients[client] = up
	f.wg.Add(1)
	go f.toClient(client, up)
	return up
}

// toClient passes what the server sends to client, less what the rule
// drops.
func (f *Forwarder) toClient(client netip.AddrPort, up *net.UDPConn) {
	defer f.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // e.g. the server's port is closed for now
		}
		if f.drop(buf[:n]) {
			continue
		}
		f.forward(buf[:n], func(p []byte) { f.ln.WriteToUDPAddrPort(p, client) })
	}
}

// drop asks the rule about p and counts the answer.
func (f *Forwarder) drop(p []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rule != nil && f.rule(p) {
		f.stats.Dropped++
		return true
	}
	f.stats.Passed++
	return false
}
