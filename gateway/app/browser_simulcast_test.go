package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/keys"
	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
	"lightspeed/shared/testkit/testmedia"
	"lightspeed/shared/testkit/whipclient"
)

// simulcastStackRole is the role of the test binary re-executed in
// namespace A for the simulcast browser test: the gateway and a WHIP
// publisher of three layers, see serveSimulcastStack.
var simulcastStackRole = stackrole.Role{
	Name:       "simulcast-stack",
	AddrVar:    "LS_TEST_SIMULCAST_STACK_ADDR",
	DataDirVar: "LS_TEST_SIMULCAST_STACK_DATA_DIR",
}

// simulcastRids are the rids the stack's publisher sends, as OBS names its
// layers: testmedia.Layers() in order (720p, 360p, 180p).
var simulcastRids = []string{"0", "1", "2"}

// runSimulcastStack plays simulcastStackRole: a gateway with its
// embedded function on the veth address of namespace A (nsStackConfig),
// and a whipclient publisher with rids 0, 1 and 2 streaming the test
// media's three layers and its Opus in real time, looping, to the
// gateway's WHIP endpoint on that same address. It prints the ready line
// once channel 77 is live with three layers of known size, and serves
// until SIGTERM; then the publisher leaves (DELETE) before the gateway
// stops.
func runSimulcastStack(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
	layers, err := testmedia.Layers()
	if err != nil {
		return err
	}
	opus, err := testmedia.OpusPackets()
	if err != nil {
		return err
	}
	cfg := nsStackConfig(p)
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		return err
	}
	g, err := New(cfg, keys.NewStatic(k), log)
	if err != nil {
		return err
	}

	// The gateway outlives the publisher, so that its DELETE is answered;
	// the publisher stops when ctx ends or the gateway does.
	gctx, stopGateway := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGateway()
	pctx, stopPublisher := context.WithCancel(ctx)
	defer stopPublisher()
	ran := make(chan error, 1)
	go func() {
		ran <- g.Run(gctx)
		stopPublisher()
	}()
	err = publishSimulcast(pctx, g, layers, opus)
	stopGateway()
	if runErr := <-ran; runErr != nil {
		err = errors.Join(err, fmt.Errorf("gateway: %w", runErr))
	} else if err == nil && ctx.Err() == nil {
		err = errors.New("gateway: stopped by itself")
	}
	return err
}

// publishSimulcast publishes the layers and opus to g's WHIP endpoint until
// ctx ends, prints the ready line once channel 77 is live with every
// layer's size known, and then DELETEs the session.
//
// The publisher gathers its candidates on every interface but loopback
// (whipclient's Loopback would keep it to 127.0.0.1, where the gateway's
// WHIP media socket, on the veth address, is not): in namespace A that is
// the veth address, the gateway's own.
func publishSimulcast(ctx context.Context, g *Gateway, layers [][][]byte, opus [][]byte) error {
	url := fmt.Sprintf("http://%s/api/whip", g.HTTPAddr())
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	pub, err := whipclient.Publish(pctx, whipclient.Config{URL: url, Token: testKey, Layers: simulcastRids})
	cancel()
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	streamed := make(chan error, 1)
	go func() { streamed <- pub.StreamLayers(ctx, layers, opus) }()

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var streamErr error
wait:
	for {
		select {
		case err := <-streamed:
			if ctx.Err() == nil {
				streamErr = fmt.Errorf("publisher: stream ended: %w", err)
			}
			break wait
		case <-tick.C:
			if simulcastLive(g) {
				fmt.Printf("READY http://%s\n", g.HTTPAddr())
				tick.Stop()
			}
		}
	}
	if err := pub.Close(); err != nil {
		return errors.Join(streamErr, fmt.Errorf("publisher: %w", err))
	}
	return streamErr
}

// simulcastLive reports whether channel 77 is live with the publisher's
// layers, each of known size.
func simulcastLive(g *Gateway) bool {
	h := g.Hubs().Get(77)
	if h == nil {
		return false
	}
	st := h.Stats()
	if !st.Live || len(st.Layers) != len(simulcastRids) {
		return false
	}
	for _, l := range st.Layers {
		if l.Width == 0 || l.Height == 0 {
			return false
		}
	}
	return true
}

