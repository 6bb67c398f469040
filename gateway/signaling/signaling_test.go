package signaling

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
	"lightspeed/shared/relaywire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// newTestSignaling is signaling over a real relay server that no function
// has joined.
func newTestSignaling(t *testing.T) (*Signaling, *hub.Registry) {
	t.Helper()
	hubs := hub.NewRegistry(hub.Options{Logger: quiet})
	t.Cleanup(hubs.Close)
	cert, err := relay.LoadOrCreateCert(t.TempDir())
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
	sched := scheduler.New(func() []scheduler.Function { return nil }, "")
	s := New(Config{
		Hubs:           hubs,
		Relay:          rs,
		Picker:         sched,
		Known:          func(ch uint32) bool { return ch == 77 || ch == 78 },
		DefaultChannel: 77,
		SessionTimeout: 5 * time.Second,
		Logger:         quiet,
	})
	return s, hubs
}

// A minimal valid offer, as a browser would send (trimmed).
const offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n" +
	"a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n" +
	"a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n"

// candidateLines returns n SDP candidate lines naming 127.0.0.1 at ports
// from on.
func candidateLines(from, n int) string {
	var b strings.Builder
	for port := from; port < from+n; port++ {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host\r\n", port, port)
	}
	return b.String()
}

func post(t *testing.T, h http.Handler, path, ctype, body string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestWHEPErrors(t *testing.T) {
	s, hubs := newTestSignaling(t)
	h := s.Handler()
	live, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	live.Start(hub.PublisherInfo{VideoCodec: "H264"}) // 77 live, 78 offline
	tests := []struct {
		name, path, ctype, body string
		status                  int
		says                    string
	}{
		{"unknown channel", "/api/whep/99", "application/sdp", offer, 404, "unknown channel"},
		{"not a channel", "/api/whep/abc", "application/sdp", offer, 404, "unknown channel"},
		{"offline channel", "/api/whep/78", "application/sdp", offer, 404, "not live"},
		{"wrong content type", "/api/whep/77", "text/plain", offer, 415, "application/sdp"},
		{"malformed SDP", "/api/whep/77", "application/sdp", "hello", 400, "malformed SDP"},
		{"no media section", "/api/whep/77", "application/sdp", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", 400, "no audio or video"},
		{"no ICE credentials", "/api/whep/77", "application/sdp", strings.Replace(offer, "a=ice-ufrag:abcd\r\n", "", 1), 400, "ICE"},
		{"too large", "/api/whep/77", "application/sdp", offer + strings.Repeat("a=x\r\n", maxSDP/5), 413, "larger"},
		{"too many candidate addresses", "/api/whep/77", "application/sdp", offer + candidateLines(1, relaywire.MaxCandidates+1), 400, "name more than 64 addresses"},
		{"as many candidate addresses as allowed, named twice", "/api/whep/77", "application/sdp", offer + candidateLines(1, relaywire.MaxCandidates) + candidateLines(1, relaywire.MaxCandidates), 503, "try again"},
		{"no function", "/api/whep/77", "application/sdp", offer, 503, "try again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, h, tt.path, tt.ctype, tt.body)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.says) {
				t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, body, tt.status, tt.says)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Error("no CORS header on an error")
			}
			if tt.status == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
}

func TestWHEPPreflightAndUnknownSessions(t *testing.T) {
	s, _ := newTestSignaling(t)
	h := s.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("OPTIONS", "/api/whep/77", nil))
	if rec.Code != 204 || !strings.Contains(rec.Header().Get("Access-Control-Expose-Headers"), "Location") {
		t.Fatalf("preflight: %d %v", rec.Code, rec.Header())
	}
	for _, m := range []string{"DELETE", "PATCH"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(m, "/api/whep/77/nosuchsession", strings.NewReader("a=end-of-candidates\r\n"))
		req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
		h.ServeHTTP(rec, req)
		if rec.Code != 404 {
			t.Errorf("%s unknown session: %d", m, rec.Code)
		}
	}
}

func TestParseSDPFrag(t *testing.T) {
	frag := "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" +
		"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n" +
		"a=end-of-candidates\r\n"
	cands, err := parseSDPFrag(frag)
	if err != nil {
		t.Fatal(err)
	}
	if len(cands) != 2 || !strings.HasPrefix(cands[0].Candidate, "candidate:1387637174") || *cands[0].SDPMid != "0" ||
		*cands[0].UsernameFragment != "EsAw" || *cands[0].SDPMLineIndex != 0 || cands[1].Candidate != "" {
		t.Fatalf("got %+v", cands)
	}
	if _, err := parseSDPFrag("a=ice-ufrag:x\r\n"); err == nil {
		t.Fatal("a fragment without candidates was accepted")
	}
	if _, err := parseSDPFrag(strings.Repeat("a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n", relaywire.MaxTrickle+1)); err == nil {
		t.Fatalf("%d candidates accepted", relaywire.MaxTrickle+1)
	}
	if _, err := parseSDPFrag(strings.Repeat("a=end-of-candidates\r\n", relaywire.MaxTrickle+1)); err == nil {
		t.Fatalf("%d ends of candidates accepted", relaywire.MaxTrickle+1)
	}
	if c, err := parseSDPFrag(strings.Repeat("a=candidate:1 1 udp 1 192.0.2.1 1 typ host\r\n", relaywire.MaxTrickle-1) + "a=end-of-candidates\r\n"); err != nil || len(c) != relaywire.MaxTrickle {
		t.Fatalf("%d candidates and an end: %d, %v", relaywire.MaxTrickle-1, len(c), err)
	}
}

func FuzzParseSDPFrag(f *testing.F) {
	f.Add("a=mid:0\r\na=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\na=end-of-candidates\r\n")
	f.Add("m=audio 9 RTP/AVP 0\r\nm=video 9 RTP/AVP 0\r\na=candidate:x\r\n")
	f.Fuzz(func(t *testing.T, frag string) {
		cands, err := parseSDPFrag(frag)
		if err == nil && (len(cands) == 0 || len(cands) > relaywire.MaxTrickle) {
			t.Fatalf("%d candidates without error", len(cands))
		}
	})
}

func FuzzCheckOffer(f *testing.F) {
	f.Add(offer)
	f.Add("v=0\r\n")
	f.Fuzz(func(t *testing.T, sdp string) {
		checkOffer(sdp) // must not panic
	})
}

// TestSessionCountsTrickledCandidatesAllOrNone checks that a refused batch
// of trickled candidates counts nothing, neither messages nor addresses.
func TestSessionCountsTrickledCandidatesAllOrNone(t *testing.T) {
	var s session
	end := relaywire.Candidate{}
	for range relaywire.MaxTrickle - 1 {
		if !s.addTrickled(end) {
			t.Fatal("an end of candidates refused below the limit")
		}
	}
	if s.addTrickled(end, end) {
		t.Fatalf("%d messages accepted", relaywire.MaxTrickle+1)
	}
	if !s.addTrickled(end) {
		t.Fatal("the last message refused after a refused batch")
	}
	if s.addTrickled(end) {
		t.Fatalf("%d messages accepted", relaywire.MaxTrickle+1)
	}

	var a session
	udp := func(port int) relaywire.Candidate {
		return relaywire.Candidate{Candidate: fmt.Sprintf("candidate:1 1 udp 2130706431 127.0.0.1 %d typ host", port)}
	}
	if !a.addSDP(candidateLines(1, relaywire.MaxCandidates-1)) {
		t.Fatalf("%d addresses in an SDP refused", relaywire.MaxCandidates-1)
	}
	if a.addTrickled(udp(1), udp(1000), udp(1001)) {
		t.Fatalf("%d addresses accepted", relaywire.MaxCandidates+1)
	}
	if !a.addTrickled(udp(1000)) {
		t.Fatal("the last address refused after a refused batch")
	}
	if a.addSDP(candidateLines(2000, 1)) {
		t.Fatalf("an SDP naming address %d accepted", relaywire.MaxCandidates+1)
	}
}
