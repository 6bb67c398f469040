package glass

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"golang.org/x/sync/errgroup"

	"lightspeed/function/fanout"
	"lightspeed/function/relay"
	"lightspeed/gateway/app"
	"lightspeed/gateway/hub"
	"lightspeed/gateway/keys"
	"lightspeed/shared/testkit/stackrole"
	"lightspeed/shared/testkit/testmedia"
	"lightspeed/shared/testkit/whipclient"
)

// Role is the role (see netns.Role) of the binary that Run re-executes in
// namespace A to play the stack. A program that calls Run must hand that
// role to ServeStack first thing in main, before it parses flags: the
// re-executed binary gets a -test.run flag that a program's own flag set
// does not know.
//
//	func main() {
//		if netns.Role() == glass.Role {
//			os.Exit(glass.ServeStack())
//		}
//		...
//	}
const Role = "glass-stack"

// The parameters of Role, in the environment.
const (
	envAddr    = "LS_GLASS_ADDR"     // the veth address of namespace A
	envDataDir = "LS_GLASS_DATA_DIR" // the gateway's data directory
	envFrames  = "LS_GLASS_FRAMES"   // the file of frame records
	// envH264 names an H.264 Annex B file to stream instead of the test
	// media's video; empty streams the test media.
	envH264 = "LS_GLASS_H264"
	// envKeyframes, when "1", makes the stack print a line for every
	// keyframe the hub releases (see keyframePrefix) and keep the
	// function's statistics in functionFile.
	envKeyframes = "LS_GLASS_KEYFRAMES"
	// envPeakKbps paces the publisher's video (Options.PeakKbps); unset
	// or 0: not paced.
	envPeakKbps = "LS_GLASS_PEAK_KBPS"
	// envWHIP, when "1", makes the publisher publish over WHIP instead of
	// FTL (Options.WHIP).
	envWHIP = "LS_GLASS_WHIP"
)

// stackRole is Role with the variables of its address and data directory.
var stackRole = stackrole.Role{Name: Role, AddrVar: envAddr, DataDirVar: envDataDir}

// channel is the channel the stack publishes; streamKey is its key.
const (
	channel   = 77
	streamKey = "77-glasstoglass"
)

// keyframePrefix starts the line the stack prints for each keyframe the
// hub releases when $LS_GLASS_KEYFRAMES is 1: "KEYFRAME <n> <timestamp>
// <released>", n counting keyframes from 1, the timestamp as viewers see
// it and the release time in Unix nanoseconds. A keyframe's first packet
// leaves the hub within a millisecond of the publisher's write (the
// stack's records tell exactly), so a reader can time a join into the
// GOP by these lines.
const keyframePrefix = "KEYFRAME "

// functionFile is the file in the data directory where the stack
// writes FunctionStats as JSON every functionEvery when
// $LS_GLASS_KEYFRAMES is 1, replacing it whole.
const functionFile = "function.json"

// functionEvery is how often the stack writes functionFile.
const functionEvery = time.Second

// FunctionStats are the embedded function's counters, and how many
// packets the hub released for it.
type FunctionStats struct {
	// HubPackets counts the packets (both tracks) the hub released, as the
	// stack's own subscription saw them.
	HubPackets uint64
	// Relay is what the function's relay client received and recovered.
	Relay relay.ClientStats
	// Fanout is what the function did with them.
	Fanout fanout.Stats
}

// ServeStack plays Role: a gateway with its embedded function on the veth
// address of namespace A, and an FTL publisher streaming the test media
// (or the video of $LS_GLASS_H264 with the test media's audio) to it in
// real time, in a loop. For every video frame it appends a record to
// the frames file: the frame's RTP timestamp as viewers see it, when the
// publisher wrote the frame's first packet, and when the hub released it.
// It prints "READY http://<addr>:<port>" once the channel is live, serves
// until SIGTERM and returns the process's exit code.
func ServeStack() int {
	return stackRole.Serve(slog.LevelWarn, func(ctx context.Context, log *slog.Logger, p stackrole.Params) error {
		sp := stackParams{
			Params: p, framesPath: os.Getenv(envFrames),
			h264Path: os.Getenv(envH264), keyframes: os.Getenv(envKeyframes) == "1",
			whip: os.Getenv(envWHIP) == "1",
		}
		if v := os.Getenv(envPeakKbps); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("glass: stack: $%s: %w", envPeakKbps, err)
			}
			sp.peakKbps = n
		}
		return serveStack(ctx, log, sp)
	})
}