// qualityMenuJS describes the player's quality menu.
const qualityMenuJS = `(() => {
  const q = document.querySelector("#stage select.quality");
  if (!q) return null;
  const box = q.getBoundingClientRect();
  return {Hidden: q.hidden, Shown: !q.hidden && box.width > 0 && box.height > 0, Value: q.value,
    Options: [...q.options].map(o => ({Value: o.value, Label: o.text}))};
})()`

// qualityMenu is qualityMenuJS's answer.
type qualityMenu struct {
	Hidden, Shown bool
	Value         string
	Options       []struct{ Value, Label string }
}

// chooseQualityJS chooses, as a person does, the quality menu's entry
// whose label starts with %q: the <select> takes its value and fires
// change. It returns the entry's value.
const chooseQualityJS = `(prefix => {
  const q = document.querySelector("#stage select.quality");
  const o = [...q.options].find(o => o.text.startsWith(prefix));
  if (!o) throw new Error("the quality menu has no entry " + prefix);
  q.value = o.value;
  q.dispatchEvent(new Event("change", {bubbles: true}));
  return o.value;
})(%q)`

// stashSessionJS keeps the player's PeerConnection and reconnect count in
// window.__simulcast, and records from now on the URL of every request the
// page makes (Resource Timing), to compare after the switches.
const stashSessionJS = `(() => {
  const ls = window.lightspeed;
  window.__simulcast = {pc: ls.pc, reconnects: ls.reconnects, requests: []};
  new PerformanceObserver(l => l.getEntries().forEach(e => window.__simulcast.requests.push(e.name)))
    .observe({type: "resource"});
  return ls.pc !== null;
})()`

// sessionJS compares the player's session with the stashed one.
const sessionJS = `(() => {
  const ls = window.lightspeed, s = window.__simulcast;
  const path = u => new URL(u).pathname;
  return {SamePC: ls.pc === s.pc, Connection: ls.pc ? ls.pc.connectionState : "",
    Reconnects: ls.reconnects, StashedReconnects: s.reconnects, Layer: ls.layer, Search: location.search,
    Offers: s.requests.filter(u => path(u) === "/api/whep/77").length,
    LayerPosts: s.requests.filter(u => /^\/api\/whep\/77\/[^/]+\/layer$/.test(path(u))).length,
    Notice: document.querySelector("#stage [data-role=notice]").dataset.switching || ""};
})()`

// simulcastSession is sessionJS's answer.
type simulcastSession struct {
	SamePC                        bool
	Connection                    string
	Reconnects, StashedReconnects int
	Layer, Search, Notice         string
	Offers, LayerPosts            int
}

