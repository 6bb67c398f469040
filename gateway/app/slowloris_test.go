package app

// The slowloris case of the fault suite (issue 15, point 1): on every
// listener of a real gateway, clients that connect and send nothing, or
// drip a byte a second and never finish a line, request or handshake,
// must be closed within a stated deadline and cost bounded memory.
//
// The clients run in a child process (this test binary, re-executed with
// slowlorisClientVar set), so that the runtime figures of this process —
// heap in use, stack in use, goroutines — are the gateway's alone. The
// listeners are measured one after the other (before, then with all their
// connections open), in an order that puts every such moment before the
// first deadline of the others; their connections then run out their
// deadlines at the same time, and each listener's subtest checks its own.
// Goroutines are told apart by stack, so that each leak check counts only
// its listener's.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/quic-go/quic-go"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/shared/relaywire"
)

const (
	slowlorisIdle   = 200         // connections that send nothing, per listener
	slowlorisDrip   = 50          // connections that drip, per listener
	slowlorisSource = 250         // UDP sources of garbage
	slowlorisEvery  = time.Second // a dripper's pace: one byte this often
	// slowlorisMargin is what a closure may take past its deadline: the
	// server's own scheduling of hundreds of connections, under -race, on
	// a small machine.
	slowlorisMargin = 3 * time.Second

	// The deadlines, each where it is set.
	//
	// FTL control: ftl.Config.AuthTimeout, 5 s by default (app.go sets
	// none): one absolute deadline from accept to the end of the
	// handshake, which dripping does not extend; at it the gateway replies
	// 408 and closes its side (linger then reads for at most 500 ms).
	ftlControlDeadline = 5 * time.Second
	// HTTP: app.go's http.Server ReadHeaderTimeout, for a connection's
	// first request header (an idle new connection included).
	httpHeaderDeadline = 10 * time.Second
	// HTTP keep-alive: after a request, an idle connection is held for
	// the http.Server's IdleTimeout, which app.go sets.
	httpIdleDeadline = 30 * time.Second
	// HTTP request bodies: the deadline within which the WHEP and WHIP
	// handlers read the body of a POST (the http.Server has no
	// ReadTimeout), answering 408 past it.
	httpBodyDeadline = 15 * time.Second
	// Websocket of a live channel whose page never answers the offer: the
	// function ends a session not connected ConnectTimeout after it
	// started it (function/fanout Config.ConnectTimeout, 30 s by default,
	// not settable from the gateway's or the function's Config), and the
	// gateway then closes the socket.
	wsLiveDeadline = 30 * time.Second
	// Websocket of a channel not live: the page waits for it, pinged
	// every 20 s (wsPingInterval); one that answers no ping and sends
	// nothing is closed wsPingInterval + 10 s after its last sign of life.
	wsOfflineDeadline = 30 * time.Second
	// Relay: relaywire.AuthTimeout bounds hello, challenge, auth and
	// welcome after the QUIC handshake, and the handshake itself.
	relayDeadline = relaywire.AuthTimeout
)

// The findings the checks fail on.
const (
	lorisKeepAliveFinding = "gateway/app/app.go New: the http.Server's IdleTimeout (30 s) no longer closes a keep-alive connection idle after a request"
	lorisSpoofedFinding   = "gateway/relay/server.go Listen: the quic.Transport's VerifySourceAddress no longer makes a spoofed Initial prove its address (a Retry) before the relay keeps state for it"
)

// lorisFindings are the checks, by subtest name below TestFaultSlowloris,
// that fail on a known finding and are skipped until it is fixed.
var lorisFindings = map[string]string{}

// lorisRun runs check as t's subtest name, skipped while lorisFindings
// names a finding for it.
func lorisRun(t *testing.T, name string, check func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		_, key, _ := strings.Cut(t.Name(), "/")
		if why, ok := lorisFindings[key]; ok {
			t.Skip(why)
		}
		check(t)
	})
}

// lorisMaxSpoofed is how many handshakes a flood of QUIC Initials from
// spoofable sources may start on the relay: a few, before source address
// validation (Retry) takes over.
const lorisMaxSpoofed = 64

// slowlorisClientVar, set in the environment of this test binary, makes
// TestFaultSlowloris the clients: its value is a slowlorisSpec.
const slowlorisClientVar = "LIGHTSPEED_TEST_SLOWLORIS_CLIENT"

// slowlorisPrefix marks the child's lines meant for the parent.
const slowlorisPrefix = "slowloris-client: "

func TestFaultSlowloris(t *testing.T) {
	if spec := os.Getenv(slowlorisClientVar); spec != "" {
		runSlowlorisClient(spec)
		return
	}
	// In the order of their measurements: each listener's "before" and
	// "with all connections open" are taken alone, one listener after the
	// other, all before the first of them reaches its deadline (the UDP
	// ones, and the relay's handshake state, are over before the next
	// starts). Then each listener's subtest waits for its connections'
	// ends, which run meanwhile, and checks them.
	cases := []*lorisCase{
		slowlorisFTLMedia(t),
		slowlorisRelayUDP(t),
		slowlorisWebsocket(t),
		slowlorisHTTP(t),
		slowlorisFTLControl(t),
		slowlorisRelay(t),
	}
	for _, c := range cases {
		c.child.waitStarted(t)
	}
	first := lorisMeasure()
	start := time.Now()
	for _, c := range cases {
		began := time.Now()
		c.window(t)
		t.Logf("%s: opened and measured in %v", c.name, time.Since(began).Round(time.Millisecond))
	}
	t.Logf("every listener's connections were opened and measured in %v", time.Since(start).Round(time.Millisecond))
	for _, name := range []string{"ftl-control", "ftl-media-udp", "http", "websocket", "relay", "relay-udp"} {
		for _, c := range cases {
			if c.name == name {
				t.Run(name, c.check)
			}
		}
	}
	last := lorisMeasure()
	lorisFault("after", fmt.Sprintf("every connection closed (or given up), process heap in use %s before the first connection, %s after the last; goroutines %d, %d",
		lorisMB(int64(first.heap)), lorisMB(int64(last.heap)), first.goroutines, last.goroutines))
	if d := last.goroutines - first.goroutines; d > 10 {
		t.Errorf("%d goroutines more than before the first connection", d)
	}
}

// lorisCase is one listener's case: its gateway and clients are set up;
// window opens the connections and measures (in the parent, alone), check
// waits for their ends and checks them (in the listener's subtest).
type lorisCase struct {
	name   string
	child  *slowlorisChild
	window func(t *testing.T)
	check  func(t *testing.T)
}

// ---- the gateway's figures ----

