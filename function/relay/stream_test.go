package relay

import (
	"context"
	"crypto/tls"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	gwrelay "lightspeed/gateway/relay"
	"lightspeed/shared/relaywire"
)

// packets is a Handler that keeps copies of the packets handed on.
type packets struct {
	Handler
	mu  sync.Mutex
	got []Packet
	in  chan struct{}
}

func (h *packets) WriteRTP(p *Packet) {
	h.mu.Lock()
	c := *p
	c.Payload = append([]byte(nil), p.Payload...)
	h.got = append(h.got, c)
	h.mu.Unlock()
	h.in <- struct{}{}
}

// TestPacketsOnStreamsAreHandedOnAsDatagrams: a packet the gateway could
// not send as a datagram comes on a unidirectional stream of its own, the
// datagram's bytes; the function hands it on like a datagram, marks
// included, and drops a stream longer than the largest datagram.
func TestPacketsOnStreamsAreHandedOnAsDatagrams(t *testing.T) {
	cert, err := gwrelay.LoadOrCreateCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tlsConf := relaywire.TLSConfig()
	tlsConf.Certificates = []tls.Certificate{cert}
	ln, err := quic.ListenAddr("127.0.0.1:0", tlsConf, relaywire.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clientTLS := relaywire.TLSConfig()
	clientTLS.InsecureSkipVerify = true
	qc, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS, relaywire.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	gw, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.CloseWithError(0, "")

	h := &packets{in: make(chan struct{}, 4)}
	id := relaywire.FlowOf(77, relaywire.Video)
	cc := &conn{c: NewClient(Config{}), h: h, qc: qc, ctx: ctx, flows: map[relaywire.Flow]*flow{id: newFlow(77, relaywire.Video, newNumbering(relaywire.Video))}}
	done := make(chan error, 1)
	go func() { done <- cc.receiveStreams() }()

	send := func(d []byte) {
		st, err := gw.OpenUniStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write(d); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	rtp := append([]byte{0x80, 96, 0x12, 0x34, 0, 0, 0x0b, 0xb8, 0, 0, 0, 9}, make([]byte, relaywire.MaxPacketSize-12)...)
	rtp[12] = 0x67
	tooLong := relaywire.AppendDatagram(nil, id, 0, rtp)
	tooLong = append(tooLong, make([]byte, relaywire.MaxDatagramSize+1-len(tooLong))...)
	send(tooLong)
	send(relaywire.AppendDatagram(nil, id, relaywire.FlagKeyframe, rtp))
	select {
	case <-h.in:
	case <-ctx.Done():
		t.Fatal("the packet on a stream was not handed on")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != 1 {
		t.Fatalf("%d packets handed on, want the one of the right size", len(h.got))
	}
	p := h.got[0]
	if p.Seq != 0x1234 || p.Timestamp != 3000 || !p.Keyframe || len(p.Payload) != relaywire.MaxPacketSize-12 || p.Payload[0] != 0x67 {
		t.Fatalf("handed on %+v", p)
	}
	cancel()
	<-done
}
