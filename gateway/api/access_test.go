package api

import (
	"bytes"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
)

type scrape struct {
	remote, fly, auth string
	status            int
	says              string
}

func TestMetricsOnFlyAreForThePrivateNetworkLoopbackAndTheAdminToken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		private bool
		token   string
		scrapes []scrape
	}{
		{"off Fly: open", false, "", []scrape{
			{"203.0.113.1:5000", "", "", 200, "lightspeed_http_refused_total"},
			{"203.0.113.1:5000", "198.51.100.1", "", 200, ""},
		}},
		{"on Fly with a token", true, "s3cret-admin", []scrape{
			{"127.0.0.1:5000", "", "", 200, ""},
			{"[::1]:5000", "", "", 200, ""},
			{"[fdaa:0:1234::2]:5000", "", "", 200, ""},                      // Fly's Prometheus over 6PN
			{"[fdaa:0:1234::3]:5000", "203.0.113.1", "", 401, "Bearer"},     // through Fly's proxy: judged by the client
			{"[fdaa:0:1234::3]:5000", "fdaa::1 garbage", "", 401, "Bearer"}, // a header that is no address is no pass
			{"203.0.113.1:5000", "", "", 401, "LS_ADMIN_TOKEN"},
			{"203.0.113.1:5000", "", "Bearer wrong", 401, ""},
			{"203.0.113.1:5000", "", "Basic s3cret-admin", 401, ""},
			{"203.0.113.1:5000", "", "Bearer s3cret-admin", 200, "lightspeed_channel_live"},
			{"[fdaa:0:1234::3]:5000", "203.0.113.1", "bearer s3cret-admin", 200, ""},
			{"[2001:db8::1]:5000", "", "", 401, ""},
		}},
		{"on Fly without a token", true, "", []scrape{
			{"[fdaa:0:1234::2]:5000", "", "", 200, ""},
			{"203.0.113.1:5000", "", "Bearer ", 403, "set LS_ADMIN_TOKEN"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hubs := hub.NewRegistry(hub.Options{})
			t.Cleanup(hubs.Close)
			live, err := hubs.Claim(77)
			if err != nil {
				t.Fatal(err)
			}
			live.Start(hub.PublisherInfo{VideoCodec: "H264"})
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewHubCollector(hubs))
			var logs bytes.Buffer
			h := Handler(Config{
				Hubs:           hubs,
				Gatherer:       reg,
				Registerer:     reg,
				MetricsPrivate: tc.private,
				AdminToken:     tc.token,
				ClientIPHeader: "Fly-Client-IP",
				Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
			})
			refused := 0
			for _, s := range tc.scrapes {
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.RemoteAddr = s.remote
				if s.fly != "" {
					req.Header.Set("Fly-Client-IP", s.fly)
				}
				if s.auth != "" {
					req.Header.Set("Authorization", s.auth)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body, _ := io.ReadAll(rec.Result().Body)
				if rec.Code != s.status || !strings.Contains(string(body), s.says) {
					t.Errorf("%+v: got %d %.200q", s, rec.Code, body)
				}
				if rec.Code != 200 {
					refused++
					if tc.token != "" && strings.Contains(string(body), tc.token) {
						t.Error("the answer repeats the token")
					}
				}
				if rec.Header().Get("Access-Control-Allow-Origin") != "" {
					t.Error("/metrics sends CORS headers")
				}
			}
			if n := refusedMetrics(t, reg); int(n) != refused {
				t.Errorf("%v refusals counted, want %d", n, refused)
			}
			if tc.token != "" && strings.Contains(logs.String(), tc.token) {
				t.Error("the token is in the log")
			}
			if refused > 0 && !strings.Contains(logs.String(), "api: /metrics refused") {
				t.Errorf("refusals not logged:\n%s", logs.String())
			}
		})
	}
}

// refusedMetrics sums lightspeed_http_refused_total{endpoint="metrics"}.
func refusedMetrics(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "lightspeed_http_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == "metrics" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}