// Goroutine classes, told apart by their stacks (a goroutine may be in
// several): what each listener's connections run.
var lorisClasses = []struct {
	name  string
	match func(stack string) bool
}{
	{"ftl", func(s string) bool { return strings.Contains(s, "gateway/ftl.(*Server).handleControl") }},
	{"websocket", func(s string) bool {
		return strings.Contains(s, "gateway/signaling.(*Signaling).serveWebsocket") || strings.Contains(s, "gateway/signaling.(*wsConn)")
	}},
	{"http", func(s string) bool {
		return (strings.Contains(s, "net/http.(*conn).serve") || strings.Contains(s, "net/http.(*connReader)")) &&
			!strings.Contains(s, "gateway/signaling.(*Signaling).serveWebsocket")
	}},
	{"relay", func(s string) bool {
		return strings.Contains(s, "gateway/relay.(*Server).serveConn") || strings.Contains(s, "quic-go.(*baseServer)")
	}},
	{"quic-handshake", func(s string) bool { return strings.Contains(s, "quic-go.(*baseServer).handleNewConn") }},
}

// lorisFigures are the process's runtime figures at one moment.
type lorisFigures struct {
	heap, stack uint64 // bytes in use, after a collection
	goroutines  int
	class       map[string]int
}

func lorisMeasure() lorisFigures {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f := lorisFigures{heap: ms.HeapInuse, stack: ms.StackInuse, class: map[string]int{}}
	f.goroutines, f.class = lorisGoroutines()
	return f
}

func lorisGoroutines() (int, map[string]int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	class := map[string]int{}
	total := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.HasPrefix(g, "goroutine ") {
			continue
		}
		total++
		for _, c := range lorisClasses {
			if c.match(g) {
				class[c.name]++
			}
		}
	}
	return total, class
}

// lorisWaitClass polls until cond holds of the goroutine classes, at most
// within; it reports whether it did.
func lorisWaitClass(within time.Duration, cond func(map[string]int) bool) bool {
	deadline := time.Now().Add(within)
	for {
		if _, c := lorisGoroutines(); cond(c) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lorisSettle waits until the count of class has grown by at least want over
// base and has stopped moving (the same on two looks 100 ms apart), at
// most within.
func lorisSettle(t *testing.T, class string, base, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := -1
	for {
		_, c := lorisGoroutines()
		if c[class]-base >= want && c[class] == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s goroutines %d over the %d before, want at least %d", class, c[class]-base, base, want)
		}
		last = c[class]
		time.Sleep(100 * time.Millisecond)
	}
}

func lorisMB(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func lorisKB(b float64) string { return fmt.Sprintf("%.1f KB", b/1024) }

// lorisCost is what one group of connections adds, from before to during.
func lorisCost(before, during lorisFigures, n int) string {
	dh := int64(during.heap) - int64(before.heap)
	ds := int64(during.stack) - int64(before.stack)
	dg := during.goroutines - before.goroutines
	return fmt.Sprintf("heap %+.1f MB (%s/conn), stack %+.1f MB (%s/conn), goroutines %+d (%.1f/conn)",
		float64(dh)/(1<<20), lorisKB(float64(dh)/float64(n)), float64(ds)/(1<<20), lorisKB(float64(ds)/float64(n)), dg, float64(dg)/float64(n))
}

// ---- the gateway ----

// startLorisGateway is startGateway with a logger for errors only: a
// refusal logged for each of hundreds of connections would be the test
// log's own memory, measured with the gateway's.
func startLorisGateway(t *testing.T, cfg Config) *Gateway {
	t.Helper()
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelError}))
	g, err := New(cfg, keys.NewStatic(k), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
	})
	return g
}

// lorisLive makes channel live with no media: a publisher that started and
// sends nothing, enough for signaling to take viewers.
func lorisLive(t *testing.T, g *Gateway, channel uint32) {
	t.Helper()
	pub, err := g.Hubs().Claim(channel)
	if err != nil {
		t.Fatal(err)
	}
	pub.Start(hub.PublisherInfo{Software: "slowloris", VideoCodec: "H264", AudioCodec: "OPUS", VideoPayloadType: 96, AudioPayloadType: 97})
	t.Cleanup(pub.Release)
}

// ---- the child with the clients ----

// slowlorisSpec is what the child runs: groups of connections, each
// started when the parent says so.
type slowlorisSpec struct {
	Groups []slowlorisGroup
}

type slowlorisGroup struct {
	Kind string // see openSlowloris
	Addr string // the listener
	N    int    // connections (UDP: sources)
	Path string // websocket: path and query
	Head string // http-body: the request head
	Live bool   // websocket: wait for the offer; times count from it
	Drip bool   // drip instead of idling
	// Workers is how many connections open at once; 0: 16.
	Workers int
	GiveUp  time.Duration // how long after its start a connection may stay open
}

// slowlorisReport is a group's outcome, as the child tells it.
type slowlorisReport struct {
	Group    int             // the group's index in the spec
	Closed   []time.Duration // per closed connection: from its start to its end
	Unclosed int             // still open at GiveUp
	Answers  map[string]int  // http-body: status lines received
	Errors   []string        // a few, for the failure message
	Sent     int             // UDP: datagrams sent
}

type slowlorisChild struct {
	stdin   io.Writer
	started chan struct{}
	ready   chan slowlorisReport
	result  chan slowlorisReport
	exited  chan struct{}
	stderr  bytes.Buffer
}

// startSlowlorisChild starts the clients of spec, which then wait for go;
// waitStarted waits until they do.
func startSlowlorisChild(t *testing.T, spec slowlorisSpec) *slowlorisChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(spec)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestFaultSlowloris$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), slowlorisClientVar+"="+string(b))
	c := &slowlorisChild{ready: make(chan slowlorisReport, 1), result: make(chan slowlorisReport, len(spec.Groups)), exited: make(chan struct{}), started: make(chan struct{})}
	cmd.Stderr = &c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var other []string
	go func() {
		defer close(c.exited)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), slowlorisPrefix)
			if !ok {
				other = append(other, sc.Text())
				continue
			}
			word, rest, _ := strings.Cut(line, " ")
			var r slowlorisReport
			if rest != "" {
				if err := json.Unmarshal([]byte(rest), &r); err != nil {
					r.Errors = append(r.Errors, "bad report: "+err.Error())
				}
			}
			switch word {
			case "started":
				close(c.started)
			case "ready":
				c.ready <- r
			case "result":
				c.result <- r
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cancel()
		<-c.exited
		cmd.Wait()
		if t.Failed() {
			t.Logf("clients' other output: %s", strings.Join(other, "\n"))
			t.Logf("clients' stderr: %s", c.stderr.String())
		}
	})
	return c
}

func (c *slowlorisChild) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-c.started:
	case <-c.exited:
		t.Fatalf("the clients did not start: %s", c.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("the clients did not start within a minute")
	}
}

