//go:build linux

package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pion/rtp"

	"lightspeed/shared/h264"
	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/testmedia"
	"lightspeed/shared/testkit/whipclient"
)

// gop4H264 is 8 s of 720p30 H.264 with a keyframe every 4 s, made like
// the committed test media (see README.md beside it).
//
//go:embed testdata/gop4.h264
var gop4H264 []byte

// video25H264 is 4 s of 720p30 H.264 at 2.5 Mbit/s with a keyframe every
// second, made like the committed test media (see README.md beside it).
//
//go:embed testdata/video-2.5m.h264
var video25H264 []byte

// clip is media the publisher loops: H.264 NAL units and 20 ms Opus
// packets.
type clip struct {
	name   string
	file   string // where its video comes from, from the repository's root
	keyint time.Duration
	nals   [][]byte
	opus   [][]byte
}

// The clips -clip chooses from: each is 4 s of 720p30 with a keyframe
// every second, looped with the committed Opus audio.
var clipFiles = map[string]string{
	"2m":   "shared/testkit/testmedia/video.h264",
	"2.5m": "scripts/bench/testdata/video-2.5m.h264",
}

// clipNames are the values of -clip, in order.
func clipNames() []string { return slices.Sorted(maps.Keys(clipFiles)) }

// loadClips returns the clip -clip names ("" for the default, 2m), with
// a keyframe every second, and the 4 s-GOP clip, both with the committed
// Opus audio (repeated to the video's length).
func loadClips(name string) (gop1, gop4 clip, err error) {
	opus, err := testmedia.OpusPackets()
	if err != nil {
		return gop1, gop4, fmt.Errorf("bench: test media: %w", err)
	}
	var nals [][]byte
	switch name {
	case "", "2m": // the default
		name = "2m"
		nals, err = testmedia.NALUnits()
	case "2.5m":
		nals, err = testmedia.SplitH264(video25H264)
	default:
		err = fmt.Errorf("unknown clip %q (%s)", name, strings.Join(clipNames(), ", "))
	}
	if err != nil {
		return gop1, gop4, fmt.Errorf("bench: clip %s: %w", name, err)
	}
	gop1 = clip{name: name, file: clipFiles[name], keyint: time.Second, nals: nals, opus: opus}
	nals4, err := testmedia.SplitH264(gop4H264)
	if err != nil {
		return gop1, gop4, fmt.Errorf("bench: gop4.h264: %w", err)
	}
	gop4 = clip{name: "gop4", file: "scripts/bench/testdata/gop4.h264", keyint: 4 * time.Second, nals: nals4,
		opus: append(append([][]byte(nil), opus...), opus...)}
	return gop1, gop4, nil
}

// ClipInfo describes the clip the publisher played, from its bytes.
type ClipInfo struct {
	Name               string  `json:"name"` // the -clip value
	File               string  `json:"file"`
	Width              int     `json:"width"`
	Height             int     `json:"height"`
	FPS                int     `json:"fps"`
	Seconds            float64 `json:"seconds"`              // the video's length: frames ÷ fps
	VideoBitrateBps    float64 `json:"video_bitrate_bps"`    // NAL unit bytes (no start codes) × 8 ÷ Seconds
	AudioBitrateBps    float64 `json:"audio_bitrate_bps"`    // Opus packet bytes × 8 ÷ their length (20 ms each)
	KeyframeIntervalMs int64   `json:"keyframe_interval_ms"` // frames from one keyframe to the next ÷ fps
}

// clipFPS is the frame rate of every clip the bench plays.
const clipFPS = 30

// describe returns what the clip is: its size from its first SPS, its
// bitrates and its keyframe interval (the shortest between two
// keyframes; 0 with fewer than two).
func (c clip) describe() ClipInfo {
	info := ClipInfo{Name: c.name, File: c.file, FPS: clipFPS}
	var videoBytes, audioBytes int
	for _, nal := range c.nals {
		videoBytes += len(nal)
		if info.Width == 0 && len(nal) > 0 && nal[0]&0x1f == h264.NALSPS {
			if sps, err := h264.ParseSPS(nal); err == nil {
				info.Width, info.Height = sps.Width, sps.Height
			}
		}
	}
	for _, p := range c.opus {
		audioBytes += len(p)
	}
	keys := keyframes(c.nals)
	if len(keys) > 0 {
		info.Seconds = float64(len(keys)) / clipFPS
		info.VideoBitrateBps = round(float64(videoBytes)*8/info.Seconds, 0)
	}
	if len(c.opus) > 0 {
		info.AudioBitrateBps = round(float64(audioBytes)*8/(float64(len(c.opus))*0.020), 0)
	}
	last, gap := -1, 0
	for i, key := range keys {
		if !key {
			continue
		}
		if last >= 0 && (gap == 0 || i-last < gap) {
			gap = i - last
		}
		last = i
	}
	info.KeyframeIntervalMs = int64(gap) * 1000 / clipFPS
	return info
}

