package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/keys"
	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
)

// whipStackRole is the role of the test binary re-executed in namespace A
// for the browser publisher: the gateway alone, with no publisher of its
// own, see serveWHIPStack.
var whipStackRole = stackrole.Role{
	Name:       "whip-stack",
	AddrVar:    "LS_TEST_WHIP_STACK_ADDR",
	DataDirVar: "LS_TEST_WHIP_STACK_DATA_DIR",
}

// runWHIPStack plays whipStackRole: a gateway with its embedded
// function, its HTTP, WebRTC and WHIP sockets on the veth address of
// namespace A, and testKey as channel 77's key. It prints the ready line
// as soon as its sockets are bound (nothing is live until a browser
// publishes) and serves until SIGTERM.
func runWHIPStack(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
	cfg := nsStackConfig(p)
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		return err
	}
	g, err := New(cfg, keys.NewStatic(k), log)
	if err != nil {
		return err
	}
	// The line stackrole.WaitReady waits for. The listener is bound:
	// the browser's first request waits for Run to accept it.
	fmt.Printf("READY http://%s\n", g.HTTPAddr())
	return g.Run(ctx)
}

// publishReportJS describes the publish page and its PeerConnection.
const publishReportJS = `(async () => {
  const lp = window.lightspeedPublish;
  if (!lp) return {error: "window.lightspeedPublish is not defined"};
  const out = {state: lp.state, bodyState: document.body.dataset.state, message: lp.message, channel: lp.channel};
  const pc = lp.pc;
  if (!pc) return out;
  out.connectionState = pc.connectionState;
  out.iceConnectionState = pc.iceConnectionState;
  out.localVideo = (pc.localDescription?.sdp || "").split("\r\n").filter(l => /^a=(rtpmap|fmtp|candidate)/.test(l));
  out.remoteCandidates = (pc.remoteDescription?.sdp || "").split("\r\n").filter(l => l.startsWith("a=candidate"));
  out.stats = [];
  (await pc.getStats()).forEach(s => {
    if (["outbound-rtp", "candidate-pair", "transport"].includes(s.type)) out.stats.push(s);
  });
  return out;
})()`

// openPublishPage opens the publish page in a new tab that is closed when
// the test ends, and waits until the page is ready to publish. When the
// test fails, the tab's console and the page's state are logged.
func openPublishPage(t *testing.T, ctx context.Context, b *browser.Browser, url string) *browser.Tab {
	t.Helper()
	tab, err := b.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console of %s:\n%s", url, strings.Join(tab.Console(), "\n"))
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var report any
			if err := tab.Eval(rctx, publishReportJS, &report); err != nil {
				t.Logf("publish page: %v", err)
			} else {
				j, _ := json.MarshalIndent(report, "", "  ")
				t.Logf("publish page: %s", j)
			}
		}
		if err := tab.Close(); err != nil {
			t.Errorf("tab %s: %v", url, err)
		}
	})
	ready, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := tab.WaitFor(ready, `window.lightspeedPublish?.state === "idle" || window.lightspeedPublish?.state === "error"`); err != nil {
		t.Fatalf("the publish page never loaded: %v", err)
	}
	var state struct{ State, Message string }
	if err := tab.Eval(ctx, `({State: window.lightspeedPublish.state, Message: window.lightspeedPublish.message})`, &state); err != nil {
		t.Fatal(err)
	}
	if state.State != "idle" {
		t.Fatalf("the publish page cannot publish: %s: %s", state.State, state.Message)
	}
	return tab
}

// channel77 reads channel 77's entry of /api/channels from a page of the
// gateway: live and the publisher's software.
const channel77 = `fetch("/api/channels", {cache: "no-store"}).then(r => r.json()).then(l => l.find(c => c.channel === 77) || null)`

