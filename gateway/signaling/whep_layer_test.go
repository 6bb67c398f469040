package signaling

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/relay"
)

// wantLink is the layer Link of the WHEP session at location.
func wantLink(location string) string {
	return "<" + location + `/layer>; rel="urn:ietf:params:whep:ext:core:layer"`
}

// do sends a request to the stack's server with headers (name, value
// pairs) and returns the answer and its body.
func (st *authStack) do(t *testing.T, method, path, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, st.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// postLayer posts body as JSON to the layer URL of the session at
// location.
func (st *authStack) postLayer(t *testing.T, location, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	return st.do(t, "POST", location+"/layer", body, append([]string{"Content-Type", "application/json"}, headers...)...)
}

// whepSession starts a WHEP session on channel 78 and returns its
// location and relay session id.
func (st *authStack) whepSession(t *testing.T) (location, id string) {
	t.Helper()
	resp, body := st.whepQuery(t, "")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %q", resp.StatusCode, body)
	}
	location = resp.Header.Get("Location")
	return location, location[strings.LastIndex(location, "/")+1:]
}

func TestWHEPAnswerLinksTheLayerURL(t *testing.T) {
	st, _ := newLayerStack(t)
	resp, body := st.whepQuery(t, "?layer=1")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(body, "v=0") {
		t.Fatalf("%d %q, want 201 with an answer", resp.StatusCode, body)
	}
	location := resp.Header.Get("Location")
	if !strings.HasPrefix(location, "/api/whep/78/") {
		t.Fatalf("Location %q", location)
	}
	if got := resp.Header.Values("Link"); len(got) != 1 || got[0] != wantLink(location) {
		t.Errorf("Link %q, want [%s]", got, wantLink(location))
	}
	// A browser on another origin may read it.
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !hasToken(resp.Header.Get("Access-Control-Expose-Headers"), "Link") {
		t.Errorf("CORS headers %v: want Link exposed to any origin", resp.Header)
	}

	// A private channel's session has one too.
	good := st.token(t, 77, time.Hour, time.Now())
	resp, _ = st.whep(t, "77", "Bearer "+good)
	if l := resp.Header.Get("Location"); resp.StatusCode != http.StatusCreated || resp.Header.Get("Link") != wantLink(l) {
		t.Errorf("private channel: %d, Link %q", resp.StatusCode, resp.Header.Values("Link"))
	}

	// Link headers set before signaling answers (say, ICE servers by a
	// handler in front of it) stay.
	const ice = `<stun:stun.example.net>; rel="ice-server"`
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Link", ice)
		st.s.Handler().ServeHTTP(w, r)
	})
	req := httptest.NewRequest("POST", "/api/whep/78", strings.NewReader(pionOffer(t)))
	req.Header.Set("Content-Type", "application/sdp")
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	location = rr.Header().Get("Location")
	if got := rr.Header().Values("Link"); rr.Code != http.StatusCreated || len(got) != 2 || got[0] != ice || got[1] != wantLink(location) {
		t.Errorf("%d, Link %q: want the ICE server's and the layer's", rr.Code, got)
	}
	// Refusals have none.
	resp, _ = st.whepQuery(t, "?layer=a%20b")
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Link") != "" {
		t.Errorf("a refused POST: %d, Link %q", resp.StatusCode, resp.Header.Get("Link"))
	}
}

// hasToken reports whether the comma-separated list has tok.
func hasToken(list, tok string) bool {
	for _, v := range strings.Split(list, ",") {
		if strings.EqualFold(strings.TrimSpace(v), tok) {
			return true
		}
	}
	return false
}

