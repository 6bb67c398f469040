package whip

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
)

const (
	testKey   = "77-s3cret"
	otherKey  = "78-other"
	testWait  = 15 * time.Second
	whipPath  = "/api/whip"
	sdpType   = "application/sdp"
	trickleCT = "application/trickle-ice-sdpfrag"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// keyMap is a KeyStore of fixed keys.
type keyMap map[uint32]string

func (m keyMap) Secret(channel uint32) (string, bool) {
	s, ok := m[channel]
	return s, ok
}

// clock is the server's clock in a test: real time plus what the test
// adds, so that the keyframe throttle can be passed without waiting.
type clock struct {
	mu  sync.Mutex
	add time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.add)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.add += d
}

// testServer is a Server on loopback with a real hub registry behind an
// httptest server.
type testServer struct {
	srv   *Server
	hubs  *hub.Registry
	http  *httptest.Server
	clock *clock
	reg   *prometheus.Registry
}

func newTestServer(t *testing.T, tweak func(*Config)) *testServer {
	t.Helper()
	return newTestServerHubs(t, tweak, hub.Options{Logger: quietLog})
}

// newTestServerHubs is newTestServer with hubs of the given options.
func newTestServerHubs(t *testing.T, tweak func(*Config), hubOpts hub.Options) *testServer {
	t.Helper()
	ts := &testServer{clock: &clock{}, reg: prometheus.NewRegistry()}
	cfg := Config{
		UDPAddr:    "127.0.0.1:0",
		Logger:     quietLog,
		Registerer: ts.reg,
		Now:        ts.clock.Now,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ts.hubs = hub.NewRegistry(hubOpts)
	srv, err := New(cfg, keyMap{77: "s3cret", 78: "other"}, ts.hubs)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	ts.http = httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.http.Close()
		srv.Close()
		ts.hubs.Close()
	})
	return ts
}

func (ts *testServer) url(path string) string { return ts.http.URL + path }

// session returns the session at a Location, or nil.
func (ts *testServer) session(location string) *session {
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	return ts.srv.sessions[strings.TrimPrefix(location, "/api/whip/session/")]
}

// waitEnded waits until the session at location has ended.
func (ts *testServer) waitEnded(ctx context.Context, t *testing.T, sess *session) {
	t.Helper()
	select {
	case <-sess.done:
	case <-ctx.Done():
		t.Fatal("session did not end")
	}
}

func wantStatus(t *testing.T, resp *http.Response, body string, code int, bodyHas string) {
	t.Helper()
	if resp.StatusCode != code {
		t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, code)
	}
	if !strings.Contains(body, bodyHas) {
		t.Fatalf("body %q does not say %q", body, bodyHas)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("status %d without CORS headers", code)
	}
}