// TestBrowserPublishesOverWHIP: Chromium's fake camera and microphone, sent
// from the publish page over WHIP (the key typed in, Start), reach the
// viewer page in another tab, which plays them with decoded frames
// increasing; Stop on the publish page ends the stream: the channel goes
// offline and the viewer page says so.
func TestBrowserPublishesOverWHIP(t *testing.T) {
	netns.Require(t)
	browser.Require(t) // netns.Exclusive: one browser test at a time
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pair, _, base := whipStackRole.StartForTest(t, ctx, t.TempDir(), nil)
	if want := "http://" + pair.AddrA.String() + ":"; !strings.HasPrefix(base, want) {
		t.Fatalf("the stack serves on %s, want %s…", base, want)
	}
	b := browser.StartForTest(t, ctx, browser.Options{Netns: pair.B, Extra: []string{
		"--window-size=1280,900",
		"--use-fake-device-for-media-stream",
		"--use-fake-ui-for-media-stream",
		// Cameras are for secure contexts only; the stack serves plain
		// HTTP on its veth address.
		"--unsafely-treat-insecure-origin-as-secure=" + base,
	}})

	pub := openPublishPage(t, ctx, b, base+"/publish")
	const typeKey = `(() => {
	  const key = document.getElementById("key");
	  key.value = %q;
	  key.dispatchEvent(new Event("input", {bubbles: true}));
	  return document.getElementById("watch").getAttribute("href");
	})()`
	var watch string
	if err := pub.Eval(ctx, fmt.Sprintf(typeKey, testKey), &watch); err != nil {
		t.Fatal(err)
	}
	if watch != "/watch/77" {
		t.Errorf("the watch link of key %q is %q, want /watch/77", testKey, watch)
	}
	clicked := time.Now()
	goLive(t, ctx, pub)
	t.Logf("the publish page went live %v after Start", time.Since(clicked).Round(time.Millisecond))

	// The key went as the Bearer token only.
	_, secret, _ := strings.Cut(testKey, "-")
	var page struct {
		Href   string
		Stored int
	}
	if err := pub.Eval(ctx, `({Href: location.href, Stored: localStorage.length + sessionStorage.length})`, &page); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.Href, secret) || page.Stored != 0 {
		t.Errorf("the key left the password field: page at %s, %d items in storage", page.Href, page.Stored)
	}

	// The gateway has the channel live from the browser.
	live, cancelLive := context.WithTimeout(ctx, 30*time.Second)
	defer cancelLive()
	if err := pub.WaitFor(live, channel77+`.then(c => c?.live && /Chrom/.test(c.publisher?.software || ""))`); err != nil {
		var c any
		pub.Eval(ctx, channel77, &c)
		t.Fatalf("/api/channels never had channel 77 live from Chromium: %v; channel 77: %v", err, c)
	}

	view := openPage(t, ctx, b, base+"/watch/77")
	waitPlaying(t, ctx, view)
	first := framesDecoded(t, ctx, view)
	more, cancelMore := context.WithTimeout(ctx, 30*time.Second)
	defer cancelMore()
	if err := view.WaitFor(more, fmt.Sprintf("window.lightspeed.framesDecoded() > %d", first+30)); err != nil {
		t.Fatalf("frames decoded stayed near %d: %v", first, err)
	}
	var played struct {
		Width, Height int
		CurrentTime   float64
		Quality       int
	}
	const readVideo = `(v => ({Width: v.videoWidth, Height: v.videoHeight, CurrentTime: v.currentTime,
	  Quality: v.getVideoPlaybackQuality().totalVideoFrames}))(document.querySelector("#stage video"))`
	if err := view.Eval(ctx, readVideo, &played); err != nil {
		t.Fatal(err)
	}
	if played.Width == 0 || played.Height == 0 || played.CurrentTime <= 0 || played.Quality == 0 {
		t.Errorf("the viewer's video: %+v, want a size, time going on and frames", played)
	}
	screenshot(t, ctx, pub, "publish.png")
	screenshot(t, ctx, view, "watch.png")

	// Stop ends the stream.
	if err := pub.Eval(ctx, `document.getElementById("stop").click()`, nil); err != nil {
		t.Fatal(err)
	}
	stopped, cancelStopped := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStopped()
	if err := pub.WaitFor(stopped, `window.lightspeedPublish.state === "stopped" && window.lightspeedPublish.pc === null`); err != nil {
		t.Fatalf("the publish page never stopped: %v", err)
	}
	if err := view.WaitFor(stopped, channel77+`.then(c => !c?.live)`); err != nil {
		t.Errorf("/api/channels still has channel 77 live after Stop: %v", err)
	}
	if err := view.WaitFor(stopped, `window.lightspeed.state === "offline" && document.body.dataset.state === "offline"`); err != nil {
		t.Errorf("the viewer page never said offline after Stop: %v", err)
	}
	if err := view.WaitFor(stopped, fmt.Sprintf(deletedSessions, 1)); err != nil {
		t.Errorf("the gateway never counted Stop's DELETE: %v", err)
	}
	checkNoConsoleErrors(t, pub)

	// Start again, then leave the page: pagehide DELETEs the session.
	goLive(t, ctx, pub)
	again, cancelAgain := context.WithTimeout(ctx, 30*time.Second)
	defer cancelAgain()
	if err := view.WaitFor(again, channel77+`.then(c => c?.live)`); err != nil {
		t.Fatalf("channel 77 never went live again: %v", err)
	}
	if err := pub.Navigate(ctx, "about:blank"); err != nil {
		t.Fatal(err)
	}
	left, cancelLeft := context.WithTimeout(ctx, 30*time.Second)
	defer cancelLeft()
	gone := fmt.Sprintf(`Promise.all([%s, %s.then(c => !c?.live)]).then(([deleted, offline]) => deleted && offline)`,
		fmt.Sprintf(deletedSessions, 2), channel77)
	if err := view.WaitFor(left, gone); err != nil {
		t.Errorf("leaving the publish page did not DELETE its session: %v", err)
	}
	checkNoConsoleErrors(t, view)
}

// deletedSessions is true once the gateway's metrics count %d WHIP
// sessions ended by DELETE.
const deletedSessions = `fetch("/metrics", {cache: "no-store"}).then(r => r.text()).then(t => /^lightspeed_whip_sessions_ended_total\{reason="deleted"\} %d$/m.test(t))`

// goLive clicks Start on the publish page and waits, at most 30 s, until
// the page is live, failing the test with the page's message if it is
// not.
func goLive(t *testing.T, ctx context.Context, pub *browser.Tab) {
	t.Helper()
	if err := pub.Eval(ctx, `document.getElementById("start").click()`, nil); err != nil {
		t.Fatal(err)
	}
	settled, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pub.WaitFor(settled, `["live", "error"].includes(window.lightspeedPublish.state)`); err != nil {
		t.Fatalf("the publish page never went live: %v", err)
	}
	var state struct{ State, Message, Body string }
	const read = `({State: window.lightspeedPublish.state, Message: window.lightspeedPublish.message, Body: document.body.dataset.state})`
	if err := pub.Eval(ctx, read, &state); err != nil {
		t.Fatal(err)
	}
	if state.State != "live" || state.Body != "live" {
		t.Fatalf("the publish page is %s (body %s): %s", state.State, state.Body, state.Message)
	}
}
