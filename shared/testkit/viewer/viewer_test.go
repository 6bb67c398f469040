package viewer

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/rtp"
	"github.com/pion/transport/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/webrtc/v3"
)

// whepServer answers WHEP offers with a pion PeerConnection that sends
// one video track, and notes what the viewer's requests looked like.
type whepServer struct {
	t     *testing.T
	track *webrtc.TrackLocalStaticRTP
	ready chan struct{} // closed when the sender is connected

	mu        sync.Mutex
	pc        *webrtc.PeerConnection
	preceded  bool // BeforePost had run when the offer arrived
	deleted   bool
	posted    *atomic.Bool
	connected sync.Once
}

func (s *whepServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodDelete:
		s.mu.Lock()
		s.deleted = r.URL.Path == "/session/1"
		s.mu.Unlock()
		w.WriteHeader(http.StatusOK)
		return
	case http.MethodPost:
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	offer, _ := io.ReadAll(r.Body)
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		s.t.Error(err)
		return
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		s.t.Error(err)
		return
	}
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			s.connected.Do(func() { close(s.ready) })
		}
	})
	s.mu.Lock()
	s.pc, s.preceded = pc, s.posted.Load()
	s.mu.Unlock()
	if _, err := pc.AddTrack(s.track); err != nil {
		s.t.Error(err)
		return
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		s.t.Error(err)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		s.t.Error(err)
		return
	}
	<-gathered
	w.Header().Set("Location", "/session/1")
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, pc.LocalDescription().SDP)
}

// countingNet is the standard network, counting the UDP sockets made:
// multicast ones (mDNS) apart.
type countingNet struct {
	*stdnet.Net
	udp, multicast *atomic.Int64
}

func (n countingNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	if laddr != nil && laddr.IP.IsMulticast() {
		n.multicast.Add(1)
	} else {
		n.udp.Add(1)
	}
	return n.Net.ListenUDP(network, laddr)
}

// TestWHEPLightOptions plays a WHEP stream with the options of a light
// viewer (own network, no mDNS, raw packets, a hook before the POST) and
// checks each is in effect.
func TestWHEPLightOptions(t *testing.T) {
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "video", "test")
	if err != nil {
		t.Fatal(err)
	}
	var posted atomic.Bool
	srv := &whepServer{t: t, track: track, ready: make(chan struct{}), posted: &posted}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer func() {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.pc != nil {
			srv.pc.Close()
		}
	}()

	std, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	var sockets, multicast atomic.Int64
	got := make(chan []byte, 1)
	var kinds sync.Map
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := WHEP(ctx, ts.URL+"/whep/1", Options{
		Loopback:     true,
		Net:          countingNet{Net: std, udp: &sockets, multicast: &multicast},
		NoMDNS:       true,
		ReplayWindow: 64,
		BeforePost:   func() { posted.Store(true) },
		OnPacket: func(kind webrtc.RTPCodecType, b []byte) {
			kinds.Store(kind, true)
			select {
			case got <- bytes.Clone(b):
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if v.Location() != ts.URL+"/session/1" {
		t.Errorf("location %q", v.Location())
	}
	srv.mu.Lock()
	preceded := srv.preceded
	srv.mu.Unlock()
	if !preceded {
		t.Error("BeforePost had not run when the offer arrived")
	}
	if n := sockets.Load(); n < 1 {
		t.Errorf("the viewer made %d UDP sockets through Options.Net", n)
	}
	if n := multicast.Load(); n != 0 {
		t.Errorf("the viewer made %d mDNS sockets with NoMDNS", n)
	}

	select {
	case <-srv.ready:
	case <-ctx.Done():
		t.Fatal("sender never connected")
	}
	payload := []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	// Packets sent before the viewer's SRTP is up are lost, so send until
	// one arrives.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var b []byte
	for seq := uint16(1); b == nil; seq++ {
		pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: seq, Timestamp: 9000, SSRC: 1}, Payload: payload}
		if err := track.WriteRTP(pkt); err != nil {
			t.Fatal(err)
		}
		select {
		case b = <-got:
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no packet reached OnPacket")
		}
	}
	var p rtp.Packet
	if err := p.Unmarshal(b); err != nil {
		t.Fatalf("OnPacket got %x: %v", b, err)
	}
	if !bytes.Equal(p.Payload, payload) || !p.Marker || p.Timestamp != 9000 {
		t.Errorf("OnPacket got marker %v ts %d payload %x", p.Marker, p.Timestamp, p.Payload)
	}
	if _, ok := kinds.Load(webrtc.RTPCodecTypeVideo); !ok {
		t.Error("the packet was not of kind video")
	}

	v.Close()
	srv.mu.Lock()
	deleted := srv.deleted
	srv.mu.Unlock()
	if !deleted {
		t.Error("Close did not DELETE the session")
	}
}
