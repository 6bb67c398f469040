package whip

import (
	"strings"
	"testing"
)

func TestBearerKey(t *testing.T) {
	for _, c := range []struct {
		header  string
		channel uint32
		secret  string
		ok      bool
	}{
		{"Bearer 77-s3cret", 77, "s3cret", true},
		{"bearer 77-s3cret", 77, "s3cret", true},
		{"Bearer   77-s3cret ", 77, "s3cret", true},
		{"Bearer 77,s3cret", 77, "s3cret", true},
		{"", 0, "", false},
		{"Bearer", 0, "", false},
		{"Bearer ", 0, "", false},
		{"Basic 77-s3cret", 0, "", false},
		{"Bearer 77", 0, "", false},
		{"Bearer 0-s3cret", 0, "", false},
		{"Bearer -s3cret", 0, "", false},
		{"Bearer 77-", 0, "", false},
		{"Bearer 77-a b", 0, "", false},
		{"Bearer 4294967296-x", 0, "", false},
	} {
		k, err := bearerKey(c.header)
		if (err == nil) != c.ok || k.Channel != c.channel || k.Secret != c.secret {
			t.Errorf("%q: %+v, %v", c.header, k, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error names the secret: %v", c.header, err)
		}
	}
}

func TestParseChannel(t *testing.T) {
	for s, want := range map[string]uint32{"77": 77, "1": 1, "4294967295": 4294967295, "0": 0, "": 0, "-1": 0, "+1": 0, "4294967296": 0, "7a": 0, "007": 7, "00000000077": 0} {
		got, ok := parseChannel(s)
		if got != want || ok != (want != 0) {
			t.Errorf("%q: %d %v, want %d", s, got, ok, want)
		}
	}
}

func TestParseSDPFrag(t *testing.T) {
	frag := "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" +
		"a=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n"
	cands, err := parseSDPFrag(frag)
	if err != nil || len(cands) != 2 {
		t.Fatalf("%+v, %v", cands, err)
	}
	c := cands[0]
	if c.Candidate != "candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host" || *c.SDPMid != "0" || *c.SDPMLineIndex != 0 || *c.UsernameFragment != "abcd" {
		t.Fatalf("candidate %+v", c)
	}
	if cands[1].Candidate != "" {
		t.Fatalf("end of candidates %+v", cands[1])
	}
	if _, err := parseSDPFrag("a=ice-ufrag:abcd\r\n"); err == nil {
		t.Fatal("a fragment without candidates was taken")
	}
	if _, err := parseSDPFrag(strings.Repeat("a=end-of-candidates\n", maxTrickle+1)); err == nil {
		t.Fatal("more than maxTrickle candidates were taken")
	}
}

// obsOffer is an offer as OBS 30's WHIP output (libdatachannel) makes it.
const obsOffer = "v=0\r\no=rtc 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
	"a=msid-semantic:WMS *\r\na=ice-options:ice2,trickle\r\na=fingerprint:sha-256 00:11\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ssrc:1 cname:obs\r\n" +
	"a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n" +
	"a=setup:actpass\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz01\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=ssrc:2 cname:obs\r\n" +
	"a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n" +
	"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n" +
	"a=setup:actpass\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz01\r\n"

func TestCheckOffer(t *testing.T) {
	o, err := checkOffer(obsOffer)
	if err != nil {
		t.Fatal(err)
	}
	if o.videoFeedback[96] != feedbackPLI || o.videoSSRC != 2 || len(o.profiles) != 1 || o.profiles[0] != "42e01f" {
		t.Fatalf("%+v", o)
	}
	fir := strings.Replace(obsOffer, "a=rtcp-fb:96 nack pli", "a=rtcp-fb:96 ccm fir", 1)
	if o, err := checkOffer(fir); err != nil || o.videoFeedback[96] != feedbackFIR {
		t.Fatalf("ccm fir only: %+v, %v", o, err)
	}
	for name, c := range map[string]struct {
		sdp    string
		status int
		says   string
	}{
		"mode 0":         {strings.Replace(obsOffer, "packetization-mode=1", "packetization-mode=0", 1), 406, "no H.264"},
		"vp8":            {strings.Replace(obsOffer, "H264/90000", "VP8/90000", 1), 406, "no H.264"},
		"recvonly":       {strings.Replace(obsOffer, "a=mid:1\r\na=sendonly", "a=mid:1\r\na=recvonly", 1), 406, "no H.264"},
		"no opus":        {strings.Replace(obsOffer, "opus/48000/2", "PCMU/8000", 1), 406, "no Opus"},
		"simulcast":      {strings.Replace(obsOffer, "a=mid:1\r\n", "a=mid:1\r\na=rid:h send\r\na=simulcast:send h\r\n", 1), 406, "simulcast"},
		"no ufrag":       {strings.ReplaceAll(obsOffer, "a=ice-ufrag:abcd\r\n", ""), 400, "ice-ufrag"},
		"no fingerprint": {strings.ReplaceAll(obsOffer, "a=fingerprint:sha-256 00:11\r\n", ""), 400, "fingerprint"},
	} {
		_, err := checkOffer(c.sdp)
		oe, ok := err.(*offerError)
		if !ok || oe.status != c.status || !strings.Contains(oe.msg, c.says) {
			t.Errorf("%s: %v, want %d saying %q", name, err, c.status, c.says)
		}
	}
}