func TestWHEPLayerSwitchesTheSession(t *testing.T) {
	st, rec := newLayerStack(t)
	location, id := st.whepSession(t)
	for _, tc := range []struct{ name, ctype, body, layer string }{
		{"a rid", "application/json", `{"encodingId":"1"}`, "1"},
		{"the highest, empty", "application/json", `{"encodingId":""}`, ""},
		{"the highest, an empty object (the draft's automatic selection)", "application/json", `{}`, ""},
		{"the highest, null", "application/json", `{"encodingId":null}`, ""},
		{"every character a rid may have", "application/json", `{"encodingId":"hi_res-2"}`, "hi_res-2"},
		{"a rid the channel lacks: the function serves the highest", "application/json", `{"encodingId":"9"}`, "9"},
		{"the draft's other fields, ignored", "application/json",
			`{"encodingId":"0","spatialLayerId":1,"temporalLayerId":2,"maxSpatialLayerId":2,"maxTemporalLayerId":3}`, "0"},
		{"fields the draft does not name, ignored", "application/json", `{"encodingId":"2","quality":"best"}`, "2"},
		{"the video's m-line index and mid", "application/json", `{"mediaId":"0","encodingId":"1"}`, "1"},
		{"an empty mediaId", "application/json", `{"mediaId":"","encodingId":"0"}`, "0"},
		{"a charset", "application/json; charset=utf-8", `{"encodingId":"2"}`, "2"},
		{"space around", "application/json", " \n{ \"encodingId\" : \"0\" }\n", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.set())
			resp, body := st.do(t, "POST", location+"/layer", tc.body, "Content-Type", tc.ctype)
			if resp.StatusCode != http.StatusNoContent || body != "" {
				t.Fatalf("%d %q, want 204", resp.StatusCode, body)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Error("no CORS header")
			}
			got := rec.set()
			if len(got) != before+1 || got[before] != [2]string{id, tc.layer} {
				t.Errorf("SetLayer calls %q, want one more to %q", got[before:], [2]string{id, tc.layer})
			}
		})
	}
	// The same session goes on: none started, none ended.
	st.s.mu.Lock()
	_, same := st.s.sessions[id]
	n := len(st.s.sessions)
	st.s.mu.Unlock()
	if !same || n != 1 || len(rec.started()) != 1 {
		t.Errorf("session kept %v, %d sessions, %d started; want the one session", same, n, len(rec.started()))
	}
}

