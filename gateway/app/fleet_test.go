package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"lightspeed/gateway/fleet"
	"lightspeed/shared/testkit/netns"
	"lightspeed/shared/testkit/ports"
	"lightspeed/shared/testkit/viewer"
)

// fleetConfig is a gateway on loopback whose functions the fleet starts
// as real processes (the test binary playing the function command).
func fleetConfig(t *testing.T) Config {
	t.Helper()
	cfg := stackConfig(t)
	cfg.FunctionProvider = "local"
	cfg.FunctionBin = os.Args[0]
	udpPorts, err := ports.FreeUDPRange(4)
	if err != nil {
		t.Fatal(err)
	}
	cfg.FunctionUDPPorts = udpPorts
	cfg.FunctionStartWait = 30 * time.Second
	t.Setenv(functionRoleVar, "1") // inherited by the functions the provider starts
	return cfg
}

// functions reads GET /api/functions.
func functions(t *testing.T, g *Gateway) []fleet.Info {
	t.Helper()
	resp, err := http.Get("http://" + g.HTTPAddr().String() + "/api/functions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []fleet.Info
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTheFirstViewerStartsAFunctionInItsRegion: with the local provider
// and no function running, a viewer from Singapore waits while the fleet
// starts a function process in sin; the function connects to the relay and
// serves the viewer, and /api/functions shows it ready in sin.
func TestTheFirstViewerStartsAFunctionInItsRegion(t *testing.T) {
	netns.Exclusive(t)
	cfg := fleetConfig(t)
	g := startGateway(t, cfg)
	streamForever(t, g)
	if fs := functions(t, g); len(fs) != 0 {
		t.Fatalf("functions before any viewer: %+v", fs)
	}

	rec := newRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := viewer.WHEP(ctx, whepURL(g), viewer.Options{Loopback: true, Region: "sin", OnRTP: rec.onRTP, Interceptors: true})
	if err != nil {
		t.Fatalf("whep: %v", err)
	}
	defer v.Close()
	if err := v.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 30, 30)
	fs := functions(t, g)
	if len(fs) != 1 || fs[0].Region != "sin" || fs[0].State != fleet.StateReady || fs[0].Provider != "local" || fs[0].Viewers > 1 {
		t.Fatalf("functions %+v, want one ready in sin", fs)
	}
	rec.check(t, "viewer served by the started function")
	if want := "sin (" + fs[0].ID + ")"; v.ServedBy() != want {
		t.Fatalf("the answer says it is served by %q, want %q", v.ServedBy(), want)
	}
}

// state returns the regions and states of the fleet's functions.
func states(t *testing.T, g *Gateway) map[string]string {
	out := map[string]string{}
	for _, f := range functions(t, g) {
		out[f.Region] = f.State
	}
	return out
}

// TestViewersOfANewRegionAreServedAtOnceThenFromTheirOwn: a viewer from
// Amsterdam while only Singapore has a function is served from Singapore
// at once, and the fleet starts a function in Amsterdam, where the next
// viewer from Amsterdam lands. Functions left without viewers stop.
func TestViewersOfANewRegionAreServedAtOnceThenFromTheirOwn(t *testing.T) {
	netns.Exclusive(t)
	cfg := fleetConfig(t)
	cfg.FunctionIdleStop = 8 * time.Second // long enough for the third viewer to reach the new function first
	g := startGateway(t, cfg)
	streamForever(t, g)

	first, _ := watch(t, g, "sin") // starts sin
	second, rec := watch(t, g, "ams")
	rec.waitFor(t, 30, 30)
	waitUntil(t, "a function ready in ams", func() bool {
		return states(t, g)["ams"] == fleet.StateReady
	})
	third, rec3 := watch(t, g, "ams")
	rec3.waitFor(t, 30, 30)
	waitUntil(t, "the third viewer counted on the ams function", func() bool {
		for _, f := range functions(t, g) {
			if f.Region == "ams" && f.Viewers >= 1 {
				return true
			}
		}
		return false
	})
	for _, f := range functions(t, g) {
		if f.Region == "sin" && f.Viewers != 2 {
			t.Fatalf("sin serves %d viewers, want the first two (the second was served at once from there)", f.Viewers)
		}
	}

	for _, v := range []*viewer.Viewer{first, second, third} {
		v.Close()
	}
	waitUntil(t, "idle functions stop", func() bool {
		s := states(t, g)
		return s["ams"] == fleet.StateStopped && s["sin"] == fleet.StateStopped
	})
}

// pidOf finds the process of the function machine id by its environment.
func pidOf(t *testing.T, id string) int {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && bytes.Contains(env, []byte("\x00LS_MACHINE_ID="+id+"\x00")) {
			return pid
		}
	}
	t.Fatalf("no process of function %s", id)
	return 0
}

