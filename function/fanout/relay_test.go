package fanout

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	fnrelay "lightspeed/function/relay"
	"lightspeed/gateway/hub"
	gwrelay "lightspeed/gateway/relay"
	"lightspeed/shared/relaywire"
)

// throughTheRelay runs a fan-out behind a relay client connected to a
// gateway's relay server, whose channel testChannel has a publisher
// (info, with the tests' codecs) that can be asked for keyframes.
func throughTheRelay(t *testing.T, info hub.PublisherInfo) (*hub.Publisher, *Fanout, *fnrelay.Client) {
	t.Helper()
	hubs := hub.NewRegistry(hub.Options{Logger: testLogger()})
	t.Cleanup(hubs.Close)
	pub, err := hubs.Claim(testChannel)
	if err != nil {
		t.Fatal(err)
	}
	info.Software, info.VideoCodec, info.AudioCodec, info.VideoPayloadType, info.AudioPayloadType = "test", "H264", "OPUS", 96, 97
	pub.Start(info)

	cert, err := gwrelay.LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "fanout test secret"
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
	return pub, f, client
}

// TestViewersPLIReachesThePublisherThroughTheRelay runs the whole path
// with real parts: a pion viewer's PLI reaches the fan-out, which hands it
// to a relay client connected to a gateway's relay server, which asks the
// channel hub's publisher (one that can be asked, as a WHIP publisher).
func TestViewersPLIReachesThePublisherThroughTheRelay(t *testing.T) {
	pub, f, client := throughTheRelay(t, hub.PublisherInfo{})
	var asked atomic.Int64
	pub.SetKeyframeRequester(func(hub.Track) { asked.Add(1) })

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
	// The fan-out's end connected; the viewer's may finish its DTLS
	// handshake a moment later, and writes no RTCP before.
	waitFor(t, "the viewer to be connected", func() bool { return p.pc.ConnectionState() == webrtc.PeerConnectionStateConnected })
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

// The SPS of 1280x720 and 640x360 constrained baseline streams: the
// gateway's hub lists video layers by the resolution their SPS gives,
// highest first.
var (
	sps720 = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
	sps360 = []byte{0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x58, 0xba, 0x80}
)

// TestSimulcastViewersThroughTheRelay runs a simulcast publisher's three
// layers through a gateway's hub and relay server to the fan-out: a
// viewer gets the 720p layer (the gateway lists it first, though it is
// the publisher's last), one pinned to the 360p layer gets that one, each
// its layer's payloads in order, from its keyframe on, and nothing else.
func TestSimulcastViewersThroughTheRelay(t *testing.T) {
	pub, f, _ := throughTheRelay(t, hub.PublisherInfo{Layers: []string{"q", "h", "f"}})
	sps := map[int][]byte{0: sps360, 2: sps720} // "h" has none: listed last
	var (
		seq  [relaywire.MaxLayers]uint16
		ts   [relaywire.MaxLayers]uint32
		sent [relaywire.MaxLayers][][]byte
	)
	write := func(layer int, marker bool, payload []byte) {
		seq[layer]++
		pub.WriteRTP(relaywire.LayerTrack(layer), &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96,
			SequenceNumber: seq[layer], Timestamp: ts[layer], SSRC: uint32(100 + layer), Marker: marker}, Payload: payload}, time.Now())
		sent[layer] = append(sent[layer], payload)
		if marker {
			ts[layer] += 3000
		}
	}
	frames := func(n int) {
		for i := range n {
			for layer := range 3 {
				if i == 0 {
					if s := sps[layer]; s != nil {
						write(layer, false, s)
					}
					write(layer, false, []byte{0x68, 0xce, 0x3c, 0x80})
					write(layer, true, []byte{0x65, 0x88, byte(layer), byte(i)})
					continue
				}
				write(layer, true, []byte{0x41, 0x9a, byte(layer), byte(i)})
			}
		}
	}
	// A GOP before the first viewer: its SPSs order the layers when the
	// fan-out subscribes.
	frames(3)

	h := &harness{t: t, f: f, syn: newSynth()}
	top, low := newPeer(t, viewerAPI(t, true)), newPeer(t, viewerAPI(t, true))
	h.connectWHEP(top, "top")
	h.connectWHEPLayer(low, "low", "q")
	frames(4)
	for _, v := range []struct {
		p     *peer
		layer int
	}{{top, 2}, {low, 0}} {
		want := sent[v.layer]
		var got [][]byte
		waitFor(t, fmt.Sprintf("layer %d's %d packets", v.layer, len(want)), func() bool {
			got = got[:0]
			pkts := v.p.received(relaywire.Video)
			slices.SortFunc(pkts, func(a, b *rtp.Packet) int {
				return int(a.SequenceNumber-pkts[0].SequenceNumber) - int(b.SequenceNumber-pkts[0].SequenceNumber)
			})
			for _, p := range pkts {
				got = append(got, p.Payload)
			}
			return len(got) >= len(want)
		})
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("the viewer of layer %d got %x, want %x", v.layer, got, want)
		}
	}
}
