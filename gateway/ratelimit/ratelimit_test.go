package ratelimit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is a test clock moved by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }
func ip(s string) netip.Addr         { return netip.MustParseAddr(s) }
func limiter(c *clock, ips int) *Limiter {
	return New(Config{Rate: 10, Burst: 20, MaxIPs: ips, Now: c.now})
}

func TestBurstThenRate(t *testing.T) {
	c := newClock()
	l := limiter(c, 0)
	a := ip("203.0.113.1")
	for i := range 20 {
		if d := l.Allow(a); !d.OK {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	d := l.Allow(a)
	if d.OK || !d.First || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("21st request: %+v, want refused, first, retry after 100ms", d)
	}
	if d := l.Allow(a); d.OK || d.First {
		t.Fatalf("22nd request: %+v, want refused, not first", d)
	}
	if RetryAfter(d.RetryAfter) != "1" {
		t.Fatalf("Retry-After %q, want 1", RetryAfter(d.RetryAfter))
	}
	// Another IP has its own bucket.
	if d := l.Allow(ip("203.0.113.2")); !d.OK {
		t.Fatal("another IP refused")
	}
	// 10 a second: one token every 100 ms.
	c.add(100 * time.Millisecond)
	if d := l.Allow(a); !d.OK {
		t.Fatal("refused after a token came back")
	}
	if d := l.Allow(a); d.OK || !d.First {
		t.Fatalf("%+v: want refused, first of a new episode", d)
	}
	c.add(time.Hour)
	for i := range 20 {
		if d := l.Allow(a); !d.OK {
			t.Fatalf("after an hour, request %d refused: the bucket holds at most its burst", i+1)
		}
	}
	if d := l.Allow(a); d.OK {
		t.Fatal("the bucket held more than its burst")
	}
}

func TestLoopbackIsExempt(t *testing.T) {
	c := newClock()
	l := limiter(c, 0)
	for _, a := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1"} {
		for range 100 {
			if !l.Allow(ip(a)).OK {
				t.Fatalf("%s refused", a)
			}
		}
	}
	if l.Tracked() != 0 {
		t.Fatalf("%d loopback IPs tracked", l.Tracked())
	}
}

func TestNilLimiterAllowsEverything(t *testing.T) {
	l := New(Config{})
	if l != nil {
		t.Fatal("a zero Config limits")
	}
	for range 1000 {
		if !l.Allow(ip("203.0.113.1")).OK {
			t.Fatal("refused")
		}
	}
}

func TestIPsBeyondTheCapShareOneBucketAndIdleOnesAreEvicted(t *testing.T) {
	c := newClock()
	l := limiter(c, 100)
	for i := range 100 {
		if d := l.Allow(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})); !d.OK || d.Shared {
			t.Fatalf("IP %d: %+v", i, d)
		}
	}
	// A flood of new addresses: all in the shared bucket, memory flat.
	refused := 0
	for i := range 10_000 {
		d := l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if !d.Shared {
			t.Fatalf("IP %d beyond the cap has a bucket of its own", i)
		}
		if !d.OK {
			refused++
		}
	}
	if l.Tracked() != 100 {
		t.Fatalf("%d IPs tracked, cap 100", l.Tracked())
	}
	if refused != 10_000-20 {
		t.Fatalf("%d of the flood refused, want all but the shared burst (%d)", refused, 10_000-20)
	}
	// A tracked IP keeps its own bucket meanwhile.
	if d := l.Allow(ip("198.51.100.7")); !d.OK || d.Shared {
		t.Fatalf("a tracked IP: %+v", d)
	}
	// Once idle for a refill time (burst/rate = 2 s), buckets are evicted
	// and new IPs get their own again.
	c.add(2 * time.Second)
	if d := l.Allow(ip("192.0.2.1")); !d.OK || d.Shared {
		t.Fatalf("after the sweep: %+v", d)
	}
	if l.Tracked() != 1 {
		t.Fatalf("%d IPs tracked after the sweep, want 1", l.Tracked())
	}
}

func TestABucketNotFullAgainSurvivesTheSweep(t *testing.T) {
	c := newClock()
	l := limiter(c, 0)
	b := ip("203.0.113.10")
	c.add(1500 * time.Millisecond)
	for range 20 {
		l.Allow(b)
	}
	c.add(time.Second) // a sweep is due (2 s since the last); b has 10 tokens
	l.Allow(ip("192.0.2.1"))
	if l.Tracked() != 2 {
		t.Fatalf("%d tracked, want b and the new IP", l.Tracked())
	}
	for i := range 10 {
		if !l.Allow(b).OK {
			t.Fatalf("request %d refused: b lost its tokens", i+1)
		}
	}
	if l.Allow(b).OK {
		t.Fatal("b was reset to a full bucket")
	}
	// A clock that goes back adds no tokens.
	c.add(-time.Minute)
	if l.Allow(b).OK {
		t.Fatal("tokens from a clock that went back")
	}
}

