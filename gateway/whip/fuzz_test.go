package whip

import (
	"slices"
	"strings"
	"testing"

	"github.com/pion/sdp/v3"

	"lightspeed/shared/relaywire"
)

// FuzzBearerKey: any Authorization header is read without panicking, and
// a key it returns is one the key store could hold.
func FuzzBearerKey(f *testing.F) {
	for _, s := range []string{"Bearer 77-s3cret", "bearer 1,x", "Basic dXNlcg==", "Bearer ", "Bearer 4294967295-" + strings.Repeat("z", 99)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		k, err := bearerKey(header)
		if err != nil {
			return
		}
		if k.Channel == 0 || k.Secret == "" || strings.ContainsAny(k.Secret, " \t\r\n") {
			t.Fatalf("%q gave key %+v", header, k)
		}
	})
}

// FuzzParseChannel: a channel path segment is all digits and names a
// channel from 1 up.
func FuzzParseChannel(f *testing.F) {
	for _, s := range []string{"77", "0", "4294967296", "-1", "session", "０"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ch, ok := parseChannel(s)
		if ok && (ch == 0 || strings.TrimLeft(s, "0123456789") != "") {
			t.Fatalf("%q gave channel %d", s, ch)
		}
	})
}

// FuzzParseSDPFrag: any trickle body is read without panicking, into at
// most maxTrickle candidates.
func FuzzParseSDPFrag(f *testing.F) {
	f.Add("a=ice-ufrag:abcd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 5000 typ host\r\na=end-of-candidates\r\n")
	f.Add("a=candidate:x\nm=\nm=\na=mid:\na=end-of-candidates")
	f.Fuzz(func(t *testing.T, frag string) {
		cands, err := parseSDPFrag(frag)
		if err == nil && (len(cands) == 0 || len(cands) > maxTrickle) {
			t.Fatalf("%d candidates", len(cands))
		}
	})
}

// FuzzCheckOffer: any offer is read without panicking; a refusal is 400
// or 406 with a message, and an accepted offer has H.264. The offer pion
// gets of an accepted one with simulcast lines has them only in the
// simulcast video, one a=rid line and one a=simulcast:send entry per
// layer, each a valid rid (pion panics on an empty entry).
func FuzzCheckOffer(f *testing.F) {
	f.Add(obsOffer)
	f.Add(strings.Replace(obsOffer, "a=rtcp-fb:96 nack pli", "a=rtcp-fb:96 ccm fir", 1))
	f.Add("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\na=rtpmap:96 H264\r\n")
	f.Add(obsSimulcastOffer)
	f.Add(strings.Replace(obsSimulcastOffer, "a=simulcast:send 0;1;2", "a=simulcast:recv 9 send ~0;1,2,x", 1))
	f.Fuzz(func(t *testing.T, text string) {
		o, err := checkOffer(text)
		if err != nil {
			oe, ok := err.(*offerError)
			if !ok || (oe.status != 400 && oe.status != 406) || oe.msg == "" {
				t.Fatalf("error %#v", err)
			}
			return
		}
		if len(o.videoFeedback) == 0 || len(o.profiles) > 16 {
			t.Fatalf("accepted offer %+v", o)
		}
		var s relaywire.CandidateSet
		if !s.AddSDP(text) {
			t.Fatal("accepted an offer with too many candidate addresses")
		}
		if len(o.layers) > relaywire.MaxLayers || (len(o.layers) > 0 && o.sdp == "") {
			t.Fatalf("accepted layers %q, offer for pion %q", o.layers, o.sdp)
		}
		if o.sdp == "" {
			return
		}
		var d sdp.SessionDescription
		if err := d.UnmarshalString(o.sdp); err != nil {
			t.Fatalf("the offer for pion does not parse: %v", err)
		}
		sections := 0
		for _, m := range d.MediaDescriptions {
			var rids, lists []string
			for _, a := range m.Attributes {
				switch a.Key {
				case "rid":
					rids = append(rids, a.Value)
				case "simulcast":
					lists = append(lists, a.Value)
				}
			}
			if rids == nil && lists == nil {
				continue
			}
			sections++
			want := make([]string, len(o.layers))
			for i, rid := range o.layers {
				if !validRid(rid) {
					t.Fatalf("layer rid %q", rid)
				}
				want[i] = rid + " send"
			}
			if !slices.Equal(rids, want) || !slices.Equal(lists, []string{"send " + strings.Join(o.layers, ";")}) {
				t.Fatalf("for pion: rids %q, simulcast %q; layers %q", rids, lists, o.layers)
			}
		}
		if sections != min(len(o.layers), 1) {
			t.Fatalf("simulcast lines in %d sections for layers %q", sections, o.layers)
		}
	})
}
