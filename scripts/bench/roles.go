//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	functionapp "lightspeed/function/app"
	"lightspeed/shared/envconfig"
)

// The bench binary re-executes itself for the processes that are not
// the repository's commands: the baseline server, and the function when
// its CPU is profiled.
const (
	roleEnv      = "LS_BENCH_ROLE"
	roleBaseline = "baseline"
	roleFunction = "function"
	profileEnv   = "LS_BENCH_PROFILE" // the function role's profile file
)

// playRole runs the role the environment names and reports whether there
// was one.
func playRole() (bool, error) {
	switch role := os.Getenv(roleEnv); role {
	case "":
		return false, nil
	case roleBaseline:
		return true, serveBaseline()
	case roleFunction:
		return true, serveFunction(os.Getenv(profileEnv))
	default:
		return true, fmt.Errorf("unknown %s %q", roleEnv, role)
	}
}

// writeProfile writes the named profile to path (the heap after a
// collection).
func writeProfile(name, path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if name == "heap" {
		runtime.GC()
	}
	if err := pprof.Lookup(name).WriteTo(out, 0); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// serveFunction is the function command (function/main.go: the same
// settings, the same function/app) plus a CPU profile written to path
// between SIGUSR1 and SIGUSR2, and goroutine and heap profiles to
// path.goroutine and path.heap at SIGUSR2.
func serveFunction(path string) error {
	var cfg functionapp.Config
	if err := envconfig.Load(&cfg, "function", nil, os.Stdout); err != nil {
		return err
	}
	log, err := envconfig.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	functionapp.TuneGC()
	// The function command registers on the default registry, with the Go
	// runtime's collectors: so does this one.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f, err := functionapp.New(cfg, log, reg)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	profiled := make(chan struct{})
	defer func() {
		// Profiles asked for before the end are written whole.
		signal.Stop(sigs)
		close(sigs)
		<-profiled
	}()
	go func() {
		defer close(profiled)
		var out *os.File
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1 && out == nil:
				var err error
				if out, err = os.Create(path); err == nil {
					err = pprof.StartCPUProfile(out)
				}
				if err != nil {
					log.Error("function: cpu profile", "err", err)
					out = nil
				}
			case s == syscall.SIGUSR2 && out != nil:
				pprof.StopCPUProfile()
				if err := out.Close(); err != nil {
					log.Error("function: cpu profile", "err", err)
				}
				out = nil
				if err := writeProfile("goroutine", path+".goroutine"); err != nil {
					log.Error("function: goroutine profile", "err", err)
				}
				if err := writeProfile("heap", path+".heap"); err != nil {
					log.Error("function: heap profile", "err", err)
				}
			}
		}
	}()
	if err := f.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
