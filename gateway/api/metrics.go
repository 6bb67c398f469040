package api

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"lightspeed/gateway/hub"
)

// HubCollector exports every hub's stats as Prometheus metrics, read at
// scrape time so the media path does no metrics work for them.
type HubCollector struct {
	hubs *hub.Registry
}

// NewHubCollector returns a collector over the hubs of r.
func NewHubCollector(r *hub.Registry) *HubCollector { return &HubCollector{hubs: r} }

type hubMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(hub.Stats) float64
}

func metric(name, help string, kind prometheus.ValueType, value func(hub.Stats) float64) hubMetric {
	return hubMetric{prometheus.NewDesc(name, help, []string{"channel"}, nil), kind, value}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var hubMetrics = []hubMetric{
	metric("lightspeed_channel_live", "1 while a publisher streams to the channel.", prometheus.GaugeValue,
		func(s hub.Stats) float64 { return b2f(s.Live) }),
	metric("lightspeed_channel_bitrate_bits_per_second", "Incoming bitrate over the last 2 s.", prometheus.GaugeValue,
		func(s hub.Stats) float64 { return s.Bitrate }),
	metric("lightspeed_channel_frame_rate", "Video frames per second over the last 2 s.", prometheus.GaugeValue,
		func(s hub.Stats) float64 { return s.FrameRate }),
	metric("lightspeed_channel_keyframe_interval_seconds", "Time between the last two keyframes.", prometheus.GaugeValue,
		func(s hub.Stats) float64 { return s.KeyframeInterval.Seconds() }),
	metric("lightspeed_channel_subscribers", "Subscribers of the channel's hub.", prometheus.GaugeValue,
		func(s hub.Stats) float64 { return float64(s.Subscribers) }),
	metric("lightspeed_channel_packets_in_total", "Publisher RTP packets received.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.PacketsIn) }),
	metric("lightspeed_channel_packets_out_total", "RTP packets released by the hub.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.PacketsOut) }),
	metric("lightspeed_channel_lost_total", "Publisher packets never received.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.Lost) }),
	metric("lightspeed_channel_late_total", "Publisher packets dropped as late or duplicate.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.Late) }),
	metric("lightspeed_channel_nacks_sent_total", "Packets requested again from the publisher.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.NACKsSent) }),
	metric("lightspeed_channel_recovered_total", "Requested packets that arrived.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.Recovered) }),
	metric("lightspeed_channel_subscriber_drops_total", "Packets dropped for slow subscribers.", prometheus.CounterValue,
		func(s hub.Stats) float64 { return float64(s.Dropped) }),
}

// Describe implements prometheus.Collector.
func (c *HubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range hubMetrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector.
func (c *HubCollector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.hubs.List() {
		st := h.Stats()
		id := strconv.FormatUint(uint64(st.Channel), 10)
		for _, m := range hubMetrics {
			ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(st), id)
		}
	}
}
