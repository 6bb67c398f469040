// Command gateway is Lightspeed's long-lived front: FTL ingest, the channel
// hubs, and the HTTP surface (API, metrics).
//
//	go run ./gateway             run the gateway
//	go run ./gateway keys list   manage stream keys (add|list|rotate|remove)
//	go run ./gateway --help      list every setting
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"lightspeed/gateway/app"
	"lightspeed/gateway/keys"
	"lightspeed/shared/envconfig"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, envconfig.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var cfg app.Config
	if err := envconfig.Load(&cfg, "gateway [keys add|list|rotate|remove [channel]]", args, os.Stdout); err != nil {
		return err
	}
	log, err := envconfig.NewLogger(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	store, err := app.OpenKeys(cfg)
	if err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "keys" {
		return keys.Command(args[1:], store, os.Stdout)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (try --help)", args[0])
	}
	if cfg.StreamKey == "" {
		k, created, err := store.EnsureDefault(cfg.DefaultChannel)
		if err != nil {
			return err
		}
		if created {
			fmt.Println(keys.OBSInstructions(k, cfg.PublicHost))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	g, err := app.New(cfg, store, log)
	if err != nil {
		return err
	}
	err = g.Run(ctx)
	log.Info("gateway: stopped")
	return err
}
