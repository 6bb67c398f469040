// Package api is the gateway's operator surface on the HTTP port: the list
// of channels with their live stats, Prometheus metrics and a health check.
package api

import (
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"lightspeed/gateway/hub"
	"lightspeed/gateway/ratelimit"
)

// Config is what the API serves from.
type Config struct {
	Hubs     *hub.Registry
	Channels func() []uint32     // channels with a stream key, listed even when offline
	Viewers  func(uint32) int    // viewers of a channel; nil: none counted
	Private  func(uint32) bool   // the channel needs a viewer token: never listed; nil: none is
	Gatherer prometheus.Gatherer // what /metrics serves
	Logger   *slog.Logger

	// MetricsPrivate restricts /metrics to loopback, Fly's private
	// network (fdaa::/16, where Fly's Prometheus scrapes from) and
	// requests with "Authorization: Bearer <AdminToken>"; others get 401
	// (403 without an AdminToken). The gateway sets it on Fly. False:
	// /metrics is open to all.
	MetricsPrivate bool
	// AdminToken is the bearer token that opens /metrics from anywhere
	// when MetricsPrivate (LS_ADMIN_TOKEN); empty: none does.
	AdminToken string
	// ClientIPHeader names the header a trusted proxy sets to the client's
	// IP ("Fly-Client-IP" on Fly): a request that carries it came through
	// the proxy and is judged by that IP, not by the proxy's address.
	ClientIPHeader string
	// Registerer is where lightspeed_http_refused_total{endpoint="metrics"}
	// is registered; nil: nowhere.
	Registerer prometheus.Registerer
}

// Handler returns the API's routes: GET /api/channels, /metrics, /healthz.
// /api/channels leaves private channels out, live or not: only those
// given a viewer token learn of them. None of them sends CORS headers: a
// page on another origin cannot read them.
func Handler(c Config) http.Handler {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/channels", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, c.Logger, channelList(c, time.Now()))
	})
	refused, err := ratelimit.NewRefusals(c.Registerer, "metrics", ratelimit.ReasonNoToken, ratelimit.ReasonNotAllowed)
	if err != nil {
		panic(err) // as MustRegister: the registry has this endpoint's metric already
	}
	guard := &metricsGuard{
		private: c.MetricsPrivate,
		token:   c.AdminToken,
		header:  c.ClientIPHeader,
		refused: refused,
		logs:    ratelimit.New(ratelimit.Config{Rate: 1.0 / 60, Burst: 1}),
		log:     c.Logger,
	}
	metrics := promhttp.HandlerFor(c.Gatherer, promhttp.HandlerOpts{})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if guard.allowed(w, r) {
			metrics.ServeHTTP(w, r)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	return mux
}

func writeJSON(w http.ResponseWriter, log *slog.Logger, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		log.Debug("api: write response", "err", err)
	}
}

// Channel is one entry of GET /api/channels.
type Channel struct {
	Channel       uint32     `json:"channel"`
	Live          bool       `json:"live"`
	Since         *time.Time `json:"since,omitempty"` // start of the current or last stream
	UptimeSeconds float64    `json:"uptime_seconds"`  // 0 when offline
	Publisher     *Publisher `json:"publisher,omitempty"`
	Video         *Video     `json:"video,omitempty"`
	Layers        []Layer    `json:"layers,omitempty"` // a live simulcast publisher's video layers, highest first
	Audio         *Audio     `json:"audio,omitempty"`
	Viewers       int        `json:"viewers"`
	Subscribers   int        `json:"subscribers"`
	Publishes     int        `json:"publishes"`
	PacketsIn     uint64     `json:"packets_in"`
	PacketsOut    uint64     `json:"packets_out"`
	Lost          uint64     `json:"lost"`
	Late          uint64     `json:"late"`
	NACKsSent     uint64     `json:"nacks_sent"`
	Recovered     uint64     `json:"recovered"`
	Dropped       uint64     `json:"dropped"`
}

// Publisher describes who streams to a channel: the software it names,
// nothing that tells who or where the publisher is (the list is public:
// no address, no key).
type Publisher struct {
	Software string `json:"software"`
}

// Video is a channel's video track.
type Video struct {
	Codec              string  `json:"codec"`
	Width              int     `json:"width"`
	Height             int     `json:"height"`
	BitrateBps         float64 `json:"bitrate_bps"`
	FrameRate          float64 `json:"frame_rate"`
	KeyframeIntervalMs int64   `json:"keyframe_interval_ms"`
}

// Layer is one video layer of a simulcast publisher: what a viewer may
// pin with ?layer=<rid> (WHEP, the websocket and the viewer page).
type Layer struct {
	Rid     string `json:"rid"`     // the publisher's name of the layer, its RTP stream id
	Width   int    `json:"width"`   // 0 until the layer's first SPS
	Height  int    `json:"height"`  // 0 until the layer's first SPS
	Bitrate int64  `json:"bitrate"` // bits/s over the last 2 s
}

// Audio is a channel's audio track.
type Audio struct {
	Codec string `json:"codec"`
}

// channelList merges the configured channels with those that have a hub,
// sorted by channel id, private ones left out.
func channelList(c Config, now time.Time) []Channel {
	out := []Channel{}
	seen := map[uint32]bool{}
	private := func(ch uint32) bool { return c.Private != nil && c.Private(ch) }
	for _, h := range c.Hubs.List() {
		if private(h.Channel()) {
			continue
		}
		st := h.Stats()
		seen[st.Channel] = true
		out = append(out, channelOf(st, now))
	}

	if c.Channels != nil {
		for _, id := range c.Channels() {
			if !seen[id] && !private(id) {
				out = append(out, Channel{Channel: id})
			}
		}
	}
	slices.SortFunc(out, func(a, b Channel) int { return int(int64(a.Channel) - int64(b.Channel)) })
	if c.Viewers != nil {
		for i := range out {
			out[i].Viewers = c.Viewers(out[i].Channel)
		}
	}
	return out
}

func channelOf(st hub.Stats, now time.Time) Channel {
	ch := Channel{
		Channel:     st.Channel,
		Live:        st.Live,
		Subscribers: st.Subscribers,
		Publishes:   st.Publishes,
		PacketsIn:   st.PacketsIn,
		PacketsOut:  st.PacketsOut,
		Lost:        st.Lost,
		Late:        st.Late,
		NACKsSent:   st.NACKsSent,
		Recovered:   st.Recovered,
		Dropped:     st.Dropped,
	}
	if st.Publishes == 0 {
		return ch
	}
	since := st.Since
	ch.Since = &since
	if st.Live {
		ch.UptimeSeconds = now.Sub(st.Since).Seconds()
	}
	ch.Publisher = &Publisher{Software: st.Publisher.Software}
	ch.Video = &Video{
		Codec:              st.Publisher.VideoCodec,
		Width:              st.Width,
		Height:             st.Height,
		BitrateBps:         st.Bitrate,
		FrameRate:          st.FrameRate,
		KeyframeIntervalMs: st.KeyframeInterval.Milliseconds(),
	}
	if st.Publisher.AudioCodec != "" {
		ch.Audio = &Audio{Codec: st.Publisher.AudioCodec}
	}
	if st.Live {
		// The layers of the publisher there is: none for a channel
		// offline, whatever its last publisher had.
		for _, l := range st.Layers {
			ch.Layers = append(ch.Layers, Layer{Rid: l.Rid, Width: l.Width, Height: l.Height, Bitrate: int64(math.Round(l.Bitrate))})
		}
	}
	return ch
}