// open starts group i and returns when the child has it open.
func (c *slowlorisChild) open(t *testing.T, i int) slowlorisReport {
	t.Helper()
	if _, err := fmt.Fprintf(c.stdin, "go %d\n", i); err != nil {
		t.Fatalf("clients: %v", err)
	}
	select {
	case r := <-c.ready:
		if len(r.Errors) > 0 {
			t.Fatalf("group %d did not open: %s", i, strings.Join(r.Errors, "; "))
		}
		return r
	case <-c.exited:
		t.Fatalf("the clients exited: %s", c.stderr.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("group %d not open within 2 minutes", i)
	}
	return slowlorisReport{}
}

// results waits for the report of every group, in the order they end.
func (c *slowlorisChild) results(t *testing.T, n int, within time.Duration) []slowlorisReport {
	t.Helper()
	var out []slowlorisReport
	timeout := time.After(within)
	for len(out) < n {
		select {
		case r := <-c.result:
			out = append(out, r)
		case <-timeout:
			t.Fatalf("the clients reported %d of %d groups within %v", len(out), n, within)
		}
	}
	return out
}

// ---- reading the reports ----

func lorisMedian(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func lorisMax(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func lorisSecs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// lorisClosure describes how a group's connections ended.
func lorisClosure(r slowlorisReport, n int) string {
	return fmt.Sprintf("%d/%d closed, median %s, max %s", len(r.Closed), n, lorisSecs(lorisMedian(r.Closed)), lorisSecs(lorisMax(r.Closed)))
}

// lorisCheckClosed fails t unless every connection of r was closed, not sooner
// than early and not later than deadline plus the margin.
func lorisCheckClosed(t *testing.T, what string, r slowlorisReport, n int, early, deadline time.Duration, finding string) {
	t.Helper()
	if r.Unclosed > 0 || len(r.Closed) != n {
		t.Errorf("%s: %d of %d connections still open %v after they started (deadline %v + %v): %s; errors: %v",
			what, r.Unclosed, n, deadline+slowlorisMargin+time.Second, deadline, slowlorisMargin, finding, r.Errors)
		return
	}
	if m := lorisMax(r.Closed); m > deadline+slowlorisMargin {
		t.Errorf("%s: the last connection was closed after %v, deadline %v + %v: %s", what, m, deadline, slowlorisMargin, finding)
	}
	if m := slices.Min(r.Closed); m < early {
		t.Errorf("%s: a connection was closed after %v, before its deadline %v: not by the deadline (errors: %v)", what, m, deadline, r.Errors)
	}
}

// lorisCheckNoLeak waits until the goroutines of class are back to before's
// count (a couple more allowed), and fails t if they are not.
func lorisCheckNoLeak(t *testing.T, class string, before lorisFigures) {
	t.Helper()
	if !lorisWaitClass(10*time.Second, func(c map[string]int) bool { return c[class] <= before.class[class]+2 }) {
		_, c := lorisGoroutines()
		t.Errorf("%s goroutines: %d after the connections closed, %d before: leaked", class, c[class], before.class[class])
	}
}

func lorisFault(listener string, parts ...string) {
	fmt.Printf("FAULT slowloris %s: %s\n", listener, strings.Join(parts, "; "))
}

// lorisOverall gives the listener's goroutines before its connections,
// with all of them open and after they closed, and the process's heap in
// use before and with all of them open (afterwards, other listeners'
// connections are in it: see the line "after").
func lorisOverall(class string, before, during, after lorisFigures) string {
	return fmt.Sprintf("%s goroutines before/open/after %d/%d/%d; process heap in use before/open %s/%s, goroutines %d/%d",
		class, before.class[class], during.class[class], after.class[class],
		lorisMB(int64(before.heap)), lorisMB(int64(during.heap)), before.goroutines, during.goroutines)
}

// ---- the listeners ----

func slowlorisFTLControl(t *testing.T) *lorisCase {
	g := startLorisGateway(t, testConfig(t))
	addr := g.FTLAddr().String()
	give := ftlControlDeadline + slowlorisMargin + time.Second
	c := &lorisCase{name: "ftl-control", child: startSlowlorisChild(t, slowlorisSpec{Groups: []slowlorisGroup{
		{Kind: "ftl", Addr: addr, N: slowlorisIdle, GiveUp: give},
		{Kind: "ftl", Addr: addr, N: slowlorisDrip, Drip: true, GiveUp: give},
	}})}
	var before, idle, drip lorisFigures
	c.window = func(t *testing.T) {
		before = lorisMeasure()
		c.child.open(t, 0)
		lorisSettle(t, "ftl", before.class["ftl"], slowlorisIdle, 10*time.Second)
		idle = lorisMeasure()
		c.child.open(t, 1)
		lorisSettle(t, "ftl", idle.class["ftl"], slowlorisDrip, 10*time.Second)
		drip = lorisMeasure()
	}
	c.check = func(t *testing.T) {
		rs := lorisByGroup(t, c.child.results(t, 2, give+60*time.Second), 2)
		lorisCheckNoLeak(t, "ftl", before)
		after := lorisMeasure()
		lorisFault("ftl-control",
			fmt.Sprintf("deadline %v (ftl.Config.AuthTimeout, from accept to the end of the handshake)", ftlControlDeadline),
			fmt.Sprintf("%d idle: %s; %s", slowlorisIdle, lorisClosure(rs[0], slowlorisIdle), lorisCost(before, idle, slowlorisIdle)),
			fmt.Sprintf("%d dripping partial HMAC/CONNECT lines: %s; %s", slowlorisDrip, lorisClosure(rs[1], slowlorisDrip), lorisCost(idle, drip, slowlorisDrip)),
			lorisOverall("ftl", before, drip, after))
		const finding = "finding: ftl control does not end a handshake at its deadline"
		early := ftlControlDeadline - 500*time.Millisecond
		lorisRun(t, "idle", func(t *testing.T) {
			lorisCheckClosed(t, "idle", rs[0], slowlorisIdle, early, ftlControlDeadline, finding)
		})
		lorisRun(t, "drip", func(t *testing.T) {
			lorisCheckClosed(t, "drip", rs[1], slowlorisDrip, early, ftlControlDeadline, finding)
		})
		lorisCheckBounded(t, "ftl-control", before, drip, slowlorisIdle+slowlorisDrip, 64<<10)
	}
	return c
}

// lorisByGroup orders the reports, which arrive as their groups end, by group.
func lorisByGroup(t *testing.T, rs []slowlorisReport, n int) []slowlorisReport {
	t.Helper()
	out := make([]slowlorisReport, n)
	for _, r := range rs {
		if r.Group < 0 || r.Group >= n {
			t.Fatalf("a report of group %d", r.Group)
		}
		out[r.Group] = r
	}
	return out
}

// lorisCheckBounded fails t if n connections cost more than perConn bytes
// of heap each, from before to during.
func lorisCheckBounded(t *testing.T, what string, before, during lorisFigures, n int, perConn int64) {
	t.Helper()
	if d := int64(during.heap) - int64(before.heap); d > perConn*int64(n) {
		t.Errorf("%s: %d connections hold %s of heap, %s each, more than %s", what, n, lorisMB(d), lorisKB(float64(d)/float64(n)), lorisKB(float64(perConn)))
	}
}

func slowlorisHTTP(t *testing.T) *lorisCase {
	g := startLorisGateway(t, testConfig(t))
	lorisLive(t, g, 77) // WHEP reads the offer of a live channel only
	addr := g.HTTPAddr().String()
	const bodyLen = 4000
	head := func(path, extra string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/sdp\r\n%sContent-Length: %d\r\n\r\n", path, addr, extra, bodyLen)
	}
	groups := []slowlorisGroup{
		{Kind: "http-idle", Addr: addr, N: slowlorisIdle, GiveUp: httpHeaderDeadline + slowlorisMargin + time.Second},
		{Kind: "http-header", Addr: addr, N: slowlorisDrip, Drip: true, GiveUp: httpHeaderDeadline + slowlorisMargin + time.Second},
		{Kind: "http-keepalive", Addr: addr, N: slowlorisIdle, GiveUp: httpIdleDeadline + slowlorisMargin + time.Second},
		{Kind: "http-body", Addr: addr, N: slowlorisDrip, Drip: true, Head: head("/api/whep/77", ""), GiveUp: httpBodyDeadline + slowlorisMargin + time.Second},
		{Kind: "http-body", Addr: addr, N: slowlorisDrip, Drip: true, Head: head("/api/whip", "Authorization: Bearer "+testKey+"\r\n"), GiveUp: httpBodyDeadline + slowlorisMargin + time.Second},
	}
	names := []string{
		fmt.Sprintf("%d idle (nothing sent)", slowlorisIdle),
		fmt.Sprintf("%d dripping a request header", slowlorisDrip),
		fmt.Sprintf("%d idle after one request (keep-alive)", slowlorisIdle),
		fmt.Sprintf("%d dripping a WHEP POST body", slowlorisDrip),
		fmt.Sprintf("%d dripping a WHIP POST body", slowlorisDrip),
	}
	c := &lorisCase{name: "http", child: startSlowlorisChild(t, slowlorisSpec{Groups: groups})}
	var during []lorisFigures
	c.window = func(t *testing.T) {
		during = []lorisFigures{lorisMeasure()}
		for i, gr := range groups {
			c.child.open(t, i)
			lorisSettle(t, "http", during[i].class["http"], gr.N, 10*time.Second)
			during = append(during, lorisMeasure())
		}
	}
	c.check = func(t *testing.T) {
		rs := lorisByGroup(t, c.child.results(t, len(groups), httpIdleDeadline+slowlorisMargin+60*time.Second), len(groups))
		before := during[0]
		lorisCheckNoLeak(t, "http", before)
		after := lorisMeasure()
		parts := []string{fmt.Sprintf("deadlines: request header %v (ReadHeaderTimeout), request body %v (the WHEP and WHIP handlers'), keep-alive idle %v (IdleTimeout)", httpHeaderDeadline, httpBodyDeadline, httpIdleDeadline)}
		for i := range groups {
			p := fmt.Sprintf("%s: %s; %s", names[i], lorisClosure(rs[i], groups[i].N), lorisCost(during[i], during[i+1], groups[i].N))
			if len(rs[i].Answers) > 0 {
				p += fmt.Sprintf("; answered %v", rs[i].Answers)
			}
			parts = append(parts, p)
		}
		parts = append(parts, lorisOverall("http", before, during[len(groups)], after))
		lorisFault("http", parts...)

		early := httpHeaderDeadline - 500*time.Millisecond
		lorisRun(t, "idle", func(t *testing.T) {
			lorisCheckClosed(t, names[0], rs[0], groups[0].N, early, httpHeaderDeadline, "finding: no ReadHeaderTimeout")
		})
		lorisRun(t, "header-drip", func(t *testing.T) {
			lorisCheckClosed(t, names[1], rs[1], groups[1].N, early, httpHeaderDeadline, "finding: no ReadHeaderTimeout")
		})
		lorisRun(t, "keep-alive", func(t *testing.T) {
			lorisCheckClosed(t, names[2], rs[2], groups[2].N, time.Second, httpIdleDeadline, lorisKeepAliveFinding)
		})
		bodyFinding := "finding: %s reads the body with no deadline and the http.Server in gateway/app/app.go has no ReadTimeout, so a dripped body holds the connection and its handler forever; read it within 15 s (a read deadline from http.ResponseController), or set ReadTimeout"
		lorisRun(t, "whep-body-drip", func(t *testing.T) {
			lorisCheckClosed(t, names[3], rs[3], groups[3].N, time.Second, httpBodyDeadline, fmt.Sprintf(bodyFinding, "gateway/signaling/whep.go readBody (from whepPost)"))
		})
		lorisRun(t, "whip-body-drip", func(t *testing.T) {
			lorisCheckClosed(t, names[4], rs[4], groups[4].N, time.Second, httpBodyDeadline, fmt.Sprintf(bodyFinding, "gateway/whip/server.go readBody (from post)"))
		})
		n := 0
		for _, gr := range groups {
			n += gr.N
		}
		lorisCheckBounded(t, "http", before, during[len(groups)], n, 64<<10)
	}
	return c
}

func slowlorisWebsocket(t *testing.T) *lorisCase {
	// Two gateways: every page of a gateway hears of every viewer that
	// comes or goes, and the live pages' comings and goings would reach
	// the waiting ones.
	waiting := startLorisGateway(t, testConfig(t))
	waiting.Hubs().GetOrCreate(77) // known and not live: pages wait for it
	cfg := stackConfig(t)
	cfg.FunctionCap = 2 * (slowlorisIdle + slowlorisDrip)
	g := startLorisGateway(t, cfg)
	lorisLive(t, g, 77)
	offline := wsOfflineDeadline + slowlorisMargin + time.Second
	live := wsLiveDeadline + slowlorisMargin + time.Second
	wa, la := waiting.HTTPAddr().String(), g.HTTPAddr().String()
	const path = "/websocket?channel=77"
	// Live pages open a few at a time, as a small machine can start their
	// sessions (each is a PeerConnection on the function).
	groups := []slowlorisGroup{
		{Kind: "ws", Addr: wa, N: slowlorisIdle, Path: path, GiveUp: offline},
		{Kind: "ws", Addr: wa, N: slowlorisDrip, Path: path, Drip: true, GiveUp: offline},
		{Kind: "ws", Addr: la, N: slowlorisIdle, Path: path, Live: true, Workers: 2, GiveUp: live},
		{Kind: "ws", Addr: la, N: slowlorisDrip, Path: path, Live: true, Drip: true, Workers: 2, GiveUp: live},
	}
	names := []string{
		fmt.Sprintf("%d idle on a channel not live", slowlorisIdle),
		fmt.Sprintf("%d dripping a frame on a channel not live", slowlorisDrip),
		fmt.Sprintf("%d never answering the offer of a live channel", slowlorisIdle),
		fmt.Sprintf("%d dripping a frame after the offer of a live channel", slowlorisDrip),
	}
	c := &lorisCase{name: "websocket", child: startSlowlorisChild(t, slowlorisSpec{Groups: groups})}
	var during []lorisFigures
	c.window = func(t *testing.T) {
		during = []lorisFigures{lorisMeasure()}
		for i, gr := range groups {
			c.child.open(t, i)
			lorisSettle(t, "websocket", during[i].class["websocket"], gr.N, 30*time.Second)
			during = append(during, lorisMeasure())
		}
	}
	c.check = func(t *testing.T) {
		rs := lorisByGroup(t, c.child.results(t, len(groups), offline+60*time.Second), len(groups))
		before := during[0]
		lorisCheckNoLeak(t, "websocket", before)
		if !lorisWaitClass(15*time.Second, func(map[string]int) bool {
			return g.signaling.Viewers(77) == 0 && g.Function().Fanout().Viewers(77) == 0
		}) {
			t.Errorf("sessions left: signaling %d, function %d", g.signaling.Viewers(77), g.Function().Fanout().Viewers(77))
		}
		after := lorisMeasure()
		parts := []string{fmt.Sprintf("deadlines: live channel %v (the function's ConnectTimeout, from the offer; the embedded function's PeerConnection is in the cost), channel not live %v (no pong nor message for wsPingInterval + 10 s)", wsLiveDeadline, wsOfflineDeadline)}
		for i := range groups {
			parts = append(parts, fmt.Sprintf("%s: %s; %s", names[i], lorisClosure(rs[i], groups[i].N), lorisCost(during[i], during[i+1], groups[i].N)))
		}
		parts = append(parts, lorisOverall("websocket", before, during[len(groups)], after))
		lorisFault("websocket", parts...)

		offlineFinding := "finding: gateway/signaling/websocket.go serveWebsocket: a page waiting for a channel that is not live is held with no read deadline (writeLoop pings every wsPingInterval, but nothing waits for the pong), so a socket that sends nothing, or drips a frame, is kept forever; set a read deadline of wsPingInterval + 10 s, renewed by the pong handler and by every message"
		liveFinding := "finding: a websocket page that never answers is kept past the function's ConnectTimeout"
		lorisRun(t, "waiting-idle", func(t *testing.T) {
			lorisCheckClosed(t, names[0], rs[0], groups[0].N, time.Second, wsOfflineDeadline, offlineFinding)
		})
		lorisRun(t, "waiting-drip", func(t *testing.T) {
			lorisCheckClosed(t, names[1], rs[1], groups[1].N, time.Second, wsOfflineDeadline, offlineFinding)
		})
		lorisRun(t, "live-idle", func(t *testing.T) {
			lorisCheckClosed(t, names[2], rs[2], groups[2].N, wsLiveDeadline/2, wsLiveDeadline, liveFinding)
		})
		lorisRun(t, "live-drip", func(t *testing.T) {
			lorisCheckClosed(t, names[3], rs[3], groups[3].N, wsLiveDeadline/2, wsLiveDeadline, liveFinding)
		})
		lorisCheckBounded(t, "websocket, channel not live", during[0], during[2], slowlorisIdle+slowlorisDrip, 64<<10)
		lorisCheckBounded(t, "websocket, live channel", during[2], during[4], slowlorisIdle+slowlorisDrip, 2<<20)
	}
	return c
}

func slowlorisRelay(t *testing.T) *lorisCase {
	g := startLorisGateway(t, testConfig(t))
	addr := g.Relay().Addr().String()
	give := relayDeadline + slowlorisMargin + time.Second
	c := &lorisCase{name: "relay", child: startSlowlorisChild(t, slowlorisSpec{Groups: []slowlorisGroup{
		{Kind: "quic", Addr: addr, N: slowlorisIdle, GiveUp: give},
		{Kind: "quic", Addr: addr, N: slowlorisDrip, Drip: true, GiveUp: give},
	}})}
	var before, idle, drip lorisFigures
	c.window = func(t *testing.T) {
		before = lorisMeasure()
		c.child.open(t, 0)
		lorisSettle(t, "relay", before.class["relay"], slowlorisIdle, 10*time.Second)
		idle = lorisMeasure()
		c.child.open(t, 1)
		lorisSettle(t, "relay", idle.class["relay"], slowlorisDrip, 10*time.Second)
		drip = lorisMeasure()
	}
	c.check = func(t *testing.T) {
		rs := lorisByGroup(t, c.child.results(t, 2, give+60*time.Second), 2)
		lorisCheckNoLeak(t, "relay", before)
		after := lorisMeasure()
		lorisFault("relay",
			fmt.Sprintf("deadline %v (relaywire.AuthTimeout, from the end of the QUIC handshake)", relayDeadline),
			fmt.Sprintf("%d QUIC connections that never open the control stream: %s; %s", slowlorisIdle, lorisClosure(rs[0], slowlorisIdle), lorisCost(before, idle, slowlorisIdle)),
			fmt.Sprintf("%d dripping hello or auth: %s; %s", slowlorisDrip, lorisClosure(rs[1], slowlorisDrip), lorisCost(idle, drip, slowlorisDrip)),
			lorisOverall("relay", before, drip, after))
		const finding = "finding: the relay does not bound authentication by relaywire.AuthTimeout"
		early := relayDeadline - 500*time.Millisecond
		lorisRun(t, "idle", func(t *testing.T) { lorisCheckClosed(t, "idle", rs[0], slowlorisIdle, early, relayDeadline, finding) })
		lorisRun(t, "drip", func(t *testing.T) { lorisCheckClosed(t, "drip", rs[1], slowlorisDrip, early, relayDeadline, finding) })
		lorisCheckBounded(t, "relay", before, drip, slowlorisIdle+slowlorisDrip, 256<<10)
	}
	return c
}

// lorisFTLCounts reads the FTL media socket's rejected and echoed counts
// from the gateway's metrics, on a connection it then closes.
func lorisFTLCounts(t *testing.T, g *Gateway) (rejected, echoed float64) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(fmt.Sprintf("http://%s/metrics", g.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "lightspeed_ftl_media_rejected_total{"):
			rejected += v
		case name == "lightspeed_ftl_pings_echoed_total":
			echoed += v
		}
	}
	return rejected, echoed
}

func slowlorisFTLMedia(t *testing.T) *lorisCase {
	g := startLorisGateway(t, testConfig(t))
	c := &lorisCase{name: "ftl-media-udp", child: startSlowlorisChild(t, slowlorisSpec{Groups: []slowlorisGroup{
		{Kind: "udp-ftl", Addr: g.FTLMediaAddr().String(), N: slowlorisSource},
	}})}
	var before, during, after lorisFigures
	var sent int
	var rejected, echoed float64
	c.window = func(t *testing.T) {
		rej0, echo0 := lorisFTLCounts(t, g)
		before = lorisMeasure()
		sent = c.child.open(t, 0).Sent
		deadline := time.Now().Add(15 * time.Second)
		for {
			rej, echo := lorisFTLCounts(t, g)
			rejected, echoed = rej-rej0, echo-echo0
			if rejected >= float64(sent) || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		during = lorisMeasure()
		c.child.results(t, 1, time.Minute) // the sources are closed
		after = lorisMeasure()
	}
	c.check = func(t *testing.T) {
		lorisFault("ftl-media-udp",
			fmt.Sprintf("%d garbage datagrams (random bytes; RTP and sender reports of unknown SSRCs; FTL pings and RTCP from unknown sources; too short; too long) from %d sources: %.0f rejected and counted, %.0f pings echoed",
				sent, slowlorisSource, rejected, echoed),
			"with them in: "+lorisCost(before, during, slowlorisSource)+" (per source)",
			fmt.Sprintf("process heap in use before/flooded %s/%s, goroutines before/flooded/after %d/%d/%d",
				lorisMB(int64(before.heap)), lorisMB(int64(during.heap)), before.goroutines, during.goroutines, after.goroutines))
		lorisRun(t, "garbage", func(t *testing.T) {
			if rejected != float64(sent) {
				t.Errorf("%d garbage datagrams sent, %.0f rejected", sent, rejected)
			}
			if echoed != 0 {
				t.Errorf("%.0f garbage pings echoed", echoed)
			}
			if d := during.goroutines - before.goroutines; d > 2 {
				t.Errorf("garbage started %d goroutines", d)
			}
			if d := int64(during.heap) - int64(before.heap); d > 1<<20 {
				t.Errorf("garbage from %d sources holds %s of heap: state kept per source", slowlorisSource, lorisMB(d))
			}
		})
	}
	return c
}

func slowlorisRelayUDP(t *testing.T) *lorisCase {
	g := startLorisGateway(t, testConfig(t))
	addr := g.Relay().Addr().String()
	c := &lorisCase{name: "relay-udp", child: startSlowlorisChild(t, slowlorisSpec{Groups: []slowlorisGroup{
		{Kind: "udp-quic", Addr: addr, N: slowlorisSource},
		{Kind: "udp-quic-initial", Addr: addr, N: slowlorisSource},
	}})}
	var before, mid, during lorisFigures
	var garbage, initial slowlorisReport
	var held time.Duration
	var gone bool
	c.window = func(t *testing.T) {
		before = lorisMeasure()
		garbage = c.child.open(t, 0)
		// The child's probe completed a QUIC handshake after the garbage:
		// the relay's socket has read all of it.
		mid = lorisMeasure()
		initial = c.child.open(t, 1)
		flooded := time.Now()
		during = lorisMeasure()
		// The handshakes the Initials started are over before the next
		// listener measures.
		gone = lorisWaitClass(relayDeadline+slowlorisMargin, func(cl map[string]int) bool {
			return cl["quic-handshake"] <= before.class["quic-handshake"]
		})
		held = time.Since(flooded)
	}
	c.check = func(t *testing.T) {
		c.child.results(t, 2, time.Minute)
		lorisCheckNoLeak(t, "relay", before)
		after := lorisMeasure()
		lorisFault("relay-udp",
			fmt.Sprintf("%d garbage datagrams from %d sources: QUIC handshakes %+d; %s (per source)", garbage.Sent, slowlorisSource,
				mid.class["quic-handshake"]-before.class["quic-handshake"], lorisCost(before, mid, slowlorisSource)),
			fmt.Sprintf("%d QUIC Initial-shaped 1200-byte datagrams with an undecryptable payload from %d sources: QUIC handshakes %+d, held %s (the handshake timeout is relaywire.AuthTimeout, %v); %s (per datagram)",
				initial.Sent, slowlorisSource, during.class["quic-handshake"]-mid.class["quic-handshake"], lorisSecs(held), relayDeadline, lorisCost(mid, during, slowlorisSource)),
			lorisOverall("relay", before, during, after))
		lorisRun(t, "garbage", func(t *testing.T) {
			if d := mid.class["quic-handshake"] - before.class["quic-handshake"]; d > 0 {
				t.Errorf("garbage started %d QUIC handshakes", d)
			}
			if d := mid.class["relay"] - before.class["relay"]; d > 2 {
				t.Errorf("garbage started %d relay goroutines", d)
			}
		})
		lorisRun(t, "initial", func(t *testing.T) {
			if !gone {
				t.Errorf("the handshake state of Initial-shaped garbage was held past %v", relayDeadline+slowlorisMargin)
			}
			if d := during.class["quic-handshake"] - mid.class["quic-handshake"]; d > lorisMaxSpoofed {
				t.Errorf("%d Initial-shaped datagrams from as many spoofable sources started %d QUIC handshakes, held %v each (%s of heap and %s of stack per datagram): %s",
					initial.Sent, d, relayDeadline, lorisKB(float64(int64(during.heap)-int64(mid.heap))/float64(slowlorisSource)),
					lorisKB(float64(int64(during.stack)-int64(mid.stack))/float64(slowlorisSource)), lorisSpoofedFinding)
			}
		})
	}
	return c
}

// ---- the clients (the child) ----

// runSlowlorisClient is the child: it opens each group of spec when told
// on stdin, reports it open, and reports how its connections ended.
func runSlowlorisClient(specJSON string) {
	var spec slowlorisSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "spec:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	emit := func(word string, r *slowlorisReport) {
		mu.Lock()
		defer mu.Unlock()
		b := []byte{}
		if r != nil {
			b, _ = json.Marshal(r)
		}
		fmt.Printf("%s%s %s\n", slowlorisPrefix, word, b)
	}
	emit("started", nil)
	var wg sync.WaitGroup
	sc := bufio.NewScanner(os.Stdin)
	for n := 0; n < len(spec.Groups) && sc.Scan(); n++ {
		var i int
		if _, err := fmt.Sscanf(sc.Text(), "go %d", &i); err != nil || i < 0 || i >= len(spec.Groups) {
			fmt.Fprintln(os.Stderr, "bad command:", sc.Text())
			os.Exit(2)
		}
		gr := spec.Groups[i]
		conns, ready := lorisOpenGroup(gr)
		ready.Group = i
		emit("ready", &ready)
		if len(ready.Errors) > 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := lorisAwaitGroup(gr, conns)
			r.Group = i
			r.Sent = ready.Sent
			emit("result", &r)
		}()
	}
	wg.Wait()
}

