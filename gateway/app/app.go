// Package app wires the gateway's packages into one value: the FTL ingest,
// the channel hubs, the relay to functions, the scheduler, signaling and
// the HTTP surface, and in the one-machine setup an embedded function. A
// test can start several in one process.
package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	functionapp "lightspeed/function/app"
	"lightspeed/gateway/api"
	"lightspeed/gateway/fleet"
	"lightspeed/gateway/fleet/flyprovider"
	"lightspeed/gateway/fleet/localprovider"
	"lightspeed/gateway/ftl"
	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/relay"
	"lightspeed/gateway/scheduler"
	"lightspeed/gateway/signaling"
	"lightspeed/gateway/viewtoken"
	"lightspeed/gateway/web"
	"lightspeed/gateway/whip"
	"lightspeed/shared/profiling"
	"lightspeed/shared/relaywire"
)

// Config is every setting of the gateway, read from LS_ variables.
type Config struct {
	FTLAddr         string        `env:"FTL_ADDR" envDefault:":8084" help:"FTL control listen address (TCP); OBS always uses port 8084"`
	FTLMediaAddr    string        `env:"FTL_MEDIA_ADDR" help:"FTL media listen address (UDP); default: the control port on all addresses (on Fly: fly-global-services:8084)"`
	FTLAnnouncePort int           `env:"FTL_ANNOUNCE_PORT" min:"0" max:"65535" help:"UDP port told to publishers; default: the media socket's port"`
	FTLProxyProto   bool          `env:"FTL_PROXY_PROTOCOL" help:"FTL control connections carry a PROXY protocol header with the publisher's address (true behind Fly's proxy_proto handler)"`
	HTTPAddr        string        `env:"HTTP_ADDR" envDefault:":8080" help:"HTTP listen address (API, metrics, health)"`
	DataDir         string        `env:"DATA_DIR" envDefault:"./data" help:"directory of the stream key file"`
	StreamKey       string        `env:"STREAM_KEY" help:"the only stream key, <channel>-<secret>; keys are then not stored"`
	DefaultChannel  uint32        `env:"DEFAULT_CHANNEL" envDefault:"77" min:"1" help:"channel whose key is created on first start; keys add and keys rotate act on it when given no channel"`
	PublicHost      string        `env:"PUBLIC_HOST" envDefault:"localhost" help:"host name publishers use, printed in the OBS settings"`
	HubMaxHold      time.Duration `env:"HUB_MAX_HOLD" envDefault:"40ms" min:"1ms" help:"how long the hub waits for a missing publisher packet"`
	RelayAddr       string        `env:"RELAY_ADDR" envDefault:":4433" help:"relay listen address (QUIC, UDP) that functions connect to"`
	RelaySecret     string        `env:"RELAY_SECRET" help:"secret functions prove they know; default: generated and kept in the data dir"`
	RelayCert       string        `env:"RELAY_CERT" help:"relay TLS certificate file (PEM); default: self-signed, kept in the data dir"`
	RelayKey        string        `env:"RELAY_KEY" help:"relay TLS key file (PEM)"`
	Region          string        `env:"REGION" help:"the gateway's region (Fly region code), for routing viewers that name none; default: FLY_REGION"`
	EmbedFunction   bool          `env:"EMBEDDED_FUNCTION" envDefault:"true" help:"run a function inside the gateway (one-machine setup)"`
	WebRTCUDPAddr   string        `env:"WEBRTC_UDP_ADDR" envDefault:":8189" help:"embedded function: UDP address of all WebRTC media"`
	PublicIPs       []string      `env:"PUBLIC_IPS" envSeparator:"," help:"IPs advertised to WHIP publishers and, by the embedded function, to viewers, comma-separated; default: the interface addresses"`
	ViewersPerIP    int           `env:"VIEWERS_PER_IP" envDefault:"20" min:"0" help:"viewer sessions one client IP may have open (beyond: 429); 0: no bound (raise it for audiences behind one NAT)"`
	ViewersMax      int           `env:"VIEWERS_MAX" envDefault:"5000" min:"0" help:"viewer sessions the gateway takes in all (beyond: 503); 0: no bound"`
	WHIPUDPAddr     string        `env:"WHIP_UDP_ADDR" envDefault:":8085" help:"UDP address of every WHIP publisher's media (ICE UDP mux); on Fly fly-global-services:8085"`
	PublicURL       string        `env:"PUBLIC_URL" help:"the gateway's base URL as publishers reach it, printed in the OBS WHIP settings; default http://<LS_PUBLIC_HOST>:<LS_HTTP_ADDR's port>"`
	FunctionCap     int           `env:"FUNCTION_CAPACITY" envDefault:"500" min:"1" help:"most viewers a function takes (the embedded one, and those the fleet starts)"`

	FunctionProvider    string        `env:"FUNCTION_PROVIDER" envDefault:"embedded" help:"who runs functions: embedded (one inside the gateway, no scaling), local (function processes on this machine, scaled by the fleet) or fly (Fly Machines, scaled by the fleet)"`
	FunctionRegions     []string      `env:"FUNCTION_REGIONS" envSeparator:"," help:"regions functions may run in, comma-separated; viewers elsewhere get the nearest; empty: wherever viewers are"`
	FunctionMin         int           `env:"FUNCTION_MIN" envDefault:"0" min:"0" help:"functions kept ready in each of LS_FUNCTION_REGIONS"`
	FunctionScaleAt     int           `env:"FUNCTION_SCALE_AT" envDefault:"80" min:"1" max:"100" help:"percent of a region's capacity in use that starts another function there"`
	FunctionIdleStop    time.Duration `env:"FUNCTION_IDLE_STOP" envDefault:"5m" min:"1s" help:"a function without viewers this long is stopped"`
	FunctionIdleDestroy time.Duration `env:"FUNCTION_IDLE_DESTROY" envDefault:"24h" min:"1s" help:"a stopped function unused this long is destroyed"`
	FunctionStartWait   time.Duration `env:"FUNCTION_START_WAIT" envDefault:"15s" min:"0s" help:"how long a viewer waits for a function to start when none has room, before 503"`
	FunctionUDPPorts    string        `env:"FUNCTION_UDP_PORTS" envDefault:"10000-10999" help:"WebRTC UDP ports of the functions the fleet starts, one each"`
	FunctionBin         string        `env:"FUNCTION_BIN" help:"local provider: the function binary; default: this gateway's binary (gateway function)"`
	FunctionGatewayAddr string        `env:"FUNCTION_GATEWAY_ADDR" help:"the relay address started functions dial; default: this gateway's relay address as seen on this machine"`
	AdminToken          string        `env:"ADMIN_TOKEN" help:"bearer token of the admin endpoints (drain); empty: they answer 403"`
	FlyAPIURL           string        `env:"FLY_API_URL" envDefault:"https://api.machines.dev" help:"fly: the Machines API (the token is FLY_API_TOKEN)"`
	FlyFunctionApp      string        `env:"FLY_FUNCTION_APP" help:"fly: the app the functions' machines belong to"`
	FlyFunctionImage    string        `env:"FLY_FUNCTION_IMAGE" help:"fly: the functions' image; default: the image of the app's machines (fly deploy of the function app)"`
	FlyFunctionIPv4     string        `env:"FLY_FUNCTION_IPV4" help:"fly: the function app's dedicated public IPv4, advertised to viewers"`

	PprofAddr string `env:"PPROF_ADDR" help:"serve Go profiles (pprof) at this address, e.g. 127.0.0.1:6060; empty: off"`
	LogLevel  string `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat string `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
}

