package relaywire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

func ptr[T any](v T) *T { return &v }

// everyMessage has one filled message of every type.
func everyMessage() []Message {
	return []Message{
		&Hello{Version: Version, Region: "ams", MachineID: "e2865013b51e86", MediaAddr: "203.0.113.7:8189", Capacity: 500},
		&Challenge{Nonce: strings.Repeat("ab", NonceSize)},
		&Auth{MAC: strings.Repeat("01", 32)},
		&Welcome{FunctionID: "e2865013b51e86"},
		&LoadReport{Load{Viewers: 12, EgressBps: 2.5e7, CPU: 0.25}},
		&Subscribe{Channel: 77},
		&Subscribed{Channel: 77, Tracks: []TrackInfo{
			{Flow: FlowOf(77, Video), Track: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000, Fmtp: "packetization-mode=1;profile-level-id=42e01f", SSRC: 1, FirstSeq: ptr[uint16](0)},
			{Flow: FlowOf(77, Audio), Track: "audio", Codec: "OPUS", PayloadType: 97, ClockRate: 48000, Channels: 2, SSRC: 2, FirstSeq: ptr[uint16](65535)},
			{Flow: FlowOf(77, Audio), Track: "audio", Codec: "OPUS", PayloadType: 97, ClockRate: 48000, Channels: 2, SSRC: 2},
			{Flow: FlowOf(77, LayerTrack(1)), Track: "video", Layer: "1", Codec: "H264", PayloadType: 96, ClockRate: 90000, SSRC: 3},
		}},
		&Subscribed{Channel: 5, Error: "channel 5 has no stream"},
		&Unsubscribe{Channel: 77},
		&SessionStart{Session: "0123456789abcdef", Channel: 77, Offer: "v=0\r\n"},
		&SessionStart{Session: "0123456789abcdef", Channel: 77},
		&SessionStart{Session: "0123456789abcdef", Channel: 77, Layer: "h"},
		&SessionSDP{Session: "0123456789abcdef", SDPType: "answer", SDP: "v=0\r\n"},
		&SessionSDP{Session: "0123456789abcdef", Error: "no route"},
		&SessionAnswer{Session: "0123456789abcdef", SDP: "v=0\r\n"},
		&CandidateMsg{Session: "0123456789abcdef", Candidate: Candidate{
			Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr[uint16](0), UsernameFragment: ptr("abcd")}},
		&CandidateMsg{Session: "0123456789abcdef"},
		&SessionClose{Session: "0123456789abcdef", Reason: "viewer left"},
		&NACK{Flow: FlowOf(77, Video), Seqs: []uint16{65535, 0, 1}},
		&Drain{Reason: "scale down"},
		&Error{Message: "unauthorized"},
		&KeyframeRequest{Channel: 77},
		&KeyframeRequest{Channel: 77, Track: LayerTrack(2)},
		&SessionLayer{Session: "0123456789abcdef", Layer: "1"},
		&SessionLayer{Session: "0123456789abcdef"},
	}
}

