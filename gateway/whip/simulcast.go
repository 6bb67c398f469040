package whip

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"

	"lightspeed/shared/relaywire"
)

// Simulcast (RFC 8853, RFC 8851): a publisher such as OBS 32.1 and later
// offers its video as up to four layers, each an RTP stream named by a
// rid ("a=rid:<rid> send" lines and "a=simulcast:send <rid>;<rid>;…"), and
// tells them apart in its packets with the sdes:mid and
// sdes:rtp-stream-id header extensions. The gateway takes every layer it
// is offered (OBS gives up on an answer that takes fewer): pion answers
// "a=rid:<rid> recv" for each and "a=simulcast:recv" with all of them,
// and fires OnTrack once per rid, which the session writes into the hub
// as the layer's track (relaywire.LayerTrack).
//
// What reaches pion is the offer with its simulcast reduced to what the
// gateway takes (simulcastOffer): one layer per entry of the send list,
// the first of its alternatives ("a,b" takes a), none paused ("~a" takes
// a). pion would take every a=rid line as a layer, whatever the
// a=simulcast line says, and would panic on an empty entry in one.

// maxRidLen bounds a rid: RFC 8852's RtpStreamId may be longer, but WebRTC
// senders (and OBS) use a few characters.
const maxRidLen = 16

