// Package viewer is a WebRTC viewer made with pion: it plays a channel over
// WHEP or the Lightspeed websocket and hands every RTP packet it receives
// to a callback, without decoding. Tests and the bench tool use it as the
// browser's stand-in.
package viewer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/transport/v2"
	"github.com/pion/webrtc/v3"
)

// Options configure a viewer.
type Options struct {
	// Loopback gathers only loopback candidates (tests on 127.0.0.1).
	Loopback bool
	// Region is sent as X-LS-Region, for routing, or in RegionHeader.
	Region string
	// Token is a viewer token for a private channel, sent as
	// "Authorization: Bearer" on the WHEP POST (a websocket viewer has it
	// in its URL's ?token=).
	Token string
	// RegionHeader is the header Region is sent in; empty: X-LS-Region.
	// "Fly-Region" is what Fly's edge sets.
	RegionHeader string
	// OnRTP gets every received RTP packet, by kind ("video" or "audio"),
	// on the track's reader goroutine; pkt is reused after the call.
	OnRTP func(kind string, pkt *rtp.Packet)
	// OnPacket gets every received RTP packet unparsed, by kind, on the
	// track's reader goroutine; b is valid during the call only. It
	// costs nothing per packet beyond the call (OnRTP parses).
	OnPacket func(kind webrtc.RTPCodecType, b []byte)
	// Interceptors registers pion's default interceptors (NACK generator,
	// receiver reports) when true; a light viewer leaves them out.
	Interceptors bool
	// Net is the network the PeerConnection's sockets are made with;
	// nil is the standard one.
	Net transport.Net
	// NoMDNS turns off multicast DNS (by default pion keeps an mDNS
	// socket, and its goroutines, per PeerConnection to resolve .local
	// candidates).
	NoMDNS bool
	// ReplayWindow is the SRTP replay protection window in packets; 0 is
	// Chromium's 1024.
	ReplayWindow uint
	// BeforePost is called right before the WHEP offer is POSTed, after
	// ICE gathering.
	BeforePost func()
}

// Viewer is one playing viewer.
type Viewer struct {
	pc       *webrtc.PeerConnection
	location string // WHEP session URL, "" for websocket viewers
	servedBy string // the WHEP answer's Lightspeed-Served-By
	ws       *websocket.Conn
	client   *http.Client

	connected chan struct{}
	failed    chan struct{}
	once      sync.Once
	fonce     sync.Once
	iceAt     atomic.Int64 // Unix ns when ICE connected, 0 before

	mu      sync.Mutex // guards closing and wg.Go, so no reader starts once Close waits
	closing bool
	wg      sync.WaitGroup
}

func newPeerConnection(o Options) (*webrtc.PeerConnection, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if o.Interceptors {
		if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
			return nil, err
		}
	}
	var se webrtc.SettingEngine
	// Chromium's SRTP replay window is 1024 packets; pion's default of 64
	// would throw away packets recovered late (by NACK) during a burst.
	window := uint(1024)
	if o.ReplayWindow != 0 {
		window = o.ReplayWindow
	}
	se.SetSRTPReplayProtectionWindow(window)
	// pion resends a DTLS flight after a fixed 1 s; browsers start at 50 ms
	// (and a pion server whose last flight is lost waits for its own
	// timer, whatever the client resends). A viewer that loses a handshake
	// datagram should cost what it costs a browser, not a second.
	se.SetDTLSRetransmissionInterval(100 * time.Millisecond)
	// The server's first ICE checks can arrive before the viewer has
	// applied the answer: the viewer then knows the server's address as a
	// peer-reflexive candidate, pion credits the host candidate's checks
	// to it, and as the controlling agent it waits 1 s before nominating
	// a peer-reflexive pair (a join logged "ice_connected=1.006s" on
	// "remote udp4 prflx"). Browsers nominate it at once.
	se.SetPrflxAcceptanceMinWait(0)
	if o.Loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
	n, err := newBufferedNet(o.Net)
	if err != nil {
		return nil, err
	}
	se.SetNet(n)
	if o.NoMDNS {
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return api.NewPeerConnection(webrtc.Configuration{})
}

func (v *Viewer) watchState(o Options) {
	v.pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected {
			v.iceAt.CompareAndSwap(0, time.Now().UnixNano())
		}
	})
	v.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			v.once.Do(func() { close(v.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed, webrtc.PeerConnectionStateDisconnected:
			v.fonce.Do(func() { close(v.failed) })
		}
	})
	v.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		kind := tr.Kind()
		name := kind.String()
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.closing {
			return
		}
		v.wg.Go(func() {
			buf := make([]byte, 1500)
			var pkt rtp.Packet
			for {
				n, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if o.OnPacket != nil {
					o.OnPacket(kind, buf[:n])
				}
				if o.OnRTP != nil && pkt.Unmarshal(buf[:n]) == nil {
					o.OnRTP(name, &pkt)
				}
			}
		})
	})
}

// HTTPError is a signaling request the server refused.
type HTTPError struct {
	Status     int
	Body       string
	RetryAfter string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("viewer: server answered %d: %s", e.Status, strings.TrimSpace(e.Body))
}

