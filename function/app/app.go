// Package app wires a function (edge worker): the relay client that
// connects it to the gateway and the WebRTC fan-out that serves viewers.
// It is a value, so the gateway can embed one and a test can run several.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"lightspeed/function/fanout"
	"lightspeed/function/relay"
	"lightspeed/shared/envconfig"
	"lightspeed/shared/profiling"
	"lightspeed/shared/relaywire"
)

// Config is every setting of a function, read from LS_ variables.
type Config struct {
	GatewayAddr      string        `env:"GATEWAY_ADDR" envDefault:"127.0.0.1:4433" help:"the gateway's relay address (QUIC); on Fly: <gateway app>.internal:4433"`
	RelaySecret      string        `env:"RELAY_SECRET" help:"shared secret of the relay; default: read from the gateway's data dir (one machine)"`
	RelayFingerprint string        `env:"RELAY_FINGERPRINT" help:"SHA-256 (hex) of the gateway's relay certificate; default: from the data dir"`
	RelayCA          string        `env:"RELAY_CA" help:"CA file to verify the gateway's relay certificate instead of a fingerprint"`
	DataDir          string        `env:"DATA_DIR" envDefault:"./data" help:"the gateway's data dir, for the one-machine relay settings"`
	WebRTCUDPAddr    string        `env:"WEBRTC_UDP_ADDR" envDefault:":8189" help:"UDP address of all WebRTC media (ICE UDP mux); a loopback address offers loopback candidates only"`
	PublicIPs        []string      `env:"PUBLIC_IPS" envSeparator:"," help:"IPs advertised to viewers (NAT 1:1), comma-separated; default: the interface addresses"`
	Region           string        `env:"REGION" help:"region code (Fly region); default: FLY_REGION"`
	MachineID        string        `env:"MACHINE_ID" help:"machine id; default: FLY_MACHINE_ID or the host name"`
	Capacity         int           `env:"CAPACITY" envDefault:"500" min:"1" help:"most viewers this function takes"`
	IdleExit         time.Duration `env:"IDLE_EXIT" envDefault:"0s" min:"0s" help:"exit after this long with no viewers; 0s: never"`
	MetricsAddr      string        `env:"METRICS_ADDR" help:"serve Prometheus metrics at http://<this address>/metrics, e.g. :9091; empty: off"`
	PprofAddr        string        `env:"PPROF_ADDR" help:"serve Go profiles (pprof) at this address, e.g. 127.0.0.1:6061; empty: off"`
	LogLevel         string        `env:"LOG_LEVEL" envDefault:"info" help:"debug, info, warn or error"`
	LogFormat        string        `env:"LOG_FORMAT" envDefault:"text" help:"text or json"`
}

// GCPercent is the function's garbage collection target (GOGC) when the
// GOGC variable is not set. A function's heap is mostly per-viewer state
// made once per session, and its media path allocates little, so
// collecting at 15 % growth instead of Go's 100 % keeps the process's
// memory near its live heap for a collection every second or two, at no
// measurable CPU (docs/bench.md has the figures).
const GCPercent = 15

// TuneGC sets the collector's target to GCPercent unless GOGC is set.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}

// Function is one running function.
type Function struct {
	cfg     Config
	log     *slog.Logger
	client  *relay.Client
	fan     *fanout.Fanout
	metrics *http.Server // nil without MetricsAddr
	mln     net.Listener // where metrics is served
}

