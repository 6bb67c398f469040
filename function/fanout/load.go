package fanout

import (
	"runtime"
	"sync"
	"time"

	"lightspeed/shared/relaywire"
)

// loadWindow is the time Load averages over.
const loadWindow = 2 * time.Second

// maxLoadSamples bounds the samples kept, however often Load is called.
const maxLoadSamples = 64

// loadSample is a reading of the fan-out's cumulative counts.
type loadSample struct {
	at    time.Time
	bytes uint64
	cpu   time.Duration
}

// loadMeter turns cumulative egress bytes and process CPU time into rates
// over the last loadWindow, from the readings of its earlier calls.
type loadMeter struct {
	mu      sync.Mutex
	samples []loadSample // oldest first
}

func (m *loadMeter) reset(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples = append(m.samples[:0], loadSample{at: now, cpu: processCPU()})
}

// sample records the current counts and returns the load since the
// newest earlier reading at least loadWindow old (or the oldest one).
func (m *loadMeter) sample(now time.Time, viewers int, bytes uint64) relaywire.Load {
	cur := loadSample{at: now, bytes: bytes, cpu: processCPU()}
	m.mu.Lock()
	defer m.mu.Unlock()
	base, keep := m.samples[0], 0
	for i, s := range m.samples {
		if now.Sub(s.at) >= loadWindow {
			base, keep = s, i
		}
	}
	m.samples = append(m.samples[keep:], cur)
	if len(m.samples) > maxLoadSamples {
		m.samples = m.samples[len(m.samples)-maxLoadSamples:]
	}
	l := relaywire.Load{Viewers: viewers}
	dt := now.Sub(base.at).Seconds()
	if dt <= 0 {
		return l
	}
	if bytes >= base.bytes {
		l.EgressBps = float64(bytes-base.bytes) * 8 / dt
	}
	l.CPU = min(max((cur.cpu-base.cpu).Seconds()/dt/float64(runtime.NumCPU()), 0), 1)
	return l
}
