package ftlclient

import (
	"context"
	"encoding/binary"
	"time"
)

// The FTL SDK's send thread paces video to the stream's peak_kbps: a
// token bucket of bytes, refilled at the peak rate as time passes, capped
// at 100 ms of it (MAX_XMIT_LEVEL_IN_MS) and starting with 5 ms of it. A
// packet goes out while the level is above zero and takes its length off;
// at zero or below the thread sleeps MAX_MTU / bytes-per-ms + 1 ms and
// looks again. Audio, pings and retransmissions do not wait for it. OBS
// sets peak_kbps to 1.2 times the encoder's bitrate, so a keyframe leaves
// as a burst of up to 100 ms of the peak rate and the rest at that rate.
const (
	paceBurst = 100 * time.Millisecond // most the level holds
	paceStart = 5 * time.Millisecond   // the level at the first packet
	paceQueue = ringSize / 2           // video packets waiting to go out; a queued packet's ring slot is not reused
	obsPeak   = 1.2                    // OBS's peak_kbps ÷ the encoder's bitrate
)

// pacer is the SDK's token bucket, on an explicit clock.
type pacer struct {
	rate  float64       // bytes per second
	level float64       // bytes that may go out now; ≤ 0: none
	max   float64       // cap of level
	step  time.Duration // the SDK's sleep when the level is spent
	last  time.Time     // when level was last refilled; zero before the first packet
}

func newPacer(kbps int) *pacer {
	rate := float64(kbps) * 1000 / 8
	return &pacer{
		rate:  rate,
		level: rate * paceStart.Seconds(),
		max:   rate * paceBurst.Seconds(),
		step:  time.Duration(maxMTU/max(kbps/8, 1)+1) * time.Millisecond,
	}
}

// wait refills the level up to now and returns how long to sleep before
// looking again, 0 when a packet may go out now.
func (p *pacer) wait(now time.Time) time.Duration {
	if p.last.IsZero() {
		p.last = now
	}
	if d := now.Sub(p.last); d > 0 {
		p.level = min(p.max, p.level+d.Seconds()*p.rate)
		p.last = now
	}
	if p.level > 0 {
		return 0
	}
	return p.step
}

// sent takes a packet of n bytes off the level.
func (p *pacer) sent(n int) { p.level -= float64(n) }

// queuedVideo is a video packet in the ring waiting for the pacer.
type queuedVideo struct {
	sn    uint16
	stamp bool // the first packet of a frame OnFrame is told about
}

// queueVideo hands packet sn to the pacer, waiting while its queue is
// full. (The SDK drops video then; a test publisher keeps every packet and
// slows its caller, audio included: a peak below the media's bitrate makes
// Stream fall behind real time.)
func (c *Conn) queueVideo(ctx context.Context, q queuedVideo) error {
	c.videoPending.Add(1)
	select {
	case c.videoQ <- q:
		return nil
	case <-ctx.Done():
		c.videoPending.Add(-1)
		return ctx.Err()
	case <-c.ctx.Done():
		c.videoPending.Add(-1)
		return c.done()
	}
}

// waitVideoSent waits until the pacer has sent every queued packet.
func (c *Conn) waitVideoSent(ctx context.Context) error {
	for c.videoQ != nil && c.videoPending.Load() > 0 {
		select {
		case <-c.videoIdle:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return c.done()
		}
	}
	return nil
}

// paceVideo sends the queued video packets at the peak rate until ctx is
// done. A frame's first packet marked for OnFrame is reported once
// written. A failed write is logged and the stream goes on, as the SDK
// does.
func (c *Conn) paceVideo(ctx context.Context) error {
	p := newPacer(c.cfg.PeakKbps)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var q queuedVideo
		select {
		case q = <-c.videoQ:
		case <-ctx.Done():
			return nil
		}
		for d := p.wait(time.Now()); d > 0; d = p.wait(time.Now()) {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil
			}
		}
		n, ts, sent, err := c.sendQueuedVideo(q.sn)
		if err != nil {
			c.log.Debug("ftl: video send failed", "seq", q.sn, "err", err)
		}
		p.sent(n)
		if c.videoPending.Add(-1) == 0 {
			select {
			case c.videoIdle <- struct{}{}:
			default:
			}
		}
		if q.stamp && err == nil && n > 0 && c.cfg.OnFrame != nil {
			c.cfg.OnFrame(ts, sent)
		}
	}
}

// sendQueuedVideo writes video packet sn from the ring and returns its
// length, RTP timestamp and the time right before the write; n is 0 if
// the ring no longer holds it. It counts the packet as sent.
func (c *Conn) sendQueuedVideo(sn uint16) (n int, ts uint32, sent time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.video.ring[sn%ringSize]
	if s.sn != int32(sn) {
		return 0, 0, sent, nil
	}
	ts = binary.BigEndian.Uint32(s.buf[4:8])
	sent = time.Now()
	if err := c.send(s.buf[:s.n]); err != nil {
		return s.n, ts, sent, err
	}
	c.stats.videoPackets.Add(1)
	c.stats.videoBytes.Add(uint64(s.n))
	return s.n, ts, sent, nil
}

// PeakKbps returns the peak_kbps OBS would set for the video nals played
// at 30 frames per second: 1.2 times their bitrate.
func PeakKbps(nals [][]byte) int {
	frames := splitFrames(nals)
	if len(frames) == 0 {
		return 0
	}
	var bytes int64
	for _, f := range frames {
		for _, nal := range f {
			bytes += int64(len(nal))
		}
	}
	kbps := float64(bytes) * 8 * frameRate / float64(len(frames)) / 1000
	return int(kbps*obsPeak + 0.5)
}
