package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	functionapp "lightspeed/function/app"
	"lightspeed/gateway/hub"
	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
	"lightspeed/gateway/viewtoken"
)

// countingPicker is the real scheduler, counting the functions picked.
type countingPicker struct {
	*scheduler.Scheduler
	picks atomic.Int32
}

func (p *countingPicker) Pick(region string, exclude ...string) (scheduler.Function, error) {
	p.picks.Add(1)
	return p.Scheduler.Pick(region, exclude...)
}

// syncBuffer is a log destination tests read while handlers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// authStack is signaling over a real relay server with a real function
// joined, channels 77 (private) and 78 (public) live, and viewer tokens
// signed with key.
type authStack struct {
	s      *Signaling
	srv    *httptest.Server
	rs     *relay.Server
	picker *countingPicker
	reg    *prometheus.Registry
	log    *syncBuffer
	key    []byte
}

func newAuthStack(t *testing.T, options ...func(*Config)) *authStack {
	t.Helper()
	hubs := hub.NewRegistry(hub.Options{Logger: quiet})
	t.Cleanup(hubs.Close)
	dir := t.TempDir()
	cert, err := relay.LoadOrCreateCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	rs := relay.NewServer(relay.Config{Addr: "127.0.0.1:0", Secret: "s", Cert: cert, Logger: quiet}, hubs)
	if err := rs.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rs.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	f, err := functionapp.New(functionapp.Config{
		GatewayAddr:      rs.Addr().String(),
		RelaySecret:      "s",
		RelayFingerprint: relay.Fingerprint(cert),
		WebRTCUDPAddr:    "127.0.0.1:0",
		Region:           "ams",
		MachineID:        "ams-test",
		Capacity:         10,
	}, quiet, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithCancel(context.Background())
	fdone := make(chan struct{})
	go func() { defer close(fdone); f.Run(fctx) }()
	t.Cleanup(func() { fcancel(); <-fdone })
	deadline := time.Now().Add(20 * time.Second)
	for len(rs.Functions()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the function did not join the relay")
		}
		time.Sleep(5 * time.Millisecond) // polls a condition; nothing to wait on
	}

	functions := func() []scheduler.Function {
		var out []scheduler.Function
		for _, f := range rs.Functions() {
			out = append(out, scheduler.Function{ID: f.ID, Region: f.Region, Capacity: f.Capacity, Viewers: f.Viewers, Draining: f.Draining})
		}
		return out
	}
	for _, ch := range []uint32{77, 78} {
		h, err := hubs.Claim(ch)
		if err != nil {
			t.Fatal(err)
		}
		h.Start(hub.PublisherInfo{VideoCodec: "H264"})
	}
	key, err := viewtoken.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := &authStack{
		rs:     rs,
		picker: &countingPicker{Scheduler: scheduler.New(functions, "ams")},
		reg:    prometheus.NewRegistry(),
		log:    &syncBuffer{},
		key:    key,
	}
	cfg := Config{
		Hubs:           hubs,
		Relay:          rs,
		Picker:         st.picker,
		Known:          func(ch uint32) bool { return ch == 77 || ch == 78 },
		Private:        func(ch uint32) bool { return ch == 77 },
		TokenKey:       key,
		DefaultChannel: 77,
		SessionTimeout: 10 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(st.log, nil)),
		Registerer:     st.reg,
	}
	for _, o := range options {
		o(&cfg)
	}
	st.s = New(cfg)
	t.Cleanup(st.s.Close)
	st.srv = httptest.NewServer(st.s.Handler())
	t.Cleanup(st.srv.Close)
	return st
}

func (st *authStack) token(t *testing.T, channel uint32, ttl time.Duration, now time.Time) string {
	t.Helper()
	tok, err := viewtoken.Issue(st.key, channel, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// whep posts a browser's offer (see pionOffer) for channel with an Authorization header
// (none when empty).
func (st *authStack) whep(t *testing.T, channel, authorization string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", st.srv.URL+"/api/whep/"+channel, strings.NewReader(pionOffer(t)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// pionOffer is the offer of a pion viewer that receives audio and video,
// candidates gathered, as the function answers it.
func pionOffer(t *testing.T) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return o.SDP
}

// wsURL is the websocket address with query.
func (st *authStack) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(st.srv.URL, "http") + "/websocket?" + query
}

func (st *authStack) failures(reason string) float64 {
	return testutil.ToFloat64(st.s.authFailures.WithLabelValues(reason))
}

// assertNothingStarted checks that no refused viewer cost anything: no
// function picked, no session on the relay or in signaling, no viewer
// counted, no session counted.
func (st *authStack) assertNothingStarted(t *testing.T) {
	t.Helper()
	if n := st.picker.picks.Load(); n != 0 {
		t.Errorf("%d functions picked for refused viewers", n)
	}
	for _, f := range st.rs.Functions() {
		if f.Viewers != 0 || st.picker.Assigned(f.ID) != 0 {
			t.Errorf("function %s has %d viewers, %d assigned", f.ID, f.Viewers, st.picker.Assigned(f.ID))
		}
	}
	if v := st.s.Viewers(77) + st.s.totalViewers(); v != 0 {
		t.Errorf("%d viewers counted", v)
	}
	st.s.mu.Lock()
	n := len(st.s.sessions) + len(st.s.sockets)
	st.s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sessions or sockets held", n)
	}
	for _, proto := range []string{"whep", "websocket"} {
		if c := testutil.ToFloat64(st.s.sessionsStarted.WithLabelValues(proto)); c != 0 {
			t.Errorf("%v %s sessions counted as started", c, proto)
		}
	}
}