func TestSessionsPerIPAndTotal(t *testing.T) {
	s := NewSessions(2, 5)
	a, b := ip("203.0.113.1"), ip("203.0.113.2")
	for range 2 {
		if err := s.Acquire(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Acquire(a); !errors.Is(err, ErrIPFull) {
		t.Fatalf("third session of one IP: %v, want ErrIPFull", err)
	}
	s.Acquire(b)
	s.Acquire(b)
	if err := s.Acquire(ip("::1")); err != nil {
		t.Fatalf("loopback: %v", err)
	}
	if err := s.Acquire(ip("203.0.113.3")); !errors.Is(err, ErrFull) {
		t.Fatalf("sixth session: %v, want ErrFull", err)
	}
	if err := s.Acquire(ip("::1")); !errors.Is(err, ErrFull) {
		t.Fatalf("loopback past the total: %v, want ErrFull", err)
	}
	s.Release(a)
	if err := s.Acquire(a); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	s.Release(a)
	s.Release(a)
	s.Release(b)
	s.Release(b)
	s.Release(ip("::1"))
	if n, ips := s.Open(); n != 0 || ips != 0 {
		t.Fatalf("%d sessions, %d IPs left", n, ips)
	}
	var none *Sessions
	if NewSessions(0, 0) != nil || none.Acquire(a) != nil {
		t.Fatal("no bounds should take everything")
	}
	none.Release(a)
}

func TestClientIP(t *testing.T) {
	for _, tt := range []struct{ remote, header, value, want string }{
		{"203.0.113.1:5000", "", "", "203.0.113.1"},
		{"[2001:db8::1]:5000", "", "", "2001:db8::1"},
		{"[::ffff:203.0.113.1]:5000", "", "", "203.0.113.1"},
		{"203.0.113.1:5000", "Fly-Client-IP", "198.51.100.4", "198.51.100.4"},
		{"203.0.113.1:5000", "Fly-Client-IP", " 198.51.100.4 , 10.0.0.1", "198.51.100.4"},
		{"203.0.113.1:5000", "Fly-Client-IP", "garbage", "203.0.113.1"},
		{"203.0.113.1:5000", "", "198.51.100.4", "203.0.113.1"}, // the header is not trusted unless configured
		{"pipe", "", "", "invalid IP"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.value != "" {
			r.Header.Set("Fly-Client-IP", tt.value)
		}
		if got := ClientIP(r, tt.header).String(); got != tt.want {
			t.Errorf("%s with %s=%q: %s, want %s", tt.remote, tt.header, tt.value, got, tt.want)
		}
	}
}

func TestRefusalsOfEndpointsCoexistInOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewRefusals(reg, "whep", ReasonRate)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRefusals(reg, "whip", ReasonRate, ReasonBodySize)
	if err != nil {
		t.Fatal(err)
	}
	a.Inc(ReasonRate)
	b.Inc(ReasonBodySize)
	b.Inc(ReasonBodySize)
	if _, err := NewRefusals(reg, "whep"); err == nil {
		t.Fatal("an endpoint registered twice")
	}
	n, err := testutil.GatherAndCount(reg, "lightspeed_http_refused_total")
	if err != nil || n != 3 {
		t.Fatalf("%d series, %v; want 3", n, err)
	}
	if v := testutil.ToFloat64(b.Counter(ReasonBodySize)); v != 2 {
		t.Fatalf("whip body_size %v", v)
	}
	var none *Refusals
	none.Inc(ReasonRate)
}

func TestABodyThatDoesNotComeInTimeIsATimeout(t *testing.T) {
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lift := SetBodyDeadline(w, 50*time.Millisecond)
		_, err := io.ReadAll(r.Body)
		lift()
		got <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A head that promises a body, and one byte of it.
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nv")
	if err := <-got; !IsTimeout(err) {
		t.Fatalf("read %v, want a timeout", err)
	}
	if IsTimeout(io.EOF) || IsTimeout(nil) {
		t.Fatal("not timeouts")
	}
	lift := SetBodyDeadline(httptest.NewRecorder(), time.Millisecond) // cannot: does nothing
	lift()
}
