//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// child is a process the bench started: a gateway, a function or the
// baseline server. Its output goes to a log file in the bench's
// directory.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process exited
	err     error         // why it exited; set before done closes
}

// startChild runs path with env (added to the bench's environment without
// its LS_ variables), its output in dir/<name>.log. stdout, when not nil,
// gets the child's standard output instead.
func startChild(name, dir, path string, env []string, stdout io.Writer) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	cmd := exec.Command(path)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// The child dies with the bench, even when the bench is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// alive reports an error if the child has exited.
func (c *child) alive() error {
	select {
	case <-c.done:
		return fmt.Errorf("bench: %s exited (%v); its log:\n%s", c.name, c.err, c.tail())
	default:
		return nil
	}
}

// stop ends the child with SIGTERM, or SIGKILL if it is still there after
// five seconds.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// tail is the end of the child's log.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// moduleRoot is the directory of the repository's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("bench: run it inside the lightspeed repository: it builds ./gateway and ./function")
	}
	return filepath.Dir(mod), nil
}

// build compiles the packages (module paths, e.g. "./gateway") into dir.
func build(ctx context.Context, dir string, pkgs ...string) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// loopbackPorts returns n distinct free TCP ports and m distinct free
// UDP ports on 127.0.0.1. They are free when it returns; a process could
// take one before the children bind it, which on a test machine does not
// happen in practice.
func loopbackPorts(n, m int) (tcp, udp []int, err error) {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("bench: free port: %w", err)
		}
		closers = append(closers, ln)
		tcp = append(tcp, ln.Addr().(*net.TCPAddr).Port)
	}
	for range m {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("bench: free port: %w", err)
		}
		closers = append(closers, pc)
		udp = append(udp, pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return tcp, udp, nil
}

// stack is a gateway and one function started by the bench as child
// processes, everything on loopback, with the tap in front of the
// gateway's FTL media socket.
type stack struct {
	gateway, function *child
	httpAddr, ftlAddr string
	metricsURL        string // the function's /metrics
	key               string
	tap               *tap
	stopTap           context.CancelFunc
	tapDone           chan struct{}
}

// stackOptions say how to start a stack.
type stackOptions struct {
	dir        string // holds the data dir and logs, and the binaries unless bin is set
	bin        string // holds the gateway and function already built; "": build them into dir
	epoch      time.Time
	capacity   int    // the function's capacity
	profileFn  string // when set, the function runs from the bench binary and writes its CPU profile here
	channel    uint32 // of the stream key
	functionUp time.Duration
	embedded   bool // the function runs inside the gateway (LS_EMBEDDED_FUNCTION=true), not as a process of its own
}

