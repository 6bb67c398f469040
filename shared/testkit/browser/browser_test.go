package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"lightspeed/shared/testkit/netns"
)

// rolePageServer is the role of the test binary re-executed in namespace
// A: it serves loopbackPage on $LISTEN and logs every request.
const rolePageServer = "page-server"

func TestMain(m *testing.M) {
	if netns.Role() == rolePageServer {
		os.Exit(servePage(os.Getenv("LISTEN")))
	}
	os.Exit(m.Run())
}

// loopbackPage fetches from its server, and sends a canvas animation from
// one RTCPeerConnection to another in the same page, to a <video>.
const loopbackPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>loopback</title></head>
<body>
<canvas id="c" width="320" height="240"></canvas>
<video id="v" autoplay muted playsinline></video>
<script>
const state = window.state = {candidates: [], fetched: null};
fetch("/hello").then(r => r.json()).then(j => { state.fetched = j; });

const canvas = document.getElementById("c");
const g = canvas.getContext("2d");
let n = 0;
setInterval(() => {
  n++;
  g.fillStyle = "hsl(" + (n * 7 % 360) + ",80%,50%)";
  g.fillRect(0, 0, 320, 240);
  g.fillStyle = "#fff";
  g.font = "48px sans-serif";
  g.fillText(String(n), 20, 120);
}, 33);

function gathered(pc) {
  return new Promise(resolve => {
    const check = () => pc.iceGatheringState === "complete" && resolve();
    pc.addEventListener("icegatheringstatechange", check);
    check();
  });
}