// Gateway is one running gateway.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	keys      *keys.Store
	hubs      *hub.Registry
	ingest    *ftl.Server
	whip      *whip.Server
	relay     *relay.Server
	scheduler *scheduler.Scheduler
	signaling *signaling.Signaling
	function  *functionapp.Function // embedded; nil unless cfg.EmbedFunction
	fleet     *fleet.Fleet
	local     *localprovider.Provider // nil unless LS_FUNCTION_PROVIDER=local
	httpLn    net.Listener
	http      *http.Server
	pprofLn   net.Listener // nil unless cfg.PprofAddr
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

// New binds every socket of the gateway (and of its embedded function);
// Run serves them.
func New(cfg Config, store *keys.Store, log *slog.Logger) (g *Gateway, err error) {
	if cfg.Region == "" {
		cfg.Region = os.Getenv("FLY_REGION")
	}
	g = &Gateway{cfg: cfg, log: log, keys: store}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.hubs = hub.NewRegistry(hub.Options{MaxHold: cfg.HubMaxHold, Logger: log})
	closers = append(closers, g.hubs.Close)
	reg.MustRegister(api.NewHubCollector(g.hubs))

	g.ingest = ftl.NewServer(ftl.Config{
		ControlAddr:   cfg.FTLAddr,
		MediaAddr:     cfg.FTLMediaAddr,
		AnnouncePort:  cfg.FTLAnnouncePort,
		ProxyProtocol: cfg.FTLProxyProto,
		Logger:        log,
		Registerer:    reg,
	}, store, g.hubs)
	if err := g.ingest.Listen(); err != nil {
		return nil, err
	}
	closers = append(closers, g.ingest.Close)
	clientIPHeader := ""
	if os.Getenv("FLY_APP_NAME") != "" {
		clientIPHeader = "Fly-Client-IP" // behind Fly's proxy, the publisher's address
	}
	g.whip, err = whip.New(whip.Config{
		UDPAddr:        cfg.WHIPUDPAddr,
		PublicIPs:      cfg.PublicIPs,
		ClientIPHeader: clientIPHeader,
		RateLimit:      ratelimit.Default(),
		Logger:         log,
		Registerer:     reg,
	}, store, g.hubs)
	if err != nil {
		return nil, err
	}
	closers = append(closers, g.whip.Close)

	cert, secret, err := relayCredentials(cfg)
	if err != nil {
		return nil, err
	}
	g.relay = relay.NewServer(relay.Config{
		Addr:       cfg.RelayAddr,
		Secret:     secret,
		Cert:       cert,
		Logger:     log,
		Registerer: reg,
	}, g.hubs)
	if err := g.relay.Listen(); err != nil {
		return nil, err
	}
	closers = append(closers, g.relay.Close)
	local := relaywire.LocalInfo{Secret: secret, Fingerprint: relay.Fingerprint(cert), Addr: localAddr(g.relay.Addr())}
	if cfg.RelaySecret == "" {
		// Functions started by hand on this machine find the relay here.
		if err := relaywire.WriteLocalInfo(cfg.DataDir, local); err != nil {
			return nil, err
		}
	}

	g.scheduler = scheduler.New(g.functions, cfg.Region)
	provider, err := g.provider(local)
	if err != nil {
		return nil, err
	}
	if g.local != nil {
		closers = append(closers, g.local.Close)
	}
	ports, err := fleet.ParsePortRange(cmp.Or(cfg.FunctionUDPPorts, "10000-10999"))
	if err != nil {
		return nil, fmt.Errorf("config: LS_FUNCTION_UDP_PORTS: %w", err)
	}
	g.fleet = fleet.New(fleet.Config{
		Provider:    provider,
		Relay:       g.relay,
		Regions:     cfg.FunctionRegions,
		Home:        cfg.Region,
		Min:         cfg.FunctionMin,
		ScaleAt:     float64(cfg.FunctionScaleAt) / 100,
		IdleStop:    cfg.FunctionIdleStop,
		IdleDestroy: cfg.FunctionIdleDestroy,
		Ports:       ports,
		Capacity:    cfg.FunctionCap,
		Env:         functionEnv(cfg, local),
		Logger:      log,
		Registerer:  reg,
	})
	var tokenKey []byte
	var private func(channel uint32) bool
	if store != nil {
		private = store.Private
	}
	if cfg.StreamKey == "" { // a static store has no private channel
		if tokenKey, err = viewtoken.LoadOrCreateKey(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	g.signaling = signaling.New(signaling.Config{
		Limits:         signaling.Limits{Rate: ratelimit.Default(), SessionsPerIP: cfg.ViewersPerIP, Sessions: cfg.ViewersMax},
		ClientIPHeader: clientIPHeader,
		Private:        private,
		TokenKey:       tokenKey,
		Hubs:           g.hubs,
		Relay:          g.relay,
		Picker:         &fleet.Picker{Scheduler: g.scheduler, Fleet: g.fleet, Wait: cfg.FunctionStartWait},
		Known:          g.known,
		DefaultChannel: cfg.DefaultChannel,
		Logger:         log,
		Registerer:     reg,
	})

	if cfg.EmbedFunction && provider == nil {
		g.function, err = functionapp.New(functionapp.Config{
			GatewayAddr:      local.Addr,
			RelaySecret:      local.Secret,
			RelayFingerprint: local.Fingerprint,
			WebRTCUDPAddr:    cfg.WebRTCUDPAddr,
			PublicIPs:        cfg.PublicIPs,
			Region:           cfg.Region,
			MachineID:        "embedded",
			Capacity:         cfg.FunctionCap,
		}, log, prometheus.WrapRegistererWith(prometheus.Labels{"function": "embedded"}, reg))
		if err != nil {
			return nil, err
		}
		closers = append(closers, func() { g.function.Fanout().Close() })
	}

	if cfg.PprofAddr != "" {
		if g.pprofLn, err = profiling.Listen(cfg.PprofAddr); err != nil {
			return nil, err
		}
		closers = append(closers, func() { g.pprofLn.Close() })
	}
	g.httpLn, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http: listen: %w", err)
	}
	apiHandler := api.Handler(api.Config{
		MetricsPrivate: os.Getenv("FLY_APP_NAME") != "",
		AdminToken:     cfg.AdminToken,
		ClientIPHeader: clientIPHeader,
		Registerer:     reg,
		Private:        private,
		Hubs:           g.hubs,
		Channels:       g.channels,
		Viewers:        g.signaling.Viewers,
		Gatherer:       reg,
		Logger:         log,
	})
	sig := g.signaling.Handler()
	mux := http.NewServeMux()
	mux.Handle("/api/whep/", sig)
	mux.Handle("/api/whip", g.whip)
	mux.Handle("/api/whip/", g.whip)
	mux.Handle("GET /websocket", sig)
	mux.Handle("GET /api/channels", apiHandler)
	mux.Handle("GET /metrics", apiHandler)
	mux.Handle("GET /healthz", apiHandler)
	fleetAPI := g.fleet.Handler(cfg.AdminToken)
	mux.Handle("GET /api/functions", fleetAPI)
	mux.Handle("POST /api/functions/{id}/drain", fleetAPI)
	mux.Handle("/", web.Handler())
	// Headers within 10 s, no more than 64 KiB of them; an idle keep-alive
	// connection is closed after 30 s (bodies have their own deadline in
	// the handlers that read them; websockets their own pings).
	g.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10}
	return g, nil
}