// startStack builds (unless o.bin has them) and starts a gateway (no
// embedded function) and one function, or with o.embedded the gateway
// with its embedded function, and waits until the function has joined
// the gateway.
func startStack(ctx context.Context, log *slog.Logger, o stackOptions) (_ *stack, err error) {
	if o.bin == "" {
		log.Info("building gateway and function")
		if err := build(ctx, o.dir, "./gateway", "./function"); err != nil {
			return nil, err
		}
		o.bin = o.dir
	}
	tcp, udp, err := loopbackPorts(2, 2)
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 20)
	rand.Read(secret)
	s := &stack{
		httpAddr: fmt.Sprintf("127.0.0.1:%d", tcp[0]),
		ftlAddr:  fmt.Sprintf("127.0.0.1:%d", tcp[1]),
		key:      fmt.Sprintf("%d-%s", o.channel, hex.EncodeToString(secret)),
	}
	media, relay := fmt.Sprintf("127.0.0.1:%d", udp[0]), fmt.Sprintf("127.0.0.1:%d", udp[1])
	if s.tap, err = newTap(o.epoch, media); err != nil {
		return nil, err
	}
	tapCtx, stopTap := context.WithCancel(context.Background())
	s.stopTap, s.tapDone = stopTap, make(chan struct{})
	go func() { defer close(s.tapDone); s.tap.run(tapCtx) }()
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	data := filepath.Join(o.dir, "data")
	gwEnv := []string{
		"LS_FTL_ADDR=" + s.ftlAddr,
		"LS_FTL_MEDIA_ADDR=" + media,
		fmt.Sprintf("LS_FTL_ANNOUNCE_PORT=%d", s.tap.Port()),
		// WHIP publishers' media on loopback, on a port of its own (the
		// default :8085 would be shared with any other gateway).
		"LS_WHIP_UDP_ADDR=127.0.0.1:0",
		"LS_HTTP_ADDR=" + s.httpAddr,
		"LS_RELAY_ADDR=" + relay,
		"LS_DATA_DIR=" + data,
		"LS_STREAM_KEY=" + s.key,
		fmt.Sprintf("LS_EMBEDDED_FUNCTION=%t", o.embedded),
		"LS_REGION=ams",
		"LS_LOG_LEVEL=warn",
	}
	if o.embedded {
		// The function's settings below, on the gateway; its metrics
		// are the gateway's, labelled function="embedded".
		gwEnv = append(gwEnv,
			"LS_WEBRTC_UDP_ADDR=127.0.0.1:0",
			"LS_PUBLIC_IPS=127.0.0.1",
			fmt.Sprintf("LS_FUNCTION_CAPACITY=%d", o.capacity))
	}
	s.gateway, err = startChild("gateway", o.dir, filepath.Join(o.bin, "gateway"), gwEnv, nil)
	if err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, s.gateway, "http://"+s.httpAddr+"/healthz", "ok"); err != nil {
		return nil, err
	}
	if o.embedded {
		s.metricsURL = "http://" + s.httpAddr + "/metrics"
		if err := waitHTTP(ctx, s.gateway, s.metricsURL, "\nlightspeed_relay_functions 1\n"); err != nil {
			return nil, err
		}
		return s, nil
	}

	mtcp, _, err := loopbackPorts(1, 0)
	if err != nil {
		return nil, err
	}
	s.metricsURL = fmt.Sprintf("http://127.0.0.1:%d/metrics", mtcp[0])
	fnEnv := []string{
		"LS_GATEWAY_ADDR=" + relay,
		fmt.Sprintf("LS_METRICS_ADDR=127.0.0.1:%d", mtcp[0]),
		"LS_DATA_DIR=" + data,
		// A loopback media address makes the function offer loopback
		// candidates only; the public IP says the same.
		"LS_WEBRTC_UDP_ADDR=127.0.0.1:0",
		"LS_PUBLIC_IPS=127.0.0.1",
		"LS_REGION=ams",
		"LS_MACHINE_ID=bench",
		fmt.Sprintf("LS_CAPACITY=%d", o.capacity),
		"LS_LOG_LEVEL=warn",
	}
	fnPath := filepath.Join(o.bin, "function")
	if o.profileFn != "" {
		if fnPath, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		fnEnv = append(fnEnv, roleEnv+"="+roleFunction, profileEnv+"="+o.profileFn)
	}
	if s.function, err = startChild("function", o.dir, fnPath, fnEnv, nil); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, s.function, "http://"+s.httpAddr+"/metrics", "\nlightspeed_relay_functions 1\n"); err != nil {
		return nil, err
	}
	return s, nil
}

// close stops the children and the tap.
func (s *stack) close() {
	for _, c := range []*child{s.function, s.gateway} {
		if c != nil {
			c.stop()
		}
	}
	if s.stopTap != nil {
		s.stopTap()
		<-s.tapDone
	}
}

// waitHTTP polls url until its body contains want, for 30 s at most, or
// until c exits.
func waitHTTP(ctx context.Context, c *child, url, want string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.alive(); err != nil {
			return err
		}
		if body, err := get(ctx, url); err == nil && strings.Contains(body, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: %s never said %q; its log:\n%s", c.name, url, strings.TrimSpace(want), c.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// get returns the body of a GET request.
func get(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// channelInfo is what the bench reads of a channel from the gateway's
// GET /api/channels.
type channelInfo struct {
	Channel    uint32 `json:"channel"`
	Live       bool   `json:"live"`
	Publishes  int    `json:"publishes"`
	PacketsOut uint64 `json:"packets_out"`
	Video      *struct {
		BitrateBps         float64 `json:"bitrate_bps"`
		KeyframeIntervalMs int64   `json:"keyframe_interval_ms"`
	} `json:"video"`
}

// readChannel reads channel from the gateway at httpAddr.
func readChannel(ctx context.Context, httpAddr string, channel uint32) (channelInfo, error) {
	body, err := get(ctx, "http://"+httpAddr+"/api/channels")
	if err != nil {
		return channelInfo{}, fmt.Errorf("bench: channels: %w", err)
	}
	var list []channelInfo
	if err := json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&list); err != nil {
		return channelInfo{}, fmt.Errorf("bench: channels: %w", err)
	}
	for _, c := range list {
		if c.Channel == channel {
			return c, nil
		}
	}
	return channelInfo{}, fmt.Errorf("bench: channel %d: unknown to the gateway", channel)
}

// waitChannel waits until cond holds for channel, for 30 s at most.
func waitChannel(ctx context.Context, httpAddr string, channel uint32, what string, cond func(channelInfo) bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := readChannel(ctx, httpAddr, channel)
		if err == nil && cond(c) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: channel %d never %s (last: %+v, %v)", channel, what, c, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