// refusals are the requests a private channel refuses, with the token
// each sends (a func: tokens are made per stack), the status, what the
// body says and the metric reason.
func refusals(st *authStack, t *testing.T) []struct {
	name, token string
	status      int
	says        string
	reason      string
} {
	now := time.Now()
	good := st.token(t, 77, time.Hour, now)
	h, rest, _ := strings.Cut(good, ".") // {"alg":"HS256","typ":"JWT"}
	_, sig, _ := strings.Cut(rest, ".")
	other, _ := viewtoken.Issue([]byte("another signing key of 32 bytes."), 77, time.Hour, now)
	return []struct {
		name, token string
		status      int
		says        string
		reason      string
	}{
		{"no token", "", 401, "channel 77 is private: a viewer token is needed", "missing"},
		{"malformed token", "not-a-token", 401, "malformed viewer token", "malformed"},
		{"alg none", "eyJhbGciOiJub25lIn0." + strings.Split(good, ".")[1] + ".", 401, `algorithm "none" is not accepted`, "malformed"},
		{"tampered claims", h + ".eyJjaCI6NzcsImV4cCI6OTk5OTk5OTk5OX0." + sig, 401, "signature does not match", "bad_signature"},
		{"token of another key", other, 401, "signature does not match", "bad_signature"},
		{"expired token", st.token(t, 77, time.Hour, now.Add(-2*time.Hour)), 401, "viewer token expired", "expired"},
		{"token of another channel", st.token(t, 78, time.Hour, now), 403, "viewer token is for another channel (channel 78), not channel 77", "other_channel"},
	}
}

func TestWHEPRefusesViewersOfAPrivateChannelWithoutAGoodToken(t *testing.T) {
	st := newAuthStack(t)
	cases := refusals(st, t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := st.failures(tc.reason)
			auth := ""
			if tc.token != "" {
				auth = "Bearer " + tc.token
			}
			resp, body := st.whep(t, "77", auth)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Fatalf("got %d %q, want %d saying %q", resp.StatusCode, body, tc.status, tc.says)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("headers %v: want WWW-Authenticate: Bearer and CORS", resp.Header)
			}
			if got := st.failures(tc.reason) - before; got != 1 {
				t.Errorf("lightspeed_viewer_auth_failures_total{reason=%q} rose by %v, want 1", tc.reason, got)
			}
			if tc.token != "" && strings.Contains(body, tc.token) {
				t.Error("the answer repeats the token")
			}
		})
	}
	// Other schemes are no token.
	resp, body := st.whep(t, "77", "Basic dXNlcjpwYXNz")
	if resp.StatusCode != 401 || !strings.Contains(body, "a viewer token is needed") {
		t.Errorf("Basic authorization: %d %q", resp.StatusCode, body)
	}
	st.assertNothingStarted(t)
	logs := st.log.String()
	if n := strings.Count(logs, "signaling: viewer refused"); n != len(cases)+1 {
		t.Errorf("%d refusals logged, want %d (one each):\n%s", n, len(cases)+1, logs)
	}
	for _, tc := range cases {
		if len(tc.token) > 12 && strings.Contains(logs, tc.token) {
			t.Errorf("a token is in the log:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "channel=77") || !strings.Contains(logs, "reason=expired") {
		t.Errorf("refusals logged without channel or reason:\n%s", logs)
	}
}

func TestWebsocketRefusesViewersOfAPrivateChannelBeforeTheUpgrade(t *testing.T) {
	st := newAuthStack(t)
	cases := refusals(st, t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := st.failures(tc.reason)
			q := "channel=77"
			if tc.token != "" {
				q += "&token=" + tc.token
			}
			conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL(q), nil)
			if err == nil {
				conn.Close()
				t.Fatal("the websocket was upgraded")
			}
			if resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.says) {
				t.Fatalf("got %d %q, want %d saying %q", resp.StatusCode, body, tc.status, tc.says)
			}
			if tc.reason == "missing" && !strings.Contains(string(body), "?token=") {
				t.Errorf("the answer %q does not say how to send a token", body)
			}
			if got := st.failures(tc.reason) - before; got != 1 {
				t.Errorf("lightspeed_viewer_auth_failures_total{reason=%q} rose by %v, want 1", tc.reason, got)
			}
		})
	}
	st.assertNothingStarted(t)
	logs := st.log.String()
	if n := strings.Count(logs, "signaling: viewer refused"); n != len(cases) {
		t.Errorf("%d refusals logged, want %d:\n%s", n, len(cases), logs)
	}
	for _, tc := range cases {
		if len(tc.token) > 12 && strings.Contains(logs, tc.token) {
			t.Errorf("a token is in the log:\n%s", logs)
		}
	}
	if !strings.Contains(logs, "protocol=websocket") {
		t.Errorf("refusals logged without the protocol:\n%s", logs)
	}
}

