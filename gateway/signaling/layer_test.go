package signaling

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/relay"
)

// recordingRelay is a relay that records the layers asked of it. It
// passes every call on but SetLayer, which it answers itself (with
// setErr): how a function switches layers is the function's tests' to
// check; here it is what reaches the relay.
type recordingRelay struct {
	Relay
	mu     sync.Mutex
	starts []string    // the layer of each session started
	sets   [][2]string // the session and layer of each SetLayer
	setErr error
}

func (r *recordingRelay) StartSession(ctx context.Context, functionID string, channel uint32, offer, layer string) (*relay.Session, error) {
	r.mu.Lock()
	r.starts = append(r.starts, layer)
	r.mu.Unlock()
	return r.Relay.StartSession(ctx, functionID, channel, offer, layer)
}

func (r *recordingRelay) SetLayer(sessionID, layer string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, [2]string{sessionID, layer})
	return r.setErr
}

// started returns the layers of the sessions started so far.
func (r *recordingRelay) started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.starts...)
}

// set returns the SetLayer calls so far.
func (r *recordingRelay) set() [][2]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][2]string(nil), r.sets...)
}

// newLayerStack is an authStack (channels 77 private and 78 public, both
// live, a real function) whose relay records the layers.
func newLayerStack(t *testing.T) (*authStack, *recordingRelay) {
	t.Helper()
	rec := &recordingRelay{}
	st := newAuthStack(t, func(c *Config) {
		rec.Relay = c.Relay
		c.Relay = rec
	})
	return st, rec
}

func TestCheckLayer(t *testing.T) {
	for _, ok := range []string{"0", "1", "2", "h", "hi-res", "low_1", "ABCdef-_0123456z", "-", "_"} {
		if why := checkLayer(ok); why != "" {
			t.Errorf("%q refused: %s", ok, why)
		}
	}
	for _, bad := range []struct{ layer, says string }{
		{"a b", "is not a rid"},
		{"1.0", "is not a rid"},
		{"é", "is not a rid"},
		{"1;2", "is not a rid"},
		{"<script>", "is not a rid"},
		{"0\x00", "is not a rid"},
		{"abcdefghijklmnopq", "too long"},
		{strings.Repeat("x", 1000), "too long"},
	} {
		if why := checkLayer(bad.layer); !strings.Contains(why, bad.says) {
			t.Errorf("%q: %q, want it to say %q", bad.layer, why, bad.says)
		}
	}
	if why := checkLayer(strings.Repeat("x", 1000)); len(why) > 200 {
		t.Errorf("the reason repeats a long layer whole: %d bytes", len(why))
	}
}

// whepQuery posts a pion offer for channel 78 with query.
func (st *authStack) whepQuery(t *testing.T, query string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", st.srv.URL+"/api/whep/78"+query, strings.NewReader(pionOffer(t)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestWHEPLayerPinsTheSession(t *testing.T) {
	st, rec := newLayerStack(t)
	for _, tc := range []struct{ query, layer string }{
		{"", ""},
		{"?layer=1", "1"},
		{"?layer=", ""},                 // empty: the highest
		{"?layer=hi_res-2", "hi_res-2"}, // every character a rid may have
		{"?layer=9", "9"},               // a rid the channel lacks: the function serves the highest
		{"?region=ams&layer=0", "0"},
	} {
		resp, body := st.whepQuery(t, tc.query)
		if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(body, "v=0") {
			t.Fatalf("%q: %d %q, want 201 with an answer", tc.query, resp.StatusCode, body)
		}
		got := rec.started()
		if last := got[len(got)-1]; last != tc.layer {
			t.Errorf("%q: the session started on layer %q, want %q", tc.query, last, tc.layer)
		}
	}
	if n := len(rec.set()); n != 0 {
		t.Errorf("%d SetLayer calls for WHEP sessions", n)
	}
}

