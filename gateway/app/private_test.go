package app

import (
	"context"
	"errors"
	"net/url"
	"testing"
	"time"

	"lightspeed/gateway/keys"
	"lightspeed/gateway/viewtoken"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/viewer"
)

// TestAPrivateChannelPlaysOnlyWithAViewerToken: a channel marked private
// in the key store refuses WHEP viewers without a token (401), with an
// expired one (401) or one for another channel (403), and the websocket
// without ?token=, before anything is started; a viewer with the token of
// `gateway tokens issue` plays it, over WHEP and the websocket.
func TestAPrivateChannelPlaysOnlyWithAViewerToken(t *testing.T) {
	netns.Exclusive(t)
	cfg := stackConfig(t)
	cfg.StreamKey = ""
	store, err := keys.Open(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	k, err := store.Add(77)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetPrivate(77, true); err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, store, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	nals, opus := sourceMedia(t)
	conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: g.FTLAddr().String(), StreamKey: k.String()})
	if err != nil {
		t.Fatal(err)
	}
	streamed := make(chan struct{})
	go func() { defer close(streamed); conn.Stream(ctx, nals, opus, 0) }()
	t.Cleanup(func() { cancel(); conn.Close(); <-streamed })
	waitUntil(t, "channel 77 live", func() bool { h := g.Hubs().Get(77); return h != nil && h.Stats().Live })

	key, err := viewtoken.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good, _ := viewtoken.Issue(key, 77, time.Hour, now)
	expired, _ := viewtoken.Issue(key, 77, time.Minute, now.Add(-time.Hour))
	other, _ := viewtoken.Issue(key, 78, time.Hour, now)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	for _, tc := range []struct {
		name, token string
		status      int
	}{{"no token", "", 401}, {"an expired token", expired, 401}, {"another channel's token", other, 403}, {"garbage", "x.y.z", 401}} {
		_, err := viewer.WHEP(wctx, whepURL(g), viewer.Options{Loopback: true, Token: tc.token})
		var he *viewer.HTTPError
		if !errors.As(err, &he) || he.Status != tc.status {
			t.Errorf("WHEP with %s: %v, want %d", tc.name, err, tc.status)
		}
	}
	if n := g.signaling.Viewers(77); n != 0 {
		t.Fatalf("%d viewers counted after refusals", n)
	}
	ws := "ws://" + g.HTTPAddr().String() + "/websocket?channel=77"
	if _, err := viewer.Websocket(wctx, ws, viewer.Options{Loopback: true}); err == nil {
		t.Error("the websocket took a viewer of a private channel without a token")
	}

	rec := newRecorder(t)
	v, err := viewer.WHEP(wctx, whepURL(g), viewer.Options{Loopback: true, Token: good, OnRTP: rec.onRTP, Interceptors: true})
	if err != nil {
		t.Fatalf("WHEP with the channel's token: %v", err)
	}
	defer v.Close()
	rec.waitFor(t, 30, 30)
	rec.check(t, "WHEP viewer with a token")

	wsRec := newRecorder(t)
	wv, err := viewer.Websocket(wctx, ws+"&token="+url.QueryEscape(good), viewer.Options{Loopback: true, OnRTP: wsRec.onRTP, Interceptors: true})
	if err != nil {
		t.Fatalf("websocket with the channel's token: %v", err)
	}
	defer wv.Close()
	wsRec.waitFor(t, 30, 30)
	wsRec.check(t, "websocket viewer with a token")
}