// TestOBSLikePublisherReachesTheHub runs a whole session: the publisher
// POSTs with its key, connects, gets a PLI at the start, sends a second of
// media that the hub releases unchanged, gets a PLI on RequestKeyframe,
// trickles an end of candidates, and DELETEs, which frees the channel.
func TestOBSLikePublisherReachesTheHub(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	sub := ts.hubs.GetOrCreate(77).Subscribe(hub.SubscribeOptions{Capacity: 8192})
	defer sub.Close()

	p := newPublisher(t, publisherOptions{})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	if ct := resp.Header.Get("Content-Type"); ct != sdpType {
		t.Fatalf("answer Content-Type %q", ct)
	}
	if !strings.HasPrefix(p.location, "/api/whip/session/") || len(p.location) != len("/api/whip/session/")+32 {
		t.Fatalf("Location %q", p.location)
	}
	if !strings.Contains(body, "a=candidate:") || !strings.Contains(body, "127.0.0.1") {
		t.Fatalf("the answer has no loopback candidate:\n%s", body)
	}
	p.waitConnected(ctx)
	if _, ok := p.waitKeyframeRequest(ctx).(*rtcp.PictureLossIndication); !ok {
		t.Fatal("the start's keyframe request is not a PLI")
	}

	sentVideo, sentAudio := p.sendMedia(ctx)
	t.Logf("sent %d video and %d audio packets", len(sentVideo), len(sentAudio))
	var gotVideo, gotAudio [][]byte
	for len(gotVideo) < len(sentVideo) || len(gotAudio) < len(sentAudio) {
		pkt, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("hub: %v after %d/%d video and %d/%d audio packets", err, len(gotVideo), len(sentVideo), len(gotAudio), len(sentAudio))
		}
		payload := bytes.Clone(pkt.Data[12:])
		if pkt.Track == hub.Video {
			gotVideo = append(gotVideo, payload)
		} else {
			gotAudio = append(gotAudio, payload)
		}
	}
	for i := range sentVideo {
		if !bytes.Equal(gotVideo[i], sentVideo[i]) {
			t.Fatalf("video packet %d of %d differs", i, len(sentVideo))
		}
	}
	for i := range sentAudio {
		if !bytes.Equal(gotAudio[i], sentAudio[i]) {
			t.Fatalf("audio packet %d of %d differs", i, len(sentAudio))
		}
	}
	st := ts.hubs.Get(77).Stats()
	if !st.Live || st.Publisher.Software != "Mozilla/5.0 (OBS-Studio/31.0.0; Linux x86_64; en-US)" ||
		st.Publisher.VideoPayloadType != 96 || st.Publisher.AudioPayloadType != 111 || st.Width != 1280 {
		t.Fatalf("hub stats %+v", st)
	}

	// Keyframe requests: at most one per KeyframeInterval.
	if ts.srv.RequestKeyframe(77) {
		t.Fatal("a keyframe request right after the start's was sent")
	}
	ts.clock.Advance(time.Second)
	if !ts.srv.RequestKeyframe(77) {
		t.Fatal("no keyframe request a second after the start's")
	}
	if _, ok := p.waitKeyframeRequest(ctx).(*rtcp.PictureLossIndication); !ok {
		t.Fatal("RequestKeyframe did not send a PLI")
	}
	if ts.srv.RequestKeyframe(78) {
		t.Fatal("a keyframe request for a channel without a WHIP publisher")
	}
	// The hub asks through the publisher's requester (for a function or
	// a viewer that needs a keyframe).
	ts.clock.Advance(time.Second)
	if !ts.hubs.Get(77).RequestKeyframe(hub.Video) {
		t.Fatal("the hub cannot ask the WHIP publisher")
	}
	if _, ok := p.waitKeyframeRequest(ctx).(*rtcp.PictureLossIndication); !ok {
		t.Fatal("the hub's RequestKeyframe did not send a PLI")
	}
	if n := testutil.ToFloat64(ts.srv.metrics.keyframes.WithLabelValues("pli", "0")); n != 3 {
		t.Fatalf("%v PLIs counted, want 3", n)
	}

	// A second publisher of the live channel is refused.
	p2 := newPublisher(t, publisherOptions{})
	resp, body = p2.publish(ts.url(whipPath+"/77"), testKey)
	wantStatus(t, resp, body, http.StatusConflict, "already live")

	// Trickle, as clients other than OBS do.
	resp, body = do(t, http.MethodPatch, ts.url(p.location), testKey, trickleCT, "a=ice-ufrag:x\r\na=end-of-candidates\r\n")
	wantStatus(t, resp, body, http.StatusNoContent, "")
	resp, body = do(t, http.MethodPatch, ts.url(p.location), testKey, sdpType, "a=end-of-candidates\r\n")
	wantStatus(t, resp, body, http.StatusUnsupportedMediaType, trickleCT)

	// DELETE needs the session's key.
	resp, body = do(t, http.MethodDelete, ts.url(p.location), otherKey, "", "")
	wantStatus(t, resp, body, http.StatusUnauthorized, "not the stream key")
	resp, body = do(t, http.MethodDelete, ts.url(p.location), "", "", "")
	wantStatus(t, resp, body, http.StatusUnauthorized, "not the stream key")
	resp, body = do(t, http.MethodDelete, ts.url(p.location), testKey, "", "")
	wantStatus(t, resp, body, http.StatusOK, "")
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held after DELETE: %v", err)
	}
	pub.Release()
	resp, body = do(t, http.MethodDelete, ts.url(p.location), testKey, "", "")
	wantStatus(t, resp, body, http.StatusNotFound, "no such WHIP session")
	if n := testutil.ToFloat64(ts.srv.metrics.ended.WithLabelValues("deleted")); n != 1 {
		t.Fatalf("%v sessions ended by DELETE, want 1", n)
	}
	if n := testutil.ToFloat64(ts.srv.metrics.current); n != 0 {
		t.Fatalf("%v sessions left", n)
	}
}