// loris is one client connection.
type loris struct {
	start  time.Time     // what its closure time counts from; set before ready is closed
	ready  chan struct{} // closed when it is open (a live page: has its offer)
	closed chan struct{} // closed when the server ended it
	at     time.Time
	answer string // http-body: the status line, if the server answered
	err    error  // why it ended, if known
	close  func()
	stop   chan struct{} // stops the dripping
}

func newLoris(closeFn func()) *loris {
	return &loris{start: time.Now(), ready: make(chan struct{}), closed: make(chan struct{}), close: closeFn, stop: make(chan struct{})}
}

func (l *loris) end() {
	l.at = time.Now()
	close(l.closed)
}

// drip writes text one byte each slowlorisEvery, round and round, until
// stopped or a write fails.
func (l *loris) drip(write func([]byte) error, text string) {
	go func() {
		tick := time.NewTicker(slowlorisEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			if write([]byte{text[i%len(text)]}) != nil {
				return
			}
			select {
			case <-l.stop:
				return
			case <-l.closed:
				return
			case <-tick.C:
			}
		}
	}()
}

// lorisAwaitGroup waits until every connection is closed or has been open for
// the group's GiveUp, then closes what is left.
func lorisAwaitGroup(gr slowlorisGroup, conns []*loris) slowlorisReport {
	var r slowlorisReport
	for _, l := range conns {
		select {
		case <-l.closed:
			r.Closed = append(r.Closed, l.at.Sub(l.start))
			if l.answer != "" {
				if r.Answers == nil {
					r.Answers = map[string]int{}
				}
				r.Answers[l.answer]++
			}
		case <-time.After(time.Until(l.start.Add(gr.GiveUp))):
			r.Unclosed++
		}
		close(l.stop)
		l.close()
	}
	return r
}

