package fanout

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"

	fnrelay "lightspeed/function/relay"
	"lightspeed/gateway/hub"
	gwrelay "lightspeed/gateway/relay"
)

// TestViewersPLIReachesThePublisherThroughTheRelay runs the whole path
// with real parts: a pion viewer's PLI reaches the fan-out, which hands it
// to a relay client connected to a gateway's relay server, which asks the
// channel hub's publisher (one that can be asked, as a WHIP publisher).
func TestViewersPLIReachesThePublisherThroughTheRelay(t *testing.T) {
	hubs := hub.NewRegistry(hub.Options{Logger: testLogger()})
	t.Cleanup(hubs.Close)
	pub, err := hubs.Claim(testChannel)
	if err != nil {
		t.Fatal(err)
	}
	pub.Start(hub.PublisherInfo{Software: "test", VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97})
	var asked atomic.Int64
	pub.SetKeyframeRequester(func(hub.Track) { asked.Add(1) })

	cert, err := gwrelay.LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "keyframe test secret"
	srv := gwrelay.NewServer(gwrelay.Config{Addr: "127.0.0.1:0", Secret: secret, Cert: cert, Logger: testLogger()}, hubs)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	client := fnrelay.NewClient(fnrelay.Config{GatewayAddr: srv.Addr().String(), Secret: secret,
		Fingerprint: gwrelay.Fingerprint(cert), MachineID: "fanout-test", Logger: testLogger()})

	f, err := New(Config{UDPAddr: "127.0.0.1:0", Logger: testLogger()}, client)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- client.Run(ctx, f) }()
	t.Cleanup(func() {
		f.Close()
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("relay client: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("relay server: %v", err)
		}
	})

	h := &harness{t: t, f: f, syn: newSynth()}
	p := newPeer(t, viewerAPI(t, false))
	h.connectWHEP(p, "viewer")
	// The channel was subscribed, which may have asked already (no
	// keyframe cached): count from here.
	before := asked.Load()

	// No media flowed, so the viewer knows its video SSRC from the SDP.
	var ssrc uint32
	for _, tr := range p.pc.GetTransceivers() {
		if track := tr.Receiver().Track(); track != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(track.SSRC())
		}
	}
	if ssrc == 0 {
		t.Fatal("no video SSRC in the fan-out's answer")
	}
	if err := p.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the publisher to be asked for a keyframe", func() bool { return asked.Load() == before+1 })
	if s := f.Stats(); s.KeyframesSent != 1 || s.PLIs != 1 {
		t.Errorf("fan-out stats: %d keyframe requests sent, %d PLIs; want 1, 1", s.KeyframesSent, s.PLIs)
	}
	if s := client.Stats(); s.Keyframes != 1 {
		t.Errorf("relay client sent %d keyframe requests, want 1", s.Keyframes)
	}
}
