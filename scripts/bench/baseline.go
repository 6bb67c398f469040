//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"lightspeed/shared/testkit/viewer"
)

// The baseline is the fan-out of the original Lightspeed relay
// (Project-Lightspeed's webrtc/main.go), in its own process so its CPU
// can be read apart: one TrackLocalStaticRTP per track, every packet read
// from a UDP socket, unmarshalled, and written with track.Write, which
// writes it to every viewer in one loop; one pion API per viewer with
// pion's default codecs and default interceptors (NACK responder and
// generator, RTCP reports, TWCC), one UDP socket per viewer. The original
// signals over its websocket; the baseline answers WHEP so the same
// viewers can watch it. It gathers loopback candidates only.

// baselineAddrs is what the baseline child prints on its first line.
type baselineAddrs struct {
	WHEP string `json:"whep"` // the WHEP endpoint URL
	RTP  string `json:"rtp"`  // where it reads plain RTP (PT 96 video, 97 audio)
	// Its Go runtime's metrics (Prometheus text), for its heap.
	Metrics string `json:"metrics"`
}

// serveBaseline is the baseline child's main: it serves until SIGTERM.
func serveBaseline() error {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return fmt.Errorf("baseline: rtp: %w", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("baseline: http: %w", err)
	}
	video, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264}, "video", "pion")
	if err != nil {
		return err
	}
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "pion")
	if err != nil {
		return err
	}
	b := &baselineServer{video: video, audio: audio, sessions: map[string]*webrtc.PeerConnection{}}
	// The Go runtime's metrics, as the function serves them, so that the
	// bench reads the same heap figures of both; nothing of the original
	// relay's work.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", b)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go b.readRTP(udp)

	addrs, _ := json.Marshal(baselineAddrs{
		WHEP:    fmt.Sprintf("http://%s/api/whep/77", ln.Addr()),
		RTP:     udp.LocalAddr().String(),
		Metrics: fmt.Sprintf("http://%s/metrics", ln.Addr()),
	})
	fmt.Printf("%s\n", addrs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	srv.Close()
	udp.Close()
	b.closeAll()
	return nil
}

// baselineServer serves WHEP sessions fed from the two shared tracks.
type baselineServer struct {
	video, audio *webrtc.TrackLocalStaticRTP

	mu       sync.Mutex
	sessions map[string]*webrtc.PeerConnection
}

// readRTP is the original relay's loop: read a packet, unmarshal it, and
// write it to the track of its payload type.
func (b *baselineServer) readRTP(udp *net.UDPConn) {
	buf := make([]byte, 4096)
	for {
		n, _, err := udp.ReadFrom(buf)
		if err != nil {
			return
		}
		packet := &rtp.Packet{}
		if err := packet.Unmarshal(buf[:n]); err != nil {
			continue
		}
		switch packet.PayloadType {
		case 96:
			b.video.Write(buf[:n])
		case 97:
			b.audio.Write(buf[:n])
		}
	}
}

// newAPI is the original's createWebrtcApi, on loopback.
func (b *baselineServer) newAPI() (*webrtc.API, error) {
	var s webrtc.SettingEngine
	s.SetIncludeLoopbackCandidate(true)
	s.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	i := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, i); err != nil {
		return nil, err
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(i), webrtc.WithSettingEngine(s)), nil
}

// ServeHTTP answers POST (a new viewer) and DELETE (its end) of WHEP.
func (b *baselineServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		b.post(w, r)
	case http.MethodDelete:
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		b.mu.Lock()
		pc := b.sessions[id]
		delete(b.sessions, id)
		b.mu.Unlock()
		if pc == nil {
			http.NotFound(w, r)
			return
		}
		pc.Close()
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (b *baselineServer) post(w http.ResponseWriter, r *http.Request) {
	offer, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	api, err := b.newAPI()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	answer, err := b.answer(pc, string(offer))
	if err != nil {
		pc.Close()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := make([]byte, 8)
	rand.Read(id)
	sid := hex.EncodeToString(id)
	b.mu.Lock()
	b.sessions[sid] = pc
	b.mu.Unlock()
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			pc.Close()
			b.mu.Lock()
			delete(b.sessions, sid)
			b.mu.Unlock()
		}
	})
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", r.URL.Path+"/"+sid)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer)
}

