package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
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
	if strings.Contains(body, "192.0.2.1") {
		t.Errorf("the list tells the publisher's address: %s", body)
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

// SPS NAL units of a 1920x1080 and a 1280x720 stream (as the hub's tests
// have them).
var (
	sps1080 = []byte{0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58}
	sps720  = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
)

// TestChannelsListTheLayersOfASimulcastPublisher: a live simulcast
// publisher's layers are listed highest first with their rid, resolution
// and bitrate; a publisher without simulcast, or a channel offline, has
// no "layers" at all; nothing of a publisher's address is in the list.
func TestChannelsListTheLayersOfASimulcastPublisher(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	hubs := hub.NewRegistry(hub.Options{Now: clock})
	t.Cleanup(hubs.Close)
	h := Handler(Config{Hubs: hubs, Gatherer: prometheus.NewRegistry()})

	sim, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	// The publisher's order: 1080p, then 720p, then a layer that has sent nothing yet.
	sim.Start(hub.PublisherInfo{Software: "OBS Studio 32.1.0", Remote: "192.0.2.7:5000", VideoCodec: "H264", Layers: []string{"0", "1", "2"}})
	video := func(seq uint16, payload []byte) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 1}, Payload: payload}
	}
	sim.WriteRTP(relaywire.LayerTrack(1), video(1, sps720), now)
	sim.WriteRTP(relaywire.LayerTrack(0), video(1, sps1080), now)
	plain, err := hubs.Claim(78)
	if err != nil {
		t.Fatal(err)
	}
	plain.Start(hub.PublisherInfo{Remote: "192.0.2.8:5000", VideoCodec: "H264"})
	plain.WriteRTP(hub.Video, video(1, sps720), now)
	mu.Lock()
	now = now.Add(time.Second) // the packets' bucket is complete: their rate counts
	mu.Unlock()

	type layer struct {
		Rid     string   `json:"rid"`
		Width   int      `json:"width"`
		Height  int      `json:"height"`
		Bitrate *float64 `json:"bitrate"`
	}
	list := func() (string, map[uint32][]layer, map[uint32]bool) {
		t.Helper()
		resp, body := get(t, h, "/api/channels")
		var got []struct {
			Channel uint32          `json:"channel"`
			Layers  json.RawMessage `json:"layers"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
		}
		layers, listed := map[uint32][]layer{}, map[uint32]bool{}
		for _, c := range got {
			listed[c.Channel] = c.Layers != nil
			if c.Layers == nil {
				continue
			}
			var ls []layer
			if err := json.Unmarshal(c.Layers, &ls); err != nil {
				t.Fatalf("channel %d layers %s: %v", c.Channel, c.Layers, err)
			}
			layers[c.Channel] = ls
		}
		return body, layers, listed
	}

	body, layers, listed := list()
	ls := layers[77]
	if len(ls) != 3 || ls[0].Rid != "0" || ls[0].Width != 1920 || ls[0].Height != 1080 ||
		ls[1].Rid != "1" || ls[1].Width != 1280 || ls[1].Height != 720 || ls[2].Rid != "2" || ls[2].Width != 0 || ls[2].Height != 0 {
		t.Errorf("channel 77's layers: %s\nwant 0 (1920x1080), 1 (1280x720), 2 (no picture yet)", body)
	}
	for _, l := range ls {
		if l.Bitrate == nil {
			t.Errorf("layer %q has no bitrate: %s", l.Rid, body)
		}
	}
	if len(ls) == 3 && (*ls[0].Bitrate <= 0 || *ls[1].Bitrate <= 0 || *ls[2].Bitrate != 0) {
		t.Errorf("bitrates %v, %v, %v: want the two layers that sent packets above 0, the third 0", *ls[0].Bitrate, *ls[1].Bitrate, *ls[2].Bitrate)
	}
	if listed[78] {
		t.Errorf("channel 78 (no simulcast) has layers: %s", body)
	}
	if strings.Contains(body, "192.0.2.") || strings.Contains(body, "remote") {
		t.Errorf("the list tells a publisher's address: %s", body)
	}
	if strings.Count(body, `"layers"`) != 1 {
		t.Errorf("want one \"layers\" field, channel 77's: %s", body)
	}

	// Offline, a channel lists no layers, whatever its last publisher had.
	sim.Release()
	body, _, listed = list()
	if listed[77] || strings.Contains(body, `"layers"`) {
		t.Errorf("offline channel 77 lists layers: %s", body)
	}
}

// TestChannelOfCopiesTheLayers: channelOf takes each layer's rid,
// resolution and bitrate (rounded to whole bits), in the hub's order.
func TestChannelOfCopiesTheLayers(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	st := hub.Stats{Channel: 5, Live: true, Since: now.Add(-time.Minute), Publishes: 1,
		Publisher: hub.PublisherInfo{Software: "x", Remote: "192.0.2.1:1", VideoCodec: "H264", Layers: []string{"l", "h"}},
		Layers:    []hub.LayerStats{{Rid: "h", Width: 1280, Height: 720, Bitrate: 2_500_000.4, FrameRate: 30}, {Rid: "l", Width: 640, Height: 360, Bitrate: 799_999.5}}}
	got, err := json.Marshal(channelOf(st, now).Layers)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[{"rid":"h","width":1280,"height":720,"bitrate":2500000},{"rid":"l","width":640,"height":360,"bitrate":800000}]`; string(got) != want {
		t.Errorf("layers %s, want %s", got, want)
	}
	st.Layers = nil
	if c := channelOf(st, now); c.Layers != nil {
		t.Errorf("no simulcast: layers %+v", c.Layers)
	}
}
