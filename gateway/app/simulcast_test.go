package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/testmedia"
	"lightspeed/shared/testkit/viewer"
	"lightspeed/shared/testkit/whipclient"
)

// TestASimulcastPublisherServesEachViewerOneLayer: a publisher that sends
// three layers as OBS's WHIP output does (rids 0, 1, 2: 720p, 360p and
// 180p, with different bytes) through the real gateway and function: a
// WHEP viewer gets the highest layer, byte for byte; one that pins
// ?layer=2 gets the 180p layer; the first viewer, asked through the WHEP
// layer extension for layer 1, switches to it at a keyframe of that layer,
// which the publisher is asked for, on the same PeerConnection with no
// sequence gap and no timestamp going back; /api/channels lists the
// layers.
func TestASimulcastPublisherServesEachViewerOneLayer(t *testing.T) {
	netns.Exclusive(t)
	g := startGateway(t, stackConfig(t))
	layers, err := testmedia.Layers()
	if err != nil {
		t.Fatal(err)
	}
	_, opus := sourceMedia(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	rids := []string{"0", "1", "2"}
	pub, err := whipclient.Publish(ctx, whipclient.Config{URL: whipURL(g), Token: testKey, Loopback: true, Layers: rids})
	if err != nil {
		t.Fatalf("whip: %v", err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); pub.StreamLayers(streamCtx, layers, opus) }()
	defer func() {
		stop()
		<-done
		if err := pub.Close(); err != nil {
			t.Errorf("whip: %v", err)
		}
	}()
	waitUntil(t, "channel 77 live with three layers of known size", func() bool {
		h := g.Hubs().Get(77)
		if h == nil {
			return false
		}
		st := h.Stats()
		return st.Live && len(st.Layers) == 3 && st.Layers[2].Height != 0
	})
	var heights []int
	for _, l := range g.Hubs().Get(77).Stats().Layers {
		heights = append(heights, l.Height)
	}
	if fmt.Sprint(heights) != fmt.Sprint(testmedia.LayerHeights[:]) {
		t.Errorf("hub layers of heights %v, want %v", heights, testmedia.LayerHeights)
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/api/channels", g.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	var channels []struct {
		ID     uint32 `json:"id"`
		Layers []struct {
			Rid    string `json:"rid"`
			Height int    `json:"height"`
		} `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&channels)
	resp.Body.Close()
	if err != nil || len(channels) != 1 || fmt.Sprint(channels[0].Layers) != "[{0 720} {1 360} {2 180}]" {
		t.Errorf("/api/channels: %+v (%v), want layers 0, 1, 2 of 720, 360 and 180 lines", channels, err)
	}

	watch := func(query string) (*viewer.Viewer, *recorder) {
		t.Helper()
		rec := newRecorder(t)
		v, err := viewer.WHEP(ctx, whepURL(g)+query, viewer.Options{Loopback: true, OnRTP: rec.onRTP, Interceptors: true})
		if err != nil {
			t.Fatalf("whep%s: %v", query, err)
		}
		t.Cleanup(func() { v.Close() })
		return v, rec
	}
	top, topRec := watch("")
	_, low := watch("?layer=2")
	topRec.waitFor(t, 60, 50)
	low.waitFor(t, 60, 50)
	checkLayer(t, "the default viewer", topRec, layers[0])
	checkLayer(t, "the viewer of ?layer=2", low, layers[2])

	// Switch the first viewer to layer 1 through the WHEP layer extension.
	before, _ := pub.LayerKeyframeRequests("1")
	nalsBefore, _ := topRec.counts()
	req, _ := http.NewRequestWithContext(ctx, "POST", top.Location()+"/layer", strings.NewReader(`{"encodingId":"1"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("layer POST: %s, want 204", resp.Status)
	}
	topRec.waitFor(t, nalsBefore+90, 0) // past the next keyframe (one a second) and on
	if plis, firs := pub.LayerKeyframeRequests("1"); plis+firs == before {
		t.Error("the switch did not ask the publisher for a keyframe of layer 1")
	}

	topRec.mu.Lock()
	defer topRec.mu.Unlock()
	got := topRec.nals
	of1 := map[string]bool{} // NAL units of layer 1 only (the PPSs may be alike)
	for _, n := range layers[1] {
		of1[string(n)] = true
	}
	for _, n := range layers[0] {
		delete(of1, string(n))
	}
	at := -1
	for i, n := range got {
		if of1[string(n)] {
			at = i
			break
		}
	}
	switch {
	case at <= 0:
		t.Fatalf("the viewer never got layer 1 after the switch (%d NAL units)", len(got))
	case got[at][0]&0x1f != 7:
		t.Errorf("layer 1 starts with NAL type %d, want an SPS (a keyframe)", got[at][0]&0x1f)
	case !isRunOf(got[:at], layers[0]):
		t.Errorf("the %d NAL units before the switch are not a run of layer 0", at)
	case !isRunOf(got[at:], layers[1]):
		t.Errorf("the %d NAL units after the switch are not a run of layer 1", len(got)-at)
	}
	// The old layer's frame in progress may be cut short by the switch (its
	// keyframe, when the layers' keyframes come together): the receiver
	// drops it and starts with the new layer's keyframe.
	if topRec.gaps != 0 || topRec.videoTSBack != 0 || topRec.cutFrames > 1 {
		t.Errorf("across the switch: %d sequence gaps, %d timestamps going back, %d frames cut short (at most 1)",
			topRec.gaps, topRec.videoTSBack, topRec.cutFrames)
	}
}

// checkLayer checks that what rec received is a run of one layer's NAL
// units, from a keyframe, with continuous sequence numbers.
func checkLayer(t *testing.T, what string, rec *recorder, nals [][]byte) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.nals[0][0]&0x1f != 7 {
		t.Errorf("%s: video starts with NAL type %d, want an SPS", what, rec.nals[0][0]&0x1f)
	}
	if !isRunOf(rec.nals, nals) {
		t.Errorf("%s: the %d NAL units received are not a run of its layer", what, len(rec.nals))
	}
	if rec.gaps != 0 || rec.videoTSBack != 0 || rec.cutFrames != 0 {
		t.Errorf("%s: %d sequence gaps, %d timestamps going back, %d frames cut short", what, rec.gaps, rec.videoTSBack, rec.cutFrames)
	}
}
