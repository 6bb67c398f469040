package ftlclient

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func FuzzParseReply(f *testing.F) {
	for _, line := range []string{
		"200 " + strings.Repeat("0a", 128) + "\n",
		"200 hi. Use UDP port 8084\n",
		"200\n", "201\n", "405 invalid key\n", "200 abc\n", "200 \n", "",
		"200. Use UDP port 1\n", ". Use UDP port 1\n", "-0 . Use UDP port +65535\n",
	} {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if code, ok := parseReplyCode(line); !ok && code != 0 {
			t.Errorf("parseReplyCode(%q) = %d but not ok", line, code)
		}
		if port, ok := parseMediaPort(line); ok && (port < 1 || port > 65535) {
			t.Errorf("parseMediaPort(%q) = %d", line, port)
		}
		challenge, err := parseChallenge(line)
		switch {
		case err == nil && 2*len(challenge)+5 != len(line):
			t.Errorf("parseChallenge(%q): %d bytes from a %d-byte line", line, len(challenge), len(line))
		case err == nil && hex.EncodeToString(challenge) != strings.ToLower(line[4:len(line)-1]):
			t.Errorf("parseChallenge(%q) = %x", line, challenge)
		}
		var re *ReplyError
		if errors.As(err, &re) && re.Error() == "" {
			t.Error("empty ReplyError message")
		}
	})
}

// FuzzHandshake plays an ingest that sends the given bytes and hangs up.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte("200 " + strings.Repeat("00", 128) + "\n200\n200 hi. Use UDP port 8084\n"))
	f.Add([]byte("200 0a0b\n405\n"))
	f.Add([]byte("200 0a0b\n200\n200 hi. Use UDP port 99999\n"))
	f.Add([]byte("200 0a0b"))
	f.Add([]byte(strings.Repeat("2", 3000) + "\n"))
	f.Fuzz(func(t *testing.T, replies []byte) {
		client, server := net.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			io.Copy(io.Discard, server)
		}()
		go func() {
			defer wg.Done()
			server.Write(replies)
			server.Close()
		}()
		port, err := newControl(client).handshake(streamKey{channel: 77, secret: "secret"}, "v", "1")
		client.Close()
		wg.Wait()
		if err == nil && (port < 1 || port > 65535) {
			t.Errorf("handshake accepted port %d", port)
		}
	})
}

// FuzzHandleDatagram feeds datagrams from the ingest's address to a
// connection that has sent video packets 0 to 9 and audio packets 0 to 4.
// Whenever pion reads the datagram as exactly one generic NACK, the
// connection must resend exactly the packets it lists that it still has.
func FuzzHandleDatagram(f *testing.F) {
	seed := func(p rtcp.Packet) []byte {
		b, err := p.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(seed(&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 78, Nacks: []rtcp.NackPair{{PacketID: 2, LostPackets: 0b101}}}))
	f.Add(seed(&rtcp.TransportLayerNack{MediaSSRC: 77, Nacks: []rtcp.NackPair{{PacketID: 65535, LostPackets: 0xffff}, {PacketID: 4}}}))
	f.Add(seed(&rtcp.SenderReport{SSRC: 1}))
	var ping [pingLen]byte
	putPing(ping[:], time.Unix(1700000000, 0))
	f.Add(ping[:])
	f.Add([]byte{0x81, 0xcd, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 78})
	f.Add([]byte{0x81, 0xcd})

	c := newBareConn(f)
	for i := range 10 {
		c.sendVideoNAL(context.Background(), []byte{0x41, 0x9a, byte(i)}, int64(i)*33333, true, false)
	}
	for i := range 5 {
		c.sendAudio([]byte{0xfc, byte(i)}, int64(i)*20000)
	}
	from := netip.MustParseAddrPort("127.0.0.1:8084")

	f.Fuzz(func(t *testing.T, b []byte) {
		before := c.Stats()
		c.handleDatagram(b, from, time.Now())
		after := c.Stats()
		if after.RTT < 0 {
			t.Errorf("RTT %v", after.RTT)
		}
		if len(b) > 0 && b[0]&0x20 != 0 {
			return // pion reads padding; the SDK ignores it
		}
		packets, err := rtcp.Unmarshal(b)
		if err != nil || len(packets) != 1 {
			return
		}
		nack, ok := packets[0].(*rtcp.TransportLayerNack)
		if !ok {
			return
		}
		var want uint64
		for _, pair := range nack.Nacks {
			for _, seq := range pair.PacketList() {
				if nack.MediaSSRC == 78 && seq < 10 || nack.MediaSSRC == 77 && seq < 5 {
					want++
				}
			}
		}
		if got := after.Retransmits - before.Retransmits; got != want {
			t.Errorf("NACK %+v: %d retransmits, want %d", nack, got, want)
		}
	})
}
