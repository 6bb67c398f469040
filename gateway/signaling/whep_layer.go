package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/pion/sdp/v3"

	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/relay"
)

// The WHEP layer extension (draft-ietf-wish-whep's "Video Layer
// Selection"): the 201 of a WHEP POST links to a URL of the session,
// {session}/layer, with rel=layerRel. A POST of
// {"encodingId":"<rid>"} (application/json) there switches the running
// session to that simulcast layer through relay.SetLayer, in the same
// PeerConnection, at the layer's next keyframe; an absent, null or empty
// encodingId is the highest layer (the draft's "automatic selection"). It
// is answered 204.
//
// The draft's other fields (spatialLayerId, temporalLayerId,
// maxSpatialLayerId, maxTemporalLayerId: for scalable codecs, which
// publishers here do not send) are accepted and ignored, as are fields
// the draft does not name. mediaId, when given, must name the session's
// video: by its m-line index (the draft's "0") or its a=mid; naming
// another media (the audio) or none is a 400.
//
// The layer URL is authorized as the session's other URLs (PATCH,
// DELETE): by the session id in it, which only the viewer was given; no
// viewer token is asked for. It counts against the per-IP request rate of
// WHEP POSTs and websocket opens.
const (
	layerRel     = "urn:ietf:params:whep:ext:core:layer"
	maxLayerBody = 1 << 10 // a layer request is a few dozen bytes
)

// layerLink is the Link header value of the layer URL of the session at
// location.
func layerLink(location string) string {
	return "<" + location + "/layer>; rel=\"" + layerRel + "\""
}

// whepLayer serves POST {session}/layer.
func (s *Signaling) whepLayer(w http.ResponseWriter, r *http.Request) {
	cors(w)
	if !s.admit(w, r, "whep", s.clientIP(r)) {
		return
	}
	sess := s.sessionOf(w, r)
	if sess == nil {
		return
	}
	body, ok := ratelimit.ReadBody(w, r, "application/json", maxLayerBody, s.refusedWHEP)
	if !ok {
		return
	}
	layer, why := parseLayerRequest(body, sess.SDP)
	if why != "" {
		s.log.Debug("signaling: bad layer request", "session", sess.ID, "why", why)
		httpError(w, http.StatusBadRequest, "%s", why)
		return
	}
	if err := s.cfg.Relay.SetLayer(sess.ID, layer); err != nil {
		s.log.Info("signaling: layer not set", "session", sess.ID, "layer", layer, "err", err)
		if errors.Is(err, relay.ErrNoSession) || errors.Is(err, relay.ErrFunctionGone) {
			httpError(w, http.StatusNotFound, "the session has ended")
			return
		}
		httpError(w, http.StatusBadGateway, "the media server did not take the layer: %v", err)
		return
	}
	s.log.Debug("signaling: viewer layer set", "session", sess.ID, "layer", layer)
	w.WriteHeader(http.StatusNoContent)
}

// layerUsage is how to ask for a layer, for the reasons of a 400.
const layerUsage = `send {"encodingId":"<rid>"}, or {} for the highest layer`

// parseLayerRequest reads the body of a layer request for the session
// whose SDP answer is answer: the rid to switch to ("" for the highest),
// or why the request cannot be taken.
func parseLayerRequest(body, answer string) (layer, why string) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &fields); err != nil || fields == nil {
		return "", "the body is not a JSON object: " + layerUsage
	}
	layer, ok := jsonString(fields["encodingId"])
	if !ok {
		return "", "encodingId is not a string: " + layerUsage
	}
	if why := checkLayer(layer); why != "" {
		return "", "encodingId: " + why
	}
	if raw, present := fields["mediaId"]; present {
		mid, ok := jsonString(raw)
		if !ok {
			return "", `mediaId is not a string: give the video's m-line index ("0") or mid, or leave it out`
		}
		if why := checkVideoMedia(mid, answer); why != "" {
			return "", why
		}
	}
	return layer, ""
}

// jsonString reads raw as a JSON string: "" and true for an absent value
// or null, false for anything but a string.
func jsonString(raw json.RawMessage) (string, bool) {
	if raw == nil || string(raw) == "null" {
		return "", true
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	return v, true
}

// checkVideoMedia returns why mediaId, a layer request's, does not name a
// video m-line of answer (by its index or its mid), or "". An empty
// mediaId is none given.
func checkVideoMedia(mediaID, answer string) string {
	if mediaID == "" {
		return ""
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(answer); err != nil {
		return "" // the function's answer, taken by the viewer: nothing to check against
	}
	other := ""
	for i, m := range d.MediaDescriptions {
		mid, _ := m.Attribute("mid")
		if mediaID != strconv.Itoa(i) && mediaID != mid {
			continue
		}
		if m.MediaName.Media == "video" {
			return ""
		}
		other = m.MediaName.Media
	}
	if other != "" {
		return fmt.Sprintf("mediaId %.20q is the %s: layers are the video's", mediaID, other)
	}
	return fmt.Sprintf("mediaId %.20q names no media of this session: give the video's m-line index or mid, or leave it out", mediaID)
}