func TestEveryMessageRoundTrips(t *testing.T) {
	var stream bytes.Buffer
	for _, m := range everyMessage() {
		if err := WriteMessage(&stream, m); err != nil {
			t.Fatalf("write %s: %v", m.Type(), err)
		}
	}
	r := bufio.NewReader(&stream)
	for _, want := range everyMessage() {
		got, err := ReadMessage(r)
		if err != nil {
			t.Fatalf("read %s: %v", want.Type(), err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, want %+v", want.Type(), got, want)
		}
	}
	if _, err := ReadMessage(r); err != io.EOF {
		t.Errorf("after the last message: %v, want io.EOF", err)
	}
}

func TestJSONFieldNamesAreSnakeCase(t *testing.T) {
	tests := []struct {
		m    Message
		want string
	}{
		{&Hello{Version: 1, Region: "ams", MachineID: "m", MediaAddr: "1.2.3.4:8189", Capacity: 5}, `{"version":1,"region":"ams","machine_id":"m","media_addr":"1.2.3.4:8189","capacity":5}`},
		{&Welcome{FunctionID: "f"}, `{"function_id":"f"}`},
		{&LoadReport{Load{Viewers: 1, EgressBps: 2, CPU: 0.5}}, `{"viewers":1,"egress_bps":2,"cpu":0.5}`},
		{&SessionSDP{Session: "s", SDPType: "offer", SDP: "v=0"}, `{"session":"s","type":"offer","sdp":"v=0"}`},
		{&CandidateMsg{Session: "s", Candidate: Candidate{Candidate: "c", SDPMid: ptr("0"), SDPMLineIndex: ptr[uint16](1)}}, `{"session":"s","candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":1}}`},
		{&NACK{Flow: 155, Seqs: []uint16{7, 9}}, `{"flow":155,"seqs":[7,9]}`},
		{&KeyframeRequest{Channel: 77}, `{"channel":77}`},
		{&Subscribed{Channel: 1, Tracks: []TrackInfo{{Flow: 2, Track: "video", Codec: "H264", PayloadType: 96, ClockRate: 90000, SSRC: 3}}}, `{"channel":1,"tracks":[{"flow":2,"track":"video","codec":"H264","payload_type":96,"clock_rate":90000,"ssrc":3}]}`},
	}
	for _, tt := range tests {
		b, err := AppendMessage(nil, tt.m)
		if err != nil {
			t.Fatal(err)
		}
		n, l, err := quicvarint.Parse(b)
		if err != nil || int(n) != len(b)-l {
			t.Fatalf("%s: length %d (%v), want %d", tt.m.Type(), n, err, len(b)-l)
		}
		if MsgType(b[l]) != tt.m.Type() {
			t.Errorf("%s: type byte %d", tt.m.Type(), b[l])
		}
		if got := string(b[l+1:]); got != tt.want {
			t.Errorf("%s: body %s, want %s", tt.m.Type(), got, tt.want)
		}
	}
}

// frame returns the framing of a raw type byte and body.
func frame(typ byte, body string) []byte {
	b := quicvarint.Append(nil, uint64(1+len(body)))
	b = append(b, typ)
	return append(b, body...)
}

func TestReadMessageRejectsWhatBreaksTheProtocol(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
	}{
		{"zero length", []byte{0}},
		{"longer than 64 KiB", quicvarint.Append(nil, MaxMessageSize+1)},
		{"huge length", quicvarint.Append(nil, quicvarint.Max)},
		{"unknown type 0", frame(0, `{}`)},
		{"unknown type 19", frame(19, `{}`)},
		{"empty body", frame(byte(TypeHello), ``)},
		{"body not JSON", frame(byte(TypeHello), `hello`)},
		{"body a JSON array", frame(byte(TypeSubscribe), `[77]`)},
		{"body JSON null", frame(byte(TypeSubscribe), `null`)},
		{"trailing garbage", frame(byte(TypeSubscribe), `{"channel":77}x`)},
		{"wrong field type", frame(byte(TypeSubscribe), `{"channel":"77"}`)},
		{"channel out of range", frame(byte(TypeSubscribe), `{"channel":4294967296}`)},
		{"keyframe request's channel out of range", frame(byte(TypeKeyframe), `{"channel":-1}`)},
		{"first_seq out of range", frame(byte(TypeSubscribed), `{"channel":77,"tracks":[{"flow":154,"track":"video","first_seq":65536}]}`)},
		{"sequence number out of range", frame(byte(TypeNACK), `{"flow":1,"seqs":[65536]}`)},
		{"more than 64 sequence numbers", frame(byte(TypeNACK), `{"flow":1,"seqs":[`+strings.Repeat("1,", 64)+`1]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadMessage(bufio.NewReader(bytes.NewReader(tt.input)))
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want ErrProtocol", err)
			}
		})
	}
}

func TestReadMessageAcceptsUnknownFieldsAndWhitespace(t *testing.T) {
	m, err := ReadMessage(bufio.NewReader(bytes.NewReader(frame(byte(TypeSubscribe), " \n{\"channel\":77,\"future\":true}"))))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := m.(*Subscribe); !ok || s.Channel != 77 {
		t.Fatalf("got %#v", m)
	}
}

func TestReadMessageTellsACutMessageFromACleanEnd(t *testing.T) {
	whole := frame(byte(TypeSubscribe), `{"channel":77}`)
	for n := 1; n < len(whole); n++ {
		_, err := ReadMessage(bufio.NewReader(bytes.NewReader(whole[:n])))
		if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrProtocol) {
			t.Errorf("cut after %d bytes: %v, want io.ErrUnexpectedEOF", n, err)
		}
	}
	// A two-byte length cut after its first byte.
	long := frame(byte(TypeHello), strings.Repeat(" ", 100)+`{}`)
	if _, err := ReadMessage(bufio.NewReader(bytes.NewReader(long[:1]))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut inside the length: %v", err)
	}
	if _, err := ReadMessage(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
}

func TestWriteMessageRefusesWhatThePeerWouldReject(t *testing.T) {
	big := &SessionStart{Session: "s", Offer: strings.Repeat("a", MaxMessageSize)}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, big); err == nil {
		t.Fatal("a message over 64 KiB was written")
	}
	if buf.Len() != 0 {
		t.Fatalf("%d bytes written", buf.Len())
	}
}

func TestAuthMACBindsSecretExporterAndNonce(t *testing.T) {
	exporter := bytes.Repeat([]byte{1}, ExporterLength)
	nonce := bytes.Repeat([]byte{2}, NonceSize)
	base := AuthMAC("secret", exporter, nonce)
	if len(base) != 32 {
		t.Fatalf("mac of %d bytes", len(base))
	}
	// Computed independently: HMAC-SHA256 of the prefix, 32×0x01, 32×0x02.
	const want = "4cee2d4e84e47adb6696f02313da532df4fe39a45d7e1398e4830f4271982998"
	if got := hex.EncodeToString(base); got != want {
		t.Errorf("mac %s, want %s", got, want)
	}
	other := [][]byte{
		AuthMAC("secret2", exporter, nonce),
		AuthMAC("secret", bytes.Repeat([]byte{3}, ExporterLength), nonce),
		AuthMAC("secret", exporter, bytes.Repeat([]byte{3}, NonceSize)),
	}
	for i, o := range other {
		if bytes.Equal(o, base) {
			t.Errorf("variant %d has the same mac", i)
		}
	}
}

func TestCandidateSetCountsDistinctCheckedAddresses(t *testing.T) {
	udp := func(port int) string { return fmt.Sprintf("candidate:1 1 udp 2130706431 127.0.0.1 %d typ host", port) }
	var s CandidateSet
	for port := 1; port <= MaxCandidates; port++ {
		if !s.Add(udp(port)) {
			t.Fatalf("address %d refused", port)
		}
	}
	for _, c := range []string{
		udp(1), // seen
		"candidate:2 1 UDP 2130706431 127.0.0.1 1 typ host",        // seen, another foundation
		"candidate:3 1 udp 2130706431 ::ffff:127.0.0.1 1 typ host", // seen, IPv4-mapped
		"candidate:4 1 tcp 1518280447 127.0.0.1 9 typ host tcptype passive",
		"candidate:5 1 udp 2130706431 3f9c1a8e-8e4b-4a3e-9c5d-0e4a7a1b2c3d.local 5000 typ host",
		"candidate:6 1 udp", // unreadable: pion refuses it too
		"candidate:7 1 udp 2130706431 example.com 5000 typ host", // not an IP: pion refuses it
		"", // an end of candidates
	} {
		if !s.Add(c) {
			t.Errorf("%q refused: it names no new address the function checks", c)
		}
	}
	if s.Len() != MaxCandidates {
		t.Fatalf("%d addresses, want %d", s.Len(), MaxCandidates)
	}
	// Every form pion reads as a UDP candidate counts.
	for _, c := range []string{
		udp(MaxCandidates + 1),
		"candidate:1 1 udp 2130706431 ::1 9 typ host",
		"candidate: 1 udp 2130706431 127.0.0.2 9 typ host", // no foundation
		" 1 udp 2130706431 127.0.0.2 9 typ host",           // no prefix, no foundation
		"candidate:1 1 UDP 2130706431 127.0.0.3 9 typ host",
		"Candidate:1 1 udp 2130706431 127.0.0.4 9 typ host", // a foundation "Candidate:1" to pion
		"candidate:1 1 udp 2130706431 fe80::1%eth0 9 typ host",
		"candidate:1 2 udp 1686052607 198.51.100.7 50000 typ srflx raddr 0.0.0.0 rport 0",
	} {
		if s.Add(c) {
			t.Errorf("%q accepted past the limit", c)
		}
	}
	if s.Len() != MaxCandidates {
		t.Fatalf("a refused address was counted: %d", s.Len())
	}
}

func TestCandidateSetTakesTrickledCandidatesAllOrNone(t *testing.T) {
	var s CandidateSet
	var batch []Candidate
	for port := 1; port < MaxCandidates; port++ {
		batch = append(batch, Candidate{Candidate: fmt.Sprintf("candidate:1 1 udp 2130706431 127.0.0.1 %d typ host", port)})
	}
	if !s.AddTrickled(batch) || s.Len() != MaxCandidates-1 {
		t.Fatalf("%d addresses: %d counted", MaxCandidates-1, s.Len())
	}
	two := []Candidate{
		{Candidate: "candidate:1 1 udp 2130706431 127.0.0.2 1 typ host"},
		{Candidate: "candidate:1 1 udp 2130706431 127.0.0.2 2 typ host"},
	}
	if s.AddTrickled(two) || s.Len() != MaxCandidates-1 {
		t.Fatalf("two addresses past the limit: %d counted", s.Len())
	}
	if !s.AddTrickled(two[:1]) || !s.AddTrickled([]Candidate{{}}) || s.Len() != MaxCandidates {
		t.Fatalf("the last address, then an end: %d counted", s.Len())
	}
}

func TestCandidateSetAddSDP(t *testing.T) {
	var sdp strings.Builder
	sdp.WriteString("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n")
	for port := 1; port <= MaxCandidates; port++ { // the same addresses in both sections, as a browser without bundle gives them
		fmt.Fprintf(&sdp, "a=candidate:1 1 udp 2130706431 127.0.0.1 %d typ host\r\n", port)
	}
	sdp.WriteString("m=video 9 UDP/TLS/RTP/SAVPF 96\r\n")
	for port := 1; port <= MaxCandidates; port++ {
		fmt.Fprintf(&sdp, "a=candidate:1 1 udp 2130706431 127.0.0.1 %d typ host\n", port)
	}
	var s CandidateSet
	if ok := s.AddSDP(sdp.String()); !ok || s.Len() != MaxCandidates {
		t.Fatalf("%d addresses named twice: accepted %v, counted %d", MaxCandidates, ok, s.Len())
	}
	if s.AddSDP("a=candidate:1 1 udp 2130706431 127.0.0.2 1 typ host") {
		t.Fatal("one address more accepted")
	}
}
