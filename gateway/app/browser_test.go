package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/keys"
	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
	"lightspeed/shared/testkit/testmedia"
)

// stackRole is the role of the test binary re-executed in namespace A:
// the whole stack and a publisher, see serveStack.
var stackRole = stackrole.Role{
	Name:       "stack",
	AddrVar:    "LS_TEST_STACK_ADDR",
	DataDirVar: "LS_TEST_STACK_DATA_DIR",
}

// serveStack plays stackRole: a gateway with its embedded function on the
// veth address of namespace A and a publisher streaming the test media to
// it in real time, in a loop. It prints the ready line once channel 77 is
// live and serves until SIGTERM.
func serveStack() int {
	return stackRole.Serve(slog.LevelInfo, func(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
		if err := runStack(ctx, log, p); err != nil {
			return fmt.Errorf("stack: %w", err)
		}
		return nil
	})
}

// nsStackConfig is the gateway of a stack role in namespace A: HTTP,
// WebRTC and WHIP media on A's veth address (which browsers in B reach),
// the rest on loopback, an embedded function, and testKey as the only key.
func nsStackConfig(p stackrole.Params) Config {
	return Config{
		FTLAddr:       "127.0.0.1:0",
		FTLMediaAddr:  "127.0.0.1:0",
		HTTPAddr:      net.JoinHostPort(p.Addr.String(), "0"),
		RelayAddr:     "127.0.0.1:0",
		WHIPUDPAddr:   net.JoinHostPort(p.Addr.String(), "0"),
		DataDir:       p.DataDir,
		StreamKey:     testKey,
		HubMaxHold:    40 * time.Millisecond,
		Region:        "ams",
		EmbedFunction: true,
		WebRTCUDPAddr: net.JoinHostPort(p.Addr.String(), "0"),
		PublicIPs:     []string{p.Addr.String()},
		FunctionCap:   100,
	}
}

func runStack(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
	cfg := nsStackConfig(p)
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		return err
	}
	g, err := New(cfg, keys.NewStatic(k), log)
	if err != nil {
		return err
	}
	live := func() bool { h := g.Hubs().Get(77); return h != nil && h.Stats().Live }
	return stackrole.Stack{Gateway: g, StreamKey: testKey, Live: live}.Run(ctx)
}

// openPage opens url in a new tab that is closed when the test ends. When
// the test fails, the tab's console and the player's state and WebRTC
// statistics are logged.
func openPage(t *testing.T, ctx context.Context, b *browser.Browser, url string) *browser.Tab {
	t.Helper()
	tab, err := b.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console of %s:\n%s", url, strings.Join(tab.Console(), "\n"))
			t.Logf("player of %s: %s", url, playerReport(tab))
		}
		if err := tab.Close(); err != nil {
			t.Errorf("tab %s: %v", url, err)
		}
	})
	return tab
}

// playerReportJS describes the player and its PeerConnection.
const playerReportJS = `(async () => {
  const ls = window.lightspeed;
  if (!ls) return {error: "window.lightspeed is not defined"};
  const out = {state: ls.state, bodyState: document.body.dataset.state, channel: ls.channel,
    framesDecoded: ls.framesDecoded(), size: [ls.videoWidth, ls.videoHeight], reconnects: ls.reconnects};
  const pc = ls.pc;
  if (!pc) return out;
  out.connectionState = pc.connectionState;
  out.iceConnectionState = pc.iceConnectionState;
  out.remoteCandidates = (pc.remoteDescription?.sdp || "").split("\r\n").filter(l => l.startsWith("a=candidate"));
  out.stats = [];
  (await pc.getStats()).forEach(s => {
    if (["inbound-rtp", "candidate-pair", "local-candidate", "remote-candidate", "transport"].includes(s.type)) out.stats.push(s);
  });
  return out;
})()`

// playerReport returns playerReportJS's answer as JSON, or why there is none.
func playerReport(tab *browser.Tab) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var report any
	if err := tab.Eval(ctx, playerReportJS, &report); err != nil {
		return err.Error()
	}
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// waitPlaying waits, at most 30 s, until the page's player plays.
func waitPlaying(t *testing.T, ctx context.Context, tab *browser.Tab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := tab.WaitFor(ctx, `window.lightspeed.state === "playing" && document.body.dataset.state === "playing"`); err != nil {
		t.Fatalf("the player never played: %v", err)
	}
}

