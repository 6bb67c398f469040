package web

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// get sends one request to the handler and returns the recorded response.
func get(t *testing.T, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRoutesAnswerWithStatusTypeAndPolicy(t *testing.T) {
	h := Handler()
	tests := []struct {
		name        string
		method      string
		target      string
		status      int
		contentType string
		cache       string
		bodyHas     []string
	}{
		{"root is the page", "GET", "/", 200, "text/html; charset=utf-8", "no-cache", []string{`src="/static/app.js"`}},
		{"head of root has no body but the same headers", "HEAD", "/", 200, "text/html; charset=utf-8", "no-cache", nil},
		{"watch of a numeric channel is the page", "GET", "/watch/77", 200, "text/html; charset=utf-8", "no-cache", []string{"<video autoplay muted playsinline>"}},
		{"watch with a viewer token is the page", "GET", "/watch/77?token=eyJhbGciOiJIUzI1NiJ9.e30.c2ln", 200, "text/html; charset=utf-8", "no-cache", []string{`src="/static/app.js"`, `data-role="notice-detail"`}},
		{"watch pinned to a layer is the page", "GET", "/watch/77?layer=1", 200, "text/html; charset=utf-8", "no-cache", []string{`data-role="quality"`}},
		{"watch of channel zero is the page", "GET", "/watch/0", 200, "text/html; charset=utf-8", "no-cache", nil},
		{"watch of the largest channel id is the page", "GET", "/watch/4294967295", 200, "text/html; charset=utf-8", "no-cache", nil},
		{"watch of a name is not found", "GET", "/watch/abc", 404, "text/html; charset=utf-8", "no-store", []string{"&#34;abc&#34; is not a channel", "numbers"}},
		{"watch of a negative number is not found", "GET", "/watch/-1", 404, "text/html; charset=utf-8", "no-store", nil},
		{"watch of a channel beyond 32 bits is not found", "GET", "/watch/4294967296", 404, "text/html; charset=utf-8", "no-store", nil},
		{"watch with a trailing slash is not found", "GET", "/watch/77/", 404, "text/html; charset=utf-8", "no-store", nil},
		{"publish is the publish page", "GET", "/publish", 200, "text/html; charset=utf-8", "no-cache", []string{`src="/static/publish.js"`, `type="password"`}},
		{"head of publish has no body but the same headers", "HEAD", "/publish", 200, "text/html; charset=utf-8", "no-cache", nil},
		{"publish with a trailing slash is not found", "GET", "/publish/", 404, "text/html; charset=utf-8", "no-store", []string{"Page not found"}},
		{"below publish is not found", "GET", "/publish/77", 404, "text/html; charset=utf-8", "no-store", []string{"Page not found"}},
		{"post to the publish page is not allowed", "POST", "/publish", 405, "", "", nil},
		{"script is javascript", "GET", "/static/app.js", 200, "text/javascript; charset=utf-8", "no-cache", []string{"import"}},
		{"stylesheet is css", "GET", "/static/style.css", 200, "text/css; charset=utf-8", "no-cache", nil},
		{"icon is svg", "GET", "/static/icon.svg", 200, "image/svg+xml", "no-cache", []string{"<svg"}},
		{"missing static file is not found", "GET", "/static/missing.js", 404, "text/html; charset=utf-8", "no-store", nil},
		{"static directory is not listed", "GET", "/static/", 404, "text/html; charset=utf-8", "no-store", nil},
		{"config is json", "GET", "/config.json", 200, "application/json", "no-store", []string{`"wsUrl"`}},
		{"unknown path is not found", "GET", "/nothing-here", 404, "text/html; charset=utf-8", "no-store", []string{"Page not found"}},
		{"post to the page is not allowed", "POST", "/", 405, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := get(t, h, tt.method, tt.target, nil)
			if res.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d", res.StatusCode, tt.status)
			}
			if got := res.Header.Get("Content-Security-Policy"); got != contentSecurityPolicy {
				t.Errorf("Content-Security-Policy = %q, want %q", got, contentSecurityPolicy)
			}
			if tt.contentType != "" {
				if got := res.Header.Get("Content-Type"); got != tt.contentType {
					t.Errorf("Content-Type = %q, want %q", got, tt.contentType)
				}
			}
			if got := res.Header.Get("Cache-Control"); got != tt.cache && tt.cache != "" {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cache)
			}
			b := body(t, res)
			if tt.method == "HEAD" && b != "" {
				t.Errorf("HEAD body = %d bytes, want none", len(b))
			}
			for _, s := range tt.bodyHas {
				if !strings.Contains(b, s) {
					t.Errorf("body lacks %q", s)
				}
			}
		})
	}
}