// stackParams are the stack's parameters, from the environment.
type stackParams struct {
	stackrole.Params        // $LS_GLASS_ADDR and $LS_GLASS_DATA_DIR
	framesPath       string // $LS_GLASS_FRAMES
	h264Path         string // $LS_GLASS_H264; "" for the test media
	keyframes        bool   // $LS_GLASS_KEYFRAMES is 1
	peakKbps         int    // $LS_GLASS_PEAK_KBPS; 0: not paced
	whip             bool   // $LS_GLASS_WHIP is 1
}

func serveStack(ctx context.Context, log *slog.Logger, sp stackParams) error {
	if sp.framesPath == "" {
		return fmt.Errorf("glass: stack: $%s is empty", envFrames)
	}
	nals, opus, err := loadMedia(sp.h264Path)
	if err != nil {
		return fmt.Errorf("glass: stack: %w", err)
	}
	frames, err := os.Create(sp.framesPath)
	if err != nil {
		return fmt.Errorf("glass: stack: %w", err)
	}
	defer frames.Close()

	cfg := app.Config{
		FTLAddr:       "127.0.0.1:0",
		FTLMediaAddr:  "127.0.0.1:0",
		HTTPAddr:      net.JoinHostPort(sp.Addr.String(), "0"),
		RelayAddr:     "127.0.0.1:0",
		WHIPUDPAddr:   net.JoinHostPort(sp.Addr.String(), "0"),
		DataDir:       filepath.Join(sp.DataDir, "gateway"),
		StreamKey:     streamKey,
		HubMaxHold:    hub.DefaultMaxHold,
		Region:        "ams",
		EmbedFunction: true,
		WebRTCUDPAddr: net.JoinHostPort(sp.Addr.String(), "0"),
		PublicIPs:     []string{sp.Addr.String()},
		FunctionCap:   100,
	}
	k, err := keys.Parse(cfg.StreamKey)
	if err != nil {
		return fmt.Errorf("glass: stack: %w", err)
	}
	g, err := app.New(cfg, keys.NewStatic(k), log)
	if err != nil {
		return fmt.Errorf("glass: stack: %w", err)
	}

	// Subscribed before the publisher starts, the first video packet the
	// hub releases is the publisher's first frame: that fixes the hub's
	// timestamp offset for the session.
	fl := newFrameLog(frames)
	sub := g.Hubs().GetOrCreate(channel).Subscribe(hub.SubscribeOptions{Capacity: 4096})
	defer sub.Close()

	var hubPackets atomic.Uint64 // released by the hub, seen by sub
	readHub := func(ctx context.Context) error {
		var (
			last      uint32
			started   bool
			keyframes int
		)
		for {
			p, err := sub.Next(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, hub.ErrClosed) {
					return nil
				}
				return fmt.Errorf("hub: %w", err)
			}
			hubPackets.Add(1)
			if p.Track != hub.Video || (started && p.Timestamp == last) {
				continue
			}
			started, last = true, p.Timestamp
			now := time.Now()
			fl.released(p.Timestamp, now)
			if p.Keyframe && sp.keyframes {
				keyframes++
				fmt.Printf("%s%d %d %d\n", keyframePrefix, keyframes, p.Timestamp, now.UnixNano())
			}
		}
	}
	more := []func(context.Context) error{readHub}
	if sp.keyframes {
		more = append(more, func(ctx context.Context) error {
			tick := time.NewTicker(functionEvery)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-tick.C:
				}
				if f := g.Function(); f != nil {
					st := FunctionStats{HubPackets: hubPackets.Load(), Relay: f.Client().Stats(), Fanout: f.Fanout().Stats()}
					if err := writeJSON(filepath.Join(sp.DataDir, functionFile), st); err != nil {
						return fmt.Errorf("stack: %w", err)
					}
				}
			}
		})
	}
	live := func() bool { h := g.Hubs().Get(channel); return h != nil && h.Stats().Live }
	if sp.whip {
		err = runWHIP(ctx, g, nals, opus, fl.sent, live, more...)
	} else {
		stack := stackrole.Stack{
			Gateway: g, StreamKey: streamKey, NALs: nals, Opus: opus, OnFrame: fl.sent, PeakKbps: sp.peakKbps,
			Live: live,
		}
		err = stack.Run(ctx, more...)
	}
	if n := fl.unmatched(); n > 0 {
		log.Warn("glass: frames without both a send and a release time", "frames", n)
	}
	if err != nil {
		return fmt.Errorf("glass: %w", err)
	}
	return nil
}

// readyLine starts the line stackrole.WaitReady waits for, followed by
// the pages' base URL (stackrole's readyPrefix).
const readyLine = "READY "

