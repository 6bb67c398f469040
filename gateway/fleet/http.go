package fleet

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// Handler serves the fleet's HTTP API:
//
//	GET  /api/functions             every function (Info), open to all
//	POST /api/functions/{id}/drain  drain one; needs Authorization: Bearer <admin token>
//
// Without an admin token configured, changes are refused with 403. No
// route sends CORS headers (nor answers a preflight): a page on another
// origin can neither read the list nor drain.
func (f *Fleet) Handler(adminToken string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/functions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(f.Functions())
	})
	mux.HandleFunc("POST /api/functions/{id}/drain", func(w http.ResponseWriter, r *http.Request) {
		if !admin(w, r, adminToken) {
			return
		}
		id := r.PathValue("id")
		err := f.Drain(id, "drained by an operator")
		switch {
		case errors.Is(err, ErrUnknownFunction):
			http.Error(w, "no such function", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return mux
}

// admin reports whether r carries the admin token, answering 403 when no
// token is configured and 401 when r's is missing or wrong.
func admin(w http.ResponseWriter, r *http.Request, token string) bool {
	if token == "" {
		http.Error(w, "changing the fleet needs LS_ADMIN_TOKEN set on the gateway", http.StatusForbidden)
		return false
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	// Hashes of equal length: the comparison tells nothing of the token's
	// length either.
	a, b := sha256.Sum256([]byte(strings.TrimSpace(got))), sha256.Sum256([]byte(token))
	if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="lightspeed admin"`)
		http.Error(w, "missing or wrong admin token", http.StatusUnauthorized)
		return false
	}
	return true
}