func TestWHEPRefusesABadLayer(t *testing.T) {
	st, rec := newLayerStack(t)
	for _, tc := range []struct{ name, query, says string }{
		{"a space", "?layer=a%20b", `layer "a b" is not a rid`},
		{"a dot", "?layer=1.0", `layer "1.0" is not a rid`},
		{"not ASCII", "?layer=%C3%A9", "is not a rid: a layer is 1 to 16 characters of A-Z, a-z, 0-9, - and _"},
		{"a quote", `?layer=%22`, "is not a rid"},
		{"17 characters", "?layer=" + strings.Repeat("a", 17), "too long: a layer is a rid of 1 to 16 characters"},
		{"two layers", "?layer=0&layer=1", "2 layer parameters: give one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := st.whepQuery(t, tc.query)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.says) {
				t.Fatalf("got %d %q, want 400 saying %q", resp.StatusCode, body, tc.says)
			}
			if resp.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
				t.Errorf("headers %v: want CORS and a plain-text body", resp.Header)
			}
		})
	}
	if n := len(rec.started()); n != 0 {
		t.Errorf("%d sessions started for bad layers", n)
	}
	st.assertNothingStarted(t)
}

// wsNext reads the page's messages until one of the events, skipping the
// others ("info", "candidate", ...); it fails the test when the socket
// ends first.
func wsNext(t *testing.T, conn *websocket.Conn, events ...string) wsMessage {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			t.Fatalf("websocket, waiting for %v: %v", events, err)
		}
		for _, e := range events {
			if m.Event == e {
				return m
			}
		}
	}
}