// runWHIP is stackrole.Stack.Run with a WHIP publisher instead of FTL:
// the gateway, whipclient streaming nals and opus in real time in a loop
// (answering keyframe requests at once, as an encoder does), the ready
// line once live reports true, and each of more; it returns the first
// error. onFrame gets each video frame's RTP timestamp, as the publisher
// sent it, and the time the write of its first packet returned.
func runWHIP(ctx context.Context, g *app.Gateway, nals, opus [][]byte, onFrame func(uint32, time.Time), live func() bool, more ...func(context.Context) error) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.Run(ctx) })
	eg.Go(func() error {
		var (
			mu      sync.Mutex // retransmissions are written from another goroutine
			last    uint32
			started bool
		)
		firstPacket := func(h *rtp.Header, _ []byte, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if started && int32(h.Timestamp-last) <= 0 {
				return // a packet of this frame or a retransmission
			}
			started, last = true, h.Timestamp
			onFrame(h.Timestamp, at)
		}
		p, err := whipclient.Publish(ctx, whipclient.Config{
			URL: "http://" + g.HTTPAddr().String() + "/api/whip", Token: streamKey,
			KeyframeOnPLI: true, OnVideoPacket: firstPacket,
		})
		if err != nil {
			return fmt.Errorf("publisher: %w", err)
		}
		defer p.Close()
		// The hub takes packets from its publish start, which may come a
		// moment after the publisher saw the connection: the first frame
		// sent must be the first the hub releases (see frameLog).
		for !live() {
			if err := sleepCtx(ctx, time.Millisecond); err != nil {
				return nil
			}
		}
		if err := p.Stream(ctx, nals, opus); ctx.Err() == nil {
			return fmt.Errorf("publisher: stream ended: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !live() {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		fmt.Printf("%shttp://%s\n", readyLine, g.HTTPAddr())
		return nil
	})
	for _, f := range more {
		eg.Go(func() error { return f(ctx) })
	}
	return eg.Wait()
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// writeJSON replaces the file at path with v as JSON, atomically.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// loadMedia returns the NAL units and Opus packets to stream: the test
// media, or the H.264 Annex B file at h264Path with the test media's Opus
// repeated and cut to last as long as the video. (The publisher starts
// each loop when the longer track ends: longer audio would hold the video
// at every loop.)
func loadMedia(h264Path string) (nals, opus [][]byte, err error) {
	if opus, err = testmedia.OpusPackets(); err != nil {
		return nil, nil, err
	}
	if h264Path == "" {
		nals, err = testmedia.NALUnits()
		return nals, opus, err
	}
	b, err := os.ReadFile(h264Path)
	if err != nil {
		return nil, nil, err
	}
	if nals, err = testmedia.SplitH264(b); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", h264Path, err)
	}
	// The publisher sends testmedia.FrameRate frames and 1000 /
	// testmedia.OpusFrameLength Opus packets per second.
	videoMs := countFrames(nals) * 1000 / testmedia.FrameRate
	n := (videoMs + testmedia.OpusFrameLength - 1) / testmedia.OpusFrameLength
	looped := make([][]byte, n)
	for i := range looped {
		looped[i] = opus[i%len(opus)]
	}
	return nals, looped, nil
}

// countFrames counts the frames of an H.264 stream: its slices with
// first_mb_in_slice 0 (the slice header's first bit set).
func countFrames(nals [][]byte) int {
	n := 0
	for _, nal := range nals {
		if len(nal) > 1 && nal[0]&0x1f >= 1 && nal[0]&0x1f <= 5 && nal[1]&0x80 != 0 {
			n++
		}
	}
	return n
}

// frameLog pairs the publisher's frames with the hub's and writes one
// record per frame. The hub's output timestamp of a frame is the
// publisher's plus an offset that is constant for a publisher session;
// the first frame each side reports fixes it. Both sides report from
// their own goroutines, in either order.
type frameLog struct {
	mu          sync.Mutex
	w           io.Writer
	firstPub    uint32 // the publisher's first frame timestamp
	firstHub    uint32 // the hub's first released video timestamp
	havePub     bool
	haveHub     bool
	offsetKnown bool
	offset      uint32               // hub timestamp = publisher timestamp + offset
	early       map[uint32]time.Time // send times by publisher timestamp, before the offset is known
	pending     map[uint32]time.Time // release times by hub timestamp, before the offset is known
	sends       map[uint32]time.Time // send times by hub timestamp, waiting for the release
	releases    map[uint32]time.Time // release times by hub timestamp, waiting for the send
	dropped     int                  // entries that never found their other half
	err         error                // the first write error
	buf         []byte               // the record being written
}

// maxWaiting bounds the entries a frameLog keeps for one side: a frame
// whose other half has not come after this many is dropped.
const maxWaiting = 300

func newFrameLog(w io.Writer) *frameLog {
	return &frameLog{
		w:        w,
		early:    map[uint32]time.Time{},
		sends:    map[uint32]time.Time{},
		releases: map[uint32]time.Time{},
		pending:  map[uint32]time.Time{},
	}
}

// sent takes the publisher's report of a frame: its timestamp and when
// its first packet was written. It has ftlclient.Config.OnFrame's type.
func (l *frameLog) sent(ts uint32, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.havePub {
		l.firstPub, l.havePub = ts, true
		l.fixOffset()
	}
	if !l.offsetKnown {
		l.early[ts] = at
		return
	}
	l.pair(ts+l.offset, at, time.Time{})
}

// released takes the hub's first packet of a frame with output timestamp
// ts, released at at.
func (l *frameLog) released(ts uint32, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.haveHub {
		l.firstHub, l.haveHub = ts, true
		l.fixOffset()
	}
	if !l.offsetKnown {
		l.pending[ts] = at
		return
	}
	l.pair(ts, time.Time{}, at)
}

// fixOffset computes the offset once both first frames are known and
// pairs what waited for it. l.mu is held.
func (l *frameLog) fixOffset() {
	if !l.havePub || !l.haveHub {
		return
	}
	l.offset, l.offsetKnown = l.firstHub-l.firstPub, true
	for ts, at := range l.early {
		l.pair(ts+l.offset, at, time.Time{})
	}
	for ts, at := range l.pending {
		l.pair(ts, time.Time{}, at)
	}
	clear(l.early)
	clear(l.pending)
}

// pair records one half of frame ts (hub timestamp) and writes the record
// when both halves are there. l.mu is held.
func (l *frameLog) pair(ts uint32, sent, released time.Time) {
	if !sent.IsZero() {
		r, ok := l.releases[ts]
		if !ok {
			l.sends[ts] = sent
			l.trim(l.sends)
			return
		}
		delete(l.releases, ts)
		released = r
	} else {
		s, ok := l.sends[ts]
		if !ok {
			l.releases[ts] = released
			l.trim(l.releases)
			return
		}
		delete(l.sends, ts)
		sent = s
	}
	l.write(record{Timestamp: ts, Sent: sent, Released: released})
}

// trim drops the oldest entry of m when it holds too many. l.mu is held.
func (l *frameLog) trim(m map[uint32]time.Time) {
	if len(m) <= maxWaiting {
		return
	}
	var (
		oldest   uint32
		oldestAt time.Time
	)
	for ts, at := range m {
		if oldestAt.IsZero() || at.Before(oldestAt) {
			oldest, oldestAt = ts, at
		}
	}
	delete(m, oldest)
	l.dropped++
}

func (l *frameLog) write(r record) {
	if l.err != nil {
		return
	}
	l.buf = r.appendTo(l.buf[:0])
	_, l.err = l.w.Write(l.buf)
}

// unmatched counts the frames that lost their other half.
func (l *frameLog) unmatched() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped + len(l.sends) + len(l.releases) + len(l.early) + len(l.pending)
}

