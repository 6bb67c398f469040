package signaling

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"lightspeed/gateway/viewtoken"
)

// The reasons a viewer of a private channel is refused, as the
// lightspeed_viewer_auth_failures_total metric labels them.
var authReasons = []string{"missing", "malformed", "bad_signature", "expired", "other_channel"}

// private reports whether channel's viewers need a viewer token.
func (s *Signaling) private(channel uint32) bool {
	return s.cfg.Private != nil && s.cfg.Private(channel)
}

// authorize lets a viewer of protocol ("whep" or "websocket") watch
// channel, or refuses it. A public channel lets anyone, whatever token it
// sends; a private one wants a viewer token for it. A refusal is answered
// here (401 for no token or a token that does not hold, 403 for a token of
// another channel), logged once and counted; then authorize reports false
// and the caller stops. The token is never logged.
func (s *Signaling) authorize(w http.ResponseWriter, r *http.Request, protocol string, channel uint32, token string) bool {
	if !s.private(channel) {
		return true
	}
	var err error
	reason := "missing"
	if token != "" {
		if err = viewtoken.Verify(s.cfg.TokenKey, token, channel, time.Now()); err == nil {
			return true
		}
		reason = viewtoken.Reason(err)
	}
	s.authFailures.WithLabelValues(reason).Inc()
	why := "no token"
	if err != nil {
		why = err.Error()
	}
	s.log.Info("signaling: viewer refused", "channel", channel, "protocol", protocol, "reason", reason, "why", why, "remote", r.RemoteAddr)

	h := w.Header()
	switch {
	case err == nil:
		h.Set("WWW-Authenticate", `Bearer realm="lightspeed"`)
		how := "send it as Authorization: Bearer <token>"
		if protocol == "websocket" {
			how = "add it to the address as ?token=<token>"
		}
		httpError(w, http.StatusUnauthorized, "channel %d is private: a viewer token is needed to watch it (%s)", channel, how)
	case reason == "other_channel":
		h.Set("WWW-Authenticate", `Bearer realm="lightspeed", error="insufficient_scope"`)
		httpError(w, http.StatusForbidden, "%s, not channel %d", err, channel)
	default:
		h.Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="lightspeed", error="invalid_token", error_description=%q`, reason))
		httpError(w, http.StatusUnauthorized, "channel %d is private and the viewer token was refused: %s", channel, err)
	}
	return false
}

// bearer returns the token of an "Authorization: Bearer <token>" header,
// or "" when there is none.
func bearer(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
