package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzConfig feeds config.json any Host and X-Forwarded-Proto: the answer
// is always JSON naming a ws:// or wss:// websocket URL.
func FuzzConfig(f *testing.F) {
	f.Add("example.com", "")
	f.Add("127.0.0.1:8080", "https")
	f.Add("[::1]:8080", "http, https")
	f.Add(`evil"host</script>`, "HTTPS ,")
	f.Add("\xff\xfe", "\x00")
	h := Handler()
	f.Fuzz(func(t *testing.T, host, proto string) {
		r := &http.Request{
			Method: "GET",
			URL:    &url.URL{Path: "/config.json"},
			Host:   host,
			Header: http.Header{"X-Forwarded-Proto": {proto}},
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
		var cfg struct {
			WSURL string `json:"wsUrl"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &cfg); err != nil {
			t.Fatalf("body %q is not JSON: %v", w.Body, err)
		}
		if !strings.HasPrefix(cfg.WSURL, "ws://") && !strings.HasPrefix(cfg.WSURL, "wss://") {
			t.Errorf("wsUrl %q is not a websocket URL", cfg.WSURL)
		}
		if !strings.HasSuffix(cfg.WSURL, "/websocket") {
			t.Errorf("wsUrl %q does not end in /websocket", cfg.WSURL)
		}
	})
}

// FuzzWatch feeds the player route any channel name: numbers within 32 bits
// get the page, anything else the not-found page, which never echoes the
// name unescaped.
func FuzzWatch(f *testing.F) {
	f.Add("77")
	f.Add("abc")
	f.Add("<script>alert(1)</script>")
	f.Add("4294967296")
	f.Add("007")
	f.Add("\"><img src=x>")
	h := Handler()
	// Every not-found page has the same markup; only its text changes. A
	// name that adds a tag was not escaped.
	baseline := httptest.NewRecorder()
	h.ServeHTTP(baseline, httptest.NewRequest("GET", "/watch/x", nil))
	tags := strings.Count(baseline.Body.String(), "<")
	f.Fuzz(func(t *testing.T, name string) {
		if name == "" || strings.ContainsAny(name, "/") {
			return // another route's business
		}
		r := &http.Request{
			Method: "GET",
			URL:    &url.URL{Path: "/watch/" + name, RawPath: "/watch/" + url.PathEscape(name)},
			Header: http.Header{},
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Header().Get("Content-Security-Policy") != contentSecurityPolicy {
			t.Errorf("no policy on %q", name)
		}
		_, err := strconv.ParseUint(name, 10, 32)
		switch {
		case w.Code == http.StatusMovedPermanently || w.Code == http.StatusTemporaryRedirect:
			// The mux cleans paths like "/watch/." first.
		case err == nil && w.Code != http.StatusOK:
			t.Errorf("channel %q: status %d, want 200", name, w.Code)
		case err != nil && w.Code != http.StatusNotFound:
			t.Errorf("name %q: status %d, want 404", name, w.Code)
		}
		if w.Code == http.StatusNotFound && strings.Count(w.Body.String(), "<") != tags {
			t.Errorf("not-found page for %q has markup of its own:\n%s", name, w.Body)
		}
	})
}