// lorisOpenGroup opens gr's connections, a few at a time.
func lorisOpenGroup(gr slowlorisGroup) ([]*loris, slowlorisReport) {
	var ready slowlorisReport
	switch gr.Kind {
	case "udp-ftl":
		n, err := lorisFloodFTL(gr)
		ready.Sent = n
		if err != nil {
			ready.Errors = append(ready.Errors, err.Error())
		}
		return nil, ready
	case "udp-quic", "udp-quic-initial":
		n, err := lorisFloodQUIC(gr)
		ready.Sent = n
		if err != nil {
			ready.Errors = append(ready.Errors, err.Error())
		}
		return nil, ready
	}
	var tr *quic.Transport
	if gr.Kind == "quic" {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			ready.Errors = append(ready.Errors, err.Error())
			return nil, ready
		}
		tr = &quic.Transport{Conn: udp}
	}
	conns := make([]*loris, gr.N)
	errs := make([]error, gr.N)
	var wg sync.WaitGroup
	work := make(chan int)
	workers := gr.Workers
	if workers == 0 {
		workers = 16
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				conns[i], errs[i] = lorisOpenOne(gr, i, tr)
			}
		}()
	}
	for i := range gr.N {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		if err != nil && len(ready.Errors) < 3 {
			ready.Errors = append(ready.Errors, err.Error())
		}
	}
	if len(ready.Errors) > 0 {
		for _, l := range conns {
			if l != nil {
				l.close()
			}
		}
		return nil, ready
	}
	if gr.Live {
		// Open once every page has its offer; closures count from it.
		for i, l := range conns {
			select {
			case <-l.ready:
			case <-l.closed:
				ready.Errors = append(ready.Errors, fmt.Sprintf("page %d closed before its offer: %v", i, l.err))
			case <-time.After(time.Minute):
				ready.Errors = append(ready.Errors, fmt.Sprintf("page %d got no offer within a minute", i))
			}
			if len(ready.Errors) > 0 {
				break
			}
		}
	}
	return conns, ready
}

