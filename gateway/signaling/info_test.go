package signaling

import (
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestAPageHearsTheNewestViewerCountHoweverManyComeAtOnce: the viewer
// count is a state: a burst of joins and leaves (here 200 broadcasts while
// the page reads nothing) neither fills the page's queue, which would
// close it, nor sends it a message per change; it reads the newest count.
func TestAPageHearsTheNewestViewerCountHoweverManyComeAtOnce(t *testing.T) {
	st := newAuthStack(t)
	conn, resp, err := websocket.DefaultDialer.Dial(st.wsURL("channel=78"), nil)
	if err != nil {
		t.Fatalf("%v (%v)", err, resp)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	var first wsMessage
	if err := conn.ReadJSON(&first); err != nil || first.Event != "info" {
		t.Fatalf("first message %+v, %v: want the viewer count", first, err)
	}

	for range 200 {
		st.s.broadcastInfo()
	}
	infos, last := 0, -1
	conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		var m wsMessage
		err := conn.ReadJSON(&m)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			break // read all there was
		}
		if err != nil {
			t.Fatalf("the page was closed: %v", err)
		}
		if m.Event == "info" {
			infos++
			var c struct {
				N int `json:"no_connections"`
			}
			if err := json.Unmarshal(m.Data, &c); err != nil {
				t.Fatal(err)
			}
			last = c.N
		}
	}
	if want := st.s.Viewers(78); infos == 0 || infos > 3 || last != want {
		t.Errorf("%d counts read after 200 broadcasts, the last %d; want a few, the last %d", infos, last, want)
	}
}
