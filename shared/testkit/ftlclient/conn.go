// Package ftlclient is an FTL publisher that behaves like OBS with the FTL
// SDK (microsoft/ftl-sdk): the same control handshake, keepalives and
// timeouts, the same RTP packetization, pings, sender reports, speed test
// and retransmissions. It is the test peer of the gateway's FTL ingest and
// the engine of the ftlsend command.
package ftlclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Intervals of the SDK's control connection.
const (
	keepaliveInterval = 5 * time.Second  // PING on the control connection
	keepaliveLate     = 30 * time.Second // no 201 for this long: connection lost
)

// ErrClosed is returned by Stream once Disconnect or Close has been called.
var ErrClosed = errors.New("ftl: connection closed")

// Config configures a publisher connection.
type Config struct {
	// Addr is the host:port of the ingest's TCP control connection, e.g.
	// "127.0.0.1:8084".
	Addr string
	// StreamKey is "<channel id>-<secret>", as OBS takes it.
	StreamKey string
	// VendorName and VendorVersion are announced in the handshake;
	// defaults "lightspeed-ftlsend" and "0.1".
	VendorName, VendorVersion string
	// SpeedTest is the length of the burst OBS sends right after
	// connecting (about one second); 0 sends none.
	SpeedTest time.Duration
	// Rate multiplies the pace of the media: 1 is real time, 4 is four
	// times faster (for tests). Media timestamps are unaffected. Default 1.
	Rate float64
	// PeakKbps is the SDK's peak_kbps: video leaves the media socket no
	// faster than this, after a burst of up to 100 ms of it, as the SDK's
	// send thread paces it (audio, pings and retransmissions are not
	// paced; Rate does not scale it). OBS sets 1.2 times the encoder's
	// bitrate (PeakKbps computes it for given media). 0 sends each video
	// packet at once, as the SDK does with a peak of 0.
	PeakKbps int
	// Logger receives the connection's events; default: none.
	Logger *slog.Logger
	// OnFrame, if set, is called once per video frame Stream sends, with
	// the frame's RTP timestamp and the time the frame's first packet was
	// written to the media socket (taken right before the write, so the
	// packet cannot arrive anywhere earlier). It is called from the
	// goroutine running Stream once the frame's first NAL unit is sent,
	// or with PeakKbps from the pacer's once the first packet is, so it
	// must return quickly, and with PeakKbps it must not call Close or
	// Disconnect (they wait for the pacer).
	OnFrame func(rtpTimestamp uint32, firstPacketSent time.Time)

	// keepalive overrides the interval of control PINGs, for tests.
	keepalive time.Duration
}

// Stats are counters of a connection since Dial.
type Stats struct {
	VideoPackets, AudioPackets uint64        // RTP packets sent once (not retransmissions)
	VideoBytes, AudioBytes     uint64        // whole RTP packets, headers included
	SpeedTestPackets           uint64        // packets of the speed test burst
	PingsSent, PingsEchoed     uint64        // media pings sent and echoed back
	KeepalivesSent             uint64        // PINGs on the control connection
	KeepalivesAnswered         uint64        // their 201 replies
	SenderReports              uint64        // RTCP sender reports sent
	NACKs                      uint64        // RTCP generic NACK packets received
	Retransmits                uint64        // packets sent again for them
	RTT                        time.Duration // round-trip time of the last echoed ping; 0 until one
}

// counters are the live values behind Stats.
type counters struct {
	videoPackets, audioPackets atomic.Uint64
	videoBytes, audioBytes     atomic.Uint64
	speedTestPackets           atomic.Uint64
	pingsSent, pingsEchoed     atomic.Uint64
	keepalivesSent             atomic.Uint64
	keepalivesAnswered         atomic.Uint64
	senderReports              atomic.Uint64
	nacks, retransmits         atomic.Uint64
	rtt                        atomic.Int64
}

