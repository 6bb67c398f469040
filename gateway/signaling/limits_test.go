package signaling

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/ratelimit"
)

// testClock is a clock moved by hand.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

// waitFor polls cond, which goroutines of the code under test make true,
// for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polls a condition; nothing to wait on
	}
}

// request serves one request from remote (and Fly-Client-IP flyIP when
// not empty) on h and returns the answer.
func request(h http.Handler, method, path, remote, flyIP string) (*http.Response, string) {
	req := httptest.NewRequest(method, path, strings.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	req.RemoteAddr = remote
	if flyIP != "" {
		req.Header.Set("Fly-Client-IP", flyIP)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestWHEPPostsAndWebsocketOpensAreRateLimitedPerIP(t *testing.T) {
	base, _ := newTestSignaling(t)
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	s := New(Config{
		Hubs:           base.cfg.Hubs,
		Relay:          base.cfg.Relay,
		Picker:         base.cfg.Picker,
		Known:          func(ch uint32) bool { return ch == 77 },
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
		Registerer:     reg,
		ClientIPHeader: "Fly-Client-IP",
		Limits:         Limits{Rate: ratelimit.Config{Rate: 10, Burst: 20, Now: clock.now}},
	})
	h := s.Handler()
	const a = "203.0.113.1:40000"
	// 20 at once pass the limit (and are refused for what they are: the
	// channel is offline).
	for i := range 20 {
		if resp, body := request(h, "POST", "/api/whep/77", a, ""); resp.StatusCode != 404 {
			t.Fatalf("request %d: %d %q", i+1, resp.StatusCode, body)
		}
	}
	check := func(resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(body, "too many requests from your address") {
			t.Fatalf("got %d %v %q; want 429, Retry-After: 1, a plain-text reason", resp.StatusCode, resp.Header, body)
		}
	}
	resp, body := request(h, "POST", "/api/whep/77", a, "")
	check(resp, body)
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Error("a 429 without CORS: a player on another origin cannot read it")
	}
	// The websocket shares the bucket: refused before the upgrade.
	check(request(h, "GET", "/websocket?channel=77", a, ""))
	// Another IP, loopback, and (on Fly) another client behind the same
	// proxy address are not limited.
	for _, c := range []struct{ remote, fly string }{{"203.0.113.2:1", ""}, {"127.0.0.1:1", ""}, {"[::1]:1", ""}, {a, "198.51.100.9"}} {
		if resp, body := request(h, "POST", "/api/whep/77", c.remote, c.fly); resp.StatusCode != 404 {
			t.Errorf("%s (Fly-Client-IP %q): %d %q", c.remote, c.fly, resp.StatusCode, body)
		}
	}
	// Fly-Client-IP names the client: a refused client is refused from
	// any proxy address.
	for range 21 {
		resp, body = request(h, "POST", "/api/whep/77", "10.0.0.1:1", "198.51.100.10")
	}
	check(resp, body)
	check(request(h, "POST", "/api/whep/77", "10.0.0.2:1", "198.51.100.10"))

	// A token back every 100 ms.
	clock.t = clock.t.Add(100 * time.Millisecond)
	if resp, _ := request(h, "POST", "/api/whep/77", a, ""); resp.StatusCode != 404 {
		t.Fatalf("after 100 ms: %d", resp.StatusCode)
	}
	check(request(h, "POST", "/api/whep/77", a, ""))

	if v := testutil.ToFloat64(s.refusedWHEP.Counter(ratelimit.ReasonRate)); v != 4 {
		t.Errorf("whep rate refusals %v, want 4", v)
	}
	if v := testutil.ToFloat64(s.refusedWS.Counter(ratelimit.ReasonRate)); v != 1 {
		t.Errorf("websocket rate refusals %v, want 1", v)
	}
	if n, err := testutil.GatherAndCount(reg, "lightspeed_http_refused_total"); err != nil || n != 9 {
		t.Errorf("%d lightspeed_http_refused_total series (%v), want 9 (5 reasons of whep, 4 of websocket)", n, err)
	}
	// Logged once per episode: a's first, 198.51.100.10's, a's second.
	if n := strings.Count(logs.String(), "over its request rate"); n != 3 {
		t.Errorf("%d refusals logged, want 3:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "40000") {
		t.Error("the client's port is in the log")
	}
}

func TestAFailedStartGivesItsSlotBack(t *testing.T) {
	base, hubs := newTestSignaling(t)
	live, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	live.Start(hub.PublisherInfo{VideoCodec: "H264"})
	cfg := base.cfg
	cfg.Limits = Limits{SessionsPerIP: 1, Sessions: 1}
	s := New(cfg)
	for range 3 { // no function: 503 for that, never for the limits
		resp, body := request(s.Handler(), "POST", "/api/whep/77", "203.0.113.1:1", "")
		if resp.StatusCode != 503 || !strings.Contains(body, "no server can take another viewer") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	if n, ips := s.slots.Open(); n != 0 || ips != 0 {
		t.Fatalf("%d slots of %d IPs held after failed starts", n, ips)
	}
}

// whepFrom posts a pion offer to the stack's channel 78 (public) as the
// client fly (Fly-Client-IP).
func (st *authStack) whepFrom(t *testing.T, fly string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", st.srv.URL+"/api/whep/78", strings.NewReader(pionOffer(t)))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Fly-Client-IP", fly)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// wsFrom opens the websocket of channel 78 as the client fly.
func (st *authStack) wsFrom(t *testing.T, fly string) (*websocket.Conn, *http.Response, string) {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=78"), http.Header{"Fly-Client-IP": {fly}})
	if errors.Is(err, websocket.ErrBadHandshake) {
		body, _ := io.ReadAll(resp.Body)
		return nil, resp, string(body)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, resp, ""
}

func TestViewerSessionsAreBoundedPerIPAndInAll(t *testing.T) {
	st := newAuthStack(t, func(c *Config) {
		c.ClientIPHeader = "Fly-Client-IP"
		c.Limits = Limits{SessionsPerIP: 2, Sessions: 4}
	})
	const a, b, c, d = "203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"
	var aSessions []string
	for range 2 {
		resp, body := st.whepFrom(t, a)
		if resp.StatusCode != 201 {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		aSessions = append(aSessions, resp.Header.Get("Location"))
	}
	perIP := func(resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "5" || !strings.Contains(body, "too many viewer sessions from your address (2 at most)") {
			t.Fatalf("got %d %v %q, want 429 for the IP's sessions", resp.StatusCode, resp.Header, body)
		}
	}
	perIP(st.whepFrom(t, a))
	_, resp, body := st.wsFrom(t, a)
	perIP(resp, body)

	// A page holds a slot from its upgrade.
	page, _, _ := st.wsFrom(t, b)
	if !wsOffered(t, page) {
		t.Fatal("the page got no offer")
	}
	if resp, body := st.whepFrom(t, c); resp.StatusCode != 201 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	full := func(resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" || !strings.Contains(body, "takes no more viewers now (4 at most)") {
			t.Fatalf("got %d %v %q, want 503 for the total", resp.StatusCode, resp.Header, body)
		}
	}
	full(st.whepFrom(t, d))
	_, resp, body = st.wsFrom(t, d)
	full(resp, body)

	// A page that leaves gives its slot back.
	page.Close()
	waitFor(t, "the page's slot", func() bool { n, _ := st.s.slots.Open(); return n == 3 })
	if resp, body := st.whepFrom(t, d); resp.StatusCode != 201 {
		t.Fatalf("after a page left: %d %q", resp.StatusCode, body)
	}
	// A WHEP session that ends gives its slot back.
	req, _ := http.NewRequest("DELETE", st.srv.URL+aSessions[0], nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	waitFor(t, "the WHEP session's slot", func() bool { n, _ := st.s.slots.Open(); return n == 3 })
	if resp, body := st.whepFrom(t, a); resp.StatusCode != 201 {
		t.Fatalf("after a DELETE: %d %q", resp.StatusCode, body)
	}

	for reason, want := range map[string]float64{ratelimit.ReasonIPSessions: 1, ratelimit.ReasonSessions: 1} {
		if v := testutil.ToFloat64(st.s.refusedWHEP.Counter(reason)); v != want {
			t.Errorf("whep %s refusals %v, want %v", reason, v, want)
		}
		if v := testutil.ToFloat64(st.s.refusedWS.Counter(reason)); v != want {
			t.Errorf("websocket %s refusals %v, want %v", reason, v, want)
		}
	}
	logs := st.log.String()
	if n := strings.Count(logs, "reason=ip_sessions"); n != 2 {
		t.Errorf("%d per-IP refusals logged, want 2:\n%s", n, logs)
	}
	if n := strings.Count(logs, "reason=sessions"); n != 2 {
		t.Errorf("%d total refusals logged, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, "ip="+a) {
		t.Errorf("refusals logged without the IP:\n%s", logs)
	}
}

func TestOversizedBodiesAndMessagesAreRefused(t *testing.T) {
	st := newAuthStack(t)
	resp, _ := st.whep(t, "78", "")
	if resp.StatusCode != 201 {
		t.Fatalf("%d", resp.StatusCode)
	}
	// A trickle PATCH larger than maxSDP.
	big := "a=ice-ufrag:x\r\n" + strings.Repeat("a=x\r\n", maxSDP/5)
	req, _ := http.NewRequest("PATCH", st.srv.URL+resp.Header.Get("Location"), strings.NewReader(big))
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	presp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != 413 || !strings.Contains(string(body), "body larger than 65536 bytes") {
		t.Fatalf("PATCH: %d %q", presp.StatusCode, body)
	}
	// A websocket message larger than wsMaxMessage: closed with 1009.
	conn, _, _ := st.wsFrom(t, "")
	msg := `{"event":"candidate","data":"` + strings.Repeat("x", wsMaxMessage) + `"}`
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("closed with %v, want 1009 (message too big)", err)
		}
		break
	}
	waitFor(t, "the refusal counted", func() bool {
		return testutil.ToFloat64(st.s.refusedWS.Counter(ratelimit.ReasonMessageSize)) == 1
	})
	if v := testutil.ToFloat64(st.s.refusedWHEP.Counter(ratelimit.ReasonBodySize)); v != 1 {
		t.Errorf("whep body_size refusals %v, want 1", v)
	}
}

func TestASilentPageIsClosedAtItsReadDeadline(t *testing.T) {
	defer func(d time.Duration) { wsReadTimeout = d }(wsReadTimeout)
	wsReadTimeout = 300 * time.Millisecond
	st := newAuthStack(t)
	conn, _, _ := st.wsFrom(t, "")
	start := time.Now()
	for { // read what comes (info, offer), sending nothing, until closed
		if _, _, err := conn.ReadMessage(); err != nil {
			break
		}
	}
	// The deadline runs from the upgrade, a little before start: closed
	// at once would be something else than the deadline.
	if d := time.Since(start); d < wsReadTimeout/2 || d > wsReadTimeout+5*time.Second {
		t.Fatalf("closed after %v, want about %v", d, wsReadTimeout)
	}
	waitFor(t, "the socket let go", func() bool {
		st.s.mu.Lock()
		defer st.s.mu.Unlock()
		return len(st.s.sockets) == 0 && len(st.s.sessions) == 0
	})
}
