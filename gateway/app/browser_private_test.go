package app

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/keys"
	"lightspeed/gateway/viewtoken"
	"lightspeed/shared/testkit/browser"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/stackrole"
	"lightspeed/shared/testkit/testmedia"
)

// privateStackRole is the role of the test binary re-executed in namespace
// A for the private channel: the stack of stackRole, but with channel 77
// private in a key store of the data directory, see servePrivateStack.
var privateStackRole = stackrole.Role{
	Name:       "private-stack",
	AddrVar:    "LS_TEST_PRIVATE_STACK_ADDR",
	DataDirVar: "LS_TEST_PRIVATE_STACK_DATA_DIR",
}

// The lines the private stack prints with the viewer tokens it issued,
// for channel 77 and for channel 78, before its ready line.
const (
	token77Prefix = "TOKEN77 "
	token78Prefix = "TOKEN78 "
)

// runPrivateStack plays privateStackRole: a gateway with its embedded
// function on the veth address of namespace A, whose key store (in the
// data directory) has channel 77, private, and a publisher streaming the
// test media to 77 with its key. It prints a viewer token for channel 77
// and one for channel 78, signed with the data directory's token key,
// then the ready line once 77 is live, and serves until SIGTERM.
func runPrivateStack(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
	cfg := nsStackConfig(p)
	cfg.StreamKey = "" // the key store of the data directory
	store, err := keys.Open(p.DataDir)
	if err != nil {
		return err
	}
	k, err := store.Add(77)
	if err != nil {
		return err
	}
	if err := store.SetPrivate(77, true); err != nil {
		return err
	}
	g, err := New(cfg, store, log)
	if err != nil {
		return err
	}

	// The tokens `gateway tokens issue` would give, for the test to read.
	key, err := viewtoken.LoadOrCreateKey(p.DataDir)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, t := range []struct {
		prefix  string
		channel uint32
	}{{token77Prefix, 77}, {token78Prefix, 78}} {
		token, err := viewtoken.Issue(key, t.channel, 2*time.Hour, now)
		if err != nil {
			return err
		}
		fmt.Printf("%s%s\n", t.prefix, token)
	}

	live := func() bool { h := g.Hubs().Get(77); return h != nil && h.Stats().Live }
	return stackrole.Stack{Gateway: g, StreamKey: k.String(), Live: live}.Run(ctx)
}

