// Command function is a Lightspeed edge worker: it connects to the gateway
// over the QUIC relay and fans channels out to browsers over WebRTC.
//
//	go run ./function            join the gateway on this machine
//	go run ./function --help     list every setting
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"lightspeed/function/app"
	"lightspeed/shared/envconfig"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, envconfig.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "function:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg app.Config
	if err := envconfig.Load(&cfg, "function", args, os.Stdout); err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (try --help)", args[0])
	}
	log, err := envconfig.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app.TuneGC()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f, err := app.New(cfg, log, reg)
	if err != nil {
		return err
	}
	log.Info("function: starting", "gateway", cfg.GatewayAddr, "webrtc", f.Fanout().Addr().String(), "region", cfg.Region)
	return f.Run(ctx)
}
