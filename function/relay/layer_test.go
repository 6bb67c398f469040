package relay

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"lightspeed/gateway/hub"
	gwrelay "lightspeed/gateway/relay"
	"lightspeed/shared/relaywire"
)

// layerCall is a Handler.SetLayer call.
type layerCall struct {
	session, layer string
	afterStart     bool // the session's StartSession had returned
}

// layerHandler is a Handler that records the video layers of sessions
// and the tracks of the packets handed on. Its StartSession waits for
// release.
type layerHandler struct {
	starts  chan [2]string // session, layer
	release chan struct{}
	cands   chan string // sessions of AddCandidate
	tracks  chan relaywire.Track

	layers chan layerCall

	mu       sync.Mutex
	returned map[string]bool
}

func newLayerHandler() *layerHandler {
	return &layerHandler{starts: make(chan [2]string, 1), release: make(chan struct{}), cands: make(chan string, 1),
		tracks: make(chan relaywire.Track, 64), layers: make(chan layerCall, 4), returned: map[string]bool{}}
}

func (h *layerHandler) WriteRTP(p *Packet) {
	select {
	case h.tracks <- p.Track:
	default:
	}
}

func (h *layerHandler) StartSession(ctx context.Context, session string, _ uint32, _, layer string) (string, string, error) {
	h.starts <- [2]string{session, layer}
	select {
	case <-h.release:
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	h.mu.Lock()
	h.returned[session] = true
	h.mu.Unlock()
	return "answer", "v=0\r\n", nil
}

func (h *layerHandler) SetLayer(session, layer string) error {
	h.mu.Lock()
	returned := h.returned[session]
	h.mu.Unlock()
	h.layers <- layerCall{session, layer, returned}
	return nil
}

func (h *layerHandler) SetAnswer(string, string) error { return nil }

func (h *layerHandler) AddCandidate(session string, _ relaywire.Candidate) error {
	h.cands <- session
	return nil
}

func (h *layerHandler) CloseSession(string, string) {}

func (h *layerHandler) Load() relaywire.Load { return relaywire.Load{} }

// TestSimulcastThroughTheRelay runs a simulcast channel through a
// gateway's relay server: the packets of every layer reach the handler on
// their own tracks, a keyframe request names its layer, and the layer of
// a session reaches the handler: pinned at its start, and switched, also
// by a session_layer that came while StartSession ran (handed on once it
// returned).
func TestSimulcastThroughTheRelay(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	hubs := hub.NewRegistry(hub.Options{Logger: quiet})
	t.Cleanup(hubs.Close)
	pub, err := hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	pub.Start(hub.PublisherInfo{Software: "test", VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97,
		Layers: []string{"q", "h", "f"}})
	asked := make(chan relaywire.Track, 16)
	pub.SetKeyframeRequester(func(t hub.Track) { asked <- t })

	cert, err := gwrelay.LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const secret = "layer test secret"
	srv := gwrelay.NewServer(gwrelay.Config{Addr: "127.0.0.1:0", Secret: secret, Cert: cert, Logger: quiet}, hubs)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	client := NewClient(Config{GatewayAddr: srv.Addr().String(), Secret: secret, Fingerprint: gwrelay.Fingerprint(cert),
		MachineID: "layers", Logger: quiet})
	h := newLayerHandler()
	ran := make(chan error, 1)
	go func() { ran <- client.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("relay client: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("relay server: %v", err)
		}
	})

	tracks, err := client.Subscribe(ctx, 77)
	if err != nil {
		t.Fatal(err)
	}
	var layers []relaywire.Track
	for _, ti := range tracks {
		if ti.Track == "video" {
			layers = append(layers, ti.Flow.Track())
		}
	}
	slices.Sort(layers)
	if want := []relaywire.Track{relaywire.LayerTrack(0), relaywire.LayerTrack(1), relaywire.LayerTrack(2)}; !slices.Equal(layers, want) {
		t.Fatalf("subscribed video tracks %v, want %v", layers, want)
	}

	// A keyframe (an IDR slice) of each layer reaches the handler on the
	// layer's track.
	for i := range 3 {
		pub.WriteRTP(relaywire.LayerTrack(i), &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 10, Timestamp: 3000, SSRC: uint32(1 + i), Marker: true},
			Payload: []byte{0x65, 0x88, byte(i)}}, time.Now())
	}
	got := map[relaywire.Track]bool{}
	for len(got) < 3 {
		select {
		case tr := <-h.tracks:
			got[tr] = true
		case <-ctx.Done():
			t.Fatalf("the layers' packets reached the handler on tracks %v, want all three", got)
		}
	}

	// The hub asked for keyframes of its own, at the subscription (it had
	// none cached): from here on the asks are the function's.
	for len(asked) > 0 {
		<-asked
	}
	if !client.RequestKeyframe(77, relaywire.LayerTrack(2)) {
		t.Fatal("keyframe request dropped")
	}
	select {
	case tr := <-asked:
		if tr != relaywire.LayerTrack(2) {
			t.Fatalf("the publisher was asked for a keyframe of track %d, want %d", tr, relaywire.LayerTrack(2))
		}
	case <-ctx.Done():
		t.Fatal("the publisher was not asked for a keyframe")
	}

	started := make(chan error, 1)
	go func() {
		_, err := srv.StartSession(ctx, "layers", 77, "v=0\r\n", "h")
		started <- err
	}()
	var start [2]string
	select {
	case start = <-h.starts:
	case <-ctx.Done():
		t.Fatal("StartSession never called")
	}
	session := start[0]
	if start[1] != "h" {
		t.Fatalf("StartSession with layer %q, want h", start[1])
	}
	// A switch while StartSession runs; the candidate after it, once
	// handed to the handler, says the switch was read.
	if err := srv.SetLayer(session, "q"); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddCandidate(session, relaywire.Candidate{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"}); err != nil {
		t.Fatal(err)
	}
	<-h.cands
	if n := len(h.layers); n != 0 {
		t.Fatalf("%d SetLayer calls while StartSession ran", n)
	}
	close(h.release)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if err := srv.SetLayer(session, ""); err != nil {
		t.Fatal(err)
	}
	for _, want := range []layerCall{{session, "q", true}, {session, "", true}} {
		select {
		case got := <-h.layers:
			if got != want {
				t.Fatalf("SetLayer %+v, want %+v", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no SetLayer %+v", want)
		}
	}
}
