package whip

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/ratelimit"
)

// serve serves one request from remote (and Fly-Client-IP fly when not
// empty) on the server's handler.
func serve(ts *testServer, method, path, remote, fly, token, body string) (*http.Response, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = remote
	req.Header.Set("Content-Type", sdpType)
	if fly != "" {
		req.Header.Set("Fly-Client-IP", fly)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	ts.srv.ServeHTTP(rec, req)
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestPostsAreRateLimitedPerIP(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ts := newTestServer(t, func(c *Config) {
		c.ClientIPHeader = "Fly-Client-IP"
		c.RateLimit = ratelimit.Config{Rate: 10, Burst: 20, Now: func() time.Time { return now }}
	})
	// POSTs to a path that is no channel: refused after the rate limit,
	// before the key is checked (and the auth slow-down counts).
	for range 20 {
		resp, body := serve(ts, "POST", whipPath+"/abc", "203.0.113.1:5000", "", "", "")
		wantStatus(t, resp, body, 404, "no channel")
	}
	resp, body := serve(ts, "POST", whipPath+"/abc", "203.0.113.1:5000", "", "", "")
	wantStatus(t, resp, body, 429, "too many requests from 203.0.113.1")
	if resp.Header.Get("Retry-After") != "1" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("headers %v: want Retry-After: 1, text/plain, CORS", resp.Header)
	}
	// Even the right key waits.
	resp, body = serve(ts, "POST", whipPath, "203.0.113.1:5000", "", testKey, "x")
	wantStatus(t, resp, body, 429, "too many requests")
	// Another IP, loopback and another client behind Fly's proxy pass.
	for _, c := range []struct{ remote, fly string }{{"203.0.113.2:1", ""}, {"127.0.0.1:1", ""}, {"203.0.113.1:5000", "198.51.100.1"}} {
		resp, body := serve(ts, "POST", whipPath+"/abc", c.remote, c.fly, "", "")
		wantStatus(t, resp, body, 404, "no channel")
	}
	now = now.Add(100 * time.Millisecond)
	resp, body = serve(ts, "POST", whipPath+"/abc", "203.0.113.1:5000", "", "", "")
	wantStatus(t, resp, body, 404, "no channel")

	if v := testutil.ToFloat64(ts.srv.metrics.refused.Counter(ratelimit.ReasonRate)); v != 2 {
		t.Errorf("lightspeed_http_refused_total{endpoint=whip,reason=rate} %v, want 2", v)
	}
	if v := testutil.ToFloat64(ts.srv.metrics.results.WithLabelValues("too_many_requests")); v != 2 {
		t.Errorf("lightspeed_whip_sessions_total{result=too_many_requests} %v, want 2", v)
	}
	if n, err := testutil.GatherAndCount(ts.reg, "lightspeed_http_refused_total"); err != nil || n != 3 {
		t.Errorf("%d series (%v), want rate, body_size and body_timeout", n, err)
	}
}

func TestOversizedBodiesAreCounted(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, body := do(t, "POST", ts.url(whipPath), testKey, sdpType, strings.Repeat("a", maxBody+1))
	wantStatus(t, resp, body, 413, "body larger than 65536 bytes")
	if v := testutil.ToFloat64(ts.srv.metrics.refused.Counter(ratelimit.ReasonBodySize)); v != 1 {
		t.Errorf("lightspeed_http_refused_total{endpoint=whip,reason=body_size} %v, want 1", v)
	}
}
