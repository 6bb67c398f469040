package hub_test

import (
	"slices"
	"testing"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// sps720 is the SPS of a 1280x720 constrained baseline stream.
var sps720 = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}

// simulcast is a publisher with three layers, named as a browser names
// them (lowest first).
var simulcast = func() hub.PublisherInfo {
	info := obs
	info.Layers = []string{"q", "h", "f"}
	return info
}()

// layer returns the track of layer i.
func layer(i int) hub.Track { return relaywire.LayerTrack(i) }

// TestSimulcastLayersAreTracksListedHighestFirst: each layer of a
// simulcast publisher is its own output track, with its own SSRC and
// numbering; Tracks and Stats list the layers by resolution, highest
// first, those without an SPS yet last in the publisher's order.
func TestSimulcastLayersAreTracksListedHighestFirst(t *testing.T) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	t.Cleanup(r.Close)
	pub := claim(t, r, 77, simulcast)
	h := pub.Hub()
	s := subscribe(t, h, hub.SubscribeOptions{})

	pub.WriteRTP(layer(0), pkt(1, 0, false, sps720), clk.t)
	pub.WriteRTP(layer(0), pkt(2, 0, true, nal(5, 40, 1)), clk.t)
	pub.WriteRTP(layer(2), pkt(7, 0, false, spsHigh1080), clk.t)
	pub.WriteRTP(layer(2), pkt(8, 0, true, nal(5, 60, 2)), clk.t)
	pub.WriteRTP(layer(1), pkt(4, 0, true, nal(5, 50, 3)), clk.t)
	pub.WriteRTP(relaywire.LayerTrack(3), pkt(1, 0, true, nal(5, 50, 4)), clk.t) // not announced

	got := drain(t, s)
	for i, want := range []int{2, 1, 2} {
		pkts := onlyTrack(got, layer(i))
		if len(pkts) != want || !pkts[0].Keyframe {
			t.Errorf("layer %d: %d packets out, want %d starting with a keyframe: %+v", i, len(pkts), want, pkts)
		}
	}
	if n := len(onlyTrack(got, relaywire.LayerTrack(3))); n != 0 {
		t.Errorf("a layer the publisher did not announce: %d packets out", n)
	}

	tracks := h.Tracks()
	var rids []string
	ssrcs := map[uint32]bool{}
	for _, ti := range tracks {
		ssrcs[ti.SSRC] = true
		if ti.Track == "video" {
			rids = append(rids, ti.Layer)
			want := map[string]hub.Track{"q": layer(0), "h": layer(1), "f": layer(2)}[ti.Layer]
			if ti.Flow != relaywire.FlowOf(77, want) {
				t.Errorf("layer %q on flow %d, want %d", ti.Layer, ti.Flow, relaywire.FlowOf(77, want))
			}
		}
	}
	if !slices.Equal(rids, []string{"f", "q", "h"}) || tracks[len(tracks)-1].Track != "audio" || len(ssrcs) != 4 {
		t.Errorf("tracks %+v: want layers f (1080p), q (720p), h (no SPS yet), then audio, four SSRCs", tracks)
	}
	if tracks[0].Fmtp != "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640028" {
		t.Errorf("the 1080p layer's fmtp %q", tracks[0].Fmtp)
	}

	st := h.Stats()
	if len(st.Layers) != 3 || st.Layers[0].Rid != "f" || st.Layers[0].Width != 1920 || st.Layers[0].Height != 1080 ||
		st.Layers[1].Rid != "q" || st.Layers[1].Width != 1280 || st.Layers[2].Rid != "h" || st.Layers[2].Width != 0 {
		t.Errorf("stats layers %+v", st.Layers)
	}
	if st.Width != 1920 || st.Height != 1080 {
		t.Errorf("stats %dx%d, want the highest layer's 1920x1080", st.Width, st.Height)
	}
}

// TestTheGOPCacheStartsAtEveryLayersKeyframe: with several layers, a
// subscriber that starts at a keyframe gets what was released since the
// oldest of the layers' newest keyframes, so every layer that had a
// keyframe starts at one; a layer without one in the cache makes the hub
// ask the publisher for it.
func TestTheGOPCacheStartsAtEveryLayersKeyframe(t *testing.T) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	t.Cleanup(r.Close)
	info := obs
	info.Layers = []string{"0", "1"}
	pub := claim(t, r, 77, info)
	var asked []hub.Track
	pub.SetKeyframeRequester(func(tr hub.Track) { asked = append(asked, tr) })
	h := pub.Hub()

	pub.WriteRTP(layer(0), pkt(1, 0, true, nal(5, 30, 1)), clk.t) // keyframe of layer 0
	pub.WriteRTP(layer(1), pkt(1, 0, true, nal(1, 30, 2)), clk.t) // layer 1 has none yet
	subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	if !slices.Equal(asked, []hub.Track{layer(1)}) {
		t.Fatalf("asked for %v, want layer 1's keyframe only", asked)
	}

	pub.WriteRTP(hub.Audio, pkt(1, 0, false, []byte{0xfc, 1}), clk.t)
	pub.WriteRTP(layer(1), pkt(2, 3000, true, nal(5, 30, 3)), clk.t) // K1
	pub.WriteRTP(layer(0), pkt(2, 3000, true, nal(1, 30, 4)), clk.t)
	pub.WriteRTP(hub.Audio, pkt(2, 960, false, []byte{0xfc, 2}), clk.t)
	pub.WriteRTP(layer(0), pkt(3, 6000, true, nal(5, 30, 5)), clk.t) // K0'
	pub.WriteRTP(layer(1), pkt(3, 6000, true, nal(1, 30, 6)), clk.t)

	late := subscribe(t, h, hub.SubscribeOptions{FromKeyframe: true})
	if len(asked) != 1 {
		t.Errorf("asked again (%v) with both layers' keyframes cached", asked)
	}
	cached := drain(t, late)
	type id struct {
		track hub.Track
		seed  byte
	}
	var ids []id
	for _, p := range cached {
		seed := byte(0)
		if p.Track.IsVideo() {
			seed = p.rtp.Payload[2] - 14 // nal's second byte is 7 + seed
		}
		ids = append(ids, id{p.Track, seed})
	}
	want := []id{{layer(1), 3}, {layer(0), 4}, {hub.Audio, 0}, {layer(0), 5}, {layer(1), 6}}
	if !slices.Equal(ids, want) {
		t.Fatalf("cached %v, want from layer 1's keyframe on: %v", ids, want)
	}
	if !cached[0].Keyframe || !cached[3].Keyframe {
		t.Errorf("the layers' keyframes are not marked: %+v", cached)
	}
	if late.First(layer(1)) != cached[0].Seq || late.First(layer(0)) != cached[1].Seq {
		t.Errorf("first sequence numbers %d/%d, want the cache's", late.First(layer(0)), late.First(layer(1)))
	}

	if !h.RequestKeyframe(layer(1)) || asked[len(asked)-1] != layer(1) {
		t.Errorf("RequestKeyframe(layer 1): asked %v", asked)
	}
	if h.RequestKeyframe(layer(2)) || h.RequestKeyframe(hub.Audio) {
		t.Error("RequestKeyframe asked for a layer the publisher does not send, or for audio")
	}
}
