package fleet

import "github.com/prometheus/client_golang/prometheus"

// metrics are the fleet's decisions, counted by region, and its functions
// by region and state.
type metrics struct {
	starts, wakes, stops, destroys, failures *prometheus.CounterVec
	startSeconds                             prometheus.Histogram
	functions                                *prometheus.Desc
	f                                        *Fleet
}

func newMetrics(f *Fleet, reg prometheus.Registerer) *metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lightspeed_fleet_" + name, Help: help}, []string{"region"})
	}
	m := &metrics{
		starts:   counter("starts_total", "Functions created."),
		wakes:    counter("wakes_total", "Stopped functions started again."),
		stops:    counter("stops_total", "Functions stopped (idle or drained)."),
		destroys: counter("destroys_total", "Functions destroyed (unused, failed or replaced)."),
		failures: counter("failures_total", "Starts, stops and destroys that failed, and functions replaced because they failed."),
		startSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lightspeed_fleet_start_seconds",
			Help:    "Time from a function's start or wake to its relay connection.",
			Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120},
		}),
		functions: prometheus.NewDesc("lightspeed_fleet_functions", "Functions by region and state.", []string{"region", "state"}, nil),
		f:         f,
	}
	if reg != nil {
		reg.MustRegister(m.starts, m.wakes, m.stops, m.destroys, m.failures, m.startSeconds, m)
	}
	return m
}

// count adds one to c for region.
func (m *metrics) count(c *prometheus.CounterVec, region string) { c.WithLabelValues(region).Inc() }

// Describe is part of prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.functions }

// Collect is part of prometheus.Collector: the functions the fleet knows.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	type key struct{ region, state string }
	n := make(map[key]int)
	for _, i := range m.f.Functions() {
		n[key{i.Region, i.State}]++
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(m.functions, prometheus.GaugeValue, float64(v), k.region, k.state)
	}
}