// provider returns the fleet's provider LS_FUNCTION_PROVIDER names, or nil
// for the embedded function (no scaling).
func (g *Gateway) provider(local relaywire.LocalInfo) (fleet.Provider, error) {
	cfg := g.cfg
	switch cfg.FunctionProvider {
	case "embedded", "":
		return nil, nil
	case "local":
		var command []string
		if cfg.FunctionBin != "" {
			command = []string{cfg.FunctionBin}
		}
		host, _, _ := net.SplitHostPort(cfg.WebRTCUDPAddr)
		stateDir := ""
		if runtime.GOOS == "linux" {
			// Functions outlive a gateway that crashed, and the next one
			// adopts them (their records need /proc).
			stateDir = filepath.Join(cfg.DataDir, "functions")
		}
		p, err := localprovider.New(context.Background(), localprovider.Config{
			Command:  command,
			Host:     host,
			StateDir: stateDir,
			Logger:   g.log,
		})
		if err != nil {
			return nil, err
		}
		g.local = p
		return p, nil
	case "fly":
		return flyprovider.New(flyprovider.Config{
			APIURL:     cfg.FlyAPIURL,
			Token:      os.Getenv(flyprovider.TokenEnv),
			App:        cfg.FlyFunctionApp,
			Image:      cfg.FlyFunctionImage,
			PublicIPv4: cfg.FlyFunctionIPv4,
			GatewayID:  cmp.Or(os.Getenv("FLY_APP_NAME"), "gateway"),
			Logger:     g.log,
		})
	}
	return nil, fmt.Errorf("config: LS_FUNCTION_PROVIDER: %q is none of embedded, local, fly", cfg.FunctionProvider)
}