// record is what the stack knows of one frame.
type record struct {
	Timestamp uint32    // RTP timestamp as viewers see it (the hub's)
	Sent      time.Time // the publisher wrote the frame's first packet
	Released  time.Time // the hub released the frame's first packet
}

// appendTo appends the record as a line: "<timestamp> <sent> <released>",
// the times in Unix nanoseconds.
func (r record) appendTo(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(r.Timestamp), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Sent.UnixNano(), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Released.UnixNano(), 10)
	return append(b, '\n')
}

// parseRecord reads a line written by appendTo.
func parseRecord(line string) (record, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return record{}, fmt.Errorf("glass: frame record %q: want 3 fields", line)
	}
	ts, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return record{}, fmt.Errorf("glass: frame record %q: %w", line, err)
	}
	var ns [2]int64
	for i := range ns {
		if ns[i], err = strconv.ParseInt(f[1+i], 10, 64); err != nil {
			return record{}, fmt.Errorf("glass: frame record %q: %w", line, err)
		}
	}
	return record{Timestamp: uint32(ts), Sent: time.Unix(0, ns[0]), Released: time.Unix(0, ns[1])}, nil
}

// readRecords reads the frames file, by timestamp.
func readRecords(r io.Reader) (map[uint32]record, error) {
	out := map[uint32]record{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if sc.Text() == "" {
			continue
		}
		rec, err := parseRecord(sc.Text())
		if err != nil {
			return nil, err
		}
		out[rec.Timestamp] = rec
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("glass: frame records: %w", err)
	}
	return out, nil
}