func TestPolicyIsStrict(t *testing.T) {
	for _, directive := range []string{
		"default-src 'self'",
		"connect-src 'self' ws: wss:",
		"media-src 'self' blob:",
		"img-src 'self' data:",
	} {
		if !strings.Contains(contentSecurityPolicy, directive+";") && !strings.HasSuffix(contentSecurityPolicy, directive) {
			t.Errorf("policy %q lacks %q", contentSecurityPolicy, directive)
		}
	}
	if strings.Contains(contentSecurityPolicy, "unsafe") {
		t.Errorf("policy %q allows unsafe sources", contentSecurityPolicy)
	}
}

// The policy forbids inline code: the pages must not carry any.
func TestPagesHaveNoInlineScriptOrStyle(t *testing.T) {
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|\sstyle="|\son[a-z]+="`)
	for _, name := range []string{"index.html", "publish.html", "notfound.html"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if loc := inline.FindIndex(b); loc != nil {
			t.Errorf("%s has inline code at byte %d: %q", name, loc[0], b[loc[0]:min(loc[1]+20, len(b))])
		}
	}
}

var (
	attrRef   = regexp.MustCompile(`\s(?:src|href)="([^"]*)"`)
	moduleRef = regexp.MustCompile(`(?m)^\s*(?:import|export)\s[^"'\n;]*\bfrom\s*["']([^"']+)["']`)
)

// Every file a page or a script refers to is served with the content type
// of its kind, so the page never meets a 404 or a type the policy rejects.
func TestEveryReferencedAssetIsServed(t *testing.T) {
	h := Handler()
	checked := map[string]bool{}
	var check func(from, ref string)
	check = func(from, ref string) {
		if strings.Contains(ref, "://") || strings.HasPrefix(ref, "data:") || strings.HasPrefix(ref, "#") {
			return
		}
		target := ref
		if !strings.HasPrefix(ref, "/") {
			target = path.Join(path.Dir(from), ref)
		}
		if target == "/" || strings.HasPrefix(target, "/watch/") || checked[target] {
			return
		}
		checked[target] = true
		res := get(t, h, "GET", target, nil)
		if res.StatusCode != 200 {
			t.Errorf("%s refers to %s: status %d", from, ref, res.StatusCode)
			return
		}
		if want := contentTypes[path.Ext(target)]; res.Header.Get("Content-Type") != want {
			t.Errorf("%s: Content-Type = %q, want %q", target, res.Header.Get("Content-Type"), want)
		}
		if path.Ext(target) == ".js" {
			for _, m := range moduleRef.FindAllStringSubmatch(body(t, res), -1) {
				check(target, m[1])
			}
		}
	}
	for _, page := range []string{"/", "/watch/77", "/watch/abc", "/publish"} {
		res := get(t, h, "GET", page, nil)
		refs := attrRef.FindAllStringSubmatch(body(t, res), -1)
		if len(refs) == 0 {
			t.Errorf("%s refers to nothing; the pattern is broken", page)
		}
		for _, m := range refs {
			check(page, m[1])
		}
	}
	for _, want := range []string{"/static/app.js", "/static/player.js", "/static/whep.js", "/static/style.css", "/static/publish.js", "/static/whip.js", "/static/token.js", "/static/quality.js"} {
		if !checked[want] {
			t.Errorf("%s was never reached from the pages", want)
		}
	}
}