// functionEnv is the environment of every function the fleet starts: how
// to reach and trust the relay, what to advertise, how to log.
func functionEnv(cfg Config, local relaywire.LocalInfo) map[string]string {
	gatewayAddr := local.Addr
	if app := os.Getenv("FLY_APP_NAME"); cfg.FunctionProvider == "fly" && app != "" {
		// Functions reach the gateway over Fly's private network.
		_, port, _ := net.SplitHostPort(local.Addr)
		gatewayAddr = net.JoinHostPort(app+".internal", port)
	}
	env := map[string]string{
		"LS_GATEWAY_ADDR":      cmp.Or(cfg.FunctionGatewayAddr, gatewayAddr),
		"LS_RELAY_SECRET":      local.Secret,
		"LS_RELAY_FINGERPRINT": local.Fingerprint,
		"LS_LOG_LEVEL":         cfg.LogLevel,
		"LS_LOG_FORMAT":        cfg.LogFormat,
	}
	if len(cfg.PublicIPs) > 0 {
		env["LS_PUBLIC_IPS"] = strings.Join(cfg.PublicIPs, ",")
	}
	return env
}

// relayCredentials returns the relay's certificate and secret: from the
// configuration, or made once and kept in the data dir.
func relayCredentials(cfg Config) (tls.Certificate, string, error) {
	var cert tls.Certificate
	var err error
	if cfg.RelayCert != "" {
		cert, err = tls.LoadX509KeyPair(cfg.RelayCert, cfg.RelayKey)
	} else {
		cert, err = relay.LoadOrCreateCert(cfg.DataDir)
	}
	if err != nil {
		return cert, "", fmt.Errorf("relay: certificate: %w", err)
	}
	secret := cfg.RelaySecret
	if secret == "" {
		if li, err := relaywire.ReadLocalInfo(cfg.DataDir); err == nil && li.Secret != "" {
			secret = li.Secret
		} else {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return cert, "", err
			}
			secret = hex.EncodeToString(b)
		}
	}
	return cert, secret, nil
}