// The real relay takes the layer to the function.
func TestWHEPLayerThroughTheRelay(t *testing.T) {
	st := newAuthStack(t)
	location, _ := st.whepSession(t)
	if resp, body := st.postLayer(t, location, `{"encodingId":"0"}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("%d %q, want 204", resp.StatusCode, body)
	}
	// Once the session is over, its layer URL is gone.
	if resp, body := st.do(t, "DELETE", location, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d %q", resp.StatusCode, body)
	}
	if resp, body := st.postLayer(t, location, `{"encodingId":"1"}`); resp.StatusCode != http.StatusNotFound ||
		!(strings.Contains(body, "no such session") || strings.Contains(body, "the session has ended")) {
		t.Fatalf("after DELETE: %d %q, want 404", resp.StatusCode, body)
	}
}

// A private channel's session is switched through its URL, without the
// viewer token: as PATCH and DELETE, the session id is what authorizes it.
func TestWHEPLayerOfAPrivateChannelNeedsOnlyTheSessionURL(t *testing.T) {
	st, rec := newLayerStack(t)
	resp, _ := st.whep(t, "77", "Bearer "+st.token(t, 77, time.Hour, time.Now()))
	location := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP POST: %d", resp.StatusCode)
	}
	if resp, body := st.postLayer(t, location, `{"encodingId":"1"}`); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("%d %q, want 204", resp.StatusCode, body)
	}
	// Another channel's path with the session's id names nothing.
	wrong := strings.Replace(location, "/77/", "/78/", 1)
	if resp, body := st.postLayer(t, wrong, `{"encodingId":"0"}`); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "no such session") {
		t.Errorf("another channel's path: %d %q, want 404", resp.StatusCode, body)
	}
	if got := rec.set(); len(got) != 1 {
		t.Errorf("SetLayer calls %q, want one", got)
	}
}

func TestWHEPLayerErrors(t *testing.T) {
	st, rec := newLayerStack(t)
	location, id := st.whepSession(t)

	// A websocket session's id is no WHEP session.
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=78"), nil)
	if err != nil {
		t.Fatalf("%v (%v)", err, resp)
	}
	defer conn.Close()
	wsNext(t, conn, "offer")
	var wsID string
	st.s.mu.Lock()
	for sid, sess := range st.s.sessions {
		if sess.kind == "websocket" {
			wsID = sid
		}
	}
	st.s.mu.Unlock()

	tooBig := `{"encodingId":"0","pad":"` + strings.Repeat("x", maxLayerBody) + `"}`
	for _, tc := range []struct {
		name, path, ctype, body string
		status                  int
		says                    string
	}{
		{"unknown session", "/api/whep/78/nosuchsession/layer", "application/json", `{"encodingId":"0"}`, 404, "no such session"},
		{"another channel's path", "/api/whep/77/" + id + "/layer", "application/json", `{"encodingId":"0"}`, 404, "no such session"},
		{"not a channel", "/api/whep/x/" + id + "/layer", "application/json", `{"encodingId":"0"}`, 404, "no such session"},
		{"a websocket session", "/api/whep/78/" + wsID + "/layer", "application/json", `{"encodingId":"0"}`, 404, "no such session"},
		{"no content type", location + "/layer", "", `{"encodingId":"0"}`, 415, "want Content-Type application/json"},
		{"plain text", location + "/layer", "text/plain", `{"encodingId":"0"}`, 415, `want Content-Type application/json, got "text/plain"`},
		{"a form", location + "/layer", "application/x-www-form-urlencoded", `encodingId=0`, 415, "application/json"},
		{"over 1 KiB", location + "/layer", "application/json", tooBig, 413, "body larger than 1024 bytes"},
		{"empty", location + "/layer", "application/json", ``, 400, "not a JSON object"},
		{"not JSON", location + "/layer", "application/json", `encodingId=0`, 400, `the body is not a JSON object: send {"encodingId":"<rid>"}, or {} for the highest layer`},
		{"cut short", location + "/layer", "application/json", `{"encodingId":"0"`, 400, "not a JSON object"},
		{"an array", location + "/layer", "application/json", `["0"]`, 400, "not a JSON object"},
		{"a string", location + "/layer", "application/json", `"0"`, 400, "not a JSON object"},
		{"null", location + "/layer", "application/json", `null`, 400, "not a JSON object"},
		{"a number", location + "/layer", "application/json", `{"encodingId":1}`, 400, "encodingId is not a string"},
		{"an object", location + "/layer", "application/json", `{"encodingId":{"rid":"1"}}`, 400, "encodingId is not a string"},
		{"not a rid", location + "/layer", "application/json", `{"encodingId":"a b"}`, 400, `encodingId: layer "a b" is not a rid: a layer is 1 to 16 characters of A-Z, a-z, 0-9, - and _`},
		{"a rid too long", location + "/layer", "application/json", `{"encodingId":"` + strings.Repeat("a", 17) + `"}`, 400, "too long: a layer is a rid of 1 to 16 characters"},
		{"the audio by index", location + "/layer", "application/json", `{"mediaId":"1","encodingId":"0"}`, 400, `mediaId "1" is the audio: layers are the video's`},
		{"no such media", location + "/layer", "application/json", `{"mediaId":"7","encodingId":"0"}`, 400, `mediaId "7" names no media of this session`},
		{"a mediaId not a string", location + "/layer", "application/json", `{"mediaId":0,"encodingId":"0"}`, 400, "mediaId is not a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var headers []string
			if tc.ctype != "" {
				headers = []string{"Content-Type", tc.ctype}
			}
			resp, body := st.do(t, "POST", tc.path, tc.body, headers...)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Fatalf("%d %q, want %d saying %q", resp.StatusCode, body, tc.status, tc.says)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Errorf("headers %v: want CORS and a plain-text body", resp.Header)
			}
		})
	}
	if got := rec.set(); len(got) != 0 {
		t.Errorf("SetLayer calls %q for refused requests", got)
	}
	if v := testutil.ToFloat64(st.s.refusedWHEP.Counter(ratelimit.ReasonBodySize)); v != 1 {
		t.Errorf("whep body_size refusals %v, want 1", v)
	}

	// The relay's refusals: a session that ended meanwhile, and any other
	// failure.
	for _, tc := range []struct {
		err    error
		status int
		says   string
	}{
		{relay.ErrNoSession, 404, "the session has ended"},
		{relay.ErrFunctionGone, 404, "the session has ended"},
		{errors.New("relay: something else"), 502, "the media server did not take the layer: relay: something else"},
	} {
		rec.mu.Lock()
		rec.setErr = tc.err
		rec.mu.Unlock()
		resp, body := st.postLayer(t, location, `{"encodingId":"1"}`)
		if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
			t.Errorf("relay error %v: %d %q, want %d saying %q", tc.err, resp.StatusCode, body, tc.status, tc.says)
		}
	}
	if got := rec.set(); len(got) != 3 {
		t.Errorf("SetLayer calls %q, want 3", got)
	}
}