// The stream key is a secret: the publish page's markup keeps it out of
// any form submission (the field has no name, so it is never a form
// value, and it never autocompletes) and out of the page's history, and
// nothing can be submitted before the script has taken over.
func TestPublishPageKeepsTheKeyOutOfSubmissions(t *testing.T) {
	res := get(t, Handler(), "GET", "/publish", nil)
	page := body(t, res)
	field := regexp.MustCompile(`<input[^>]*\bid="key"[^>]*>`).FindString(page)
	if field == "" {
		t.Fatal("the page has no key field (id=\"key\")")
	}
	for _, want := range []string{`type="password"`, `autocomplete="off"`, " disabled"} {
		if !strings.Contains(field, want) {
			t.Errorf("the key field %s lacks %s", field, want)
		}
	}
	if strings.Contains(field, "name=") {
		t.Errorf("the key field %s has a name: a form submission would carry the key", field)
	}
	form := regexp.MustCompile(`<form[^>]*>`).FindString(page)
	if !strings.Contains(form, `method="post"`) || strings.Contains(form, "action=") {
		t.Errorf("the form %s: want method=\"post\" to the page itself, never a GET that puts fields in the URL", form)
	}
	start := regexp.MustCompile(`<button[^>]*\bid="start"[^>]*>`).FindString(page)
	if !strings.Contains(start, " disabled") {
		t.Errorf("the start button %s is enabled before the script runs", start)
	}
}

// The page's script keeps the key in memory: no storage, no console, no
// URL built from it.
func TestPublishScriptsKeepTheKeyInMemory(t *testing.T) {
	for _, name := range []string{"static/publish.js", "static/whip.js"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, banned := range []string{"localStorage", "sessionStorage", "indexedDB", "document.cookie", "console.", "history.", "location.", "searchParams"} {
			if strings.Contains(string(b), banned) {
				t.Errorf("%s uses %s", name, banned)
			}
		}
	}
}

// viewerScripts are the scripts of the viewer page that see its viewer
// token.
var viewerScripts = []string{"static/app.js", "static/token.js", "static/player.js", "static/whep.js"}

func readScript(t *testing.T, name string) string {
	t.Helper()
	b, err := files.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeOf drops the comment lines of a script.
func codeOf(src string) string {
	var code []string
	for _, line := range strings.Split(src, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "//") && !strings.HasPrefix(l, "/*") && !strings.HasPrefix(l, "*") {
			code = append(code, line)
		}
	}
	return strings.Join(code, "\n")
}

// A private channel's viewer token (/watch/77?token=…) is read from the
// query, taken out of the address bar before the page sends anything,
// kept in memory (no storage, no console, no URL) and sent only as the
// WHEP offer's Bearer token. The node tests (testdata/js) run the same
// functions; this checks how the page wires them.
func TestViewerScriptsKeepTheTokenInMemory(t *testing.T) {
	for _, name := range viewerScripts {
		src := codeOf(readScript(t, name))
		for _, banned := range []string{"localStorage", "sessionStorage", "indexedDB", "document.cookie", "caches.", "token=", "pushState"} {
			if strings.Contains(src, banned) {
				t.Errorf("%s uses %s", name, banned)
			}
		}
		for i, line := range strings.Split(src, "\n") {
			if strings.Contains(line, "console.") && strings.Contains(strings.ToLower(line), "token") {
				t.Errorf("%s:%d logs something of the token: %s", name, i+1, strings.TrimSpace(line))
			}
		}
	}

	tok := readScript(t, "static/token.js")
	for _, want := range []string{`const PARAM = "token"`, "hist.replaceState(hist.state, \"\", loc.pathname + search + loc.hash)"} {
		if !strings.Contains(tok, want) {
			t.Errorf("token.js lacks %s", want)
		}
	}
	for _, banned := range []string{"console.", "fetch(", "location.href ="} {
		if strings.Contains(tok, banned) {
			t.Errorf("token.js uses %s", banned)
		}
	}

	// app.js takes the token at load, before the first request, and hands
	// it to the watch page's player only; window.lightspeed does not show it.
	app := readScript(t, "static/app.js")
	take := strings.Index(app, "const token = takeToken();")
	if take < 0 {
		t.Fatal("app.js does not take the token at load (const token = takeToken();)")
	}
	for _, later := range []string{"new ChannelPoller(", "poller.start()", "new Player("} {
		if i := strings.Index(app, later); i < 0 || i < take {
			t.Errorf("app.js: %s comes before the token is taken out of the address", later)
		}
	}
	if !strings.Contains(app, "play(channel, token)") {
		t.Error("app.js: the watch page's player does not get the token")
	}
	api := app[strings.Index(app, "window.lightspeed = {"):]
	api = api[:strings.Index(api, "\n};")]
	if strings.Contains(strings.ToLower(api), "token") {
		t.Errorf("window.lightspeed shows the token:\n%s", api)
	}

	// The player keeps it in a private field and hands it to the WHEP
	// client, which sends it as the Bearer token of the offer only.
	player := readScript(t, "static/player.js")
	for _, want := range []string{"#token;", "token: this.#token", "whep.AuthError"} {
		if !strings.Contains(player, want) {
			t.Errorf("player.js lacks %s", want)
		}
	}
	if n := strings.Count(player, "this.#token"); n > 3 {
		t.Errorf("player.js uses the token in %d places; want the constructor, the offer and the refusal's wording", n)
	}
	whep := readScript(t, "static/whep.js")
	if n := strings.Count(whep, "token"); !strings.Contains(whep, "headers.Authorization = `Bearer ${token}`") || strings.Count(whep, "${token}") != 1 {
		t.Errorf("whep.js: want the token used once, as the Bearer token (%d mentions)", n)
	}
}