// tokenLine reads the token the stack printed after prefix.
func tokenLine(t *testing.T, ctx context.Context, stack *netns.Process, prefix string) string {
	t.Helper()
	line, err := stack.WaitLine(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	_, token, _ := strings.Cut(line, prefix)
	if token = strings.TrimSpace(token); strings.Count(token, ".") != 2 {
		t.Fatalf("the stack printed %q: not a viewer token", line)
	}
	return token
}

// deniedPage is what the page shows when the server refused it.
type deniedPage struct {
	State     string `json:"state"`
	BodyState string `json:"bodyState"`
	Message   string `json:"message"`
	Shown     bool   `json:"shown"`
	Frames    int    `json:"frames"`
	PC        bool   `json:"pc"`
	Offers    int    `json:"offers"`
	Polls     int    `json:"polls"`
	Href      string `json:"href"`
}

// readDeniedJS reads a deniedPage: the player's state and message, whether
// the notice is on screen, the decoded frames, whether a PeerConnection is
// open, and the page's WHEP offers and channel list polls so far.
const readDeniedJS = `(() => {
  const requests = (path) => performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname === path).length;
  const notice = document.querySelector("#stage [data-role=notice]");
  return {state: window.lightspeed.state, bodyState: document.body.dataset.state, message: window.lightspeed.message,
    shown: !!notice && !notice.hidden && notice.getBoundingClientRect().height > 0,
    frames: window.lightspeed.framesDecoded(), pc: window.lightspeed.pc !== null,
    offers: requests("/api/whep/77"), polls: requests("/api/channels"), href: location.href};
})()`

// waitDenied waits, at most 30 s, until the page shows that the server
// refused it; then, while the page polls the channel list twice more
// (6 s), checks that it does not ask again and never plays. It returns
// what the page shows.
func waitDenied(t *testing.T, ctx context.Context, tab *browser.Tab) deniedPage {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := tab.WaitFor(wctx, `window.lightspeed.state === "denied" && document.body.dataset.state === "denied"`); err != nil {
		t.Fatalf("the page never said it was refused: %v", err)
	}
	var first deniedPage
	if err := tab.Eval(ctx, readDeniedJS, &first); err != nil {
		t.Fatal(err)
	}
	if err := tab.WaitFor(wctx, fmt.Sprintf(`performance.getEntriesByType("resource").filter((e) => new URL(e.name).pathname === "/api/channels").length >= %d`, first.Polls+2)); err != nil {
		t.Fatalf("the page stopped polling the channel list: %v", err)
	}
	var later deniedPage
	if err := tab.Eval(ctx, readDeniedJS, &later); err != nil {
		t.Fatal(err)
	}
	if later.State != "denied" || later.BodyState != "denied" || !later.Shown {
		t.Errorf("after a refusal the page is %+v, want it to stay denied with the notice shown", later)
	}
	if later.Offers != 1 {
		t.Errorf("the page sent %d WHEP offers after %d polls of the channel list; want 1: a refusal is not retried", later.Offers, later.Polls)
	}
	if later.Frames != 0 || later.PC {
		t.Errorf("a refused page decoded %d frames (PeerConnection open: %v); want none", later.Frames, later.PC)
	}
	return later
}

// TestBrowserPlaysAPrivateChannelWithItsToken: a private channel's watch
// page without a viewer token says the channel needs one, and with
// another channel's token says the token is for another channel, and
// neither plays nor asks again; with the channel's own token (the link
// `gateway tokens issue` prints) it plays, and the token is gone from the
// address bar.
func TestBrowserPlaysAPrivateChannelWithItsToken(t *testing.T) {
	netns.Require(t)
	netns.Exclusive(t)
	browser.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pair, stack, base := privateStackRole.StartForTest(t, ctx, t.TempDir(), nil)
	token77 := tokenLine(t, ctx, stack, token77Prefix)
	token78 := tokenLine(t, ctx, stack, token78Prefix)
	b := browser.StartForTest(t, ctx, browser.Options{Netns: pair.B, Extra: []string{"--window-size=1280,900"}})

	t.Run("without a token the page says the channel needs one", func(t *testing.T) {
		tab := openPage(t, ctx, b, base+"/watch/77")
		page := waitDenied(t, ctx, tab)
		for _, want := range []string{"needs a viewer token", "a viewer token is needed"} { // the page's words, the server's
			if !strings.Contains(page.Message, want) {
				t.Errorf("the page says %q, want it to say %q", page.Message, want)
			}
		}
		screenshot(t, ctx, tab, "private-no-token.png")
	})

	t.Run("another channel's token is refused for that reason", func(t *testing.T) {
		tab := openPage(t, ctx, b, base+"/watch/77?token="+token78)
		page := waitDenied(t, ctx, tab)
		for _, want := range []string{"for another channel", "viewer token is for another channel (channel 78), not channel 77"} {
			if !strings.Contains(page.Message, want) {
				t.Errorf("the page says %q, want it to say %q", page.Message, want)
			}
		}
		if strings.Contains(page.Href, "token=") || strings.Contains(page.Href, token78) {
			t.Errorf("the address bar still has the token: %s", page.Href)
		}
	})

	t.Run("the channel's token plays it and leaves the address bar", func(t *testing.T) {
		tab := openPage(t, ctx, b, base+"/watch/77?token="+token77)
		waitPlaying(t, ctx, tab)

		first := framesDecoded(t, ctx, tab)
		more, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tab.WaitFor(more, fmt.Sprintf("window.lightspeed.framesDecoded() > %d", first+30)); err != nil {
			t.Fatalf("frames decoded stayed near %d: %v", first, err)
		}

		var page struct {
			Href    string `json:"href"`
			Path    string `json:"path"`
			Size    [2]int `json:"size"`
			History int    `json:"history"`
		}
		const read = `({href: location.href, path: location.pathname + location.search,
			size: [window.lightspeed.videoWidth, window.lightspeed.videoHeight], history: history.length})`
		if err := tab.Eval(ctx, read, &page); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(page.Href, "token=") || strings.Contains(page.Href, token77) {
			t.Errorf("the address bar still has the token: %s", page.Href)
		}
		if page.Path != "/watch/77" {
			t.Errorf("the page is at %q, want /watch/77", page.Path)
		}
		if page.Size != [2]int{testmedia.Width, testmedia.Height} {
			t.Errorf("the video is %dx%d, want %dx%d", page.Size[0], page.Size[1], testmedia.Width, testmedia.Height)
		}

		// The stats overlay works on a private channel as on any other.
		if err := tab.Eval(ctx, `(document.querySelector("#stage [data-role=stats-toggle]").click(), true)`, nil); err != nil {
			t.Fatal(err)
		}
		stats, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		const statsShown = `(() => {
			const box = document.querySelector("#stage [data-role=stats]");
			const dts = [...box.querySelectorAll("dt")];
			const served = dts.find((dt) => dt.textContent === "Served by");
			return !box.hidden && served && served.nextElementSibling.textContent.startsWith("ams");
		})()`
		if err := tab.WaitFor(stats, statsShown); err != nil {
			t.Errorf("the stats overlay never showed the session: %v", err)
		}

		screenshot(t, ctx, tab, "private-token.png")
		checkNoConsoleErrors(t, tab)
	})
}
