package whip

import (
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/webrtcapi"
)

// Header extensions of a simulcast publisher's video: which media section
// a packet is of, and which layer (rid), or which layer it repairs (RTX).
const (
	midURI         = sdp.SDESMidURI
	ridURI         = sdp.SDESRTPStreamIDURI
	repairedRidURI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
)

// newSimulcastAPI returns the pion API of the sessions of simulcast
// publishers: webrtcapi.New's with the video's sdes:mid,
// sdes:rtp-stream-id and sdes:repaired-rtp-stream-id header extensions
// besides, which pion needs to answer simulcast (it answers with the
// extensions its MediaEngine has) and to tell the layers' packets apart.
// A publisher without simulcast keeps the plain API, so its answer stays
// as it was.
func newSimulcastAPI(cfg webrtcapi.Config) (*webrtc.API, error) {
	cfg.VideoHeaderExtensions = []string{midURI, ridURI, repairedRidURI}
	return webrtcapi.New(cfg)
}