// wsSend sends the page's message {"event": event, "data": data}; data is
// raw JSON.
func wsSend(t *testing.T, conn *websocket.Conn, event, data string) {
	t.Helper()
	msg := `{"event":"` + event + `","data":` + data + `}`
	if data == "" {
		msg = `{"event":"` + event + `"}`
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// wsLayerAnswer sends a layer message and returns what the server
// answered: the event ("layer" or "error") and its data.
func wsLayerAnswer(t *testing.T, conn *websocket.Conn, data string) (string, json.RawMessage) {
	t.Helper()
	wsSend(t, conn, "layer", data)
	m := wsNext(t, conn, "layer", "error")
	return m.Event, m.Data
}

func TestWebsocketLayer(t *testing.T) {
	st, rec := newLayerStack(t)
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=78&layer=2"), nil)
	if err != nil {
		t.Fatalf("%v (%v)", err, resp)
	}
	defer conn.Close()
	if m := wsNext(t, conn, "offer"); len(m.Data) == 0 {
		t.Fatal("an offer without data")
	}
	if got := rec.started(); len(got) != 1 || got[0] != "2" {
		t.Fatalf("sessions started on layers %q, want [2] (?layer=2)", got)
	}
	st.s.mu.Lock()
	var id string
	for sid := range st.s.sessions {
		id = sid
	}
	st.s.mu.Unlock()

	// A change reaches the relay and is confirmed.
	if ev, data := wsLayerAnswer(t, conn, `"0"`); ev != "layer" || string(data) != `"0"` {
		t.Fatalf("answered %s %s, want layer \"0\"", ev, data)
	}
	// Bad layers are answered with an error and change nothing.
	for _, tc := range []struct{ data, says string }{
		{`"a b"`, `layer "a b" is not a rid`},
		{`"` + strings.Repeat("1", 17) + `"`, "too long"},
		{`5`, "not a string"},
		{`null`, "not a string"},
		{`{"layer":"1"}`, "not a string"},
		{``, "not JSON"}, // no data at all
	} {
		ev, data := wsLayerAnswer(t, conn, tc.data)
		var e wsError
		if ev != "error" || json.Unmarshal(data, &e) != nil || e.Event != "layer" || !strings.Contains(e.Message, tc.says) {
			t.Errorf("layer %s: answered %s %s, want an error about the layer saying %q", tc.data, ev, data, tc.says)
		}
	}
	// The same layer again is confirmed without asking the relay; the
	// highest ("") is a change.
	if ev, data := wsLayerAnswer(t, conn, `"0"`); ev != "layer" || string(data) != `"0"` {
		t.Fatalf("answered %s %s, want layer \"0\"", ev, data)
	}
	if ev, data := wsLayerAnswer(t, conn, `""`); ev != "layer" || string(data) != `""` {
		t.Fatalf("answered %s %s, want layer \"\"", ev, data)
	}
	want := [][2]string{{id, "0"}, {id, ""}}
	if got := rec.set(); len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("SetLayer calls %q, want %q", got, want)
	}
	// The session is as it was: one, the same, and the page goes on.
	st.s.mu.Lock()
	_, same := st.s.sessions[id]
	n := len(st.s.sessions)
	st.s.mu.Unlock()
	if !same || n != 1 || len(rec.started()) != 1 {
		t.Errorf("after the layer messages: session kept %v, %d sessions, %d started; want the one session", same, n, len(rec.started()))
	}

	// A layer the relay cannot set (the session is ending) is answered
	// with an error; the layer stays what it was.
	rec.mu.Lock()
	rec.setErr = relay.ErrNoSession
	rec.mu.Unlock()
	ev, data := wsLayerAnswer(t, conn, `"1"`)
	if ev != "error" || !strings.Contains(string(data), "the session has ended") {
		t.Errorf("answered %s %s, want an error saying the session has ended", ev, data)
	}
	rec.mu.Lock()
	rec.setErr = nil
	rec.mu.Unlock()
	if ev, data := wsLayerAnswer(t, conn, `"1"`); ev != "layer" || string(data) != `"1"` {
		t.Fatalf("answered %s %s, want layer \"1\"", ev, data)
	}
	if got := rec.set(); len(got) != 4 || got[3] != [2]string{id, "1"} {
		t.Errorf("SetLayer calls %q, want a fourth to %q", got, [2]string{id, "1"})
	}
}

func TestWebsocketRefusesABadLayerBeforeTheUpgrade(t *testing.T) {
	st, rec := newLayerStack(t)
	for _, tc := range []struct{ query, says string }{
		{"channel=78&layer=a%20b", `layer "a b" is not a rid`},
		{"channel=78&layer=" + strings.Repeat("z", 17), "too long"},
		{"channel=78&layer=1&layer=2", "give one"},
	} {
		conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL(tc.query), nil)
		if err == nil {
			conn.Close()
			t.Fatalf("%s: upgraded", tc.query)
		}
		if resp == nil {
			t.Fatalf("%s: no HTTP answer: %v", tc.query, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
			t.Errorf("%s: %d %q, want 400 saying %q", tc.query, resp.StatusCode, body, tc.says)
		}
	}
	if n := len(rec.started()); n != 0 {
		t.Errorf("%d sessions started", n)
	}
	st.assertNothingStarted(t)
}

// A page that never speaks of layers (the original web app) gets the
// highest layer and none of the new messages.
func TestWebsocketWithoutLayersIsAsBefore(t *testing.T) {
	st, rec := newLayerStack(t)
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=78"), nil)
	if err != nil {
		t.Fatalf("%v (%v)", err, resp)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var events []string
	for {
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		events = append(events, m.Event)
		if m.Event == "offer" {
			break
		}
	}
	// An unknown event is ignored, as before: no answer, the session goes on.
	wsSend(t, conn, "whatever", `"x"`)
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		var m wsMessage
		if err := conn.ReadJSON(&m); err != nil {
			break // the deadline: nothing more to read
		}
		events = append(events, m.Event)
	}
	for _, e := range events {
		if e != "info" && e != "offer" && e != "candidate" {
			t.Errorf("the page got a %q message: %v", e, events)
		}
	}
	if got := rec.started(); len(got) != 1 || got[0] != "" {
		t.Errorf("sessions started on layers %q, want one on the highest (\"\")", got)
	}
	if n := len(rec.set()); n != 0 {
		t.Errorf("%d SetLayer calls", n)
	}
}

// A page waiting for its channel to go live may choose its layer: the
// session starts on it.
func TestWebsocketLayerChosenBeforeTheChannelIsLive(t *testing.T) {
	st, rec := newLayerStack(t)
	h, err := st.s.cfg.Hubs.Claim(79) // known, not live
	if err != nil {
		t.Fatal(err)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=79&layer=1"), nil)
	if err != nil {
		t.Fatalf("%v (%v)", err, resp)
	}
	defer conn.Close()
	if ev, data := wsLayerAnswer(t, conn, `"bad layer"`); ev != "error" {
		t.Fatalf("answered %s %s, want an error", ev, data)
	}
	if ev, data := wsLayerAnswer(t, conn, `"0"`); ev != "layer" || string(data) != `"0"` {
		t.Fatalf("answered %s %s, want layer \"0\"", ev, data)
	}
	h.Start(hub.PublisherInfo{VideoCodec: "H264"})
	wsNext(t, conn, "offer")
	if got := rec.started(); len(got) != 1 || got[0] != "0" {
		t.Errorf("sessions started on layers %q, want [0]: the page's choice replaces ?layer=1", got)
	}
	if n := len(rec.set()); n != 0 {
		t.Errorf("%d SetLayer calls before the session", n)
	}
}
