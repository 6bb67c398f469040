package keys

import (
	"encoding/json"
	"strings"
	"testing"
)

// serviceEntry cuts the services.json entry out of OBSInstructions' text.
func serviceEntry(t *testing.T, text string) map[string]any {
	t.Helper()
	start, end := strings.Index(text, "{"), strings.LastIndex(text, "}")
	if start < 0 || end < start {
		t.Fatalf("no JSON entry in:\n%s", text)
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(text[start:end+1]), &entry); err != nil {
		t.Fatalf("entry is not JSON: %v\n%s", err, text[start:end+1])
	}
	return entry
}

func TestOBSInstructionsShowKeyAndServiceEntry(t *testing.T) {
	k := Key{Channel: 77, Secret: "0123456789abcdef0123456789abcdef01234567"}
	text := OBSInstructions(k, "live.example.com")

	if !strings.Contains(text, "\n    77-0123456789abcdef0123456789abcdef01234567\n") {
		t.Errorf("stream key not on a line of its own:\n%s", text)
	}
	for _, want := range []string{"plugin_config", "rtmp-services", "services.json", "OBS 31", "Show all", "Server: live.example.com"} {
		if !strings.Contains(text, want) {
			t.Errorf("instructions do not mention %q:\n%s", want, text)
		}
	}

	entry := serviceEntry(t, text)
	if entry["name"] != ServiceName || entry["protocol"] != "FTL" || entry["common"] != false {
		t.Errorf("entry name/protocol/common = %v/%v/%v", entry["name"], entry["protocol"], entry["common"])
	}
	servers, _ := entry["servers"].([]any)
	if len(servers) != 1 {
		t.Fatalf("servers = %v, want one", entry["servers"])
	}
	server := servers[0].(map[string]any)
	if server["url"] != "live.example.com" || server["name"] == "" {
		t.Errorf("server = %v, want url live.example.com with a name", server)
	}
	rec := entry["recommended"].(map[string]any)
	want := map[string]any{
		"output":            "ftl_output",
		"max audio bitrate": 160.0,
		"max video bitrate": 8000.0,
		"profile":           "main",
		"bframes":           0.0,
	}
	for field, v := range want {
		if rec[field] != v {
			t.Errorf("recommended[%q] = %v, want %v", field, rec[field], v)
		}
	}
	if ki, _ := rec["keyint"].(float64); ki < 1 || ki > 2 {
		t.Errorf("recommended keyint = %v, want 1 or 2 seconds", rec["keyint"])
	}
}

func TestOBSInstructionsUseABareHost(t *testing.T) {
	tests := []struct{ host, url string }{
		{"live.example.com:8084", "live.example.com"},
		{"203.0.113.7", "203.0.113.7"},
		{"[2001:db8::1]:8084", "2001:db8::1"},
		{"", "your.gateway.host"},
	}
	for _, tt := range tests {
		entry := serviceEntry(t, OBSInstructions(Key{1, "x"}, tt.host))
		url := entry["servers"].([]any)[0].(map[string]any)["url"]
		if url != tt.url {
			t.Errorf("host %q: server url %v, want %q (FTL always uses port 8084)", tt.host, url, tt.url)
		}
	}
}

func TestWHIPInstructionsGiveTheURLAndTheKeyAsBearerToken(t *testing.T) {
	k := Key{Channel: 77, Secret: "abcdefgh"}
	text := WHIPInstructions(k, "https://live.example.com/")
	for _, want := range []string{"Service: \"WHIP\"", "Server:       https://live.example.com/api/whip\n", "Bearer Token: the key above (77-abcdefgh)"} {
		if !strings.Contains(text, want) {
			t.Errorf("instructions lack %q:\n%s", want, text)
		}
	}
}
