package fleet

import (
	"net/http/httptest"
	"testing"
)

func TestTheHTTPAPISendsNoCORSAndComparesTheWholeToken(t *testing.T) {
	f, _, c := newTestFleet(t, Config{})
	c.connect("fn1", "ams", 2, 10)
	h := f.Handler("tok")
	for _, tt := range []struct {
		method, path, auth, origin string
		code                       int
	}{
		{"GET", "/api/functions", "", "https://evil.example", 200},
		{"OPTIONS", "/api/functions/fn1/drain", "", "https://evil.example", 405},
		{"POST", "/api/functions/fn1/drain", "Bearer to", "https://evil.example", 401},
		{"POST", "/api/functions/fn1/drain", "Bearer tokk", "", 401},
		{"POST", "/api/functions/fn1/drain", "Bearertok", "", 401},
		{"POST", "/api/functions/fn1/drain", "bearer tok", "https://evil.example", 204},
	} {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		if tt.origin != "" {
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tt.code {
			t.Errorf("%s %s with %q: %d, want %d", tt.method, tt.path, tt.auth, w.Code, tt.code)
		}
		for k := range w.Header() {
			if len(k) > 12 && k[:12] == "Access-Contr" {
				t.Errorf("%s %s: CORS header %s", tt.method, tt.path, k)
			}
		}
	}
}
