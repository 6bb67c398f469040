package fanout

import "github.com/prometheus/client_golang/prometheus"

// collector exports the fan-out's Stats as Prometheus metrics, read at
// scrape time so the media path does no metrics work.
type collector struct{ f *Fanout }

type fanoutMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(Stats) float64
}

func metric(name, help string, kind prometheus.ValueType, value func(Stats) float64) fanoutMetric {
	return fanoutMetric{prometheus.NewDesc(name, help, nil, nil), kind, value}
}

var fanoutMetrics = []fanoutMetric{
	metric("lightspeed_function_viewers", "WebRTC sessions, connected or not.", prometheus.GaugeValue,
		func(s Stats) float64 { return float64(s.Viewers) }),
	metric("lightspeed_function_viewers_connected", "WebRTC sessions connected and receiving their channel's packets.", prometheus.GaugeValue,
		func(s Stats) float64 { return float64(s.Connected) }),
	metric("lightspeed_function_channels", "Channels subscribed from the gateway.", prometheus.GaugeValue,
		func(s Stats) float64 { return float64(s.Channels) }),
	metric("lightspeed_function_rtp_packets_in_total", "Relayed RTP packets of subscribed channels.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.PacketsIn) }),
	metric("lightspeed_function_rtp_packets_invalid_total", "Relayed packets that were not RTP or too long.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.PacketsInvalid) }),
	metric("lightspeed_function_rtp_packets_duplicate_total", "Relayed packets already cached or too old.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.PacketsDuplicate) }),
	metric("lightspeed_function_rtp_packets_sent_total", "RTP packets written to viewers.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.PacketsSent) }),
	metric("lightspeed_function_egress_bytes_total", "SRTP bytes written to viewers.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.BytesSent) }),
	metric("lightspeed_function_queue_drops_total", "Packets dropped because a viewer's queue was full.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.QueueDrops) }),
	metric("lightspeed_function_nack_packets_total", "Packets viewers asked for again.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.NACKed) }),
	metric("lightspeed_function_retransmits_total", "Requested packets queued to be sent again.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.Retransmits) }),
	metric("lightspeed_function_cache_misses_total", "Queued packets no longer in the cache when their turn came.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.CacheMisses) }),
	metric("lightspeed_function_pli_total", "Picture loss indications from viewers about their video.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.PLIs) }),
	metric("lightspeed_function_fir_total", "Full intra requests from viewers about their video.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.FIRs) }),
	metric("lightspeed_function_sendmmsg_calls_total", "sendmmsg calls that sent the writers' batches of datagrams.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.SendCalls) }),
	metric("lightspeed_function_batched_datagrams_total", "Datagrams sent in batches (divide by the calls for the mean batch).", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.SendDatagrams) }),
	metric("lightspeed_function_segmented_datagrams_total", "Batched datagrams sent in segmented runs to one viewer (UDP GSO).", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.SendSegmented) }),
	metric("lightspeed_function_send_errors_total", "Batched datagrams the socket refused.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.SendErrors) }),
	metric("lightspeed_function_socket_read_errors_total", "Transient errors (ICMP reports of an earlier send, lack of kernel memory) the media socket's reads skipped.", prometheus.CounterValue,
		func(s Stats) float64 { return float64(s.ReadErrors) }),
}

// keyframeRequests counts the viewers' keyframe requests by what became
// of them: one metric with a label, so it is not in fanoutMetrics.
var keyframeRequests = prometheus.NewDesc("lightspeed_function_keyframe_requests_total",
	"Keyframe requests of viewers (RTCP packets with a PLI or FIR about their video, and switches to another video layer): sent to the gateway, throttled (one a second per channel and layer), or dropped (no relay connection).",
	[]string{"result"}, nil)

// Describe sends the descriptors of the fan-out's metrics.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range fanoutMetrics {
		ch <- m.desc
	}
	ch <- keyframeRequests
}

// Collect sends the current values of the fan-out's metrics.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.Stats()
	for _, m := range fanoutMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(s))
	}
	for result, n := range map[string]uint64{"sent": s.KeyframesSent, "throttled": s.KeyframesThrottled, "dropped": s.KeyframesDropped} {
		ch <- prometheus.MustNewConstMetric(keyframeRequests, prometheus.CounterValue, float64(n), result)
	}
}
