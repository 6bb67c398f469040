package app

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/viewer"
	"lightspeed/shared/testkit/whipclient"
)

func whipURL(g *Gateway) string { return fmt.Sprintf("http://%s/api/whip", g.HTTPAddr()) }

// TestAWHIPPublisherReachesViewersAndHandsOverToFTL: a publisher that
// behaves as OBS's WHIP output does streams through the hub, the relay and
// the function to a WHEP viewer; the gateway asks it for a keyframe, also
// when the viewer's decoder asks the function for one; an
// FTL publisher of the live channel gets 406; once the WHIP publisher
// DELETEs its session, the FTL publisher takes the channel and the same
// viewer, on the same PeerConnection, goes on with continuous sequence
// numbers. Then back: WHIP takes over from FTL.
func TestAWHIPPublisherReachesViewersAndHandsOverToFTL(t *testing.T) {
	netns.Exclusive(t)
	g := startGateway(t, stackConfig(t))
	nals, opus := sourceMedia(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	publish := func() (*whipclient.Publisher, func()) {
		t.Helper()
		p, err := whipclient.Publish(ctx, whipclient.Config{URL: whipURL(g), Token: testKey, Loopback: true})
		if err != nil {
			t.Fatalf("whip: %v", err)
		}
		streamCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); p.Stream(streamCtx, nals, opus) }()
		return p, func() {
			stop()
			<-done
			if err := p.Close(); err != nil {
				t.Errorf("whip: %v", err)
			}
		}
	}
	pub, stopWHIP := publish()
	waitUntil(t, "channel 77 live from WHIP", func() bool {
		h := g.Hubs().Get(77)
		return h != nil && h.Stats().Live
	})

	// Every packet goes to the recorder of the whole session (gaps) and to
	// that of the current publisher (its media, from its first keyframe).
	whole := newRecorder(t)
	var phase atomic.Pointer[recorder]
	phase.Store(newRecorder(t))
	onRTP := func(kind string, p *rtp.Packet) {
		whole.onRTP(kind, p)
		phase.Load().onRTP(kind, p)
	}
	v, err := viewer.WHEP(ctx, whepURL(g), viewer.Options{Loopback: true, OnRTP: onRTP, Interceptors: true})
	if err != nil {
		t.Fatalf("whep: %v", err)
	}
	defer v.Close()
	phase.Load().waitFor(t, 60, 50)
	phase.Load().check(t, "viewer of the WHIP publisher")
	if plis, firs := pub.KeyframeRequests(); plis+firs == 0 {
		t.Error("the gateway never asked the WHIP publisher for a keyframe")
	}

	// A viewer's keyframe request goes through the function and the relay
	// to the WHIP publisher (each hop throttles: ask until it arrives).
	before, _ := pub.KeyframeRequests()
	var ssrc uint32
	for _, r := range v.PeerConnection().GetReceivers() {
		if tr := r.Track(); tr != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.SSRC())
		}
	}
	waitUntil(t, "the viewer's PLI at the WHIP publisher", func() bool {
		if err := v.PeerConnection().WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			t.Fatalf("viewer PLI: %v", err)
		}
		plis, _ := pub.KeyframeRequests()
		return plis > before
	})

	var reply *ftlclient.ReplyError
	if _, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: testKey}); !errors.As(err, &reply) || reply.Code != 406 {
		t.Fatalf("FTL publisher of the channel WHIP holds: %v, want 406", err)
	}

	stopWHIP()
	waitUntil(t, "channel 77 offline after DELETE", func() bool { return !g.Hubs().Get(77).Stats().Live })
	ftl, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: testKey})
	if err != nil {
		t.Fatalf("FTL after WHIP: %v", err)
	}
	ftlDone := make(chan struct{})
	ftlCtx, stopFTL := context.WithCancel(ctx)
	go func() { defer close(ftlDone); ftl.Stream(ftlCtx, nals, opus, 0) }()
	phase.Store(newRecorder(t))
	phase.Load().waitFor(t, 60, 50)
	phase.Load().check(t, "the same viewer after FTL took over")

	stopFTL()
	<-ftlDone
	ftl.Close()
	waitUntil(t, "channel 77 offline after FTL", func() bool { return !g.Hubs().Get(77).Stats().Live })
	_, stopWHIP = publish()
	defer stopWHIP()
	phase.Store(newRecorder(t))
	phase.Load().waitFor(t, 60, 50)
	phase.Load().check(t, "the same viewer after WHIP took over again")
	whole.mu.Lock()
	defer whole.mu.Unlock()
	if whole.gaps != 0 {
		t.Errorf("%d sequence gaps across the hand-overs", whole.gaps)
	}
}
