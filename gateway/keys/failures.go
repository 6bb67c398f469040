package keys

import (
	"net/netip"
	"sync"
	"time"
)

// Failed stream-key attempts are slowed down per source, for every ingest
// alike: a token bucket of MaxFailures per client IP, one token back every
// FailureRefresh. An IP out of tokens is refused until it has one again.
const (
	MaxFailures    = 5
	FailureRefresh = 12 * time.Second
	// maxFailingIPs bounds the IPs remembered; beyond, all are forgotten
	// (bounded memory under a wide attack).
	maxFailingIPs = 100_000
)

// Failures counts the failed stream-key attempts of each client IP. It is
// safe for concurrent use; the zero value is not: use NewFailures.
type Failures struct {
	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewFailures returns an empty Failures.
func NewFailures() *Failures {
	return &Failures{buckets: make(map[netip.Addr]*bucket)}
}

// refill returns ip's bucket after adding the tokens earned since its last
// use, or nil when it is full again (the IP is forgotten).
func (f *Failures) refill(ip netip.Addr, now time.Time) *bucket {
	b := f.buckets[ip]
	if b == nil {
		return nil
	}
	b.tokens += now.Sub(b.at).Seconds() / FailureRefresh.Seconds()
	b.at = now
	if b.tokens >= MaxFailures {
		delete(f.buckets, ip)
		return nil
	}
	return b
}

// Allow reports whether ip may try a stream key at now, and if not, how
// long until it may.
func (f *Failures) Allow(ip netip.Addr, now time.Time) (bool, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.refill(ip, now)
	if b == nil || b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(FailureRefresh))
}

// Fail records a failed attempt from ip at now.
func (f *Failures) Fail(ip netip.Addr, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.refill(ip, now)
	if b == nil {
		if len(f.buckets) >= maxFailingIPs {
			clear(f.buckets)
		}
		b = &bucket{tokens: MaxFailures, at: now}
		f.buckets[ip] = b
	}
	b.tokens--
}
