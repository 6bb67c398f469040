package webrtcapi

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"
)

// waitLimit bounds every wait; it is never an expectation.
const waitLimit = 30 * time.Second

// newTestAPI returns an API on a loopback UDP port of its own, and the
// port.
func newTestAPI(t *testing.T, cfg Config) (*webrtc.API, int) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Loggers = Loggers{Log: slog.New(slog.DiscardHandler), Layer: "test"}
	cfg.Mux = webrtc.NewICEUDPMux(cfg.Loggers.NewLogger("ice"), conn)
	t.Cleanup(func() { cfg.Mux.Close() })
	cfg.Loopback = true
	api, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return api, conn.LocalAddr().(*net.UDPAddr).Port
}

// gathered sets the PeerConnection's local description and returns its
// SDP once ICE gathering completed.
func gathered(t *testing.T, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) string {
	t.Helper()
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("ICE gathering never completed")
	}
	return pc.LocalDescription().SDP
}

func TestOfferNamesTheCodecsAndThePublicAddressOnTheMuxPort(t *testing.T) {
	api, port := newTestAPI(t, Config{SendOnly: true, PublicIPs: []string{" 203.0.113.7 ", ""}})
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	video, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		t.Fatal(err)
	}
	if err := video.SetCodecPreferences(PreferH264("packetization-mode=1;profile-level-id=640028")); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	sdp := gathered(t, pc, offer)

	for _, want := range []string{
		"m=video 9 UDP/TLS/RTP/SAVPF 108 102 104 106", // the stream's profile first
		"a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
		"a=rtcp-fb:108 nack pli",
		"a=rtpmap:111 opus/48000/2",
		PlayoutDelayURI,
		"203.0.113.7 " + strconv.Itoa(port) + " typ host",
	} {
		if !strings.Contains(sdp, want) {
			t.Errorf("offer lacks %q:\n%s", want, sdp)
		}
	}
	for _, l := range strings.Split(sdp, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") && !strings.Contains(l, " 203.0.113.7 ") {
			t.Errorf("candidate %q does not name the public address", l)
		}
	}
}

// TestASenderAndAReceiverConnect connects a sending endpoint (as the
// fan-out) and a receiving one (as a WHIP ingest) made by New: the sender
// offers H.264, the receiver answers, and a packet goes through.
func TestASenderAndAReceiverConnect(t *testing.T) {
	sendAPI, _ := newTestAPI(t, Config{SendOnly: true})
	recvAPI, _ := newTestAPI(t, Config{})
	sender, err := sendAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	receiver, err := recvAPI.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()

	track, err := webrtc.NewTrackLocalStaticRTP(PreferH264("")[0].RTPCodecCapability, "video", "lightspeed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sender.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *rtp.Packet, 1)
	receiver.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if p, _, err := tr.ReadRTP(); err == nil {
			got <- p
		}
	})

	offer, err := sender.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	offerSDP := gathered(t, sender, offer)
	if err := receiver.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP}); err != nil {
		t.Fatal(err)
	}
	answer, err := receiver.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	answerSDP := gathered(t, receiver, answer)
	if err := sender.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answerSDP}); err != nil {
		t.Fatal(err)
	}

	// pion drops writes until the sender's SRTP is ready, and says nothing
	// when it is: the packet is written again until it arrives.
	payload := []byte{0x65, 1, 2, 3}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(waitLimit)
	for seq := uint16(0); ; seq++ {
		if err := track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: 3000, Marker: true}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if !bytes.Equal(p.Payload, payload) {
				t.Fatalf("received payload %x, want %x", p.Payload, payload)
			}
			return
		case <-tick.C:
		case <-timeout:
			t.Fatal("no packet arrived")
		}
	}
}