// framesDecoded reads the player's decoded frame count.
func framesDecoded(t *testing.T, ctx context.Context, tab *browser.Tab) int {
	t.Helper()
	var n int
	if err := tab.Eval(ctx, "window.lightspeed.framesDecoded()", &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// checkNoConsoleErrors fails the test if the page logged errors.
func checkNoConsoleErrors(t *testing.T, tab *browser.Tab) {
	t.Helper()
	if errs := tab.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// screenshot takes a PNG of the tab, checks that it decodes and writes it
// to the test's temporary directory.
func screenshot(t *testing.T, ctx context.Context, tab *browser.Tab, name string) image.Image {
	t.Helper()
	shot, err := tab.Screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %v: %s", img.Bounds().Size(), path)
	return img
}

// checkVideoShown fails the test unless the screenshot shows a picture
// where the page's <video> is: the test media's colour bars give many
// distinct colours, an empty or black element one or two.
func checkVideoShown(t *testing.T, ctx context.Context, tab *browser.Tab, img image.Image) {
	t.Helper()
	var box struct{ X, Y, W, H, ViewportW float64 }
	const read = `(r => ({X: r.x, Y: r.y, W: r.width, H: r.height, ViewportW: innerWidth}))(document.querySelector("#stage video").getBoundingClientRect())`
	if err := tab.Eval(ctx, read, &box); err != nil {
		t.Fatal(err)
	}
	if box.W < 100 || box.H < 100 || box.ViewportW <= 0 {
		t.Fatalf("the video element is %+v", box)
	}
	scale := float64(img.Bounds().Dx()) / box.ViewportW
	colours := map[uint32]bool{}
	for i := 1; i < 20; i++ {
		for j := 1; j < 20; j++ {
			x := int((box.X + box.W*float64(i)/20) * scale)
			y := int((box.Y + box.H*float64(j)/20) * scale)
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>13<<6|g>>13<<3|b>>13] = true // 3 bits per channel
		}
	}
	t.Logf("the video area of the screenshot has %d distinct colours", len(colours))
	if len(colours) < 6 {
		t.Errorf("the video area of the screenshot has %d distinct colours: no picture", len(colours))
	}
}

func TestBrowserPlaysTheViewerPage(t *testing.T) {
	netns.Require(t)
	browser.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pair, _, base := stackRole.StartForTest(t, ctx, t.TempDir(), nil)
	if want := "http://" + pair.AddrA.String() + ":"; !strings.HasPrefix(base, want) {
		t.Fatalf("the stack serves on %s, want %s…", base, want)
	}
	b := browser.StartForTest(t, ctx, browser.Options{Netns: pair.B, Extra: []string{"--window-size=1280,900"}})

	t.Run("watch page plays the channel", func(t *testing.T) {
		tab := openPage(t, ctx, b, base+"/watch/77")
		waitPlaying(t, ctx, tab)

		first := framesDecoded(t, ctx, tab)
		more, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tab.WaitFor(more, fmt.Sprintf("window.lightspeed.framesDecoded() > %d", first+30)); err != nil {
			t.Fatalf("frames decoded stayed near %d: %v", first, err)
		}

		var size [2]int
		if err := tab.Eval(ctx, "[window.lightspeed.videoWidth, window.lightspeed.videoHeight]", &size); err != nil {
			t.Fatal(err)
		}
		if size != [2]int{testmedia.Width, testmedia.Height} {
			t.Errorf("the video is %dx%d, want %dx%d", size[0], size[1], testmedia.Width, testmedia.Height)
		}
		var connected string
		if err := tab.Eval(ctx, "window.lightspeed.pc.connectionState", &connected); err != nil || connected != "connected" {
			t.Errorf("the PeerConnection is %q (%v), want connected", connected, err)
		}

		// The server counts the page as the channel's viewer.
		counted, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		const oneViewer = `fetch("/api/channels", {cache: "no-store"}).then(r => r.json()).then(l => l.find(c => c.channel === 77)?.viewers === 1)`
		if err := tab.WaitFor(counted, oneViewer); err != nil {
			t.Errorf("/api/channels never counted the page as channel 77's viewer: %v", err)
		}

		img := screenshot(t, ctx, tab, "watch.png")
		checkVideoShown(t, ctx, tab, img)
		checkNoConsoleErrors(t, tab)
	})

	t.Run("channel list plays the only live channel in place", func(t *testing.T) {
		tab := openPage(t, ctx, b, base+"/")
		waitPlaying(t, ctx, tab)

		var page struct {
			Path    string `json:"path"`
			Channel int    `json:"channel"`
			Cards   int    `json:"cards"`
			Frames  int    `json:"frames"`
		}
		const read = `({path: location.pathname, channel: window.lightspeed.channel,
			cards: document.querySelectorAll("#channel-list > li").length,
			frames: window.lightspeed.framesDecoded()})`
		if err := tab.Eval(ctx, read, &page); err != nil {
			t.Fatal(err)
		}
		if page.Path != "/" || page.Channel != 77 || page.Cards != 1 || page.Frames == 0 {
			t.Errorf("the list page is at %q, plays channel %d with %d frames decoded, lists %d channels; want /, 77, some, 1",
				page.Path, page.Channel, page.Frames, page.Cards)
		}

		screenshot(t, ctx, tab, "list.png")
		checkNoConsoleErrors(t, tab)
	})
}