// Conn is a publisher connected to an FTL ingest: a TCP control
// connection and a UDP media socket. Its methods may be called from any
// goroutine; Stream runs one call at a time.
type Conn struct {
	cfg     Config
	log     *slog.Logger
	channel uint32
	ctrl    *control
	udp     *net.UDPConn
	ingest  netip.Addr     // the control connection's peer: media comes only from there
	media   netip.AddrPort // where media goes
	stats   counters

	// mu guards the media state: both tracks, their rings and the sender
	// report clock.
	mu      sync.Mutex
	video   *track
	audio   *track
	srEpoch time.Time // wall clock at the first media timestamp, the SDK's NTP base

	stream streamState // owned by the Stream call running

	pingsOff atomic.Bool      // during the speed test
	echoes   chan struct{}    // a ping echo arrived (buffered, lossy)
	videoQ   chan queuedVideo // video packets waiting for the pacer; nil without PeakKbps
	// videoPending counts the video packets queued and not yet sent;
	// videoIdle gets a token when it falls to zero.
	videoPending atomic.Int64
	videoIdle    chan struct{}

	group     *errgroup.Group
	ctx       context.Context // done when the connection ends
	stop      context.CancelCauseFunc
	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the ingest, runs the FTL handshake, opens the media
// socket and, if cfg.SpeedTest is set, runs the speed test. A refusal by
// the ingest is a *ReplyError. ctx bounds the handshake and speed test
// only; the connection lives until Disconnect or Close.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	key, err := parseStreamKey(cfg.StreamKey)
	if err != nil {
		return nil, err
	}
	cfg = withDefaults(cfg)
	log := cfg.Logger.With("channel", key.channel, "remote", cfg.Addr)

	var dialer net.Dialer
	tcp, err := dialer.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ftl: channel %d: %w", key.channel, err)
	}
	// Cancelling ctx interrupts the handshake by expiring the socket's
	// deadlines.
	stopAfter := context.AfterFunc(ctx, func() { tcp.SetDeadline(time.Unix(1, 0)) })
	ctrl := newControl(tcp)
	port, err := ctrl.handshake(key, cfg.VendorName, cfg.VendorVersion)
	if !stopAfter() || err != nil {
		tcp.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("ftl: channel %d: %w", key.channel, err)
	}

	ingest := tcp.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	network := "udp4"
	if ingest.Is6() {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("ftl: channel %d: media socket: %w", key.channel, err)
	}

	c := &Conn{
		cfg:     cfg,
		log:     log,
		channel: key.channel,
		ctrl:    ctrl,
		udp:     udp,
		ingest:  ingest,
		media:   netip.AddrPortFrom(ingest, uint16(port)),
		video:   newTrack(key.channel+1, videoPT, videoClock),
		audio:   newTrack(key.channel, audioPT, audioClock),
		echoes:  make(chan struct{}, 1),
	}
	c.stream.waitForSPS = true
	// The goroutines end at the first error of one of them, or at Close.
	var parent context.Context
	parent, c.stop = context.WithCancelCause(context.Background())
	c.group, c.ctx = errgroup.WithContext(parent)
	c.group.Go(func() error { return c.readMedia(c.ctx) })
	c.group.Go(func() error { return c.pingMedia(c.ctx) })
	c.group.Go(func() error { return c.keepalive(c.ctx) })
	c.group.Go(func() error { return c.readControl(c.ctx) })
	if cfg.PeakKbps > 0 {
		c.videoQ = make(chan queuedVideo, paceQueue)
		c.videoIdle = make(chan struct{}, 1)
		c.group.Go(func() error { return c.paceVideo(c.ctx) })
	}
	log.Info("ftl: connected", "media", c.media.String())

	if cfg.SpeedTest > 0 {
		if err := c.speedTest(ctx, cfg.SpeedTest); err != nil {
			c.Close()
			return nil, fmt.Errorf("ftl: channel %d: speed test: %w", key.channel, err)
		}
	}
	return c, nil
}

func withDefaults(cfg Config) Config {
	if cfg.VendorName == "" {
		cfg.VendorName = "lightspeed-ftlsend"
	}
	if cfg.VendorVersion == "" {
		cfg.VendorVersion = "0.1"
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 1
	}
	cfg.PeakKbps = max(cfg.PeakKbps, 0)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.keepalive <= 0 {
		cfg.keepalive = keepaliveInterval
	}
	return cfg
}

// Channel returns the channel id of the stream key.
func (c *Conn) Channel() uint32 { return c.channel }

