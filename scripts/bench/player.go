//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/webrtc/v3"
)

// readBuffer is the receive buffer of every viewer socket. Linux's
// default (208 KB, about 90 loopback packets of 1200 bytes) overflows
// when a keyframe reaches many viewers in this one busy process, and
// these viewers do not NACK; a browser would ask for the packets again.
// The kernel caps it at net.core.rmem_max.
const readBuffer = 1 << 20

// player opens the bench's WHEP viewers. It is a lighter cousin of
// shared/viewer: pion's default codecs and no interceptors (no NACKs, no
// receiver reports), loopback candidates only, larger socket receive
// buffers with kernel receive times (stampNet), and a reader per track
// that hands the packet's RTP header to a callback without copying or
// allocating.
type player struct {
	epoch  time.Time
	media  *webrtc.MediaEngine // each PeerConnection copies it
	net    *stdnet.Net
	client *http.Client
}

func newPlayer(epoch time.Time) (*player, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	return &player{epoch: epoch, media: m, net: n, client: &http.Client{Timeout: 30 * time.Second}}, nil
}

// api returns the pion API of one viewer, whose sockets note the arrival
// of video packets in arrivals.
func (p *player) api(arrivals *frameLog) *webrtc.API {
	var se webrtc.SettingEngine
	se.SetNet(stampNet{Net: p.net, epoch: p.epoch, arrivals: arrivals})
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled) // one socket and two goroutines less per viewer
	return webrtc.NewAPI(webrtc.WithMediaEngine(p.media), webrtc.WithSettingEngine(se))
}

// session is one playing viewer.
type session struct {
	pc        *webrtc.PeerConnection
	client    *http.Client
	location  string
	connected chan struct{}
	failed    chan struct{}
	wg        sync.WaitGroup
}

// packetFunc gets every RTP packet a viewer receives, on the reader
// goroutine of its track; h.payload is valid during the call only.
type packetFunc func(video bool, h rtpHeader)

// play offers to receive video and audio, POSTs the offer to url
// (calling posted right before), applies the answer and returns; the
// connection completes in the background. The kernel's receive times of
// video packets go to arrivals.
func (p *player) play(ctx context.Context, url string, posted func(), onPacket packetFunc, arrivals *frameLog) (*session, error) {
	pc, err := p.api(arrivals).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	s := &session{pc: pc, client: p.client, connected: make(chan struct{}), failed: make(chan struct{})}
	var once, fonce sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() { close(s.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateDisconnected, webrtc.PeerConnectionStateClosed:
			fonce.Do(func() { close(s.failed) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		video := tr.Kind() == webrtc.RTPCodecTypeVideo
		s.wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := tr.Read(buf)
				if err != nil {
					return
				}
				if h, ok := parseRTP(buf[:n]); ok {
					onPacket(video, h)
				}
			}
		})
	})
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			pc.Close()
			return nil, fmt.Errorf("player: %w", err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("player: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		pc.Close()
		return nil, fmt.Errorf("player: %w", err)
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
		return nil, fmt.Errorf("player: %w", err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	posted()
	resp, err := p.client.Do(req)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("player: whep: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		pc.Close()
		return nil, fmt.Errorf("player: whep: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	loc, err := resp.Location()
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("player: whep: no Location: %w", err)
	}
	s.location = loc.String()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		s.close()
		return nil, fmt.Errorf("player: whep answer: %w", err)
	}
	return s, nil
}

// waitConnected waits until the PeerConnection is connected.
func (s *session) waitConnected(ctx context.Context) error {
	select {
	case <-s.connected:
		return nil
	case <-s.failed:
		return errors.New("player: connection failed")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close ends the session (DELETE) and the PeerConnection, and waits for
// the readers.
func (s *session) close() {
	if s.location != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if req, err := http.NewRequestWithContext(ctx, "DELETE", s.location, nil); err == nil {
			if resp, err := s.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		cancel()
	}
	s.pc.Close()
	s.wg.Wait()
}