// The SDP's mids need not be the m-line indexes: mediaId may be either.
func TestCheckVideoMedia(t *testing.T) {
	answer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\n"
	for _, ok := range []string{"", "v", "1"} {
		if why := checkVideoMedia(ok, answer); why != "" {
			t.Errorf("%q refused: %s", ok, why)
		}
	}
	for _, bad := range []struct{ id, says string }{
		{"a", `"a" is the audio`},
		{"0", `"0" is the audio`},
		{"2", "names no media"},
		{strings.Repeat("v", 100), "names no media"},
	} {
		if why := checkVideoMedia(bad.id, answer); !strings.Contains(why, bad.says) || len(why) > 200 {
			t.Errorf("%.30q: %q, want it to say %q", bad.id, why, bad.says)
		}
	}
}

func TestWHEPLayerPreflight(t *testing.T) {
	st, _ := newLayerStack(t)
	location, _ := st.whepSession(t)
	for _, tc := range []struct{ path, accept string }{
		{location + "/layer", "application/json"},
		{"/api/whep/78", "application/sdp"},
	} {
		resp, _ := st.do(t, "OPTIONS", tc.path, "",
			"Origin", "https://player.example", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type")
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
			!hasToken(h.Get("Access-Control-Allow-Methods"), "POST") || !hasToken(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
			t.Errorf("OPTIONS %s: %d %v", tc.path, resp.StatusCode, h)
		}
		if got := h.Get("Accept-Post"); got != tc.accept {
			t.Errorf("OPTIONS %s: Accept-Post %q, want %q", tc.path, got, tc.accept)
		}
	}
}

// Layer POSTs count against the client's WHEP request rate, in the
// bucket WHEP POSTs and websocket opens share.
func TestWHEPLayerIsRateLimited(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	rec := &recordingRelay{}
	st := newAuthStack(t, func(c *Config) {
		rec.Relay = c.Relay
		c.Relay = rec
		c.ClientIPHeader = "Fly-Client-IP"
		c.Limits = Limits{Rate: ratelimit.Config{Rate: 1, Burst: 4, Now: clock.now}}
	})
	const a, b = "203.0.113.1", "203.0.113.2"
	resp, body := st.whepFrom(t, a) // 1 of 4
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %q", resp.StatusCode, body)
	}
	location := resp.Header.Get("Location")
	for i := range 3 { // 2, 3, 4
		if resp, body := st.postLayer(t, location, `{"encodingId":"0"}`, "Fly-Client-IP", a); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("layer POST %d: %d %q", i+1, resp.StatusCode, body)
		}
	}
	check := func(what string, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
			resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(body, "too many requests from your address") {
			t.Errorf("%s: %d %v %q; want 429, Retry-After: 1, CORS, a plain-text reason", what, resp.StatusCode, resp.Header, body)
		}
	}
	resp, body = st.postLayer(t, location, `{"encodingId":"1"}`, "Fly-Client-IP", a)
	check("the fifth layer POST", resp, body)
	// Refused before anything is read: an unknown session, or a bad body,
	// is refused for the rate too.
	resp, body = st.postLayer(t, "/api/whep/78/nosuchsession", `junk`, "Fly-Client-IP", a)
	check("a layer POST to no session", resp, body)
	// The bucket is the WHEP POST's.
	resp, body = st.whepFrom(t, a)
	check("a WHEP POST", resp, body)
	// Another client is not limited by a's requests, on a's session too.
	if resp, body := st.postLayer(t, location, `{"encodingId":"1"}`, "Fly-Client-IP", b); resp.StatusCode != http.StatusNoContent {
		t.Errorf("another IP: %d %q", resp.StatusCode, body)
	}
	// A token back after a second.
	clock.t = clock.t.Add(time.Second)
	if resp, body := st.postLayer(t, location, `{"encodingId":"2"}`, "Fly-Client-IP", a); resp.StatusCode != http.StatusNoContent {
		t.Errorf("after a second: %d %q", resp.StatusCode, body)
	}
	if got := rec.set(); len(got) != 5 {
		t.Errorf("SetLayer calls %q, want 5 (3 + b's + the one after a second)", got)
	}
	if v := testutil.ToFloat64(st.s.refusedWHEP.Counter(ratelimit.ReasonRate)); v != 3 {
		t.Errorf("whep rate refusals %v, want 3", v)
	}
}
