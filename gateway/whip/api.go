package whip

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/pion/dtls/v2"
	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
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
// publishers: webrtcapi.New's (the same codecs, header extensions and
// settings, on the same mux) with the video's sdes:mid,
// sdes:rtp-stream-id and sdes:repaired-rtp-stream-id header extensions
// besides, which pion needs to answer simulcast (it answers with the
// extensions its MediaEngine has) and to tell the layers' packets apart.
// A publisher without simulcast keeps webrtcapi.New's API, so its answer
// stays as it was.
//
// webrtcapi.New builds its MediaEngine inside and pion has no way to add
// to an API's, so this repeats its settings; TestSimulcastAPIAnswersAsTheSharedOne
// compares the two APIs' answers.
func newSimulcastAPI(cfg webrtcapi.Config) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	for _, c := range webrtcapi.PreferH264("") {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("register H264: %w", err)
		}
	}
	for _, c := range webrtcapi.PreferOpus() {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, fmt.Errorf("register opus: %w", err)
		}
	}
	for _, uri := range []string{webrtcapi.PlayoutDelayURI, midURI, ridURI, repairedRidURI} {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("register header extension %s: %w", uri, err)
		}
	}

	// webrtcapi.New's settings of a receiving endpoint.
	se := webrtc.SettingEngine{LoggerFactory: cfg.Loggers}
	se.SetICEUDPMux(cfg.Mux)
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	se.SetDTLSRetransmissionInterval(100 * time.Millisecond)
	se.SetLite(false)
	se.SetICETimeouts(
		orDefault(cfg.ICEDisconnectedTimeout, 5*time.Second),
		orDefault(cfg.ICEFailedTimeout, 10*time.Second),
		orDefault(cfg.ICEKeepalive, 2*time.Second),
	)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	var ips []string
	for _, ip := range cfg.PublicIPs {
		if ip = strings.TrimSpace(ip); ip != "" {
			ips = append(ips, ip)
		}
	}
	if cfg.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetInterfaceFilter(func(name string) bool {
			ifi, err := net.InterfaceByName(name)
			return err == nil && ifi.Flags&net.FlagLoopback != 0
		})
		if len(ips) == 0 {
			ips = []string{"127.0.0.1"}
		}
	}
	if len(ips) > 0 {
		se.SetNAT1To1IPs(ips, webrtc.ICECandidateTypeHost)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&interceptor.Registry{})), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
