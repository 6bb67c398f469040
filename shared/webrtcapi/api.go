// Package webrtcapi builds the pion WebRTC API of a Lightspeed media
// endpoint: the function's fan-out, which sends H.264 and Opus to
// browsers, and a receiving endpoint such as a WHIP ingest (to come),
// which would receive them from a publisher. It holds what both share: the codec table (H.264 profiles in
// packetization mode 1, Opus) and the choice of codec per transceiver,
// one UDP port for all ICE traffic with NAT 1:1 addresses, the DTLS and
// SRTP settings, one DTLS certificate for every PeerConnection, and pion's
// logs in slog.
package webrtcapi

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/pion/dtls/v2"
	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v3"
)

// Config configures New. The zero value of a field means its default.
type Config struct {
	// Mux carries every datagram of the API's PeerConnections (ICE, DTLS,
	// SRTP) on one UDP port: webrtc.NewICEUDPMux of the endpoint's socket.
	// Required; its owner closes it.
	Mux ice.UDPMux
	// PublicIPs are advertised as host candidates (NAT 1:1) in place of
	// the interfaces' addresses; empty: the interfaces' addresses.
	PublicIPs []string
	// Loopback adds loopback candidates, gathers on the loopback interface
	// only and advertises 127.0.0.1 when PublicIPs is empty (tests, one
	// machine).
	Loopback bool
	// SendOnly is for an endpoint that sends media and receives none (the
	// fan-out): its SRTP keeps no replay window, since there is no media
	// to check. An endpoint that receives media leaves it false.
	SendOnly bool
	// VideoHeaderExtensions are RTP header extensions (URIs) the API takes
	// for video besides playout-delay: a simulcast receiver's sdes:mid,
	// sdes:rtp-stream-id and sdes:repaired-rtp-stream-id, which pion
	// answers only when its MediaEngine has them.
	VideoHeaderExtensions []string

	ICEDisconnectedTimeout time.Duration // default 5 s
	ICEFailedTimeout       time.Duration // default 10 s
	ICEKeepalive           time.Duration // default 2 s

	// Loggers receives pion's logs.
	Loggers Loggers
}

// dtlsRetransmit is how long pion waits for the peer's answer to a DTLS
// handshake flight before sending the flight again.
const dtlsRetransmit = 100 * time.Millisecond

// New returns a pion API with the endpoint's codecs, the playout-delay
// header extension for video, no interceptors, and the settings of cfg.
//
// No interceptor: each would sit on the write path of every packet, and
// pion's sender-report interceptor also runs a goroutine per
// PeerConnection. The fan-out answers NACKs from its shared caches and
// writes its own sender reports. (A receiver that wants pion's NACK
// generator or receiver reports needs a setting here for them.)
func New(cfg Config) (*webrtc.API, error) {
	if cfg.Mux == nil {
		return nil, fmt.Errorf("webrtcapi: no UDP mux")
	}
	me := &webrtc.MediaEngine{}
	for _, c := range h264Codecs() {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("webrtcapi: register H264: %w", err)
		}
	}
	if err := me.RegisterCodec(opusCodec, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("webrtcapi: register opus: %w", err)
	}
	for _, uri := range append([]string{PlayoutDelayURI}, cfg.VideoHeaderExtensions...) {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, fmt.Errorf("webrtcapi: register header extension %s: %w", uri, err)
		}
	}
	ir := &interceptor.Registry{}

	se := webrtc.SettingEngine{LoggerFactory: cfg.Loggers}
	se.SetICEUDPMux(cfg.Mux)
	// AES-GCM costs a fraction of AES-CM + HMAC-SHA1 per packet; 128-bit
	// keys are the cheaper of the two GCM profiles. AES-CM stays for
	// peers without GCM.
	se.SetSRTPProtectionProfiles(dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
	if cfg.SendOnly {
		se.DisableSRTPReplayProtection(true)
	}
	// pion resends a lost DTLS flight after a fixed interval, 1 s by
	// default, with no backoff: a lost ClientHello or a peer that was not
	// yet reading kept a viewer waiting a whole second for its first
	// frame. Browsers start at 50 ms and back off; 100 ms costs a few
	// repeated handshake datagrams to a peer far away.
	se.SetDTLSRetransmissionInterval(dtlsRetransmit)
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
		se.SetInterfaceFilter(isLoopback)
		if len(ips) == 0 {
			ips = []string{"127.0.0.1"}
		}
	}
	if len(ips) > 0 {
		se.SetNAT1To1IPs(ips, webrtc.ICECandidateTypeHost)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir)), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// isLoopback reports whether the named interface is the loopback ("lo" on
// Linux, "lo0" elsewhere).
func isLoopback(name string) bool {
	ifi, err := net.InterfaceByName(name)
	return err == nil && ifi.Flags&net.FlagLoopback != 0
}
