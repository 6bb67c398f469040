package keys

import (
	"net/netip"
	"testing"
	"time"
)

// TestFailuresSlowAnIPDownAndForgiveIt: MaxFailures failures are allowed,
// the next attempt is refused with the time until one more, which comes
// FailureRefresh later; other IPs are not affected.
func TestFailuresSlowAnIPDownAndForgiveIt(t *testing.T) {
	f := NewFailures()
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	t0 := time.Unix(1_800_000_000, 0)
	for i := range MaxFailures {
		if ok, _ := f.Allow(ip, t0); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		f.Fail(ip, t0)
	}
	ok, wait := f.Allow(ip, t0)
	if ok || wait != FailureRefresh {
		t.Fatalf("after %d failures: allowed %v, wait %v; want refused for %v", MaxFailures, ok, wait, FailureRefresh)
	}
	if ok, _ := f.Allow(other, t0); !ok {
		t.Fatal("another IP was refused")
	}
	if ok, _ := f.Allow(ip, t0.Add(FailureRefresh/2)); ok {
		t.Fatal("allowed again before a token came back")
	}
	if ok, _ := f.Allow(ip, t0.Add(FailureRefresh)); !ok {
		t.Fatal("refused after a token came back")
	}
	if ok, _ := f.Allow(ip, t0.Add(MaxFailures*FailureRefresh)); !ok || len(f.buckets) != 0 {
		t.Fatalf("a full bucket is not forgotten: %d remembered", len(f.buckets))
	}
}
