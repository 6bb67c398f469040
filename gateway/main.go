// Command gateway is Lightspeed's long-lived front: FTL ingest, the channel
// hubs, and the HTTP surface (API, metrics).
//
//	go run ./gateway             run the gateway
//	go run ./gateway keys list   manage stream keys (add|list|rotate|remove|private|public)
//	go run ./gateway tokens issue 77 --ttl 2h   a watch URL for a private channel
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
	"strconv"
	"strings"
	"syscall"
	"time"

	functionapp "lightspeed/function/app"
	"lightspeed/gateway/app"
	"lightspeed/gateway/keys"
	"lightspeed/gateway/viewtoken"
	"lightspeed/shared/envconfig"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, envconfig.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// usage is the command line of the gateway, for --help.
const usage = "gateway [keys <command> | tokens issue <channel> | function]\n\n" + keys.Usage +
	"\n" + tokensUsage +
	"\n\ngateway function runs a function (edge worker) with its own LS_ settings (gateway function --help lists them)."

// run runs the gateway, or its keys or tokens subcommand, with args (the
// words after the command's name); what the operator reads goes to out,
// notes beside it to errOut.
func run(args []string, out, errOut io.Writer) error {
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
	if len(args) > 0 && args[0] == "tokens" {
		return tokensCommand(args[1:], cfg, store, time.Now(), out, errOut)
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
	if cfg.EmbedFunction {
		// The function's heap is most of the process's: collect as a
		// function does.
		functionapp.TuneGC()
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

// tokensUsage lists the forms of the "tokens" subcommand.
const tokensUsage = `  gateway tokens issue <channel> [--ttl 2h]
                                   print a watch URL with a viewer token for a
                                   private channel; --ttl from 1m to 30d (2h)`

// errTokensUsage is wrapped by the errors of a malformed tokens command.
var errTokensUsage = errors.New("usage:\n" + tokensUsage)

// defaultTokenTTL is how long an issued viewer token works unless --ttl
// says otherwise.
const defaultTokenTTL = 2 * time.Hour

// tokensCommand runs "gateway tokens" with args (the words after
// "tokens"). "issue <channel> [--ttl d]" prints the watch URL of channel
// with a viewer token valid for d from now, and nothing else, on out; a
// note for a public channel goes to errOut. The signing key is made in
// the data directory if missing.
func tokensCommand(args []string, cfg app.Config, store *keys.Store, now time.Time, out, errOut io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("tokens: missing command: %w", errTokensUsage)
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		_, err := fmt.Fprintln(out, errTokensUsage.Error())
		return err
	case "issue":
	default:
		return fmt.Errorf("tokens: unknown command %q: %w", args[0], errTokensUsage)
	}
	ttl := defaultTokenTTL
	var channelArg []string
	for rest := args[1:]; len(rest) > 0; rest = rest[1:] {
		a := rest[0]
		name, value, hasValue := strings.Cut(a, "=")
		if name != "--ttl" && name != "-ttl" {
			if strings.HasPrefix(a, "-") {
				return fmt.Errorf("tokens: issue: unknown option %q: %w", name, errTokensUsage)
			}
			channelArg = append(channelArg, a)
			continue
		}
		if !hasValue {
			if len(rest) < 2 {
				return fmt.Errorf("tokens: issue: --ttl needs a duration, like 2h or 7d: %w", errTokensUsage)
			}
			rest = rest[1:]
			value = rest[0]
		}
		d, err := parseTTL(value)
		if err != nil {
			return fmt.Errorf("tokens: issue: --ttl: %w", err)
		}
		ttl = d
	}
	switch len(channelArg) {
	case 0:
		return fmt.Errorf("tokens: issue needs a channel: %w", errTokensUsage)
	case 1:
	default:
		return fmt.Errorf("tokens: issue takes one channel, got %d: %w", len(channelArg), errTokensUsage)
	}
	channel, err := keys.ParseChannel(channelArg[0])
	if err != nil {
		return fmt.Errorf("tokens: issue: %w", err)
	}
	if _, ok := store.Secret(channel); !ok {
		return fmt.Errorf("tokens: issue: channel %d has no stream key (gateway keys add %d)", channel, channel)
	}
	key, err := viewtoken.LoadOrCreateKey(cfg.DataDir)
	if err != nil {
		return err
	}
	token, err := viewtoken.Issue(key, channel, ttl, now)
	if err != nil {
		return fmt.Errorf("tokens: issue: %w", err)
	}
	if !store.Private(channel) {
		fmt.Fprintf(errOut, "note: channel %d is public: anyone can watch it without a token (gateway keys private %d makes it private)\n", channel, channel)
	}
	_, err = fmt.Fprintf(out, "%s/watch/%d?token=%s\n", strings.TrimRight(publicURL(cfg), "/"), channel, token)
	return err
}

// parseTTL reads a token lifetime: a Go duration (90m, 2h) or whole days
// (7d), from viewtoken.MinTTL to viewtoken.MaxTTL.
func parseTTL(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration, like 2h, 90m or 7d", s)
		}
		d = viewtoken.MaxTTL + 1 // past the bound, without overflowing
		if n <= uint64(viewtoken.MaxTTL/(24*time.Hour)) {
			d = time.Duration(n) * 24 * time.Hour
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration, like 2h, 90m or 7d", s)
		}
	}
	if d < viewtoken.MinTTL || d > viewtoken.MaxTTL {
		return 0, fmt.Errorf("%s is outside 1m to 30d", s)
	}
	return d, nil
}
