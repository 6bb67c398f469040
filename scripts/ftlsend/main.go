// Command ftlsend publishes media to an FTL ingest the way OBS does, for
// testing the gateway without OBS:
//
//	go run ./scripts/ftlsend -addr 127.0.0.1 -key 77-secret
//
// By default it sends the committed test media (shared/testkit/testmedia) in a
// loop until interrupted; -h264 and -opus send other files (H.264 Annex B,
// Ogg Opus with 20 ms packets). Ctrl-C ends the stream with DISCONNECT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"lightspeed/shared/testkit/ftlclient"
	"lightspeed/shared/testkit/testmedia"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ftlsend:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		addr      = flag.String("addr", "127.0.0.1", "ingest host[:port] of the FTL control connection (port 8084 if none)")
		key       = flag.String("key", "", "stream key, <channel id>-<secret> (required)")
		h264File  = flag.String("h264", "", "H.264 Annex B file to send (default: the test media)")
		opusFile  = flag.String("opus", "", "Ogg Opus file to send, 20 ms packets (default: the test media)")
		loops     = flag.Int("loops", 0, "times to play the media; 0 loops until interrupted")
		rate      = flag.Float64("rate", 1, "pace of the media: 1 is real time, 2 twice as fast")
		peakKbps  = flag.Int("peak-kbps", -1, "pace video to this many kbit/s after a 100 ms burst, as the FTL SDK does; -1: as OBS, 1.2 times the media's video bitrate (times -rate); 0: no pacing")
		speedTest = flag.Duration("speedtest", time.Second, "length of the speed test after connecting, as OBS does; 0 for none")
		verbose   = flag.Bool("v", false, "log debug events (each retransmission)")
	)
	flag.Parse()
	if *key == "" {
		flag.Usage()
		return errors.New("-key is required")
	}
	if err := checkFlags(*loops, *rate, *speedTest); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	nals, opus, err := loadMedia(*h264File, *opusFile)
	if err != nil {
		return err
	}

	if *peakKbps < 0 { // OBS's peak, for the pace the media is played at
		*peakKbps = int(float64(ftlclient.PeakKbps(nals)) * max(*rate, 1))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	conn, err := ftlclient.Dial(ctx, ftlclient.Config{
		Addr:          withDefaultPort(*addr, "8084"),
		StreamKey:     *key,
		VendorVersion: "1",
		SpeedTest:     *speedTest,
		Rate:          *rate,
		PeakKbps:      *peakKbps,
		Logger:        log,
	})
	var refused *ftlclient.ReplyError
	switch {
	case errors.As(err, &refused) && (refused.Code == 401 || refused.Code == 405):
		return fmt.Errorf("the ingest refused the stream key: %w", err)
	case err != nil:
		return err
	}
	log.Info("streaming", "channel", conn.Channel(), "media", conn.MediaAddr().String(),
		"nal_units", len(nals), "opus_packets", len(opus), "loops", *loops, "rate", *rate, "peak_kbps", *peakKbps)

	var wg sync.WaitGroup
	statsCtx, stopStats := context.WithCancel(ctx)
	wg.Go(func() { logStats(statsCtx, log, conn) })
	err = conn.Stream(ctx, nals, opus, *loops)
	stopStats()
	wg.Wait()

	switch {
	case err == nil, errors.Is(err, context.Canceled):
		log.Info("stream ended", "stats", fmt.Sprintf("%+v", conn.Stats()))
		return conn.Disconnect()
	default:
		conn.Close()
		return err
	}
}

// checkFlags refuses the numbers that have no meaning.
func checkFlags(loops int, rate float64, speedTest time.Duration) error {
	switch {
	case loops < 0:
		return fmt.Errorf("-loops %d: want 0 (until interrupted) or more", loops)
	case !(rate > 0) || math.IsInf(rate, 1):
		return fmt.Errorf("-rate %v: want a pace above 0 (1 is real time)", rate)
	case speedTest < 0:
		return fmt.Errorf("-speedtest %v: want 0 (none) or more", speedTest)
	}
	return nil
}

// loadMedia reads the media files, or takes the test media.
func loadMedia(h264File, opusFile string) (nals, opus [][]byte, err error) {
	if h264File == "" {
		nals, err = testmedia.NALUnits()
	} else {
		var b []byte
		if b, err = os.ReadFile(h264File); err == nil {
			nals, err = testmedia.SplitH264(b)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("video: %w", err)
	}
	if opusFile == "" {
		opus, err = testmedia.OpusPackets()
	} else {
		var b []byte
		if b, err = os.ReadFile(opusFile); err == nil {
			opus, err = testmedia.SplitOgg(b)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("audio: %w", err)
	}
	return nals, opus, nil
}

// withDefaultPort adds port to a host without one.
func withDefaultPort(addr, port string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), port)
}

// logStats logs the connection's counters every five seconds.
func logStats(ctx context.Context, log *slog.Logger, conn *ftlclient.Conn) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := conn.Stats()
		log.Info("stats",
			"video_packets", s.VideoPackets, "audio_packets", s.AudioPackets,
			"bytes", s.VideoBytes+s.AudioBytes,
			"nacks", s.NACKs, "retransmits", s.Retransmits,
			"rtt", s.RTT, "pings", s.PingsSent, "pings_echoed", s.PingsEchoed,
			"keepalives_answered", s.KeepalivesAnswered)
	}
}