// fromFrame returns c playing from its frame k on (frames cut as
// keyframes cuts them), looping back to its start: a publisher that
// starts in the middle of a GOP.
func fromFrame(c clip, k int) clip {
	var (
		frames = -1
		hasVCL bool
	)
	for i, nal := range c.nals {
		if len(nal) == 0 {
			continue
		}
		typ := nal[0] & 0x1f
		vcl := typ >= 1 && typ <= 5
		startsAU := (typ >= 6 && typ <= 9) || (typ >= 14 && typ <= 18) || (vcl && len(nal) > 1 && nal[1]&0x80 != 0)
		if frames < 0 || (hasVCL && startsAU) {
			frames++
			hasVCL = false
			if frames == k {
				c.nals = append(append([][]byte(nil), c.nals[i:]...), c.nals[:i]...)
				c.name = fmt.Sprintf("%s from frame %d", c.name, k)
				return c
			}
		}
		hasVCL = hasVCL || vcl
	}
	return c
}

// The ingests the bench's publisher can use.
const (
	ingestFTL  = "ftl"
	ingestWHIP = "whip"
)

// publisher streams a clip over FTL or WHIP until stopped.
type publisher struct {
	conn   *ftlclient.Conn       // FTL
	whip   *whipclient.Publisher // WHIP
	cancel context.CancelFunc
	done   chan error
	began  time.Time // right before the first frame was due
}

// publish connects to the FTL ingest at addr and loops c, its video paced
// to peakKbps (0: not paced). started is called with the time the stream
// begins, right before the first frame is due.
func publish(ctx context.Context, addr, key string, c clip, peakKbps int, started func(time.Time)) (*publisher, error) {
	conn, err := ftlclient.Dial(ctx, ftlclient.Config{Addr: addr, StreamKey: key, VendorName: "lightspeed-bench", PeakKbps: peakKbps})
	if err != nil {
		return nil, fmt.Errorf("bench: publish: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	p := &publisher{conn: conn, cancel: cancel, done: make(chan error, 1), began: time.Now()}
	go func() {
		if started != nil {
			started(p.began)
		}
		p.done <- conn.Stream(sctx, c.nals, c.opus, 0)
	}()
	return p, nil
}

// publishWHIP publishes to the WHIP endpoint url (".../api/whip") as
// OBS's WHIP output does (whipclient) and loops c in real time, each
// frame's packets at once. With answerPLI a keyframe request makes it
// send the clip's next keyframe at once, as an encoder would; without,
// keyframes come where the clip has them. sent gets every video packet
// once written to the network. loopback gathers loopback candidates
// only.
func publishWHIP(ctx context.Context, url, key string, c clip, answerPLI, loopback bool, sent func(h *rtp.Header, payload []byte, at time.Time)) (*publisher, error) {
	wp, err := whipclient.Publish(ctx, whipclient.Config{
		URL: url, Token: key, Loopback: loopback, KeyframeOnPLI: answerPLI, OnVideoPacket: sent,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: publish: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	p := &publisher{whip: wp, cancel: cancel, done: make(chan error, 1), began: time.Now()}
	go func() { p.done <- wp.Stream(sctx, c.nals, c.opus) }()
	return p, nil
}

// keyframeRequests is how many PLIs and FIRs a WHIP publisher got; 0 for
// FTL, which has none.
func (p *publisher) keyframeRequests() int64 {
	if p.whip == nil {
		return 0
	}
	plis, firs := p.whip.KeyframeRequests()
	return plis + firs
}

// stop ends the stream gracefully (FTL's DISCONNECT, WHIP's DELETE).
func (p *publisher) stop() error {
	p.cancel()
	err := <-p.done
	var derr error
	if p.whip != nil {
		derr = p.whip.Close()
	} else {
		derr = p.conn.Disconnect()
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("bench: publish: %w", err)
	}
	return derr
}

// keyframes tells, for each frame of nals in sending order, whether it
// starts with an SPS. Frames are cut as the FTL sender cuts them: a new
// one starts at a parameter set, SEI or delimiter after a slice, and at a
// slice whose first_mb_in_slice is 0.
func keyframes(nals [][]byte) []bool {
	var (
		out    []bool
		hasVCL bool
	)
	for _, nal := range nals {
		if len(nal) == 0 {
			continue
		}
		typ := nal[0] & 0x1f
		vcl := typ >= 1 && typ <= 5
		startsAU := (typ >= 6 && typ <= 9) || (typ >= 14 && typ <= 18) || (vcl && len(nal) > 1 && nal[1]&0x80 != 0)
		if len(out) == 0 || (hasVCL && startsAU) {
			out = append(out, typ == 7)
			hasVCL = false
		}
		hasVCL = hasVCL || vcl
	}
	return out
}

// schedule fills l with the frames the FTL sender sends when it plays c
// from start in real time, as time passes, until ctx is done: frame k of
// loop i is due at start + i·loop length + k/30 s, with RTP timestamp
// 90 kHz × that media time. It stands for the tap when the bench is
// attached to a gateway it did not start.
func schedule(ctx context.Context, l *frameLog, epoch, start time.Time, c clip) {
	keys := keyframes(c.nals)
	const frameRate = 30
	videoLen := int64(len(keys)) * 1000000 / frameRate
	loopLen := max(videoLen, int64(len(c.opus))*20000)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for loop, k := int64(0), 0; ; {
		now := time.Now()
		for {
			dts := loop*loopLen + int64(k)*1000000/frameRate // µs of media time
			at := start.Add(time.Duration(dts) * time.Microsecond)
			if at.After(now) {
				break
			}
			ts := uint32((dts*90000 + 500000) / 1000000)
			sent := at.Sub(epoch)
			l.add(frameTimes{TS: ts, First: sent, Last: sent, Key: keys[k]})
			if k++; k == len(keys) {
				loop, k = loop+1, 0
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