// WHEP plays url (".../api/whep/{channel}") over WHEP.
func WHEP(ctx context.Context, url string, o Options) (*Viewer, error) {
	pc, err := newPeerConnection(o)
	if err != nil {
		return nil, err
	}
	v := &Viewer{pc: pc, client: &http.Client{}, connected: make(chan struct{}), failed: make(chan struct{})}
	v.watchState(o)
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			pc.Close()
			return nil, err
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		pc.Close()
		return nil, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		pc.Close()
		return nil, err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		pc.Close()
		return nil, ctx.Err()
	}
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		pc.Close()
		return nil, err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+o.Token)
	}
	if o.Region != "" {
		req.Header.Set(o.regionHeader(), o.Region)
	}
	if o.BeforePost != nil {
		o.BeforePost()
	}
	resp, err := v.client.Do(req)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("viewer: whep post: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		pc.Close()
		return nil, &HTTPError{Status: resp.StatusCode, Body: string(body), RetryAfter: resp.Header.Get("Retry-After")}
	}
	loc, err := resp.Location()
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("viewer: whep: no Location: %w", err)
	}
	v.location = loc.String()
	v.servedBy = resp.Header.Get("Lightspeed-Served-By")
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		v.Close()
		return nil, fmt.Errorf("viewer: whep answer: %w", err)
	}
	return v, nil
}

// regionHeader is the header the viewer names its region in.
func (o Options) regionHeader() string {
	if o.RegionHeader != "" {
		return o.RegionHeader
	}
	return "X-LS-Region"
}

type wsMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// Websocket plays wsURL ("ws://host/websocket?channel=N") with the original
// Lightspeed protocol: the server offers, the viewer answers.
func Websocket(ctx context.Context, wsURL string, o Options) (*Viewer, error) {
	h := http.Header{}
	if o.Region != "" {
		h.Set(o.regionHeader(), o.Region)
	}
	conn, _, err := websocket.DefaultDialer.DialContext(ctx, wsURL, h)
	if err != nil {
		return nil, fmt.Errorf("viewer: websocket: %w", err)
	}
	pc, err := newPeerConnection(o)
	if err != nil {
		conn.Close()
		return nil, err
	}
	v := &Viewer{pc: pc, ws: conn, connected: make(chan struct{}), failed: make(chan struct{})}
	v.watchState(o)
	var wmu sync.Mutex
	send := func(event string, data any) error {
		raw, _ := json.Marshal(data)
		wmu.Lock()
		defer wmu.Unlock()
		return conn.WriteJSON(wsMessage{Event: event, Data: raw})
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			_ = send("candidate", c.ToJSON())
		}
	})
	offered := make(chan error, 1)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		answered := false
		for {
			var m wsMessage
			if err := conn.ReadJSON(&m); err != nil {
				if !answered {
					offered <- err
				}
				return
			}
			switch m.Event {
			case "offer":
				var d webrtc.SessionDescription
				if err := json.Unmarshal(m.Data, &d); err != nil {
					offered <- err
					return
				}
				err := pc.SetRemoteDescription(d)
				var answer webrtc.SessionDescription
				if err == nil {
					answer, err = pc.CreateAnswer(nil)
				}
				if err == nil {
					err = pc.SetLocalDescription(answer)
				}
				if err == nil {
					err = send("answer", answer)
				}
				answered = true
				offered <- err
			case "candidate":
				var c webrtc.ICECandidateInit
				if json.Unmarshal(m.Data, &c) == nil {
					_ = pc.AddICECandidate(c)
				}
			}
		}
	}()
	select {
	case err := <-offered:
		if err != nil {
			v.Close()
			return nil, fmt.Errorf("viewer: websocket offer: %w", err)
		}
	case <-ctx.Done():
		v.Close()
		return nil, ctx.Err()
	}
	return v, nil
}

// ICEConnected returns when ICE first connected (before DTLS), zero
// before then.
func (v *Viewer) ICEConnected() time.Time {
	if ns := v.iceAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// SelectedPair describes the ICE candidate pair in use, "" before one is.
func (v *Viewer) SelectedPair() string {
	p, err := v.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || p == nil {
		return ""
	}
	return p.String()
}

// Failed is closed when the PeerConnection fails, disconnects or closes.
func (v *Viewer) Failed() <-chan struct{} { return v.failed }

// WaitConnected waits for the connection or ctx.
func (v *Viewer) WaitConnected(ctx context.Context) error {
	select {
	case <-v.connected:
		return nil
	case <-v.failed:
		return errors.New("viewer: connection failed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Location is the WHEP session URL ("" for websocket viewers).
func (v *Viewer) Location() string { return v.location }

// ServedBy is the region and id of the function serving a WHEP viewer, as
// the gateway's answer named it.
func (v *Viewer) ServedBy() string { return v.servedBy }

// PeerConnection is the viewer's PeerConnection.
func (v *Viewer) PeerConnection() *webrtc.PeerConnection { return v.pc }

// Close ends the viewer: DELETE on the WHEP session, or closes the
// websocket; then the PeerConnection. It waits for its goroutines.
func (v *Viewer) Close() error {
	if v.location != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "DELETE", v.location, nil)
		if resp, err := v.client.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	if v.ws != nil {
		v.ws.Close()
	}
	v.mu.Lock()
	v.closing = true
	v.mu.Unlock()
	err := v.pc.Close()
	v.wg.Wait()
	return err
}