// TestFIROnlyPublisherGetsFIR: a publisher that offers ccm fir and no
// nack pli is asked for keyframes with FIR.
func TestFIROnlyPublisherGetsFIR(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	p := newPublisher(t, publisherOptions{feedback: []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "ccm", Parameter: "fir"}}})
	resp, body := p.publish(ts.url(whipPath+"/77"), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	p.waitConnected(ctx)
	fir, ok := p.waitKeyframeRequest(ctx).(*rtcp.FullIntraRequest)
	if !ok {
		t.Fatal("the start's keyframe request is not a FIR")
	}
	ts.clock.Advance(time.Second)
	if !ts.srv.RequestKeyframe(77) {
		t.Fatal("no second keyframe request")
	}
	fir2, ok := p.waitKeyframeRequest(ctx).(*rtcp.FullIntraRequest)
	if !ok || fir2.FIR[0].SequenceNumber != fir.FIR[0].SequenceNumber+1 {
		t.Fatalf("second request %+v after %+v: want a FIR with the next sequence number", fir2, fir)
	}
}

// TestChannelHeldByAnotherIngest: a channel claimed in the hub (as FTL
// does) cannot be published over WHIP until it is released.
func TestChannelHeldByAnotherIngest(t *testing.T) {
	ts := newTestServer(t, nil)
	ftl, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, publisherOptions{})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusConflict, "channel 77 is already live")
	ftl.Release()
	resp, body = p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
}

// TestPublisherThatNeverConnectsIsEnded: a session whose ICE never
// connects is ended after ConnectTimeout and frees its channel.
func TestPublisherThatNeverConnectsIsEnded(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	p := newPublisher(t, publisherOptions{})
	resp, body := do(t, http.MethodPost, ts.url(whipPath), testKey, sdpType, p.offer()) // the answer is never applied
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	sess := ts.session(resp.Header.Get("Location"))
	if sess == nil {
		t.Fatal("no session at the Location")
	}
	ts.waitEnded(ctx, t, sess)
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held: %v", err)
	}
	pub.Release()
	if n := testutil.ToFloat64(ts.srv.metrics.ended.WithLabelValues("connect_timeout")); n != 1 {
		t.Fatalf("%v sessions ended by the connect timeout, want 1", n)
	}
}

// TestPublisherThatVanishesIsEnded: a publisher that closes its
// PeerConnection without DELETE loses its session and its channel.
func TestPublisherThatVanishesIsEnded(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.ICEDisconnectedTimeout = 300 * time.Millisecond
		c.ICEFailedTimeout = 300 * time.Millisecond
		c.ICEKeepalive = 100 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	p := newPublisher(t, publisherOptions{})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	sess := ts.session(p.location)
	p.waitConnected(ctx)
	p.waitKeyframeRequest(ctx)
	p.pc.Close()
	ts.waitEnded(ctx, t, sess)
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held: %v", err)
	}
	pub.Release()
}

// TestCloseEndsSessions: closing the server releases every channel.
func TestCloseEndsSessions(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	p := newPublisher(t, publisherOptions{})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	p.waitConnected(ctx)
	ts.srv.Close()
	pub, err := ts.hubs.Claim(77)
	if err != nil {
		t.Fatalf("the channel is still held after Close: %v", err)
	}
	pub.Release()
}

