package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/hub"
	"lightspeed/shared/relaywire"
)

// askCounter is a publisher's keyframe requester that counts its calls.
func askCounter(p *publisher) *atomic.Int64 {
	var n atomic.Int64
	p.pub.SetKeyframeRequester(func(hub.Track) { n.Add(1) })
	return &n
}

// keyframeCount is the gateway's count of keyframe requests by result.
func keyframeCount(g *gateway, result string) int {
	return int(testutil.ToFloat64(g.metrics.keyframes.WithLabelValues(result)))
}

func TestFunctionsKeyframeRequestReachesThePublisherOfItsChannel(t *testing.T) {
	g := startGateway(t, "", nil)
	whip := startPublishing(g.hubs, 77)
	asked := askCounter(whip)
	other := startPublishing(g.hubs, 78)
	askedOther := askCounter(other)
	startPublishing(g.hubs, 79) // an FTL publisher: it cannot be asked
	f := startFunction(t, clientConfig(g, "keyframes"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, ch := range []uint32{77, 79} {
		if _, err := f.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	// Subscribing may have asked already (no keyframe cached): count from here.
	before := asked.Load()

	// One control stream carries the three in order: once 77's has reached
	// its publisher, 78's (not subscribed) and 79's were handled.
	for _, ch := range []uint32{78, 79, 77} {
		if !f.RequestKeyframe(ch, relaywire.Video) {
			t.Fatalf("request for channel %d dropped while connected", ch)
		}
	}
	waitFor(t, "the publisher to be asked", func() bool { return asked.Load() == before+1 })
	if n := askedOther.Load(); n != 0 {
		t.Errorf("the publisher of a channel the function did not subscribe was asked %d times", n)
	}
	for result, want := range map[string]int{"asked": 1, "unsubscribed": 1, "cannot": 1, "throttled": 0} {
		if got := keyframeCount(g, result); got != want {
			t.Errorf("keyframe requests %s = %d, want %d", result, got, want)
		}
	}
	if s := f.Stats(); s.Keyframes != 3 || s.KeyframeDrops != 0 {
		t.Errorf("client sent %d keyframe requests, dropped %d; want 3, 0", s.Keyframes, s.KeyframeDrops)
	}

	f.stop()
	if f.RequestKeyframe(77, relaywire.Video) {
		t.Error("a request without a connection was queued")
	}
	if s := f.Stats(); s.KeyframeDrops != 1 {
		t.Errorf("dropped %d keyframe requests, want 1", s.KeyframeDrops)
	}
}

// testClock is a clock the test moves.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestAFunctionFloodingKeyframeRequestsIsThrottledPerChannel(t *testing.T) {
	clock := &testClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	g := startGateway(t, "", nil, func(s *Server) { s.now = clock.Now })
	pub := startPublishing(g.hubs, 77)
	asked := askCounter(pub)
	_, str, br := rawFunction(t, g)
	if err := relaywire.WriteMessage(str, &relaywire.Subscribe{Channel: 77}); err != nil {
		t.Fatal(err)
	}
	if m, err := relaywire.ReadMessage(br); err != nil || m.Type() != relaywire.TypeSubscribed {
		t.Fatalf("answer to subscribe: %v, %v", m, err)
	}
	before := asked.Load()

	handled := 0
	// send sends n requests at the clock's time and waits until the gateway
	// handled them.
	send := func(n int) {
		t.Helper()
		for range n {
			if err := relaywire.WriteMessage(str, &relaywire.KeyframeRequest{Channel: 77}); err != nil {
				t.Fatal(err)
			}
		}
		handled += n
		waitFor(t, "the requests to be handled", func() bool {
			return keyframeCount(g, "asked")+keyframeCount(g, "throttled") == handled
		})
	}
	check := func(when string, wantAsked int) {
		t.Helper()
		if got := int(asked.Load() - before); got != wantAsked || keyframeCount(g, "asked") != wantAsked {
			t.Fatalf("%s: publisher asked %d times (counted %d), want %d", when, got, keyframeCount(g, "asked"), wantAsked)
		}
		if got := keyframeCount(g, "throttled"); got != handled-wantAsked {
			t.Fatalf("%s: %d throttled, want %d", when, got, handled-wantAsked)
		}
	}

	send(10)
	check("10 at once", keyframeBurst)
	clock.advance(time.Second)
	send(3)
	check("3 more a second later", keyframeBurst+1)
	clock.advance(500 * time.Millisecond)
	send(1)
	check("1 more half a second later", keyframeBurst+1)
	clock.advance(time.Hour) // the bucket holds keyframeBurst at most
	send(5)
	check("5 more an hour later", 2*keyframeBurst+1)
}