// TestValidTokensAndPublicChannelsPlay: a good token opens a session on
// the function (WHEP and websocket); a public channel needs none and
// ignores one sent.
func TestValidTokensAndPublicChannelsPlay(t *testing.T) {
	st := newAuthStack(t)
	good := st.token(t, 77, time.Hour, time.Now())
	for _, tc := range []struct{ name, channel, auth string }{
		{"private channel with its token", "77", "Bearer " + good},
		{"private channel, scheme in lower case", "77", "bearer " + good},
		{"public channel without a token", "78", ""},
		{"public channel with a bad token", "78", "Bearer not-a-token"},
		{"public channel with another channel's token", "78", "Bearer " + good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := st.whep(t, tc.channel, tc.auth)
			if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(body, "v=0") {
				t.Fatalf("got %d %q, want 201 with an answer", resp.StatusCode, body)
			}
		})
	}
	if v := st.s.Viewers(77); v != 2 {
		t.Errorf("channel 77 has %d viewers, want 2", v)
	}
	if v := st.s.Viewers(78); v != 3 {
		t.Errorf("channel 78 has %d viewers, want 3", v)
	}

	for _, q := range []string{"channel=77&token=" + good, "channel=78", "channel=78&token=junk"} {
		conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL(q), nil)
		if err != nil {
			t.Fatalf("websocket %s: %v (%v)", strings.Split(q, "&")[0], err, resp)
		}
		if !wsOffered(t, conn) {
			t.Errorf("websocket %s got no offer", strings.Split(q, "&")[0])
		}
		conn.Close()
	}
	for _, reason := range authReasons {
		if n := st.failures(reason); n != 0 {
			t.Errorf("%v refusals counted as %q", n, reason)
		}
	}
	if strings.Contains(st.log.String(), "viewer refused") || strings.Contains(st.log.String(), good) {
		t.Errorf("log:\n%s", st.log.String())
	}
}

// wsOffered reads the page's messages until the server's offer.
func wsOffered(t *testing.T, conn *websocket.Conn) bool {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			t.Logf("websocket: %v", err)
			return false
		}
		if m.Event == "offer" {
			var d sdpData
			return json.Unmarshal(m.Data, &d) == nil && d.Type == "offer" && strings.HasPrefix(d.SDP, "v=0")
		}
	}
}

// TestAPageWithoutAChannelIsNotSentToAPrivateOne: the only live public
// channel is what a page naming none watches; a private live channel is
// not a candidate.
func TestAPageWithoutAChannelIsNotSentToAPrivateOne(t *testing.T) {
	st := newAuthStack(t) // 77 private and live, 78 public and live
	r := httptest.NewRequest("GET", "/websocket", nil)
	if ch, ok := st.s.wsChannel(r); !ok || ch != 78 {
		t.Fatalf("a page naming no channel watches %d, want 78", ch)
	}
}

func TestPrivateChannelsWithoutASigningKeyRefuseEveryToken(t *testing.T) {
	s, hubs := newTestSignaling(t)
	s.cfg.Private = func(ch uint32) bool { return ch == 77 }
	h, _ := hubs.Claim(77)
	h.Start(hub.PublisherInfo{VideoCodec: "H264"})
	tok, err := viewtoken.Issue([]byte("some key"), 77, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/api/whep/77", strings.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), "no signing key") {
		t.Fatalf("got %d %q", rec.Code, rec.Body.String())
	}
}