// TestRefusals covers every error of a POST, each with a body that says
// what is wrong.
func TestRefusals(t *testing.T) {
	ts := newTestServer(t, nil)
	good := newPublisher(t, publisherOptions{}).offer()
	vp8 := newPublisher(t, publisherOptions{videoMime: webrtc.MimeTypeVP8}).offer()
	videoOnly := newPublisher(t, publisherOptions{noAudio: true}).offer()
	audioOnly := newPublisher(t, publisherOptions{videoMime: "none"}).offer()
	for _, c := range []struct {
		name, method, path, token, contentType, body string
		status                                       int
		says                                         string
	}{
		{"no key", "POST", whipPath, "", sdpType, good, 401, "no Authorization header"},
		{"not a stream key", "POST", whipPath, "hello", sdpType, good, 401, "not a stream key"},
		{"wrong secret", "POST", whipPath, "77-wrong", sdpType, good, 401, "wrong stream key for channel 77"},
		{"key of another channel", "POST", whipPath + "/78", testKey, sdpType, good, 401, "not the key of channel 78"},
		{"channel not a number", "POST", whipPath + "/abc", testKey, sdpType, good, 404, "no channel"},
		{"wrong content type", "POST", whipPath, testKey, "text/plain", good, 415, "application/sdp"},
		{"body too large", "POST", whipPath, testKey, sdpType, strings.Repeat("a", maxBody+1), 413, "larger than"},
		{"not SDP", "POST", whipPath, testKey, sdpType, "hello", 400, "malformed SDP"},
		{"no H.264", "POST", whipPath, testKey, sdpType, vp8, 406, "no H.264"},
		{"no Opus", "POST", whipPath, testKey, sdpType, videoOnly, 406, "no Opus"},
		{"neither", "POST", whipPath, "78-other", sdpType, audioOnly, 406, "no H.264"},
		{"unknown session", "DELETE", whipPath + "/session/0123", testKey, "", "", 404, "no such WHIP session"},
		{"patch unknown session", "PATCH", whipPath + "/session/0123", testKey, trickleCT, "a=end-of-candidates", 404, "no such WHIP session"},
		{"GET", "GET", whipPath, testKey, "", "", 405, ""},
		{"POST on a session", "POST", whipPath + "/session/0123", testKey, sdpType, good, 405, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, c.method, ts.url(c.path), c.token, c.contentType, c.body)
			wantStatus(t, resp, body, c.status, c.says)
			if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatal("401 without WWW-Authenticate: Bearer")
			}
		})
	}
	if n := testutil.ToFloat64(ts.srv.metrics.current); n != 0 {
		t.Fatalf("%v sessions after refusals", n)
	}
	for _, ch := range []uint32{77, 78} {
		if h := ts.hubs.Get(ch); h != nil && h.Stats().Live {
			t.Fatalf("channel %d live after refusals", ch)
		}
		pub, err := ts.hubs.Claim(ch)
		if err != nil {
			t.Fatalf("channel %d held after refusals: %v", ch, err)
		}
		pub.Release()
	}
}

// TestRepeatedAuthFailuresAreSlowedDown: after five wrong keys from one
// address, even the right key waits.
func TestRepeatedAuthFailuresAreSlowedDown(t *testing.T) {
	ts := newTestServer(t, nil)
	for range keys.MaxFailures {
		resp, body := do(t, "POST", ts.url(whipPath), "77-wrong", sdpType, "x")
		wantStatus(t, resp, body, 401, "wrong stream key")
	}
	resp, body := do(t, "POST", ts.url(whipPath), testKey, sdpType, "x")
	wantStatus(t, resp, body, 429, "too many failed authentications")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	ts.clock.Advance(keys.FailureRefresh)
	resp, body = do(t, "POST", ts.url(whipPath), testKey, sdpType, "x")
	wantStatus(t, resp, body, 400, "")
}

// TestSessionsAreBounded: a POST beyond MaxSessions gets 503.
func TestSessionsAreBounded(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.MaxSessions = 1 })
	resp, body := do(t, "POST", ts.url(whipPath), testKey, sdpType, newPublisher(t, publisherOptions{}).offer())
	wantStatus(t, resp, body, 201, "v=0")
	resp, body = do(t, "POST", ts.url(whipPath), otherKey, sdpType, newPublisher(t, publisherOptions{}).offer())
	wantStatus(t, resp, body, 503, "no more WHIP publishers")
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
}

// TestOptionsAnswersCORS: a browser's preflight gets the CORS headers.
func TestOptionsAnswersCORS(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, path := range []string{whipPath, whipPath + "/77", whipPath + "/session/0123"} {
		resp, body := do(t, http.MethodOptions, ts.url(path), "", "", "")
		wantStatus(t, resp, body, http.StatusNoContent, "")
		h := resp.Header
		for k, want := range map[string]string{
			"Access-Control-Allow-Methods":  "POST",
			"Access-Control-Allow-Headers":  "Authorization",
			"Access-Control-Expose-Headers": "Location",
			"Accept-Post":                   sdpType,
		} {
			if !strings.Contains(h.Get(k), want) {
				t.Fatalf("%s: %s is %q, want it to name %s", path, k, h.Get(k), want)
			}
		}
		if !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Content-Type") {
			t.Fatalf("%s: Access-Control-Allow-Headers %q", path, h.Get("Access-Control-Allow-Headers"))
		}
	}
}

