package stackrole

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"lightspeed/shared/testkit/netns"
)

// testRole is the role the test binary plays in
// TestStartForTestServesTheRoleInNamespaceA.
var testRole = Role{Name: "stackrole-test", AddrVar: "LS_STACKROLE_TEST_ADDR", DataDirVar: "LS_STACKROLE_TEST_DATA_DIR"}

// envExtra is a variable the test passes to the role besides its own.
const envExtra = "LS_STACKROLE_TEST_EXTRA"

func TestMain(m *testing.M) {
	testRole.Main(m, serveTestRole)
}

// serveTestRole plays testRole: it logs its parameters, announces port
// 8080 of its address as ready and waits for SIGTERM.
func serveTestRole() int {
	return testRole.Serve(slog.LevelInfo, func(ctx context.Context, log *slog.Logger, p Params) error {
		log.Info("params", "addr", p.Addr, "dir", p.DataDir, "extra", os.Getenv(envExtra))
		announce(ctx, os.Stdout, func() bool { return true }, net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.Addr, 8080)))
		<-ctx.Done()
		return nil
	})
}

func TestStartForTestServesTheRoleInNamespaceA(t *testing.T) {
	netns.Require(t)
	ctx := t.Context()
	dir := t.TempDir()
	pair, stack, base := testRole.StartForTest(t, ctx, dir, []string{envExtra + "=more"})
	if want := "http://" + pair.AddrA.String() + ":8080"; base != want {
		t.Errorf("base URL %q, want %q", base, want)
	}
	params := "addr=" + pair.AddrA.String() + " dir=" + dir + " extra=more"
	if _, err := stack.WaitLine(ctx, params); err != nil {
		t.Errorf("the role did not log %q: %v", params, err)
	}
	if err := stack.Stop(); err != nil {
		t.Fatal(err)
	}
	// Serve turned SIGTERM into a clean exit.
	if err := stack.Wait(); err != nil {
		t.Errorf("the role ended with %v, want exit code 0", err)
	}
}

func TestWaitReadyReturnsTheBaseURLOrWhyNot(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         string // base URL; "" for an error
	}{
		{"ready line among others", `echo starting; echo "level=INFO msg=READY"; printf 'READY http://10.1.2.3:4567 \r\n'`, "http://10.1.2.3:4567"},
		{"exits before it is ready", `echo "READY soon"; exit 1`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stack := &netns.Process{Cmd: exec.Command("sh", "-c", tc.script), Name: "stack", Logf: t.Logf}
			if err := stack.Start(); err != nil {
				t.Fatal(err)
			}
			defer stack.Stop()
			base, err := WaitReady(t.Context(), stack)
			switch {
			case tc.want != "" && (err != nil || base != tc.want):
				t.Errorf("WaitReady = %q, %v; want %q", base, err, tc.want)
			case tc.want == "" && (err == nil || !strings.Contains(err.Error(), "never became ready")):
				t.Errorf("WaitReady = %q, %v; want an error saying the stack never became ready", base, err)
			}
		})
	}
}

func TestParamsReadTheRoleVariables(t *testing.T) {
	for _, tc := range []struct {
		name, addr, dir string
		wantErr         string
	}{
		{"both set", "10.99.1.1", "/data", ""},
		{"address missing", "", "/data", "$" + testRole.AddrVar},
		{"address malformed", "10.99.1", "/data", "$" + testRole.AddrVar},
		{"data directory empty", "10.99.1.1", "", "$" + testRole.DataDirVar + " is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testRole.AddrVar, tc.addr)
			t.Setenv(testRole.DataDirVar, tc.dir)
			p, err := testRole.params()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("params() = %+v, %v; want an error naming %s", p, err, tc.wantErr)
				}
				return
			}
			if err != nil || p != (Params{Addr: netip.MustParseAddr(tc.addr), DataDir: tc.dir}) {
				t.Errorf("params() = %+v, %v", p, err)
			}
		})
	}
}

// runner counts the calls of Run, as testing.M would run the tests.
type runner struct{ runs int }

func (r *runner) Run() int { r.runs++; return 7 }

func TestDispatchRunsTheTestsTheRoleOrNothing(t *testing.T) {
	for _, tc := range []struct {
		role             string
		code, runs, serv int
	}{
		{"", 7, 1, 0},
		{testRole.Name, 3, 0, 1},
		{"other", 2, 0, 0},
	} {
		t.Setenv(netns.RoleEnv, tc.role)
		var m runner
		served := 0
		code := testRole.dispatch(&m, func() int { served++; return 3 })
		if code != tc.code || m.runs != tc.runs || served != tc.serv {
			t.Errorf("role %q: exit code %d, %d test runs, %d serves; want %d, %d, %d",
				tc.role, code, m.runs, served, tc.code, tc.runs, tc.serv)
		}
	}
}

func TestAnnounceWaitsUntilLive(t *testing.T) {
	var out bytes.Buffer
	checks := 0
	live := func() bool { checks++; return checks == 3 }
	addr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.99.1.1:8080"))
	announce(t.Context(), &out, live, addr)
	if got, want := out.String(), "READY http://10.99.1.1:8080\n"; got != want || checks != 3 {
		t.Errorf("announced %q after %d checks, want %q after 3", got, checks, want)
	}

	out.Reset()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	announce(ctx, &out, func() bool { return false }, addr)
	if out.Len() != 0 {
		t.Errorf("announced %q though never live", out.String())
	}
}

// fakeGateway serves nothing until its context ends; its FTL address is
// the test's.
type fakeGateway struct {
	ftl     net.Addr
	stopped chan struct{}
}

func (g *fakeGateway) Run(ctx context.Context) error {
	<-ctx.Done()
	close(g.stopped)
	return nil
}

func (g *fakeGateway) FTLAddr() net.Addr  { return g.ftl }
func (g *fakeGateway) HTTPAddr() net.Addr { return g.ftl }

func TestRunEndsEverythingAtTheFirstFailure(t *testing.T) {
	never := func() bool { return false }

	t.Run("publisher cannot connect", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close() // nothing listens there any more
		g := &fakeGateway{ftl: ln.Addr(), stopped: make(chan struct{})}
		moreEnded := make(chan struct{})
		err = Stack{Gateway: g, StreamKey: "77-secret", Live: never}.Run(t.Context(), func(ctx context.Context) error {
			<-ctx.Done()
			close(moreEnded)
			return nil
		})
		if err == nil || !strings.HasPrefix(err.Error(), "publisher: ") {
			t.Errorf("Run = %v, want the publisher's error", err)
		}
		<-g.stopped // Run returned: the gateway and the other part ended
		<-moreEnded
	})

	t.Run("another part fails", func(t *testing.T) {
		// The ingest accepts and never answers: the publisher waits in
		// its handshake until Run ends it.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		g := &fakeGateway{ftl: ln.Addr(), stopped: make(chan struct{})}
		boom := errors.New("boom")
		err = Stack{Gateway: g, StreamKey: "77-secret", Live: never}.Run(t.Context(), func(context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Errorf("Run = %v, want %v", err, boom)
		}
		<-g.stopped
	})
}
