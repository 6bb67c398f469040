package fanout

import (
	"slices"
	"testing"

	"lightspeed/shared/relaywire"
)

// TestAViewerGetsVideoOfEveryProfile: whatever the H.264 profile of the
// channel's video, a viewer with pion's (and Chrome's) payload type
// numbering gets it: the answer names the codec under the payload type
// the viewer's offer gave it, and the packets carry that one.
func TestAViewerGetsVideoOfEveryProfile(t *testing.T) {
	for _, profile := range []string{"42e01f", "42001f", "4d001f", "640028", "64001f"} {
		t.Run(profile, func(t *testing.T) {
			layers := slices.Clone(testLayers)
			layers[0].fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile
			s := &simulcast{harness: newHarness(t, Config{}), layer: map[relaywire.Track]*synth{}}
			s.up.layers = layers
			for i, l := range layers {
				s.layer[l.track] = newLayerSynth(i)
			}
			p := newPeer(t, viewerAPI(t, true))
			s.connectWHEPLayer(p, "default", "")
			s.gop(4)
			p.waitAll(relaywire.Video, s.sent[topLayer])
			p.checkExactly(relaywire.Video, s.sent[topLayer])
		})
	}
}