// TestNewFailsOnABusyPort: the UDP port is bound by New.
func TestNewFailsOnABusyPort(t *testing.T) {
	ts := newTestServer(t, nil)
	_, err := New(Config{UDPAddr: ts.srv.Addr().String(), Logger: quietLog}, keyMap{}, ts.hubs)
	if err == nil || !strings.Contains(err.Error(), "whip: listen") {
		t.Fatalf("err %v", err)
	}
}

// TestLostPacketsAreAskedForAgain: video packets the publisher loses
// (once each, after its send buffer kept them) are NACKed by pion's generator, sent again by the publisher
// and released by the hub in order, within its hold time.
func TestLostPacketsAreAskedForAgain(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	sub := ts.hubs.GetOrCreate(77).Subscribe(hub.SubscribeOptions{Capacity: 8192})
	defer sub.Close()
	lose := map[uint16]bool{65510: true, 65535: true, 0: true, 100: true, 101: true}
	p := newPublisher(t, publisherOptions{lose: lose})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	p.waitConnected(ctx)
	p.waitKeyframeRequest(ctx)
	sentVideo, _ := p.sendMedia(ctx)
	var gotVideo [][]byte
	for len(gotVideo) < len(sentVideo) {
		pkt, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("hub: %v after %d/%d video packets", err, len(gotVideo), len(sentVideo))
		}
		if pkt.Track == hub.Video {
			gotVideo = append(gotVideo, bytes.Clone(pkt.Data[12:]))
		}
	}
	for i := range sentVideo {
		if !bytes.Equal(gotVideo[i], sentVideo[i]) {
			t.Fatalf("video packet %d of %d differs", i, len(sentVideo))
		}
	}
	if n := p.loser.remaining(); n != 0 {
		t.Fatalf("%d packets were never lost", n)
	}
	st := ts.hubs.Get(77).Stats()
	if st.NACKsSent < 5 || st.Recovered < 5 || st.Lost != 0 {
		t.Fatalf("hub counted %d NACKs, %d recovered, %d lost; want 5, 5, 0", st.NACKsSent, st.Recovered, st.Lost)
	}
}

// TestAPublisherThatVanishedIsReplacedByItsNewSession: a publisher that
// lost its network (its PeerConnection closed without DELETE) comes back
// with a new POST. While its old session still has media within a second,
// the POST gets 409; once the old one has had none for staleAfter, the new
// POST ends it and takes the channel, long before the old session's ICE
// timeouts (a minute here) would have freed it.
func TestAPublisherThatVanishedIsReplacedByItsNewSession(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.ICEDisconnectedTimeout = time.Minute
		c.ICEFailedTimeout = time.Minute
	})
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	p := newPublisher(t, publisherOptions{})
	resp, body := p.publish(ts.url(whipPath), testKey)
	wantStatus(t, resp, body, http.StatusCreated, "v=0")
	old := ts.session(p.location)
	p.waitConnected(ctx)
	p.sendMedia(ctx)
	p.pc.Close() // gone, no DELETE

	again := newPublisher(t, publisherOptions{})
	conflicts := 0
	for {
		resp, body := again.publish(ts.url(whipPath), testKey)
		if resp.StatusCode == http.StatusCreated {
			break
		}
		wantStatus(t, resp, body, http.StatusConflict, "already live")
		if !old.stale(time.Now()) {
			conflicts++
		}
		select {
		case <-ctx.Done():
			t.Fatal("the publisher's new session never replaced its vanished one")
		case <-time.After(100 * time.Millisecond):
		}
		again = newPublisher(t, publisherOptions{})
	}
	select {
	case <-old.done:
	default:
		t.Fatal("the vanished session was not ended")
	}
	if n := testutil.ToFloat64(ts.srv.metrics.ended.WithLabelValues("replaced")); n != 1 {
		t.Fatalf("%v sessions ended as replaced, want 1", n)
	}
	again.waitConnected(ctx)
	for !ts.hubs.Get(77).Stats().Live {
		select {
		case <-ctx.Done():
			t.Fatal("the channel never went live from the new session")
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("%d POSTs refused while the vanished session was fresh", conflicts)
}
