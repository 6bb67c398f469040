// Package web is the viewer page: the channel list, the player that watches
// a channel over WHEP, and the config.json the original Lightspeed web app
// reads; and the publish page, which sends a browser's camera or screen
// over WHIP. Every file is embedded in the binary; nothing is built with
// Node.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// files holds the pages, the not-found page and the static assets.
//
//go:embed index.html publish.html notfound.html static
var files embed.FS

// contentSecurityPolicy allows only the page's own scripts, styles and
// requests, plus the websocket and the blob: URLs of media streams.
const contentSecurityPolicy = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; " +
	"img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"

// contentTypes maps the extensions of the embedded files to their types;
// the system's MIME tables are not consulted, so every machine answers alike.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".ico":  "image/x-icon",
	".png":  "image/png",
}

// asset is one embedded file ready to serve.
type asset struct {
	name        string
	body        []byte
	etag        string
	contentType string
}

func newAsset(name string) (*asset, error) {
	body, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("web: %s: %w", name, err)
	}
	ct, ok := contentTypes[path.Ext(name)]
	if !ok {
		return nil, fmt.Errorf("web: %s: no content type for this extension", name)
	}
	sum := sha256.Sum256(body)
	return &asset{
		name:        name,
		body:        body,
		etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		contentType: ct,
	}, nil
}

// serve writes the asset. The files are not fingerprinted, so browsers keep
// them but revalidate each use (a cheap 304 thanks to the ETag): a new
// gateway version is picked up on the next load.
func (a *asset) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
}

// site is the set of embedded files, loaded once per Handler.
type site struct {
	index    *asset
	publish  *asset
	static   map[string]*asset // by path under static/
	notFound *template.Template
}

func loadSite() (*site, error) {
	s := &site{static: map[string]*asset{}}
	var err error
	if s.index, err = newAsset("index.html"); err != nil {
		return nil, err
	}
	if s.publish, err = newAsset("publish.html"); err != nil {
		return nil, err
	}
	if s.notFound, err = template.ParseFS(files, "notfound.html"); err != nil {
		return nil, fmt.Errorf("web: notfound.html: %w", err)
	}
	err = fs.WalkDir(files, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		a, err := newAsset(name)
		if err != nil {
			return err
		}
		s.static[strings.TrimPrefix(name, "static/")] = a
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: static: %w", err)
	}
	return s, nil
}

// Handler serves the viewer page: "/" (the channel list; it plays the only
// live channel in place when exactly one is live), "/watch/{channel}" (the
// player), "/publish" (the publish page: a browser's camera or screen to
// the gateway's WHIP ingest), the static assets under "/static/", and
// "/config.json" ({"wsUrl": "ws(s)://<host>/websocket"}, for the original
// Lightspeed web app). Any other path gets the not-found page.
func Handler() http.Handler {
	s, err := loadSite()
	if err != nil {
		// The files are compiled in and checked by the tests: a failure
		// here is a broken build, not a runtime condition.
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index.serve)
	mux.HandleFunc("GET /watch/{channel}", s.serveWatch)
	mux.HandleFunc("GET /publish", s.publish.serve)
	mux.HandleFunc("GET /static/", s.serveStatic)
	mux.HandleFunc("GET /config.json", serveConfig)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		s.serveNotFound(w, "Page not found", "There is nothing at "+r.URL.Path+".")
	})
	return securityHeaders(mux)
}

// securityHeaders sets the headers every response of the page carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// serveWatch serves the player page for a numeric channel id, the same
// page as "/": the script reads the channel from the path, and a private
// channel's viewer token from the query ("?token="), which it takes out
// of the address bar at once and sends only as the WHEP offer's Bearer
// token.
func (s *site) serveWatch(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	if _, err := strconv.ParseUint(name, 10, 32); err != nil {
		s.serveNotFound(w, "No such channel",
			fmt.Sprintf("%q is not a channel: channels are numbers, like /watch/77.", name))
		return
	}
	s.index.serve(w, r)
}

func (s *site) serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := s.static[strings.TrimPrefix(r.URL.Path, "/static/")]
	if !ok {
		s.serveNotFound(w, "Not found", "There is no file at "+r.URL.Path+".")
		return
	}
	a.serve(w, r)
}

// serveNotFound writes the not-found page with a title and a sentence
// saying what was wrong.
func (s *site) serveNotFound(w http.ResponseWriter, title, message string) {
	var buf bytes.Buffer
	if err := s.notFound.Execute(&buf, struct{ Title, Message string }{title, message}); err != nil {
		http.Error(w, "web: not found page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNotFound)
	w.Write(buf.Bytes())
}

// serveConfig tells the original Lightspeed web app where the websocket
// is: on the host the page was loaded from, wss:// when the request came
// over TLS, directly or through a proxy that says so.
func serveConfig(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store") // depends on Host and on the proxy
	json.NewEncoder(w).Encode(struct {
		WSURL string `json:"wsUrl"`
	}{websocketScheme(r) + "://" + r.Host + "/websocket"})
}

// websocketScheme is "wss" when the client reached us over TLS: r.TLS is
// set, or the first X-Forwarded-Proto value is https (Fly's proxy, for
// one, terminates TLS and says so).
func websocketScheme(r *http.Request) string {
	if r.TLS != nil {
		return "wss"
	}
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	switch strings.ToLower(strings.TrimSpace(proto)) {
	case "https", "wss":
		return "wss"
	}
	return "ws"
}