// New binds the function's WebRTC port and prepares its relay client.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Function, error) {
	if cfg.Region == "" {
		cfg.Region = os.Getenv("FLY_REGION")
	}
	if cfg.MachineID == "" {
		cfg.MachineID = os.Getenv("FLY_MACHINE_ID")
	}
	if cfg.MachineID == "" {
		cfg.MachineID, _ = os.Hostname()
	}
	if cfg.RelaySecret == "" || (cfg.RelayFingerprint == "" && cfg.RelayCA == "") {
		li, err := relaywire.ReadLocalInfo(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("function: no LS_RELAY_SECRET/LS_RELAY_FINGERPRINT and no local relay settings: %w", err)
		}
		if cfg.RelaySecret == "" {
			cfg.RelaySecret = li.Secret
		}
		if cfg.RelayFingerprint == "" && cfg.RelayCA == "" {
			cfg.RelayFingerprint = li.Fingerprint
		}
	}
	client := relay.NewClient(relay.Config{
		GatewayAddr: cfg.GatewayAddr,
		Secret:      cfg.RelaySecret,
		Fingerprint: cfg.RelayFingerprint,
		CAFile:      cfg.RelayCA,
		Region:      cfg.Region,
		MachineID:   cfg.MachineID,
		Capacity:    cfg.Capacity,
		Logger:      log,
		Registerer:  reg,
	})
	fan, err := fanout.New(fanout.Config{
		UDPAddr:    cfg.WebRTCUDPAddr,
		PublicIPs:  cfg.PublicIPs,
		Capacity:   cfg.Capacity,
		Logger:     log,
		Registerer: reg,
	}, client)
	if err != nil {
		return nil, err
	}
	client.SetMediaAddr(mediaAddr(cfg, fan.Addr()))
	f := &Function{cfg: cfg, log: log, client: client, fan: fan}
	if cfg.MetricsAddr != "" {
		g, ok := reg.(prometheus.Gatherer)
		if !ok {
			fan.Close()
			return nil, errors.New("function: LS_METRICS_ADDR needs a registry that can be gathered")
		}
		if f.mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			fan.Close()
			return nil, fmt.Errorf("function: metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
		f.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return f, nil
}

// MetricsAddr is where the metrics are served, nil without MetricsAddr.
func (f *Function) MetricsAddr() net.Addr {
	if f.mln == nil {
		return nil
	}
	return f.mln.Addr()
}

// serveMetrics serves /metrics until ctx is done.
func (f *Function) serveMetrics(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		f.metrics.Close()
	}()
	f.log.Info("function: serving metrics", "addr", f.mln.Addr().String())
	if err := f.metrics.Serve(f.mln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("function: metrics: %w", err)
	}
	return nil
}

// mediaAddr is the public address viewers reach the fan-out at.
func mediaAddr(cfg Config, bound net.Addr) string {
	port := bound.(*net.UDPAddr).Port
	host := "127.0.0.1"
	if len(cfg.PublicIPs) > 0 {
		host = strings.TrimSpace(cfg.PublicIPs[0])
	}
	return net.JoinHostPort(host, fmt.Sprint(port))
}

// Fanout is the function's WebRTC fan-out.
func (f *Function) Fanout() *fanout.Fanout { return f.fan }

// Client is the function's relay client.
func (f *Function) Client() *relay.Client { return f.client }

// errIdle ends Run when the function was idle for IdleExit.
var errIdle = errors.New("function: idle")

// Run serves until ctx is done (or, with IdleExit, until the function has
// had no viewers for that long), then closes every viewer.
func (f *Function) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return f.client.Run(ctx, f.fan) })
	if f.metrics != nil {
		g.Go(func() error { return f.serveMetrics(ctx) })
	}
	if f.cfg.PprofAddr != "" {
		ln, err := profiling.Listen(f.cfg.PprofAddr)
		if err != nil {
			return err
		}
		g.Go(func() error { return profiling.Serve(ctx, ln, f.log) })
	}
	if f.cfg.IdleExit > 0 {
		g.Go(func() error { return f.idleWatch(ctx) })
	}
	err := g.Wait()
	f.fan.Close()
	if errors.Is(err, errIdle) {
		f.log.Info("function: exiting after being idle", "idle", f.cfg.IdleExit.String())
		return nil
	}
	return err
}

func (f *Function) idleWatch(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	idleSince := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if f.fan.Load().Viewers > 0 {
				idleSince = now
			} else if now.Sub(idleSince) >= f.cfg.IdleExit {
				return errIdle
			}
		}
	}
}

// Main runs a function as its command does: the settings from the
// environment (args may only ask for --help, which goes to out), until an
// interrupt or SIGTERM. The function command and the gateway's "function"
// subcommand (which the local fleet provider runs) both call it.
func Main(args []string, out io.Writer) error {
	var cfg Config
	if err := envconfig.Load(&cfg, "function", args, out); err != nil {
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
	TuneGC()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f, err := New(cfg, log, reg)
	if err != nil {
		return err
	}
	log.Info("function: starting", "gateway", cfg.GatewayAddr, "webrtc", f.Fanout().Addr().String(), "region", cfg.Region)
	return f.Run(ctx)
}
