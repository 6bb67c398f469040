package whip

import (
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
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

// obsSimulcastOffer is an offer as OBS 32.1's WHIP output makes it with
// three simulcast layers: the video's extensions for mid and rid, one
// a=ssrc (of the first layer) with the stream's msid, and the layers.
const obsSimulcastOffer = "v=0\r\no=rtc 1 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
	"a=msid-semantic:WMS *\r\na=ice-options:ice2,trickle\r\na=fingerprint:sha-256 00:11\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ssrc:1 cname:obs\r\n" +
	"a=ssrc:1 msid:stream stream-audio\r\na=msid:stream stream-audio\r\n" +
	"a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1\r\n" +
	"a=setup:actpass\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz01\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n" +
	"a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n" +
	"a=ssrc:2 cname:obs\r\na=ssrc:2 msid:stream stream-video\r\na=msid:stream stream-video\r\n" +
	"a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;2\r\n" +
	"a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 goog-remb\r\n" +
	"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1\r\n" +
	"a=setup:actpass\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz01\r\n"

// simulcastLines returns the a=rid and a=simulcast lines of each media
// section of an offer as pion is to get it, joined by " | ".
func simulcastLines(t *testing.T, o *offer) []string {
	t.Helper()
	var d sdp.SessionDescription
	if err := d.UnmarshalString(o.sdp); err != nil {
		t.Fatalf("the offer for pion: %v\n%s", err, o.sdp)
	}
	var out []string
	for _, m := range d.MediaDescriptions {
		var lines []string
		for _, a := range m.Attributes {
			if a.Key == "rid" || a.Key == "simulcast" || a.Key == "msid" {
				lines = append(lines, a.String())
			}
		}
		out = append(out, strings.Join(lines, " | "))
	}
	return out
}

func TestCheckSimulcastOffer(t *testing.T) {
	video := func(lines string) string {
		return strings.Replace(obsSimulcastOffer, "a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;2\r\n", lines, 1)
	}
	for name, c := range map[string]struct {
		sdp    string
		layers []string
		video  string // the video's a=rid, a=simulcast and a=msid lines for pion
	}{
		"obs": {obsSimulcastOffer, []string{"0", "1", "2"},
			"msid:stream stream-video | rid:0 send | rid:1 send | rid:2 send | simulcast:send 0;1;2"},
		"the simulcast list's order": {video("a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send f;h;q\r\n"), []string{"f", "h", "q"},
			"msid:stream stream-video | rid:f send | rid:h send | rid:q send | simulcast:send f;h;q"},
		"paused and alternatives": {video("a=rid:a send\r\na=rid:b send pt=96;max-width=640\r\na=rid:x send\r\na=rid:c send\r\na=simulcast:send ~a;b,x;c\r\n"), []string{"a", "b", "c"},
			"msid:stream stream-video | rid:a send | rid:b send | rid:c send | simulcast:send a;b;c"},
		"a recv list": {video("a=rid:r recv\r\na=rid:0 send\r\na=rid:1 send\r\na=simulcast:recv r send 0;1\r\n"), []string{"0", "1"},
			"msid:stream stream-video | rid:0 send | rid:1 send | simulcast:send 0;1"},
		"one layer": {video("a=rid:top send\r\na=simulcast:send top\r\n"), []string{"top"},
			"msid:stream stream-video | rid:top send | simulcast:send top"},
		"four layers": {video("a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=rid:3 send\r\na=simulcast:send 0;1;2;3\r\n"), []string{"0", "1", "2", "3"},
			"msid:stream stream-video | rid:0 send | rid:1 send | rid:2 send | rid:3 send | simulcast:send 0;1;2;3"},
		"no msid": {strings.ReplaceAll(strings.ReplaceAll(obsSimulcastOffer, "a=ssrc:2 msid:stream stream-video\r\n", ""), "a=msid:stream stream-video\r\n", ""), []string{"0", "1", "2"},
			"rid:0 send | rid:1 send | rid:2 send | simulcast:send 0;1;2 | msid:lightspeed video"},
	} {
		o, err := checkOffer(c.sdp)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(o.layers, c.layers) || o.videoFeedback[96] != feedbackPLI {
			t.Errorf("%s: layers %q, feedback %v; want %q", name, o.layers, o.videoFeedback, c.layers)
		}
		if got := simulcastLines(t, o); len(got) != 2 || got[0] != "msid:stream stream-audio" || got[1] != c.video {
			t.Errorf("%s: for pion the sections have\n%q, want\n%q", name, got, []string{"msid:stream stream-audio", c.video})
		}
	}

	// An offer without simulcast goes to pion as it came; one with
	// simulcast lines only where the gateway takes nothing goes without
	// them (pion panics on an empty entry of an a=simulcast list).
	if o, err := checkOffer(obsOffer); err != nil || o.sdp != "" || o.layers != nil {
		t.Fatalf("plain offer: %+v, %v", o, err)
	}
	stray := obsOffer + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=rtpmap:96 H264/90000\r\na=rid:x send\r\na=simulcast:send ;x\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\na=rtpmap:96 H264/90000\r\na=simulcast:send ~\r\n"
	o, err := checkOffer(stray)
	if err != nil || o.layers != nil {
		t.Fatalf("simulcast in sections not taken: %+v, %v", o, err)
	}
	if got := simulcastLines(t, o); !slices.Equal(got, []string{"", "", "", ""}) {
		t.Fatalf("simulcast in sections not taken: for pion %q", got)
	}

	for name, c := range map[string]struct {
		sdp    string
		status int
		says   string
	}{
		"five layers":         {video("a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=rid:3 send\r\na=rid:4 send\r\na=simulcast:send 0;1;2;3;4\r\n"), 406, "the offer has 5 simulcast layers: the gateway takes at most 4"},
		"a bad rid line":      {video("a=rid:0 send\r\na=rid:h.264 send\r\na=simulcast:send 0\r\n"), 400, `rid "h.264"`},
		"a long rid":          {video("a=rid:abcdefghijklmnopq send\r\na=simulcast:send abcdefghijklmnopq\r\n"), 400, "1 to 16 letters"},
		"a bad listed rid":    {video("a=rid:0 send\r\na=simulcast:send 0;1,é\r\n"), 400, "a=simulcast names rid"},
		"an empty entry":      {video("a=rid:0 send\r\na=rid:1 send\r\na=simulcast:send 0;;1\r\n"), 400, `rid ""`},
		"a pause alone":       {video("a=rid:0 send\r\na=simulcast:send ~\r\n"), 400, `rid ""`},
		"no direction":        {video("a=rid:0\r\na=simulcast:send 0\r\n"), 400, "no direction"},
		"two rid lines":       {video("a=rid:0 send\r\na=rid:0 send\r\na=simulcast:send 0\r\n"), 400, "two a=rid:0 send lines"},
		"no a=simulcast":      {video("a=rid:0 send\r\na=rid:1 send\r\n"), 400, "no a=simulcast line"},
		"two a=simulcast":     {video("a=rid:0 send\r\na=simulcast:send 0\r\na=simulcast:send 0\r\n"), 400, "more than one a=simulcast"},
		"no send list":        {video("a=rid:0 recv\r\na=simulcast:recv 0\r\n"), 400, "no send list"},
		"old syntax":          {video("a=rid:0 send\r\na=simulcast: send rid=0\r\n"), 400, `rid "rid=0"`},
		"malformed":           {video("a=rid:0 send\r\na=simulcast:send\r\n"), 400, "malformed a=simulcast"},
		"two send lists":      {video("a=rid:0 send\r\na=simulcast:send 0 send 0\r\n"), 400, "malformed a=simulcast"},
		"no a=rid line":       {video("a=rid:0 send\r\na=simulcast:send 0;1\r\n"), 400, "names rid 1, which has no a=rid:1 send line"},
		"a recv rid sent":     {video("a=rid:0 send\r\na=rid:1 recv\r\na=simulcast:send 0;1\r\n"), 400, "no a=rid:1 send line"},
		"a layer twice":       {video("a=rid:0 send\r\na=simulcast:send 0;~0\r\n"), 400, "names rid 0 twice"},
		"simulcast audio":     {strings.Replace(obsSimulcastOffer, "a=mid:0\r\n", "a=mid:0\r\na=rid:a send\r\na=simulcast:send a\r\n", 1), 406, "simulcast audio"},
		"simulcast VP8":       {strings.Replace(obsSimulcastOffer, "H264/90000", "VP8/90000", 1), 406, "the simulcast video has no H.264"},
		"two simulcast video": {obsSimulcastOffer + obsSimulcastOffer[strings.Index(obsSimulcastOffer, "m=video"):], 406, "simulcast on more than one video"},
	} {
		_, err := checkOffer(c.sdp)
		oe, ok := err.(*offerError)
		if !ok || oe.status != c.status || !strings.Contains(oe.msg, c.says) {
			t.Errorf("%s: %v, want %d saying %q", name, err, c.status, c.says)
		}
	}
}
