// Package ratelimit bounds what one client, known by its IP address, may
// ask of the gateway's HTTP surface: a token bucket of requests per IP
// (Limiter) and a count of concurrent sessions per IP and in total
// (Sessions), both in bounded memory whatever the number of source
// addresses. The limits and the answers the gateway gives are listed in
// docs/limits.md.
//
// Loopback clients are exempt from the per-IP limits (not from the total):
// they are this machine's own tests and benchmarks, or a reverse proxy on
// it whose clients the gateway cannot tell apart. On Fly the client is
// named by the Fly-Client-IP header instead (see ClientIP).
package ratelimit

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of a Config (and what the gateway uses).
const (
	DefaultRate   = 10     // requests a second per IP, sustained
	DefaultBurst  = 20     // requests per IP at once
	DefaultMaxIPs = 10_000 // IPs with a bucket of their own
)

// Config configures a Limiter.
type Config struct {
	// Rate is the requests a second each IP may make, sustained; 0 or
	// less: no limit (New returns nil, which allows everything).
	Rate float64
	// Burst is the requests an IP may make at once; default (0) 2×Rate,
	// at least 1.
	Burst int
	// MaxIPs bounds the IPs with a bucket of their own; default
	// DefaultMaxIPs. Beyond, new IPs share one bucket until idle ones are
	// evicted: a flood from many addresses costs bounded memory, and
	// slows every new client down while it lasts.
	MaxIPs int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Default is the gateway's limit: DefaultRate a second, DefaultBurst at
// once, DefaultMaxIPs tracked.
func Default() Config {
	return Config{Rate: DefaultRate, Burst: DefaultBurst, MaxIPs: DefaultMaxIPs}
}

// Limiter is a token bucket per client IP. A nil *Limiter allows every
// request. Its methods are safe for concurrent use.
type Limiter struct {
	rate   float64
	burst  float64
	maxIPs int
	now    func() time.Time
	idle   time.Duration // a bucket untouched this long is full again

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	shared    bucket // of the IPs beyond maxIPs
	lastSweep time.Time
}

type bucket struct {
	tokens   float64
	at       time.Time
	refusing bool // the last request was refused
}

// refill adds the tokens earned since the bucket's last use.
func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.at); d > 0 { // a clock that went back earns nothing
		b.tokens = math.Min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	}
}

// New returns a Limiter of cfg, or nil (no limit) when cfg.Rate is 0.
func New(cfg Config) *Limiter {
	if cfg.Rate <= 0 {
		return nil
	}
	if cfg.Burst <= 0 {
		cfg.Burst = max(1, int(2*cfg.Rate))
	}
	if cfg.MaxIPs <= 0 {
		cfg.MaxIPs = DefaultMaxIPs
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	now := cfg.Now()
	burst := float64(cfg.Burst)
	return &Limiter{
		rate:      cfg.Rate,
		burst:     burst,
		maxIPs:    cfg.MaxIPs,
		now:       cfg.Now,
		idle:      time.Duration(burst / cfg.Rate * float64(time.Second)),
		buckets:   make(map[netip.Addr]*bucket),
		shared:    bucket{tokens: burst, at: now},
		lastSweep: now,
	}
}

// Decision is a Limiter's answer to one request.
type Decision struct {
	OK bool
	// RetryAfter is, for a refused request, how long until the IP has a
	// token again.
	RetryAfter time.Duration
	// First marks the first refusal since the IP was last allowed: the
	// one to log (a flood of refusals is counted, not logged each).
	First bool
	// Shared: the IP was counted in the bucket shared by the IPs beyond
	// MaxIPs.
	Shared bool
}

// Allow takes a token from ip's bucket, or refuses the request when it
// has none. Loopback addresses are always allowed.
func (l *Limiter) Allow(ip netip.Addr) Decision {
	if l == nil || ip.Unmap().IsLoopback() {
		return Decision{OK: true}
	}
	ip = ip.Unmap()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b, shared := l.buckets[ip], false
	if b == nil {
		if len(l.buckets) >= l.maxIPs {
			b, shared = &l.shared, true
		} else {
			b = &bucket{tokens: l.burst, at: now}
			l.buckets[ip] = b
		}
	}
	b.refill(now, l.rate, l.burst)
	if b.tokens >= 1 {
		b.tokens--
		b.refusing = false
		return Decision{OK: true, Shared: shared}
	}
	first := !b.refusing
	b.refusing = true
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return Decision{RetryAfter: wait, First: first, Shared: shared}
}

// sweep forgets, at most once per refill time, the buckets that are full
// again: a full bucket is what a new IP gets, so nothing is lost. Called
// with mu held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.idle {
		return
	}
	l.lastSweep = now
	for ip, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, ip)
		}
	}
}

// Tracked is the number of IPs with a bucket of their own.
func (l *Limiter) Tracked() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// RetryAfter is d as a Retry-After header's value: whole seconds, rounded
// up, at least 1.
func RetryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// ClientIP is the IP of the client of r: the address in header (set by a
// trusted proxy in front of the gateway, "Fly-Client-IP" on Fly) when
// header is not empty and r carries a valid one, else the connection's
// remote address. IPv4-mapped IPv6 addresses are unmapped. It is the zero
// Addr when neither is an address.
func ClientIP(r *http.Request, header string) netip.Addr {
	if header != "" {
		first, _, _ := strings.Cut(r.Header.Get(header), ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			return a.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