// The quality menu of a simulcast channel: a <select> in the player's
// controls, hidden until the channel lists more than one layer; the page
// reads ?layer= from its address and writes the menu's choice back to it
// (no new history entry). Where the WHEP answer links the layer
// extension, a choice is posted there and the session plays on. The node
// tests (testdata/js/quality.test.js, menu.test.js, whep.test.js) run the
// logic; this checks the markup and the wiring.
func TestQualityMenuIsWired(t *testing.T) {
	page := body(t, get(t, Handler(), "GET", "/watch/77", nil))
	menu := regexp.MustCompile(`<select[^>]*\bdata-role="quality"[^>]*>`).FindString(page)
	if menu == "" {
		t.Fatal(`the player's template has no quality menu (<select data-role="quality">)`)
	}
	for _, want := range []string{" hidden", `aria-label="Quality"`} {
		if !strings.Contains(menu, want) {
			t.Errorf("the menu %s lacks %s", menu, want)
		}
	}
	if !strings.Contains(page, `<link rel="modulepreload" href="/static/quality.js">`) {
		t.Error("index.html does not preload quality.js")
	}
	app := codeOf(readScript(t, "static/app.js"))
	for _, want := range []string{
		"let layer = readLayer(location.search);",
		"history.replaceState(history.state, \"\", location.pathname + withLayer(location.search, layer) + location.hash);",
		"layer, onLayerChange: chooseLayer",
	} {
		if !strings.Contains(app, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
	if i, j := strings.Index(app, "takeToken()"), strings.Index(app, "readLayer("); j < i {
		t.Error("app.js reads the layer before the token is out of the address")
	}
	player := codeOf(readScript(t, "static/player.js"))
	for _, want := range []string{
		`quality.addEventListener("change", () => this.setLayer(quality.value));`,
		"return whepURL(this.channel, this.layer);",
		"session = await whep.connect(pc, this.whepURL, {",
		"onLayerURL: (u) => (layerURL = u),",
		"await whep.selectLayer(url, sent);",
		`v.addEventListener("resize", () => {`,
	} {
		if !strings.Contains(player, want) {
			t.Errorf("player.js lacks %s", want)
		}
	}
}

// The watch page's responses tell the browser to send no Referer to other
// origins: the address the page was opened with (token included, until
// the script removes it) stays with the gateway.
func TestWatchPageSendsNoRefererElsewhere(t *testing.T) {
	res := get(t, Handler(), "GET", "/watch/77?token=abc", nil)
	if got := res.Header.Get("Referrer-Policy"); got != "same-origin" && got != "no-referrer" {
		t.Errorf("Referrer-Policy = %q, want same-origin or no-referrer", got)
	}
	if got := res.Header.Get("Cache-Control"); got == "" || strings.Contains(got, "public") {
		t.Errorf("Cache-Control = %q: a shared cache may keep the page under the token's URL", got)
	}
}

func TestEveryEmbeddedFileIsServed(t *testing.T) {
	h := Handler()
	err := fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want, _ := files.ReadFile(name)
		res := get(t, h, "GET", "/"+name, nil)
		if res.StatusCode != 200 {
			t.Errorf("/%s: status %d", name, res.StatusCode)
		} else if got := body(t, res); got != string(want) {
			t.Errorf("/%s: served %d bytes, want the %d embedded", name, len(got), len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStaticFileRevalidatesWithItsETag(t *testing.T) {
	h := Handler()
	first := get(t, h, "GET", "/static/player.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	again := get(t, h, "GET", "/static/player.js", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("status with a matching If-None-Match = %d, want 304", again.StatusCode)
	}
	other := get(t, h, "GET", "/static/style.css", nil).Header.Get("ETag")
	if other == etag {
		t.Errorf("two different files share the ETag %s", etag)
	}
}

func TestConfigPointsAtTheWebsocketOfTheRequestedHost(t *testing.T) {
	tests := []struct {
		name   string
		target string
		host   string
		proto  string
		want   string
	}{
		{"plain http gives ws", "http://example.com/config.json", "", "", "ws://example.com/websocket"},
		{"the port is kept", "http://127.0.0.1:8080/config.json", "", "", "ws://127.0.0.1:8080/websocket"},
		{"tls gives wss", "https://live.example.com/config.json", "", "", "wss://live.example.com/websocket"},
		{"a proxy's https gives wss", "http://app.internal/config.json", "live.example.com", "https", "wss://live.example.com/websocket"},
		{"the first of several proxies counts", "http://x/config.json", "", "https, http", "wss://x/websocket"},
		{"the proxy header is case blind", "http://x/config.json", "", "HTTPS", "wss://x/websocket"},
		{"a proxy's http gives ws", "http://x/config.json", "", "http", "ws://x/websocket"},
		{"an ipv6 host stays bracketed", "http://[::1]:8080/config.json", "", "", "ws://[::1]:8080/websocket"},
	}
	h := Handler()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if tt.host != "" {
				r.Host = tt.host
			}
			if tt.proto != "" {
				r.Header.Set("X-Forwarded-Proto", tt.proto)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var cfg struct {
				WSURL string `json:"wsUrl"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &cfg); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if cfg.WSURL != tt.want {
				t.Errorf("wsUrl = %q, want %q", cfg.WSURL, tt.want)
			}
		})
	}
}

// nodeDir copies the scripts into a temporary ES module package (with the
// JavaScript tests beside them) and returns its path; it skips the test
// when node is not installed.
func nodeDir(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true, so the scripts' tests must run: node is not installed")
		}
		t.Skip("node is not installed")
	}
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "package.json"), []byte(`{"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "static"), mustSub(t, files, "static")); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "testdata"), mustSub(t, os.DirFS("testdata"), "js")); err != nil {
		t.Fatal(err)
	}
	return node, dir
}

func mustSub(t *testing.T, fsys fs.FS, dir string) fs.FS {
	t.Helper()
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func TestScriptsParse(t *testing.T) {
	node, dir := nodeDir(t)
	scripts, _ := filepath.Glob(filepath.Join(dir, "static", "*.js"))
	if len(scripts) == 0 {
		t.Fatal("no scripts")
	}
	for _, s := range scripts {
		out, err := exec.Command(node, "--check", s).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", filepath.Base(s), err, out)
		}
	}
}

// The page's pure logic (formatting, stats, Retry-After, backoff) has its
// own tests in testdata/js, run with node's test runner.
func TestScriptLogic(t *testing.T) {
	node, dir := nodeDir(t)
	tests, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.test.js"))
	if len(tests) == 0 {
		t.Fatal("no script tests")
	}
	cmd := exec.Command(node, append([]string{"--test"}, tests...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("node --test: %v\n%s", err, out)
	}
}