// TestBrowserSwitchesSimulcastLayersInPlace: a WHIP publisher of three
// layers (rids 0, 1, 2: 720p, 360p, 180p) in namespace A, Chromium in B on
// /watch/77. The page plays the highest layer, 1280x720, and shows the
// quality menu with "Auto (highest)" and the three layers, highest first.
// Choosing the 360p entry makes the picture 640x360 on the same
// RTCPeerConnection (no new WHEP offer, no reconnect; one POST to the
// session's layer URL), with frames decoded going on and "?layer=1" in
// the address; choosing Auto brings 1280x720 back, again on the same
// PeerConnection, and takes the layer out of the address. The page logs
// no error.
func TestBrowserSwitchesSimulcastLayersInPlace(t *testing.T) {
	netns.Require(t)
	browser.Require(t) // netns.Exclusive: one browser test at a time
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pair, _, base := simulcastStackRole.StartForTest(t, ctx, t.TempDir(), nil)
	if want := "http://" + pair.AddrA.String() + ":"; !strings.HasPrefix(base, want) {
		t.Fatalf("the stack serves on %s, want %s…", base, want)
	}
	b := browser.StartForTest(t, ctx, browser.Options{Netns: pair.B, Extra: []string{"--window-size=1280,900"}})

	tab := openPage(t, ctx, b, base+"/watch/77")
	waitPlaying(t, ctx, tab)
	waitSize(t, ctx, tab, testmedia.Width, testmedia.Height, "the highest layer")

	// The menu: Auto, then the layers highest first.
	shown, cancelShown := context.WithTimeout(ctx, 30*time.Second)
	defer cancelShown()
	if err := tab.WaitFor(shown, `(q => q && !q.hidden && q.options.length === 4)(document.querySelector("#stage select.quality"))`); err != nil {
		t.Fatalf("the quality menu never showed 4 entries: %v", err)
	}
	var menu qualityMenu
	if err := tab.Eval(ctx, qualityMenuJS, &menu); err != nil {
		t.Fatal(err)
	}
	want := []struct{ value, label string }{{"", "Auto (highest)"}, {"0", "720p"}, {"1", "360p"}, {"2", "180p"}}
	ok := menu.Shown && menu.Value == "" && len(menu.Options) == len(want)
	for i := 0; ok && i < len(want); i++ {
		o := menu.Options[i]
		ok = o.Value == want[i].value && strings.HasPrefix(o.Label, want[i].label)
	}
	if !ok {
		t.Fatalf("the quality menu is %+v, want shown, on Auto, with entries %v", menu, want)
	}
	t.Logf("the quality menu: %+v", menu.Options)

	var stashed bool
	if err := tab.Eval(ctx, stashSessionJS, &stashed); err != nil || !stashed {
		t.Fatalf("no PeerConnection to stash (%v)", err)
	}

	// 360p, then Auto: each switched in place.
	for i, step := range []struct {
		label, value  string
		width, height int
		search        string
	}{
		{"360p", "1", 640, 360, "?layer=1"},
		{"Auto", "", testmedia.Width, testmedia.Height, ""},
	} {
		var chosen string
		if err := tab.Eval(ctx, fmt.Sprintf(chooseQualityJS, step.label), &chosen); err != nil {
			t.Fatal(err)
		}
		if chosen != step.value {
			t.Fatalf("the %s entry has value %q, want %q", step.label, chosen, step.value)
		}
		what := "the layer of " + step.label
		chose := time.Now()
		waitSize(t, ctx, tab, step.width, step.height, what)
		after := framesDecoded(t, ctx, tab)
		t.Logf("%s: %dx%d %v after the choice, %d frames decoded", step.label, step.width, step.height,
			time.Since(chose).Round(time.Millisecond), after)

		// Frames go on being decoded at the new size, on the same
		// PeerConnection, and the page has posted the layer choice (its
		// Resource Timing entry may come a little after the response).
		going, cancelGoing := context.WithTimeout(ctx, 30*time.Second)
		cond := fmt.Sprintf(`(ls => ls.pc === window.__simulcast.pc && ls.framesDecoded() > %d &&
		  ls.videoWidth === %d && ls.videoHeight === %d &&
		  window.__simulcast.requests.filter(u => /\/layer$/.test(new URL(u).pathname)).length >= %d)(window.lightspeed)`,
			after+30, step.width, step.height, i+1)
		err := tab.WaitFor(going, cond)
		cancelGoing()
		var s simulcastSession
		if evalErr := tab.Eval(ctx, sessionJS, &s); evalErr != nil {
			t.Fatal(evalErr)
		}
		if err != nil {
			t.Fatalf("after choosing %s: frames decoded stayed near %d, or the PeerConnection or size changed, or no layer POST: %v; session %+v",
				step.label, after, err, s)
		}
		t.Logf("%s: %+v", step.label, s)
		if !s.SamePC || s.Connection != "connected" || s.Reconnects != s.StashedReconnects || s.Offers != 0 || s.LayerPosts != i+1 {
			t.Errorf("after choosing %s: %+v; want the same PeerConnection, connected, no reconnect, no new WHEP offer, %d layer POSTs",
				step.label, s, i+1)
		}
		if s.Layer != step.value || s.Search != step.search {
			t.Errorf("after choosing %s: the player's layer is %q and the address's query %q, want %q and %q",
				step.label, s.Layer, s.Search, step.value, step.search)
		}
		if s.Notice != "false" {
			t.Errorf("after choosing %s the picture of the new size plays, but the notice says switching: %q", step.label, s.Notice)
		}
	}
	checkNoConsoleErrors(t, tab)
	for _, line := range tab.Console() {
		if strings.Contains(line, "not switched in place") {
			t.Errorf("the page fell back to a new session: %s", line)
		}
	}
}

// waitSize waits, at most 30 s, until the player's video is width x
// height.
func waitSize(t *testing.T, ctx context.Context, tab *browser.Tab, width, height int, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cond := fmt.Sprintf("window.lightspeed.videoWidth === %d && window.lightspeed.videoHeight === %d", width, height)
	if err := tab.WaitFor(ctx, cond); err != nil {
		var size [2]int
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tab.Eval(rctx, "[window.lightspeed.videoWidth, window.lightspeed.videoHeight]", &size)
		t.Fatalf("%s: the video never was %dx%d (it is %dx%d): %v", what, width, height, size[0], size[1], err)
	}
}
