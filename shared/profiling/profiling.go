// Package profiling serves Go's runtime profiles (net/http/pprof) on an
// address of their own, never on the public HTTP port. It is off unless
// LS_PPROF_ADDR names an address, and has no authentication: bind it to
// loopback (127.0.0.1:6060) and reach it through an SSH tunnel or
// `fly proxy`. Serve warns when it is bound anywhere else.
package profiling

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// Handler returns the pprof routes under /debug/pprof/.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Listen binds addr for Serve.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("profiling: listen: %w", err)
	}
	return ln, nil
}

// Serve serves the profiles on ln until ctx is done.
func Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("profiling: serving pprof", "addr", ln.Addr().String())
	if !Loopback(ln.Addr()) {
		log.Warn("profiling: pprof is served beyond loopback, without authentication: whoever reaches this address can read the process's profiles and command line; bind it to 127.0.0.1",
			"addr", ln.Addr().String())
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("profiling: %w", err)
	}
	return nil
}

// Loopback reports whether addr is a loopback address (not the
// unspecified address, which is every interface's).
func Loopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
