// Command gateway is Lightspeed's long-lived front: FTL ingest, the channel
// hubs, and the HTTP surface (API, metrics).
//
//	go run ./gateway             run the gateway
//	go run ./gateway keys list   manage stream keys (add|list|rotate|remove)
//	go run ./gateway function    run a function (as the local fleet provider does)
//	go run ./gateway --help      list every setting
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	functionapp "lightspeed/function/app"
	"lightspeed/gateway/app"
	"lightspeed/gateway/keys"
	"lightspeed/shared/envconfig"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, envconfig.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// usage is the command line of the gateway, for --help.
const usage = "gateway [keys <command> | function]\n\n" + keys.Usage +
	"\n\ngateway function runs a function (edge worker) with its own LS_ settings (gateway function --help lists them)."

// run runs the gateway, or its keys subcommand, with args (the words after
// the command's name); what the operator reads goes to out.
func run(args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "function" {
		return functionapp.Main(args[1:], out)
	}
	var cfg app.Config
	if err := envconfig.Load(&cfg, usage, args, out); err != nil {
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
		return keys.Command(args[1:], store, cfg.DefaultChannel, out)
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
			fmt.Fprintln(out, keys.OBSInstructions(k, cfg.PublicHost))
			fmt.Fprintln(out, keys.WHIPInstructions(k, publicURL(cfg)))
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

// publicURL is the gateway's base URL as publishers reach it: LS_PUBLIC_URL,
// else http://<LS_PUBLIC_HOST>:<the HTTP port>.
func publicURL(cfg app.Config) string {
	if cfg.PublicURL != "" {
		return cfg.PublicURL
	}
	host := cfg.PublicHost
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	_, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil || port == "" {
		port = "8080"
	}
	return "http://" + net.JoinHostPort(host, port)
}
