package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
)

func testHandler(t *testing.T) (http.Handler, *hub.Registry) {
	t.Helper()
	hubs := hub.NewRegistry(hub.Options{})
	t.Cleanup(hubs.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewHubCollector(hubs))
	return Handler(Config{
		Hubs:     hubs,
		Channels: func() []uint32 { return []uint32{78, 77} },
		Viewers:  func(ch uint32) int { return int(ch) - 70 },
		Gatherer: reg,
	}), hubs
}

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Result(), string(b)
}

func TestChannelsListsLiveAndOfflineChannels(t *testing.T) {
	h, hubs := testHandler(t)
	live, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	live.Start(hub.PublisherInfo{Software: "OBS Studio 29.1.3", Remote: "192.0.2.1:5000", VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97})
	live.WriteRTP(hub.Audio, &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 97, SSRC: 77, SequenceNumber: 1}, Payload: []byte{1, 2, 3}}, time.Now())

	resp, body := get(t, h, "/api/channels")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []Channel
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Channel != 77 || got[1].Channel != 78 {
		t.Fatalf("channels %+v, want 77 then 78", got)
	}
	c := got[0]
	if !c.Live || c.Publisher == nil || c.Publisher.Software != "OBS Studio 29.1.3" || c.Video == nil || c.Video.Codec != "H264" || c.PacketsIn != 1 || c.Viewers != 7 {
		t.Fatalf("live channel: %s", body)
	}
	if got[1].Live || got[1].Publisher != nil || got[1].Viewers != 8 {
		t.Fatalf("offline channel: %+v", got[1])
	}
}

func TestMetricsAndHealth(t *testing.T) {
	h, hubs := testHandler(t)
	live, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	live.Start(hub.PublisherInfo{VideoCodec: "H264"})
	resp, body := get(t, h, "/metrics")
	if resp.StatusCode != 200 || !strings.Contains(body, `lightspeed_channel_live{channel="77"} 1`) {
		t.Fatalf("metrics %d:\n%s", resp.StatusCode, body)
	}
	resp, body = get(t, h, "/healthz")
	if resp.StatusCode != 200 || body != "ok\n" {
		t.Fatalf("healthz %d %q", resp.StatusCode, body)
	}
}

func TestChannelsLeavesPrivateChannelsOut(t *testing.T) {
	hubs := hub.NewRegistry(hub.Options{})
	t.Cleanup(hubs.Close)
	h := Handler(Config{
		Hubs:     hubs,
		Channels: func() []uint32 { return []uint32{5, 77, 78, 79} },
		Private:  func(ch uint32) bool { return ch == 77 || ch == 79 },
		Gatherer: prometheus.NewRegistry(),
	})
	for _, ch := range []uint32{77, 78} { // 77 private and live, 78 public and live
		live, err := hubs.Claim(ch)
		if err != nil {
			t.Fatal(err)
		}
		live.Start(hub.PublisherInfo{Software: fmt.Sprintf("software of %d", ch), VideoCodec: "H264"})
	}
	resp, body := get(t, h, "/api/channels")
	var got []Channel
	if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
	}
	if len(got) != 2 || got[0].Channel != 5 || got[1].Channel != 78 || !got[1].Live {
		t.Fatalf("channels %s; want 5 (offline) and 78 (live) alone", body)
	}
	if strings.Contains(body, "software of 77") {
		t.Errorf("the list tells of the private channel's publisher: %s", body)
	}
}