async function start() {
  const send = new RTCPeerConnection(), recv = new RTCPeerConnection();
  window.pcs = {send, recv};
  send.onicecandidate = e => { if (e.candidate) state.candidates.push(e.candidate.candidate); };
  recv.ontrack = e => {
    const v = document.getElementById("v");
    v.srcObject = e.streams[0];
    v.play();
  };
  const stream = canvas.captureStream(30);
  stream.getTracks().forEach(t => send.addTrack(t, stream));
  // Whole descriptions after gathering, so no candidate arrives early.
  await send.setLocalDescription();
  await gathered(send);
  await recv.setRemoteDescription(send.localDescription);
  await recv.setLocalDescription();
  await gathered(recv);
  await send.setRemoteDescription(recv.localDescription);
}
start().catch(e => console.error("webrtc: " + e));
</script>
</body></html>
`

// servePage serves loopbackPage on addr until it is killed.
func servePage(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, loopbackPage)
	})
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"server": ln.Addr().String(), "client": r.RemoteAddr})
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("%s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		mux.ServeHTTP(w, r)
	})
	fmt.Println("serving on", ln.Addr())
	fmt.Println("serve:", http.Serve(ln, logged))
	return 1
}

// namespaces returns the names that `ip netns list` shows.
func namespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// candidate is the part of an ICE candidate line a test checks.
type candidate struct{ addr, typ string }

// parseCandidate reads "candidate:<foundation> <component> <proto>
// <priority> <address> <port> typ <type> ...".
func parseCandidate(line string) (candidate, bool) {
	f := strings.Fields(strings.TrimPrefix(line, "a="))
	if len(f) < 8 || f[6] != "typ" {
		return candidate{}, false
	}
	return candidate{addr: f[4], typ: f[7]}, true
}

func TestPageInOtherNamespaceLoadsAndDecodesWebRTCVideo(t *testing.T) {
	Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	pair, err := netns.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pair.Close(); err != nil {
			t.Errorf("pair Close: %v", err)
		}
		if left := namespaces(t); slices.Contains(left, pair.A) || slices.Contains(left, pair.B) {
			t.Errorf("namespaces left behind: %v", left)
		}
	})

	addr := net.JoinHostPort(pair.AddrA.String(), "8080")
	cmd := pair.SelfCommand(ctx, pair.A, rolePageServer)
	cmd.Env = append(cmd.Env, "LISTEN="+addr)
	server := &netns.Process{Cmd: cmd, Name: "page-server", Logf: t.Logf}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := server.Stop(); err != nil {
			t.Errorf("page server: %v", err)
		}
	})
	if _, err := server.WaitLine(ctx, "serving on"); err != nil {
		t.Fatal(err)
	}

	b := StartForTest(t, ctx, Options{Netns: pair.B})
	url := "http://" + addr + "/"
	tab, err := b.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("page comes from the server in the other namespace", func(t *testing.T) {
		if _, err := server.WaitLine(ctx, "GET / from "+pair.AddrB.String()+":"); err != nil {
			t.Errorf("server saw no request from B's address: %v", err)
		}
		var href string
		if err := tab.Eval(ctx, "location.href", &href); err != nil || href != url {
			t.Errorf("location.href = %q, %v; want %q", href, err, url)
		}
		if err := tab.WaitFor(ctx, "window.state && window.state.fetched"); err != nil {
			t.Fatal(err)
		}
		var fetched struct{ Server, Client string }
		if err := tab.Eval(ctx, "window.state.fetched", &fetched); err != nil {
			t.Fatal(err)
		}
		if fetched.Server != addr || !strings.HasPrefix(fetched.Client, pair.AddrB.String()+":") {
			t.Errorf("fetch answered %+v, want server %s and a client on %s", fetched, addr, pair.AddrB)
		}
	})

	t.Run("peer connection gathers B's veth address as a host candidate", func(t *testing.T) {
		if err := tab.WaitFor(ctx, `window.pcs && pcs.send.iceGatheringState === "complete"`); err != nil {
			t.Fatal(err)
		}
		var lines []string
		if err := tab.Eval(ctx, "window.state.candidates", &lines); err != nil {
			t.Fatal(err)
		}
		t.Logf("candidates: %q", lines)
		found := false
		for _, l := range lines {
			c, ok := parseCandidate(l)
			if !ok {
				t.Errorf("unparsable candidate %q", l)
				continue
			}
			if strings.HasSuffix(c.addr, ".local") {
				t.Errorf("mDNS candidate %q: WebRtcHideLocalIpsWithMdns not disabled", l)
			}
			found = found || (c.typ == "host" && c.addr == pair.AddrB.String())
		}
		if !found {
			t.Errorf("no host candidate with %s among %q", pair.AddrB, lines)
		}
	})

	t.Run("remote video decodes more and more frames", func(t *testing.T) {
		const frames = `document.getElementById("v").getVideoPlaybackQuality().totalVideoFrames`
		if err := tab.WaitFor(ctx, frames+" > 0"); err != nil {
			t.Fatal(err)
		}
		var first int
		if err := tab.Eval(ctx, frames, &first); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(ctx, fmt.Sprintf("%s > %d", frames, first+10)); err != nil {
			t.Fatal(err)
		}
		var size [2]int
		if err := tab.Eval(ctx, `(v => [v.videoWidth, v.videoHeight])(document.getElementById("v"))`, &size); err != nil {
			t.Fatal(err)
		}
		if size != [2]int{320, 240} {
			t.Errorf("video is %dx%d, want the canvas's 320x240", size[0], size[1])
		}
	})

	t.Run("screenshot is a PNG of the viewport", func(t *testing.T) {
		shot, err := tab.Screenshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("screenshot is not a PNG: %v", err)
		}
		if r := img.Bounds(); r.Dx() < 320 || r.Dy() < 240 {
			t.Errorf("screenshot is %v, smaller than the canvas", r)
		}
	})

	t.Run("page logs no errors", func(t *testing.T) {
		if errs := tab.ConsoleErrors(); len(errs) > 0 {
			t.Errorf("console errors: %q", errs)
		}
	})

	if err := tab.Close(); err != nil {
		t.Errorf("tab Close: %v", err)
	}
}

// openBlank starts a browser in this namespace and opens about:blank in
// it, for a test of at most a minute. Both close when the test ends.
func openBlank(t *testing.T) (context.Context, *Tab) {
	t.Helper()
	if _, err := Chromium(); err != nil {
		netns.Unavailable(t, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	b := StartForTest(t, ctx, Options{})
	tab, err := b.Open(ctx, "about:blank")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tab.Close() })
	return ctx, tab
}

func TestTabRecordsConsoleErrorsAndExceptions(t *testing.T) {
	ctx, tab := openBlank(t)

	if err := tab.Eval(ctx, `console.log("fine"); console.error("bad thing"); setTimeout(() => { throw new Error("boom") }); 1`, nil); err != nil {
		t.Fatal(err)
	}
	// Console events arrive apart from the evaluation's answer.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(tab.ConsoleErrors()) < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("console errors %q, want two; all messages %q", tab.ConsoleErrors(), tab.Console())
		case <-tick.C:
		}
	}
	errs := tab.ConsoleErrors()
	if !strings.Contains(errs[0], "error: bad thing") || !strings.Contains(errs[1], "boom") {
		t.Errorf("console errors %q, want the console.error and the exception", errs)
	}
	if all := tab.Console(); !slices.Contains(all, "log: fine") {
		t.Errorf("console %q lacks the log message", all)
	}
}

func TestEvalReportsExceptionsAndWaitForGivesUpWithTheLastError(t *testing.T) {
	ctx, tab := openBlank(t)

	var n int
	if err := tab.Eval(ctx, "Promise.resolve(41).then(x => x + 1)", &n); err != nil || n != 42 {
		t.Errorf("Eval of a promise = %d, %v; want 42", n, err)
	}
	if err := tab.Eval(ctx, `undefinedName.field`, nil); err == nil || !strings.Contains(err.Error(), "undefinedName") {
		t.Errorf("Eval of a throwing expression = %v, want the ReferenceError", err)
	}

	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	err := tab.WaitFor(short, "window.neverSet.value")
	if err == nil || !strings.Contains(err.Error(), "neverSet") || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("WaitFor = %v, want a deadline error naming the last failure", err)
	}
	// The tab outlives a caller's context that ended.
	if err := tab.Eval(ctx, "1 + 1", &n); err != nil || n != 2 {
		t.Errorf("Eval after a timed-out WaitFor = %d, %v; want 2", n, err)
	}
}

func TestMergeFlags(t *testing.T) {
	for _, tc := range []struct {
		name        string
		base, extra []string
		want        []flag
		wantErr     bool
	}{
		{
			name: "extra adds flags after the base",
			base: []string{"--headless"}, extra: []string{"--window-size=1280,720"},
			want: []flag{{"headless", true}, {"window-size", "1280,720"}},
		},
		{
			name: "extra replaces a flag in place",
			base: []string{"--autoplay-policy=user-gesture-required", "--headless"}, extra: []string{"--autoplay-policy=no-user-gesture-required"},
			want: []flag{{"autoplay-policy", "no-user-gesture-required"}, {"headless", true}},
		},
		{
			name: "feature lists are joined",
			base: []string{"--disable-features=A"}, extra: []string{"--disable-features=B", "--enable-features=C"},
			want: []flag{{"disable-features", "A,B"}, {"enable-features", "C"}},
		},
		{
			name: "a flag without dashes is refused",
			base: []string{"--headless"}, extra: []string{"headless"},
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mergeFlags(tc.base, tc.extra)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