// TestAKilledFunctionIsReplacedAndViewersComeBack: a function killed with
// SIGKILL is replaced by a new one in its region, which a viewer that
// comes back (as the page reconnects) watches.
func TestAKilledFunctionIsReplacedAndViewersComeBack(t *testing.T) {
	netns.Exclusive(t)
	g := startGateway(t, fleetConfig(t))
	streamForever(t, g)
	v, rec := watch(t, g, "ams")
	rec.waitFor(t, 30, 30)
	fs := functions(t, g)
	if len(fs) != 1 {
		t.Fatalf("functions %+v", fs)
	}
	killed := fs[0].ID
	if err := syscall.Kill(pidOf(t, killed), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	v.Close()
	waitUntil(t, "a replacement ready in ams", func() bool {
		for _, f := range functions(t, g) {
			if f.ID == killed {
				return false
			}
		}
		return states(t, g)["ams"] == fleet.StateReady
	})
	_, again := watch(t, g, "ams")
	again.waitFor(t, 30, 30)
	again.check(t, "the viewer back on the replacement")
}

// TestAGatewayOnFlyAdoptsTheMachinesItHas: with the fly provider, a
// gateway lists the function app's machines marked as its own through the
// Machines API at start and shows them; it refuses to start without the
// API token.
func TestAGatewayOnFlyAdoptsTheMachinesItHas(t *testing.T) {
	cfg := stackConfig(t)
	cfg.FunctionProvider = "fly"
	cfg.FlyFunctionApp = "ls-functions"
	cfg.FlyFunctionIPv4 = "192.0.2.10"
	t.Setenv("FLY_APP_NAME", "ls-gateway")
	t.Setenv("FLY_API_TOKEN", "")
	if _, err := New(cfg, nil, testLog(t)); err == nil || !strings.Contains(err.Error(), "FLY_API_TOKEN") {
		t.Fatalf("New without a token: %v", err)
	}

	var listed atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer fly-token" || r.Method != http.MethodGet || r.URL.Path != "/v1/apps/ls-functions/machines" {
			http.Error(w, `{"error":"unexpected"}`, http.StatusBadRequest)
			return
		}
		listed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"id":"3d8d413b29d089","name":"fn","state":"stopped","region":"ams","created_at":"2026-12-01T10:00:00Z",
			"config":{"image":"registry.fly.io/ls-functions:deployment-1","metadata":{"lightspeed_role":"function","lightspeed_gateway":"ls-gateway","lightspeed_port":"10003"}}}]`)
	}))
	defer api.Close()
	t.Setenv("FLY_API_TOKEN", "fly-token")
	cfg.FlyAPIURL = api.URL
	g := startGateway(t, cfg)
	waitUntil(t, "the machine adopted", func() bool {
		fs := functions(t, g)
		return len(fs) == 1 && fs[0].ID == "3d8d413b29d089" && fs[0].State == fleet.StateStopped && fs[0].Provider == "fly" && fs[0].Region == "ams"
	})
}
