//go:build linux

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pion/transport/v2/stdnet"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/testkit/viewer"
)

// srtpWindow is the SRTP replay window of the bench's viewers: pion's
// default, as they have no NACKs to bring packets back late.
const srtpWindow = 64

// player opens the bench's WHEP viewers: shared/testkit/viewer made lighter, with
// no interceptors (no NACKs, no receiver reports), loopback candidates
// only and no mDNS, kernel receive times (stampNet; shared/testkit/viewer gives
// the sockets large receive buffers), and a reader per track that hands the packet's RTP
// header to a callback without copying or allocating.
type player struct {
	epoch time.Time
	net   *stdnet.Net // shared: making one lists the interfaces
}

func newPlayer(epoch time.Time) (*player, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	return &player{epoch: epoch, net: n}, nil
}

// packetFunc gets every RTP packet a viewer receives, on the reader
// goroutine of its track; h.payload is valid during the call only.
type packetFunc func(video bool, h rtpHeader)

// play offers to receive video and audio, POSTs the offer to url
// (calling posted right before), applies the answer and returns; the
// connection completes in the background. The kernel's receive times of
// video packets go to arrivals; every datagram the viewer's socket
// receives is counted in wire.
func (p *player) play(ctx context.Context, url string, posted func(), onPacket packetFunc, arrivals *frameLog, wire *wireCount) (*viewer.Viewer, error) {
	v, err := viewer.WHEP(ctx, url, viewer.Options{
		Loopback:     true,
		Net:          stampNet{Net: p.net, epoch: p.epoch, arrivals: arrivals, wire: wire},
		NoMDNS:       true, // one socket and two goroutines less per viewer
		ReplayWindow: srtpWindow,
		BeforePost:   posted,
		OnPacket: func(kind webrtc.RTPCodecType, b []byte) {
			if h, ok := parseRTP(b); ok {
				onPacket(kind == webrtc.RTPCodecTypeVideo, h)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("player: %w", err)
	}
	return v, nil
}
