package whip

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Failed authentications are slowed down as FTL does: a token bucket of
// maxAuthFailures per client IP, one token back every authFailureRefresh.
// A client out of tokens gets 429 until it has one again.
const (
	maxAuthFailures    = 5
	authFailureRefresh = 12 * time.Second
	maxLimitedIPs      = 100_000 // IPs remembered at most; beyond, all are forgotten
)

// keyMatches reports, in constant time, whether secret is the stored
// secret of the key's channel.
func keyMatches(stored, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(stored), []byte(secret)) == 1
}

// authLimiter counts failed authentications per client IP.
type authLimiter struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newAuthLimiter() *authLimiter {
	return &authLimiter{buckets: make(map[netip.Addr]*bucket)}
}

// refill returns ip's bucket after adding the tokens earned since its last
// use, or nil when it is full (the IP is forgotten).
func (l *authLimiter) refill(ip netip.Addr, now time.Time) *bucket {
	b := l.buckets[ip]
	if b == nil {
		return nil
	}
	b.tokens += now.Sub(b.at).Seconds() / authFailureRefresh.Seconds()
	b.at = now
	if b.tokens >= maxAuthFailures {
		delete(l.buckets, ip)
		return nil
	}
	return b
}

// allow reports whether ip may try to authenticate, and if not, how long
// until it may.
func (l *authLimiter) allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(ip, now)
	if b == nil || b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(authFailureRefresh))
}

// fail records a failed authentication from ip.
func (l *authLimiter) fail(ip netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(ip, now)
	if b == nil {
		if len(l.buckets) >= maxLimitedIPs {
			clear(l.buckets) // bounded memory under a wide attack
		}
		b = &bucket{tokens: maxAuthFailures, at: now}
		l.buckets[ip] = b
	}
	b.tokens--
}

// clientAddr returns the publisher's address: the first address in the
// configured client-IP header (set by a trusted proxy, such as Fly's
// Fly-Client-IP) when there is one, else the connection's remote address.
func clientAddr(r *http.Request, header string) (ip netip.Addr, text string) {
	if header != "" {
		v := r.Header.Get(header)
		first, _, _ := strings.Cut(v, ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			return a.Unmap(), a.Unmap().String()
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap(), r.RemoteAddr
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	a, _ := netip.ParseAddr(host)
	return a.Unmap(), r.RemoteAddr
}
