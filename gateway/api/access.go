package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"

	"lightspeed/gateway/ratelimit"
)

// flyPrivate is Fly's private network (6PN): machines of one organization
// reach each other there, Fly's Prometheus scraper included; the internet
// does not.
var flyPrivate = netip.MustParsePrefix("fdaa::/16")

// metricsGuard decides who may read /metrics (see Config.MetricsPrivate).
type metricsGuard struct {
	private bool
	token   string
	header  string
	refused *ratelimit.Refusals
	logs    *ratelimit.Limiter // at most one log line a minute per IP
	log     *slog.Logger
}

// client is the address r comes from: the proxy's client header when
// configured and present (a request through the proxy is judged by who
// sent it to the proxy), else the connection's address. ok is false when
// the header is there but no address.
func (g *metricsGuard) client(r *http.Request) (ip netip.Addr, ok bool) {
	if g.header != "" {
		if v := strings.TrimSpace(r.Header.Get(g.header)); v != "" {
			a, err := netip.ParseAddr(v)
			return a.Unmap(), err == nil
		}
	}
	return ratelimit.ClientIP(r, ""), true
}

// allowed reports whether r may read /metrics, having answered 401 or 403
// (counted, logged) when not.
func (g *metricsGuard) allowed(w http.ResponseWriter, r *http.Request) bool {
	if !g.private {
		return true
	}
	ip, ok := g.client(r)
	if ok && (ip.IsLoopback() || flyPrivate.Contains(ip)) {
		return true
	}
	if g.token != "" && tokenMatches(r, g.token) {
		return true
	}
	reason, code, say := ratelimit.ReasonNoToken, http.StatusUnauthorized, "/metrics needs Authorization: Bearer <LS_ADMIN_TOKEN> from outside the private network\n"
	if g.token == "" {
		reason, code, say = ratelimit.ReasonNotAllowed, http.StatusForbidden, "/metrics is served to the private network and loopback only (set LS_ADMIN_TOKEN to read it from elsewhere with Authorization: Bearer)\n"
	} else {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lightspeed admin"`)
	}
	g.refused.Inc(reason)
	if g.logs.Allow(ip).OK {
		g.log.Info("api: /metrics refused", "ip", ip, "reason", reason, "status", code)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(say))
	return false
}

// tokenMatches reports, in constant time (hashes of equal length), whether
// r carries "Authorization: Bearer <token>".
func tokenMatches(r *http.Request, token string) bool {
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}
