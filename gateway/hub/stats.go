package hub

import "time"

// Stats is a snapshot of a hub.
type Stats struct {
	Channel          uint32
	Live             bool
	Since            time.Time // start of the current (or last) publish
	Publisher        PublisherInfo
	Width, Height    int           // from the last SPS (of the highest layer); 0 until one is seen
	Bitrate          float64       // bits/s over the last 2 s (input RTP packets, 12-byte header included; every layer)
	FrameRate        float64       // frames/s over the last 2 s (of the highest layer)
	KeyframeInterval time.Duration // between the last two keyframes (of the highest layer)
	// Layers describes the video layers of a simulcast publisher, highest
	// first; empty without simulcast.
	Layers []LayerStats

	PacketsIn  uint64 // publisher packets written during sessions
	PacketsOut uint64 // output packets released
	Lost       uint64 // publisher packets skipped after MaxHold or unsendable
	Late       uint64 // publisher packets dropped as late or duplicate
	NACKsSent  uint64 // counted by ingest through AddNACKs
	Recovered  uint64 // counted by ingest through AddRecovered
	Dropped    uint64 // output packets dropped by full subscriptions, all together

	Discontinuities uint64 // publisher sequence number jumps that reset the reorder buffer
	Subscribers     int
	Publishes       int // sessions started
}

// LayerStats describes one video layer of a simulcast publisher.
type LayerStats struct {
	Rid           string  // the publisher's name of the layer
	Width, Height int     // from its last SPS; 0 until one is seen
	Bitrate       float64 // bits/s over the last 2 s, as Stats.Bitrate
	FrameRate     float64 // frames/s over the last 2 s
}

// Stats returns a snapshot of the hub; rates are measured up to the hub's
// clock's now.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.opts.Now()
	c := h.counters
	order := h.videoOrder()
	var layers []LayerStats
	if len(h.publisher.Layers) > 0 {
		for _, t := range order {
			tr := &h.tracks[t]
			layers = append(layers, LayerStats{Rid: h.rid(t), Width: tr.video.width, Height: tr.video.height,
				Bitrate: tr.bits.rate(now), FrameRate: tr.video.frames.rate(now)})
		}
	}
	top := &h.tracks[order[0]].video
	return Stats{
		Channel:          h.channel,
		Live:             h.live,
		Since:            h.since,
		Publisher:        h.publisher,
		Width:            top.width,
		Height:           top.height,
		Bitrate:          h.bits.rate(now),
		FrameRate:        top.frames.rate(now),
		KeyframeInterval: top.keyframeInterval,
		Layers:           layers,
		PacketsIn:        c.packetsIn,
		PacketsOut:       c.packetsOut,
		Lost:             c.lost,
		Late:             c.late,
		NACKsSent:        c.nacks,
		Recovered:        c.recovered,
		Dropped:          c.dropped,
		Discontinuities:  c.discontinuities,
		Subscribers:      len(h.subs),
		Publishes:        h.publishes,
	}
}

const (
	rateBucket  = 100 * time.Millisecond
	rateBuckets = 20 // the window: 2 s
)

// rateWindow sums a quantity per 100 ms of the hub's clock and reports its
// rate over the last 2 s of complete buckets. One more slot than the
// window keeps the bucket being filled apart from the oldest one read.
type rateWindow struct {
	buckets [rateBuckets + 1]struct {
		idx int64 // which 100 ms since the epoch; 0: empty
		sum uint64
	}
}

func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(rateBucket) }

// add counts v at time t.
func (w *rateWindow) add(t time.Time, v uint64) {
	idx := bucketOf(t)
	b := &w.buckets[(idx%int64(len(w.buckets))+int64(len(w.buckets)))%int64(len(w.buckets))]
	if b.idx != idx {
		b.idx, b.sum = idx, 0
	}
	b.sum += v
}

// rate returns the sum per second over the 2 s before the bucket of now.
func (w *rateWindow) rate(now time.Time) float64 {
	cur := bucketOf(now)
	var sum uint64
	for _, b := range w.buckets {
		if b.idx >= cur-rateBuckets && b.idx < cur {
			sum += b.sum
		}
	}
	return float64(sum) / (rateBuckets * rateBucket).Seconds()
}