// lorisOpenOne opens connection i of gr.
func lorisOpenOne(gr slowlorisGroup, i int, tr *quic.Transport) (*loris, error) {
	switch gr.Kind {
	case "quic":
		return lorisOpenQUIC(gr, i, tr)
	case "ws":
		return lorisOpenWebsocket(gr)
	}
	c, err := net.DialTimeout("tcp", gr.Addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	l := newLoris(func() { c.Close() })
	write := func(b []byte) error {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Write(b)
		return err
	}
	br := bufio.NewReader(c)
	firstByte := false
	switch gr.Kind {
	case "ftl":
		if !gr.Drip {
			break
		}
		if i%2 == 0 {
			l.drip(write, "HMAC") // a first line that never ends
			break
		}
		// A second line that never ends: CONNECT after the challenge.
		if err := write([]byte("HMAC\r\n\r\n")); err != nil {
			c.Close()
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := br.ReadString('\n')
		c.SetReadDeadline(time.Time{})
		if err != nil || !strings.HasPrefix(line, "200 ") {
			c.Close()
			return nil, fmt.Errorf("ftl: HMAC answered %q, %v", line, err)
		}
		l.drip(write, "CONNECT 77 $"+strings.Repeat("0123456789abcdef", 8))
	case "http-idle":
	case "http-header":
		if err := write([]byte("GET /healthz HTTP/1.1\r\nHost: " + gr.Addr + "\r\n")); err != nil {
			c.Close()
			return nil, err
		}
		l.drip(write, "X-Slowloris: "+strings.Repeat("a", 64))
	case "http-keepalive":
		if err := write([]byte("GET /healthz HTTP/1.1\r\nHost: " + gr.Addr + "\r\n\r\n")); err != nil {
			c.Close()
			return nil, err
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		c.SetReadDeadline(time.Time{})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("http: first request: %v", err)
		}
		if resp.Close {
			c.Close()
			return nil, fmt.Errorf("http: the server closes after a request")
		}
		l.start = time.Now() // idle from here
	case "http-body":
		if err := write([]byte(gr.Head)); err != nil {
			c.Close()
			return nil, err
		}
		l.drip(write, "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
		firstByte = true
	default:
		c.Close()
		return nil, fmt.Errorf("unknown kind %q", gr.Kind)
	}
	go func() {
		defer l.end()
		if firstByte {
			// An answer ends the request as a close does.
			if line, err := br.ReadString('\n'); err == nil {
				l.answer = strings.TrimSpace(line)
			}
			return
		}
		io.Copy(io.Discard, br)
	}()
	return l, nil
}

// lorisOpenWebsocket opens a page's socket; with Live, stop is closed when the
// offer arrives, and the closure counts from then.
func lorisOpenWebsocket(gr slowlorisGroup) (*loris, error) {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	ws, _, err := d.Dial("ws://"+gr.Addr+gr.Path, nil)
	if err != nil {
		return nil, err
	}
	// Sends nothing: no pong, no close frame back.
	ws.SetPingHandler(func(string) error { return nil })
	ws.SetCloseHandler(func(int, string) error { return nil })
	raw := ws.UnderlyingConn()
	l := newLoris(func() { ws.Close() })
	offered := make(chan struct{})
	go func() {
		defer l.end()
		offer := false
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				l.err = err
				return
			}
			var m struct{ Event string }
			if !offer && json.Unmarshal(b, &m) == nil && m.Event == "offer" {
				offer = true
				close(offered)
			}
		}
	}()
	startDrip := func() {
		if !gr.Drip {
			return
		}
		// A text frame of 125 bytes, dripped from its first byte: masked
		// with a zero key, so its payload is as written, the start of a
		// message that is JSON as far as it goes.
		payload := []byte(`{"event":"candidate","data":{"candidate":"`)
		payload = append(payload, bytes.Repeat([]byte{'a'}, 125-len(payload))...)
		frame := append([]byte{0x81, 0x80 | 125, 0, 0, 0, 0}, payload...)
		l.drip(func(b []byte) error {
			raw.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, err := raw.Write(b)
			return err
		}, string(frame[:len(frame)-1])) // never the frame's last byte
	}
	if !gr.Live {
		close(l.ready)
		startDrip()
		return l, nil
	}
	// The group waits on ready for the offer (see openGroup).
	go func() {
		select {
		case <-offered:
			l.start = time.Now()
			close(l.ready)
			startDrip()
		case <-l.closed:
		}
	}()
	return l, nil
}

func lorisTLS() *tls.Config {
	c := relaywire.TLSConfig()
	c.InsecureSkipVerify = true // the clients need no trust: they never authenticate
	return c
}

// lorisOpenQUIC completes a QUIC handshake with the relay and then sends
// nothing, or drips hello (or, after a whole hello, auth).
func lorisOpenQUIC(gr slowlorisGroup, i int, tr *quic.Transport) (*loris, error) {
	raddr, err := net.ResolveUDPAddr("udp", gr.Addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qc, err := tr.Dial(ctx, raddr, lorisTLS(), relaywire.QUICConfig())
	if err != nil {
		return nil, err
	}
	l := newLoris(func() { qc.CloseWithError(0, "") })
	go func() {
		<-qc.Context().Done()
		l.end()
	}()
	if !gr.Drip {
		return l, nil
	}
	str, err := qc.OpenStream()
	if err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	hello, _ := relaywire.AppendMessage(nil, &relaywire.Hello{Version: relaywire.Version, Region: "slowloris", MachineID: fmt.Sprint("slowloris-", i), Capacity: 1})
	write := func(b []byte) error {
		str.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, err := str.Write(b)
		return err
	}
	if i%2 == 0 {
		l.drip(write, string(hello))
		return l, nil
	}
	if err := write(hello); err != nil {
		qc.CloseWithError(0, "")
		return nil, err
	}
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	if m, err := relaywire.ReadMessage(bufio.NewReader(str)); err != nil || m.Type() != relaywire.TypeChallenge {
		qc.CloseWithError(0, "")
		return nil, fmt.Errorf("relay: hello answered %v, %v", m, err)
	}
	auth, _ := relaywire.AppendMessage(nil, &relaywire.Auth{MAC: strings.Repeat("0", 64)})
	l.drip(write, string(auth))
	return l, nil
}

func lorisRandom(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func lorisRandomLen(lo, hi int) int {
	var b [2]byte
	rand.Read(b[:])
	return lo + int(binary.BigEndian.Uint16(b[:]))%(hi-lo+1)
}

// lorisSources opens n UDP sockets on loopback.
func lorisSources(n int) ([]*net.UDPConn, error) {
	var out []*net.UDPConn
	for range n {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// floodPace is the pause after each source's datagrams: the flood's
// pacing, so that the kernel drops none of it before the gateway reads.
const lorisFloodPace = 2 * time.Millisecond

// lorisFloodFTL sends every kind of garbage from each of gr.N sources.
func lorisFloodFTL(gr slowlorisGroup) (int, error) {
	raddr, err := net.ResolveUDPAddr("udp", gr.Addr)
	if err != nil {
		return 0, err
	}
	srcs, err := lorisSources(gr.N)
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, c := range srcs {
			c.Close()
		}
	}()
	rtpLike := func(pt byte, n int) []byte {
		b := lorisRandom(n)
		b[0], b[1] = 0x80, pt
		return b
	}
	sent := 0
	for _, c := range srcs {
		ping := lorisRandom(24)
		ping[0], ping[1] = 0x81, 0xFA
		sr := rtpLike(200, 28) // a sender report of an unknown SSRC
		sr[2], sr[3] = 0, 6
		for _, p := range [][]byte{
			lorisRandom(lorisRandomLen(4, 1400)),  // anything
			rtpLike(96, lorisRandomLen(12, 1400)), // RTP of an unknown SSRC
			rtpLike(97, 200),                      // the other payload type
			ping,                                  // an FTL ping from no publisher
			sr,
			rtpLike(201, 32),       // other RTCP
			lorisRandom(3),         // too short
			lorisRandom(1500 + 64), // too long
		} {
			if _, err := c.WriteToUDP(p, raddr); err != nil {
				return sent, err
			}
			sent++
		}
		time.Sleep(lorisFloodPace) // a flood the socket's buffer takes whole
	}
	return sent, nil
}

// lorisFloodQUIC sends garbage, or QUIC Initial-shaped datagrams whose payload
// does not decrypt, from each of gr.N sources, then completes one real
// handshake (a probe) so that the relay has read them all by the time it
// returns.
func lorisFloodQUIC(gr slowlorisGroup) (int, error) {
	raddr, err := net.ResolveUDPAddr("udp", gr.Addr)
	if err != nil {
		return 0, err
	}
	srcs, err := lorisSources(gr.N)
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, c := range srcs {
			c.Close()
		}
	}()
	sent := 0
	for _, c := range srcs {
		var ps [][]byte
		if gr.Kind == "udp-quic-initial" {
			ps = append(ps, lorisInitial())
		} else {
			for range 8 {
				ps = append(ps, lorisRandom(lorisRandomLen(1, 1400)))
			}
		}
		for _, p := range ps {
			if _, err := c.WriteToUDP(p, raddr); err != nil {
				return sent, err
			}
			sent++
		}
		time.Sleep(lorisFloodPace)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return sent, err
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	qc, err := tr.Dial(ctx, raddr, lorisTLS(), relaywire.QUICConfig())
	if err != nil {
		return sent, fmt.Errorf("probe: %w", err)
	}
	qc.CloseWithError(0, "probe")
	return sent, nil
}

// lorisInitial is a 1200-byte QUIC v1 Initial long header with fresh
// connection IDs and a random, undecryptable payload.
func lorisInitial() []byte {
	b := []byte{0xC3, 0, 0, 0, 1, 8}
	b = append(b, lorisRandom(8)...) // destination connection ID
	b = append(b, 8)
	b = append(b, lorisRandom(8)...) // source connection ID
	b = append(b, 0)                 // no token
	rest := 1200 - len(b) - 2
	b = append(b, 0x40|byte(rest>>8), byte(rest))
	return append(b, lorisRandom(rest)...)
}