// MediaAddr returns the UDP address the ingest announced, where media goes.
func (c *Conn) MediaAddr() *net.UDPAddr { return net.UDPAddrFromAddrPort(c.media) }

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	s := &c.stats
	return Stats{
		VideoPackets:       s.videoPackets.Load(),
		AudioPackets:       s.audioPackets.Load(),
		VideoBytes:         s.videoBytes.Load(),
		AudioBytes:         s.audioBytes.Load(),
		SpeedTestPackets:   s.speedTestPackets.Load(),
		PingsSent:          s.pingsSent.Load(),
		PingsEchoed:        s.pingsEchoed.Load(),
		KeepalivesSent:     s.keepalivesSent.Load(),
		KeepalivesAnswered: s.keepalivesAnswered.Load(),
		SenderReports:      s.senderReports.Load(),
		NACKs:              s.nacks.Load(),
		Retransmits:        s.retransmits.Load(),
		RTT:                time.Duration(s.rtt.Load()),
	}
}

// Disconnect ends the stream gracefully: it stops the media, sends
// DISCONNECT and closes both sockets.
func (c *Conn) Disconnect() error {
	return c.shutdown(true)
}

// Close drops both sockets without a DISCONNECT, as a crashed encoder
// would.
func (c *Conn) Close() error {
	return c.shutdown(false)
}

func (c *Conn) shutdown(graceful bool) error {
	c.closeOnce.Do(func() {
		c.stop(ErrClosed)
		// Wake the readers blocked on their sockets. The control reader
		// sets a deadline before each read, so its side is shut instead;
		// writing DISCONNECT stays possible.
		c.udp.SetReadDeadline(time.Unix(1, 0))
		if tcp, ok := c.ctrl.conn.(*net.TCPConn); ok {
			tcp.CloseRead()
		} else {
			c.ctrl.conn.SetReadDeadline(time.Unix(1, 0))
		}
		c.group.Wait()
		if graceful {
			if err := c.ctrl.send("DISCONNECT"); err != nil {
				c.closeErr = fmt.Errorf("ftl: channel %d: disconnect: %w", c.channel, err)
			}
		}
		c.udp.Close()
		if err := c.ctrl.conn.Close(); err != nil && c.closeErr == nil {
			c.closeErr = fmt.Errorf("ftl: channel %d: close: %w", c.channel, err)
		}
		c.log.Info("ftl: disconnected", "graceful", graceful)
	})
	return c.closeErr
}

// keepalive sends "PING <channel>" on the control connection every five
// seconds, as the SDK's keepalive thread; the replies are read by
// readControl.
func (c *Conn) keepalive(ctx context.Context) error {
	t := time.NewTicker(c.cfg.keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := c.ctrl.send(fmt.Sprintf("PING %d", c.channel)); err != nil {
			// The SDK only logs this: a dead connection shows as missing 201s.
			c.log.Warn("ftl: ping failed", "err", err)
			continue
		}
		c.stats.keepalivesSent.Add(1)
	}
}

// readControl reads the ingest's lines on the control connection: 201
// answers a PING, 200 is ignored, anything else ends the connection, as
// does thirty seconds without a 201.
func (c *Conn) readControl(ctx context.Context) error {
	lastAnswer := time.Now()
	for {
		line, err := c.ctrl.readLine()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case isTimeout(err):
			if late := time.Since(lastAnswer); late >= keepaliveLate {
				return fmt.Errorf("ftl: channel %d: no reply to PING for %v", c.channel, late.Round(time.Second))
			}
			continue
		case err != nil:
			return fmt.Errorf("ftl: channel %d: control connection: %w", c.channel, err)
		}
		switch code, _ := parseReplyCode(line); code {
		case 201:
			lastAnswer = time.Now()
			c.stats.keepalivesAnswered.Add(1)
		case 200:
		default:
			err := replyError(line)
			c.log.Warn("ftl: ingest ended the stream", "err", err)
			return fmt.Errorf("ftl: channel %d: %w", c.channel, err)
		}
	}
}

// done returns why the connection ended.
func (c *Conn) done() error {
	if err := context.Cause(c.ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ErrClosed
}
