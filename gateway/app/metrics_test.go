package app

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The embedded function's metrics are on the gateway's /metrics under the
// names a standalone function serves, told apart by function="embedded".
func TestGatewayMetricsIncludeTheEmbeddedFunction(t *testing.T) {
	g := startGateway(t, stackConfig(t))
	resp, err := http.Get("http://" + g.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	for _, want := range []string{
		"\nlightspeed_function_viewers{function=\"embedded\"} 0\n",
		"\nlightspeed_function_sendmmsg_calls_total{function=\"embedded\"} 0\n",
		"\nlightspeed_relay_client_received_total{function=\"embedded\"} ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("gateway /metrics lacks %q", strings.TrimSpace(want))
		}
	}
}