// answer adds both tracks to pc, answers offer and waits for ICE
// gathering, so the answer holds every candidate.
func (b *baselineServer) answer(pc *webrtc.PeerConnection, offer string) (string, error) {
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("baseline: offer: %w", err)
	}
	for _, t := range []*webrtc.TrackLocalStaticRTP{b.video, b.audio} {
		sender, err := pc.AddTrack(t)
		if err != nil {
			return "", fmt.Errorf("baseline: add track: %w", err)
		}
		// Read RTCP so the interceptors see the viewer's NACKs and
		// reports.
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("baseline: answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("baseline: answer: %w", err)
	}
	<-gathered
	return pc.LocalDescription().SDP, nil
}

func (b *baselineServer) closeAll() {
	b.mu.Lock()
	pcs := make([]*webrtc.PeerConnection, 0, len(b.sessions))
	for _, pc := range b.sessions {
		pcs = append(pcs, pc)
	}
	b.mu.Unlock()
	for _, pc := range pcs {
		pc.Close()
	}
}

// baseline is the running baseline child and the feed into it.
type baseline struct {
	proc  *child
	addrs baselineAddrs
	feed  *feeder
}

// startBaseline starts the baseline child (the bench binary in the
// baseline role) and feeds it the channel as one viewer of the stack at
// whepURL receives it: the hub's normalized stream, ≤ 1200-byte packets,
// the same sequence numbers and timestamps.
func startBaseline(ctx context.Context, dir string, epoch time.Time, whepURL string) (_ *baseline, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pr, pw := io.Pipe()
	proc, err := startChild("baseline", dir, exe, []string{roleEnv + "=" + roleBaseline}, pw)
	if err != nil {
		return nil, err
	}
	b := &baseline{proc: proc}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, pr)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			return nil, fmt.Errorf("bench: baseline said nothing; its log:\n%s", proc.tail())
		}
		if err := json.Unmarshal([]byte(line), &b.addrs); err != nil {
			return nil, fmt.Errorf("bench: baseline: %q: %w", line, err)
		}
	case <-proc.done:
		return nil, proc.alive()
	case <-time.After(30 * time.Second):
		return nil, errors.New("bench: baseline did not start in 30 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.feed, err = startFeeder(ctx, epoch, whepURL, b.addrs.RTP); err != nil {
		return nil, err
	}
	return b, nil
}

// close stops the feed and the child.
func (b *baseline) close() {
	if b.feed != nil {
		b.feed.close()
	}
	b.proc.stop()
}

// feeder is one viewer of the stack under test that forwards every RTP
// packet it receives, as plain RTP with the hub's payload types (96 video,
// 97 audio), to the baseline, and notes when it forwarded each video
// frame.
type feeder struct {
	epoch  time.Time
	v      *viewer.Viewer
	conn   *net.UDPConn
	frames *frameLog
	buf    [2][1500]byte // per track: each has its own reader goroutine
}

func startFeeder(ctx context.Context, epoch time.Time, whepURL, rtpAddr string) (*feeder, error) {
	to, err := net.ResolveUDPAddr("udp4", rtpAddr)
	if err != nil {
		return nil, fmt.Errorf("bench: feeder: %w", err)
	}
	conn, err := net.DialUDP("udp4", nil, to)
	if err != nil {
		return nil, fmt.Errorf("bench: feeder: %w", err)
	}
	f := &feeder{epoch: epoch, conn: conn, frames: newFrameLog(4096)}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// With interceptors, so the feed recovers what the loaded machine
	// loses on the way.
	f.v, err = viewer.WHEP(cctx, whepURL, viewer.Options{Loopback: true, Interceptors: true, OnRTP: f.onRTP})
	if err == nil {
		err = f.v.WaitConnected(cctx)
	}
	if err != nil {
		if f.v != nil {
			f.v.Close()
		}
		conn.Close()
		return nil, fmt.Errorf("bench: feeder: %w", err)
	}
	return f, nil
}

// onRTP forwards one packet. It does not allocate.
func (f *feeder) onRTP(kind string, p *rtp.Packet) {
	buf := &f.buf[1]
	p.PayloadType = 97
	p.Extension = false // the fan-out's playout-delay on burst packets: not the baseline's to send
	video := kind == "video"
	if video {
		buf = &f.buf[0]
		p.PayloadType = 96
	}
	n, err := p.MarshalTo(buf[:])
	if err != nil {
		return
	}
	f.conn.Write(buf[:n])
	if video { // the baseline's socket has it now
		f.frames.note(p.Timestamp, p.Marker, p.Payload, time.Since(f.epoch))
	}
}

func (f *feeder) close() {
	f.v.Close()
	f.conn.Close()
}
