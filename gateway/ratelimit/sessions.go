package ratelimit

import (
	"errors"
	"net/netip"
	"sync"
)

// Why Sessions refuses a session.
var (
	ErrIPFull = errors.New("too many sessions from this address")
	ErrFull   = errors.New("too many sessions")
)

// Sessions counts concurrent sessions per client IP and in total. A nil
// *Sessions takes every session. Its memory is one map entry per IP with
// a session open, so it is bounded by the total. Loopback addresses are
// counted in the total only. Its methods are safe for concurrent use.
type Sessions struct {
	perIP, total int

	mu   sync.Mutex
	byIP map[netip.Addr]int
	n    int
}

// NewSessions bounds sessions to perIP from one IP and total in all; 0
// leaves that bound out. Both 0: nil, no bound.
func NewSessions(perIP, total int) *Sessions {
	if perIP <= 0 && total <= 0 {
		return nil
	}
	return &Sessions{perIP: perIP, total: total, byIP: make(map[netip.Addr]int)}
}

// Acquire counts a session of ip, or refuses it with ErrFull (the total
// is reached) or ErrIPFull (ip's share is). Every nil return must be
// matched by one Release(ip).
func (s *Sessions) Acquire(ip netip.Addr) error {
	if s == nil {
		return nil
	}
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total > 0 && s.n >= s.total {
		return ErrFull
	}
	if ip.IsLoopback() {
		s.n++
		return nil
	}
	if s.perIP > 0 && s.byIP[ip] >= s.perIP {
		return ErrIPFull
	}
	s.byIP[ip]++
	s.n++
	return nil
}

// Release ends a session Acquire counted.
func (s *Sessions) Release(ip netip.Addr) {
	if s == nil {
		return
	}
	ip = ip.Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n--
	if ip.IsLoopback() {
		return
	}
	if s.byIP[ip] <= 1 {
		delete(s.byIP, ip)
	} else {
		s.byIP[ip]--
	}
}

// Open is the number of sessions counted, and of IPs with one.
func (s *Sessions) Open() (sessions, ips int) {
	if s == nil {
		return 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, len(s.byIP)
}
