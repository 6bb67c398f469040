package signaling

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/pion/sdp/v3"

	"lightspeed/gateway/ratelimit"
	"lightspeed/gateway/scheduler"
	"lightspeed/shared/relaywire"
)

const maxSDP = 64 << 10 // largest offer or trickle fragment accepted

// Handler returns the signaling routes: WHEP under /api/whep/ (with the
// layer extension, see whepLayer) and the Lightspeed websocket at
// /websocket.
func (s *Signaling) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/whep/{channel}", s.whepPost)
	mux.HandleFunc("PATCH /api/whep/{channel}/{session}", s.whepPatch)
	mux.HandleFunc("DELETE /api/whep/{channel}/{session}", s.whepDelete)
	mux.HandleFunc("POST /api/whep/{channel}/{session}/layer", s.whepLayer)
	mux.HandleFunc("OPTIONS /api/whep/", s.whepOptions)
	mux.HandleFunc("OPTIONS /api/whep/{channel}/{session}/layer", s.whepOptions)
	mux.HandleFunc("GET /websocket", s.serveWebsocket)
	return mux
}

// cors lets WHEP players on other origins talk to us.
func cors(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, Link, ETag, Retry-After, Lightspeed-Served-By, WWW-Authenticate")
}

func (s *Signaling) whepOptions(w http.ResponseWriter, r *http.Request) {
	cors(w)
	if r.PathValue("session") != "" { // only the layer URL's route names it
		w.Header().Set("Accept-Post", "application/json")
	} else {
		w.Header().Set("Accept-Post", "application/sdp")
	}
	w.WriteHeader(http.StatusNoContent)
}

// httpError writes a plain-text error a person can read.
var httpError = ratelimit.WriteError

func parseChannel(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil && n > 0
}

// readBody reads a request body of the wanted media type, at most maxSDP
// (ratelimit.ReadBody).
func readBody(w http.ResponseWriter, r *http.Request, want string, refused *ratelimit.Refusals) (string, bool) {
	return ratelimit.ReadBody(w, r, want, maxSDP, refused)
}

// checkOffer returns why offer is not a usable WebRTC offer, or "".
func checkOffer(offer string) string {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(offer); err != nil {
		return "malformed SDP: " + err.Error()
	}
	var remote relaywire.CandidateSet
	if !remote.AddSDP(offer) {
		return fmt.Sprintf("the offer's ICE candidates name more than %d addresses", relaywire.MaxCandidates)
	}
	media := 0
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media == "audio" || m.MediaName.Media == "video" {
			media++
		}
	}
	if media == 0 {
		return "the offer has no audio or video section"
	}
	if _, ok := d.Attribute("ice-ufrag"); !ok {
		if len(d.MediaDescriptions) == 0 || !hasAttr(d.MediaDescriptions[0].Attributes, "ice-ufrag") {
			return "the offer has no ICE credentials (a=ice-ufrag)"
		}
	}
	if _, ok := d.Attribute("fingerprint"); !ok {
		if len(d.MediaDescriptions) == 0 || !hasAttr(d.MediaDescriptions[0].Attributes, "fingerprint") {
			return "the offer has no DTLS fingerprint (a=fingerprint)"
		}
	}
	return ""
}

func hasAttr(attrs []sdp.Attribute, key string) bool {
	for _, a := range attrs {
		if a.Key == key {
			return true
		}
	}
	return false
}

func (s *Signaling) whepPost(w http.ResponseWriter, r *http.Request) {
	cors(w)
	ip := s.clientIP(r)
	if !s.admit(w, r, "whep", ip) {
		return
	}
	channel, ok := parseChannel(r.PathValue("channel"))
	if !ok || !s.known(channel) {
		s.sessionErrors.WithLabelValues("unknown_channel").Inc()
		httpError(w, http.StatusNotFound, "unknown channel %q", r.PathValue("channel"))
		return
	}
	// ?layer=<rid> pins the viewer to a layer of a simulcast publisher. A
	// rid the channel does not have is no error: the function falls back
	// to the highest layer.
	layer, why := queryLayer(r.URL.Query())
	if why != "" {
		s.sessionErrors.WithLabelValues("bad_layer").Inc()
		httpError(w, http.StatusBadRequest, "%s", why)
		return
	}
	if !s.authorize(w, r, "whep", channel, bearer(r)) {
		return
	}
	if !s.live(channel) {
		s.sessionErrors.WithLabelValues("not_live").Inc()
		httpError(w, http.StatusNotFound, "channel %d is not live", channel)
		return
	}
	offer, ok := readBody(w, r, "application/sdp", s.refusedWHEP)
	if !ok {
		return
	}
	if why := checkOffer(offer); why != "" {
		s.sessionErrors.WithLabelValues("bad_offer").Inc()
		httpError(w, http.StatusBadRequest, "%s", why)
		return
	}
	release := s.takeSlot(w, "whep", ip, channel)
	if release == nil {
		return
	}
	sess, err := s.start(r.Context(), "whep", scheduler.RegionFromRequest(r), channel, offer, layer, release)
	if err != nil {
		release()
	}
	if errors.Is(err, errNoCapacity) {
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "no server can take another viewer now; try again shortly")
		return
	}
	if err != nil {
		s.log.Warn("signaling: whep session failed", "channel", channel, "err", err)
		httpError(w, http.StatusBadGateway, "the media server refused the session: %v", err)
		return
	}
	location := fmt.Sprintf("/api/whep/%d/%s", channel, sess.ID)
	w.Header().Set("Location", location)
	w.Header().Add("Link", layerLink(location)) // added to any Link already set
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("ETag", `"`+sess.ID+`"`)
	w.Header().Set("Lightspeed-Served-By", sess.servedBy) // the function's region and id: the page's stats show them
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, sess.SDP)
}

// sessionOf finds the session of a WHEP resource URL.
func (s *Signaling) sessionOf(w http.ResponseWriter, r *http.Request) *session {
	channel, _ := parseChannel(r.PathValue("channel"))
	sess := s.lookup(r.PathValue("session"))
	if sess == nil || sess.Channel != channel || sess.kind != "whep" {
		httpError(w, http.StatusNotFound, "no such session")
		return nil
	}
	return sess
}

func (s *Signaling) whepDelete(w http.ResponseWriter, r *http.Request) {
	cors(w)
	sess := s.sessionOf(w, r)
	if sess == nil {
		return
	}
	s.cfg.Relay.CloseSession(sess.ID, "viewer left")
	w.WriteHeader(http.StatusOK)
}

// whepPatch takes trickled ICE candidates (RFC 8840 SDP fragment).
func (s *Signaling) whepPatch(w http.ResponseWriter, r *http.Request) {
	cors(w)
	sess := s.sessionOf(w, r)
	if sess == nil {
		return
	}
	frag, ok := readBody(w, r, "application/trickle-ice-sdpfrag", s.refusedWHEP)
	if !ok {
		return
	}
	cands, err := parseSDPFrag(frag)
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if !sess.addTrickled(cands...) {
		httpError(w, http.StatusBadRequest, "too many ICE candidates in this session: they may name %d addresses and be trickled %d times", relaywire.MaxCandidates, relaywire.MaxTrickle)
		return
	}
	for _, c := range cands {
		if err := s.cfg.Relay.AddCandidate(sess.ID, c); err != nil {
			httpError(w, http.StatusNotFound, "session ended: %v", err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// parseSDPFrag reads the candidates of a trickle-ice-sdpfrag body.
var parseSDPFrag = relaywire.ParseSDPFrag