// localAddr is how a function on this machine reaches a listener bound to
// addr: an unspecified address becomes loopback.
func localAddr(addr net.Addr) string {
	ua := addr.(*net.UDPAddr)
	ip := ua.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ua.Port))
}

// functions is the scheduler's view of the connected functions.
func (g *Gateway) functions() []scheduler.Function {
	fs := g.relay.Functions()
	out := make([]scheduler.Function, 0, len(fs))
	for _, f := range fs {
		out = append(out, scheduler.Function{ID: f.ID, Region: f.Region, Capacity: f.Capacity, Viewers: f.Viewers, Draining: f.Draining})
	}
	return out
}

func (g *Gateway) known(channel uint32) bool {
	_, ok := g.keys.Secret(channel)
	return ok
}

// Hubs is the gateway's hub registry.
func (g *Gateway) Hubs() *hub.Registry { return g.hubs }

// Relay is the gateway's relay server.
func (g *Gateway) Relay() *relay.Server { return g.relay }

// Function is the embedded function, or nil.
func (g *Gateway) Function() *functionapp.Function { return g.function }

// FTLAddr is the bound FTL control address.
func (g *Gateway) FTLAddr() net.Addr { return g.ingest.ControlAddr() }

// FTLMediaAddr is the bound FTL media address.
func (g *Gateway) FTLMediaAddr() net.Addr { return g.ingest.MediaAddr() }

// HTTPAddr is the bound HTTP address.
func (g *Gateway) HTTPAddr() net.Addr { return g.httpLn.Addr() }

// RelayLocalInfo is what a function on this machine needs to connect.
func (g *Gateway) RelayLocalInfo() (relaywire.LocalInfo, error) {
	return relaywire.ReadLocalInfo(g.cfg.DataDir)
}

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
	defer g.whip.Close() // ends the WHIP sessions before the hubs close
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.ingest.Serve(ctx) })
	eg.Go(func() error { return g.relay.Serve(ctx) })
	if g.function != nil {
		eg.Go(func() error { return g.function.Run(ctx) })
	}
	eg.Go(func() error { return g.fleet.Run(ctx) })
	if g.local != nil {
		defer g.local.Close() // functions stop with the gateway
	}
	if g.pprofLn != nil {
		eg.Go(func() error { return profiling.Serve(ctx, g.pprofLn, g.log) })
	}
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
		g.signaling.Close()
		return g.http.Shutdown(shutdown)
	})
	return eg.Wait()
}