// validRid reports whether s is a rid the gateway takes: 1 to 16 letters,
// digits, '-' or '_' (RFC 8851's rid-id, bounded).
func validRid(s string) bool {
	if s == "" || len(s) > maxRidLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// hasSimulcast reports whether a media section has a=rid or a=simulcast
// lines.
func hasSimulcast(m *sdp.MediaDescription) bool {
	return hasAttr(m.Attributes, "simulcast") || hasAttr(m.Attributes, "rid")
}

// badRid is the refusal of a malformed rid.
func badRid(where, rid string) error {
	return &offerError{400, fmt.Sprintf("%s names rid %q: a rid is 1 to %d letters, digits, '-' or '_'", where, truncate(rid, 32), maxRidLen)}
}

// readSimulcast reads the layers of a simulcast video section: the rids of
// its a=simulcast:send list, in order, the first alternative of each
// entry, with no pause mark. It refuses (400) a malformed rid in an a=rid
// line or the a=simulcast line, an a=rid line without the direction send
// or recv, two a=rid send lines of one rid, no a=simulcast line or more
// than one, an a=simulcast line without a send list or with a malformed
// one, a layer without its a=rid send line, and a rid that is two layers;
// and (406) more than relaywire.MaxLayers layers.
func readSimulcast(m *sdp.MediaDescription) ([]string, error) {
	var lists []string
	sendRids := make(map[string]bool)
	for _, a := range m.Attributes {
		switch a.Key {
		case "simulcast":
			lists = append(lists, a.Value)
		case "rid":
			f := strings.Fields(a.Value)
			if len(f) == 0 || !validRid(f[0]) {
				id, _, _ := strings.Cut(a.Value, " ")
				return nil, badRid("an a=rid line", id)
			}
			switch {
			case len(f) < 2 || f[1] != "send" && f[1] != "recv":
				return nil, &offerError{400, fmt.Sprintf("a=rid:%s has no direction (send or recv)", f[0])}
			case f[1] == "recv":
			case sendRids[f[0]]:
				return nil, &offerError{400, fmt.Sprintf("the offer has two a=rid:%s send lines", f[0])}
			default:
				sendRids[f[0]] = true
			}
		}
	}
	switch len(lists) {
	case 0:
		return nil, &offerError{400, "the video has a=rid lines but no a=simulcast line"}
	case 1:
	default:
		return nil, &offerError{400, "the video has more than one a=simulcast line"}
	}
	layers, err := simulcastSend(lists[0])
	if err != nil {
		return nil, err
	}
	for i, rid := range layers {
		if !sendRids[rid] {
			return nil, &offerError{400, fmt.Sprintf("a=simulcast names rid %s, which has no a=rid:%s send line", rid, rid)}
		}
		if slices.Contains(layers[:i], rid) {
			return nil, &offerError{400, fmt.Sprintf("a=simulcast names rid %s twice", rid)}
		}
	}
	if len(layers) > relaywire.MaxLayers {
		return nil, &offerError{406, fmt.Sprintf("the offer has %d simulcast layers: the gateway takes at most %d", len(layers), relaywire.MaxLayers)}
	}
	return layers, nil
}

// simulcastSend reads the send list of an a=simulcast value ("send 0;1;2",
// "send h;~m;l,x recv r"): the first alternative of each entry, pause
// marks dropped.
func simulcastSend(v string) ([]string, error) {
	malformed := &offerError{400, fmt.Sprintf("malformed a=simulcast:%s: want \"send <rid>;<rid>;…\"", truncate(v, 64))}
	f := strings.Fields(v)
	if len(f) != 2 && len(f) != 4 {
		return nil, malformed
	}
	send := ""
	for i := 0; i < len(f); i += 2 {
		switch {
		case f[i] == "send" && send == "":
			send = f[i+1]
		case f[i] == "recv" && (i == 0 || f[0] != "recv"):
		default:
			return nil, malformed
		}
	}
	if send == "" {
		return nil, &offerError{400, "a=simulcast has no send list: a publisher sends its layers"}
	}
	entries := strings.Split(send, ";")
	layers := make([]string, 0, len(entries))
	for _, entry := range entries {
		alts := strings.Split(entry, ",")
		for _, id := range alts {
			if id = strings.TrimPrefix(id, "~"); !validRid(id) {
				return nil, badRid("a=simulcast", id)
			}
		}
		layers = append(layers, strings.TrimPrefix(alts[0], "~"))
	}
	return layers, nil
}

// simulcastOffer returns the offer d as pion is to get it: every a=rid and
// a=simulcast line out, and the simulcast video (media section at, if not
// -1) given one "a=rid:<rid> send" line per layer and
// "a=simulcast:send <layers>", and an a=msid line if it has none (pion
// makes simulcast tracks only of a section that names its stream and
// track). Lines of sections the gateway does not take (not sending, a
// second video) would reach pion's parser all the same.
func simulcastOffer(d *sdp.SessionDescription, at int, layers []string) (string, error) {
	for i, m := range d.MediaDescriptions {
		attrs := make([]sdp.Attribute, 0, len(m.Attributes)+len(layers)+2)
		for _, a := range m.Attributes {
			if a.Key != "rid" && a.Key != "simulcast" {
				attrs = append(attrs, a)
			}
		}
		if i == at {
			for _, rid := range layers {
				attrs = append(attrs, sdp.NewAttribute("rid", rid+" send"))
			}
			attrs = append(attrs, sdp.NewAttribute("simulcast", "send "+strings.Join(layers, ";")))
			if !namesTrack(m) {
				attrs = append(attrs, sdp.NewAttribute("msid", "lightspeed video"))
			}
		}
		m.Attributes = attrs
	}
	b, err := d.Marshal()
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// namesTrack reports whether pion finds the stream and track id of a media
// section, as it reads them: from the last a=msid line of two words, or
// a=ssrc line (of a valid SSRC) with "msid:<stream> <track>".
func namesTrack(m *sdp.MediaDescription) bool {
	stream, track := "", ""
	for _, a := range m.Attributes {
		switch a.Key {
		case "msid":
			if f := strings.Split(a.Value, " "); len(f) == 2 {
				stream, track = f[0], f[1]
			}
		case "ssrc":
			f := strings.Split(a.Value, " ")
			if _, err := strconv.ParseUint(f[0], 10, 32); err == nil && len(f) == 3 && strings.HasPrefix(f[1], "msid:") {
				stream, track = f[1][len("msid:"):], f[2]
			}
		}
	}
	return stream != "" && track != ""
}
