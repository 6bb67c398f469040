package fanout

import (
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"

	"lightspeed/shared/relaywire"
)

// Who owns what in the sender reports. One goroutine, runReports, owns its
// list of targets and its scratch. It takes the targets under Fanout.mu
// (each a viewer with its PeerConnection and audio sender, copied out of
// viewer.sess), then, with no lock held, reads each viewer's counts and
// bindings (atomics) and its channel's clock (under the channel's read
// lock), writes through pion, and drains the viewers' audio RTCP, whose
// NACKs go to the viewer's queue (under the queue's lock).

// reportInterval is how often each viewer gets sender reports, as from
// pion's sender-report interceptor: browsers take lip sync (the NTP time of
// each track's RTP timestamps) and their receive statistics from them.
const reportInterval = time.Second

// ntpEpochOffset is the number of seconds from 1900 (NTP's epoch) to 1970.
const ntpEpochOffset = 2208988800

// reportTarget is a viewer the reporter writes to and its PeerConnection.
type reportTarget struct {
	v     *viewer
	pc    *webrtc.PeerConnection
	audio *webrtc.RTPSender // its RTCP is drained after the reports
}

// startReports starts the goroutine that writes every viewer's sender
// reports. One goroutine serves all viewers, where pion's interceptor ran
// one per PeerConnection and took a lock per packet.
func (f *Fanout) startReports() {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.runReports()
	}()
}

// runReports writes, every reportInterval until the fan-out closes, the
// sender reports of every viewer that has sent media.
func (f *Fanout) runReports() {
	tick := time.NewTicker(reportInterval)
	defer tick.Stop()
	var (
		targets []reportTarget
		scratch reportScratch
	)
	for {
		select {
		case <-tick.C:
		case <-f.quit:
			return
		}
		targets = f.reportTargets(targets[:0])
		f.sendReports(targets, &scratch)
		clear(targets)
	}
}

// reportScratch is where the reporter makes a viewer's reports. pion
// marshals them before WriteRTCP returns, so it serves viewer after viewer.
type reportScratch struct {
	srs  [2]rtcp.SenderReport
	pkts []rtcp.Packet
	rtcp [1500]byte // drained RTCP
}

// sendReports writes to each target one compound RTCP packet: a sender
// report for each of its tracks that has sent a packet; then it drains
// each target's audio RTCP (a wait of up to drainWait each, which no
// report waits behind). A write that fails costs that viewer its report
// and nothing else; no lock is held while pion writes. It stops early
// when the fan-out closes, and returns the number of packets written.
func (f *Fanout) sendReports(targets []reportTarget, s *reportScratch) (written int) {
	for _, r := range targets {
		if f.closing() {
			return written
		}
		s.pkts = r.v.senderReports(time.Now(), &s.srs, s.pkts[:0])
		if len(s.pkts) == 0 {
			continue
		}
		if err := r.pc.WriteRTCP(s.pkts); err != nil {
			f.log.Debug("fanout: sender report", "viewer", r.v.id, "err", err)
			continue
		}
		written++
	}
	for _, r := range targets {
		if f.closing() {
			return written
		}
		// Once audio went out, its SRTP exists: pion's read would wait for
		// it before.
		if r.audio != nil && r.v.counters.packets[relaywire.Audio].Load() > 0 {
			r.v.drainRTCP(relaywire.Audio, r.audio, s.rtcp[:])
		}
	}
	return written
}

// closing reports whether Close has begun.
func (f *Fanout) closing() bool {
	select {
	case <-f.quit:
		return true
	default:
		return false
	}
}

// reportTargets appends to dst the open sessions that have written media
// (so their SRTP is ready) and their PeerConnections. A closed session is
// no longer among them.
func (f *Fanout) reportTargets(dst []reportTarget) []reportTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.sessions {
		if v.sess.pc != nil && !v.sess.closed && v.counters.sent() > 0 {
			dst = append(dst, reportTarget{v, v.sess.pc, v.sess.audioRTCP})
		}
	}
	return dst
}

// senderReports appends to pkts a sender report, as of now, for each of
// the viewer's tracks that has written a packet: its SSRC, the NTP time of
// now, the track's RTP timestamp of now (the channel's clock of the track,
// the same for every viewer of it; for video, that of the layer the viewer
// gets, with the offsets of its switch to it: the timestamps the viewer
// receives, so that lip sync holds across switches) and the packets and
// payload octets written. The reports are
// made in srs. now must be taken before the call, so that the counts
// include every packet written before now.
func (v *viewer) senderReports(now time.Time, srs *[2]rtcp.SenderReport, pkts []rtcp.Packet) []rtcp.Packet {
	for t, track := range v.tracks {
		if track == nil {
			continue
		}
		b := track.bound.Load()
		packets := v.counters.packets[t].Load()
		if b == nil || packets == 0 {
			continue
		}
		octets := v.counters.octets[t].Load()
		ts, ok := v.ch.rtpTime(v, relaywire.Track(t), now)
		if !ok {
			continue
		}
		// The counts wrap at 32 bits, as RFC 3550 has them.
		srs[t] = rtcp.SenderReport{
			SSRC:        b.ssrc,
			NTPTime:     ntpTime(now),
			RTPTime:     ts,
			PacketCount: uint32(packets),
			OctetCount:  uint32(octets),
		}
		pkts = append(pkts, &srs[t])
	}
	return pkts
}

// ntpTime is t as a 64-bit NTP timestamp: seconds since 1900 in the high
// half, the fraction of a second in the low half.
func ntpTime(t time.Time) uint64 {
	sec := uint64(t.Unix() + ntpEpochOffset)
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return sec<<32 | frac
}
