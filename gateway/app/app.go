// Package app wires the gateway's packages into one value: the FTL ingest,
// the channel hubs and the HTTP surface. A test can start several in one
// process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"lightspeed/gateway/api"
	"lightspeed/gateway/ftl"
	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
)

// Config is every setting of the gateway, read from LS_ variables.
type Config struct {
	FTLAddr         string        `env:"FTL_ADDR" envDefault:":8084" help:"FTL control listen address (TCP); OBS always uses port 8084"`
	FTLMediaAddr    string        `env:"FTL_MEDIA_ADDR" help:"FTL media listen address (UDP); default: the control port on all addresses (on Fly: fly-global-services:8084)"`
	FTLAnnouncePort int           `env:"FTL_ANNOUNCE_PORT" help:"UDP port told to publishers; default: the media socket's port"`
	FTLProxyProto   bool          `env:"FTL_PROXY_PROTOCOL" help:"FTL control connections carry a PROXY protocol header with the publisher's address (true behind Fly's proxy_proto handler)"`
	HTTPAddr        string        `env:"HTTP_ADDR" envDefault:":8080" help:"HTTP listen address (API, metrics, health)"`
	DataDir         string        `env:"DATA_DIR" envDefault:"./data" help:"directory of the stream key file"`
	StreamKey       string        `env:"STREAM_KEY" help:"the only stream key, <channel>-<secret>; keys are then not stored"`
	DefaultChannel  uint32        `env:"DEFAULT_CHANNEL" envDefault:"77" help:"channel whose key is created on first start"`
	PublicHost      string        `env:"PUBLIC_HOST" envDefault:"localhost" help:"host name publishers use, printed in the OBS settings"`
	HubMaxHold      time.Duration `env:"HUB_MAX_HOLD" envDefault:"40ms" help:"how long the hub waits for a missing publisher packet"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
}

// Gateway is one running gateway.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	keys   *keys.Store
	hubs   *hub.Registry
	ingest *ftl.Server
	httpLn net.Listener
	http   *http.Server
}

// OpenKeys returns the key store cfg asks for: the static LS_STREAM_KEY, or
// the key file in the data directory.
func OpenKeys(cfg Config) (*keys.Store, error) {
	if cfg.StreamKey != "" {
		k, err := keys.Parse(cfg.StreamKey)
		if err != nil {
			return nil, fmt.Errorf("LS_STREAM_KEY: %w", err)
		}
		return keys.NewStatic(k), nil
	}
	return keys.Open(cfg.DataDir)
}

// New binds every socket of the gateway; Run serves them.
func New(cfg Config, store *keys.Store, log *slog.Logger) (*Gateway, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hubs := hub.NewRegistry(hub.Options{MaxHold: cfg.HubMaxHold, Logger: log})
	reg.MustRegister(api.NewHubCollector(hubs))

	ingest := ftl.NewServer(ftl.Config{
		ControlAddr:   cfg.FTLAddr,
		MediaAddr:     cfg.FTLMediaAddr,
		AnnouncePort:  cfg.FTLAnnouncePort,
		ProxyProtocol: cfg.FTLProxyProto,
		Logger:        log,
		Registerer:    reg,
	}, store, hubs)
	if err := ingest.Listen(); err != nil {
		hubs.Close()
		return nil, err
	}
	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		hubs.Close()
		ingest.Close()
		return nil, fmt.Errorf("http: listen: %w", err)
	}
	g := &Gateway{cfg: cfg, log: log, keys: store, hubs: hubs, ingest: ingest, httpLn: httpLn}
	g.http = &http.Server{
		Handler: api.Handler(api.Config{
			Hubs:     hubs,
			Channels: g.channels,
			Gatherer: reg,
			Logger:   log,
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return g, nil
}

// Hubs is the gateway's hub registry.
func (g *Gateway) Hubs() *hub.Registry { return g.hubs }

// FTLAddr is the bound FTL control address.
func (g *Gateway) FTLAddr() net.Addr { return g.ingest.ControlAddr() }

// FTLMediaAddr is the bound FTL media address.
func (g *Gateway) FTLMediaAddr() net.Addr { return g.ingest.MediaAddr() }

// HTTPAddr is the bound HTTP address.
func (g *Gateway) HTTPAddr() net.Addr { return g.httpLn.Addr() }

func (g *Gateway) channels() []uint32 {
	var ids []uint32
	for _, k := range g.keys.List() {
		ids = append(ids, k.Channel)
	}
	return ids
}

// Run serves until ctx is done, then stops every part and returns.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.hubs.Close()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.ingest.Serve(ctx) })
	eg.Go(func() error {
		g.log.Info("http: listening", "addr", g.httpLn.Addr().String())
		if err := g.http.Serve(g.httpLn); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return g.http.Shutdown(shutdown)
	})
	return eg.Wait()
}
