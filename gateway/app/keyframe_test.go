package app

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/viewer"
)

// Encoders that emit an access unit delimiter or SEI before each frame
// send keyframes as [AUD|SEI][SPS][PPS][IDR]. The hub marks the keyframe
// at its SPS (a decoder may start after the leading units); the function
// must take that mark, or a late viewer never gets a fast start.

// leadingUnit is the NAL unit before each frame: an access unit delimiter
// (type 9) or an SEI (type 6).
var leadingUnits = map[string][]byte{
	"AUD": {0x09, 0xf0},
	"SEI": {0x06, 0x05, 0x10, 0xdc, 0x45, 0xe9, 0xbd, 0xe6, 0xd9, 0x48, 0xb7, 0x96, 0x2c, 0xd8, 0x20, 0xd9, 0x23, 0xee, 0xef, 0x00, 0x80},
}

// gopStream is a stream of 30 fps video whose frames start with lead:
// gops keyframes 4 s apart (120 frames each), then frames more P frames,
// so its last keyframe is the gops-th. Each IDR and P slice is unique.
func gopStream(lead []byte, gops, frames int) (nals [][]byte, idrs [][]byte) {
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc5, 0x8b, 0xa8}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	slice := func(typ byte, n, id int) []byte {
		b := make([]byte, n)
		b[0], b[1] = typ, 0x80 // first_mb_in_slice 0: a new frame
		copy(b[2:], fmt.Sprintf("slice %d", id))
		for i := 2 + 16; i < n; i++ {
			b[i] = byte(i * id)
		}
		return b
	}
	id := 0
	for g := range gops {
		for f := range 120 {
			if g == gops-1 && f == frames+1 {
				return nals, idrs
			}
			id++
			nals = append(nals, lead)
			if f == 0 {
				idr := slice(0x65, 3000, id)
				nals = append(nals, sps, pps, idr)
				idrs = append(idrs, idr)
				continue
			}
			nals = append(nals, slice(0x41, 200, id))
		}
	}
	return nals, idrs
}

// firstUnits collects the NAL units a viewer receives, in sequence order,
// from its first video packet on.
type firstUnits struct {
	mu     sync.Mutex
	depack codecs.H264Packet
	next   uint16
	begun  bool
	held   map[uint16][]byte
	units  [][]byte
	got    chan struct{}
}

func newFirstUnits() *firstUnits {
	return &firstUnits{held: map[uint16][]byte{}, got: make(chan struct{}, 1)}
}

func (u *firstUnits) onRTP(kind string, p *rtp.Packet) {
	if kind != "video" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.begun {
		u.begun, u.next = true, p.SequenceNumber
	}
	if int16(p.SequenceNumber-u.next) < 0 {
		return
	}
	u.held[p.SequenceNumber] = bytes.Clone(p.Payload)
	for {
		b, ok := u.held[u.next]
		if !ok {
			break
		}
		delete(u.held, u.next)
		u.next++
		out, err := u.depack.Unmarshal(b)
		if err != nil {
			continue
		}
		for _, n := range bytes.Split(out, []byte{0, 0, 0, 1}) {
			if len(n) > 0 {
				u.units = append(u.units, n)
			}
		}
	}
	select {
	case u.got <- struct{}{}:
	default:
	}
}

// waitFor waits until the units received so far satisfy cond.
func (u *firstUnits) waitFor(t *testing.T, what string, cond func(units [][]byte) bool) [][]byte {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		u.mu.Lock()
		units := u.units
		ok := cond(units)
		u.mu.Unlock()
		if ok {
			return units
		}
		select {
		case <-u.got:
		case <-deadline:
			t.Fatalf("timed out waiting for %s: %d NAL units received", what, len(units))
		}
	}
}

func hasUnit(units [][]byte, want []byte) bool {
	for _, u := range units {
		if bytes.Equal(u, want) {
			return true
		}
	}
	return false
}

// TestLateViewerStartsFromTheCachedKeyframeOfAnAUDOrSEILedStream: a
// stream whose keyframes are [AUD|SEI][SPS][PPS][IDR], 4 s apart, goes
// through the hub, the relay and the function. A viewer who joins after
// the first GOP has left the function's cache (the second keyframe came)
// gets its first frame from that cache: its video starts with the second
// keyframe's SPS, PPS and IDR. The stream has no third keyframe, so
// nothing but the cache can serve it.
func TestLateViewerStartsFromTheCachedKeyframeOfAnAUDOrSEILedStream(t *testing.T) {
	for _, name := range []string{"AUD", "SEI"} {
		t.Run(name, func(t *testing.T) {
			netns.Exclusive(t)
			g := startGateway(t, stackConfig(t))
			nals, idrs := gopStream(leadingUnits[name], 2, 30)
			_, opus := sourceMedia(t)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: testKey, Rate: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The first frames, then a first viewer (so that the function
			// subscribes and sees the first GOP), then the rest.
			if err := conn.Stream(ctx, nals[:20], opus[:10], 1); err != nil {
				t.Fatal(err)
			}
			first := newFirstUnits()
			a, err := viewer.WHEP(ctx, whepURL(g), viewer.Options{Loopback: true, Region: "ams", OnRTP: first.onRTP})
			if err != nil {
				t.Fatalf("first viewer: %v", err)
			}
			defer a.Close()
			if err := a.WaitConnected(ctx); err != nil {
				t.Fatalf("first viewer: %v", err)
			}
			if err := conn.Stream(ctx, nals[20:], opus[10:100], 1); err != nil {
				t.Fatal(err)
			}
			first.waitFor(t, "the first viewer to get the second keyframe", func(u [][]byte) bool { return hasUnit(u, idrs[1]) })

			late := newFirstUnits()
			b, err := viewer.WHEP(ctx, whepURL(g), viewer.Options{Loopback: true, Region: "ams", OnRTP: late.onRTP})
			if err != nil {
				t.Fatalf("late viewer: %v", err)
			}
			defer b.Close()
			units := late.waitFor(t, "the late viewer's first keyframe", func(u [][]byte) bool { return len(u) >= 3 })
			if units[0][0]&0x1f != 7 || units[1][0]&0x1f != 8 || !bytes.Equal(units[2], idrs[1]) {
				t.Fatalf("the late viewer's video starts with NAL units of types %d, %d, %d, want the second keyframe's SPS, PPS and IDR",
					units[0][0]&0x1f, units[1][0]&0x1f, units[2][0]&0x1f)
			}
		})
	}
}
