package fanout

import (
	"sync/atomic"

	"github.com/pion/webrtc/v3"

	"lightspeed/shared/webrtcapi"
)

// binding is what a viewer's track learned when its PeerConnection bound
// it: where and how to write.
type binding struct {
	ssrc      uint32
	pt        uint8
	playoutID uint8 // header extension id of playout-delay, 0 if not negotiated
	writer    webrtc.TrackLocalWriter
}

// viewerTrack is the webrtc.TrackLocal of one track of one viewer. It does
// not write by itself: the viewer's writer writes through its binding, one
// packet at a time, with the viewer's own SSRC and payload type.
type viewerTrack struct {
	kind  webrtc.RTPCodecType
	id    string
	prefs []webrtc.RTPCodecParameters
	bound atomic.Pointer[binding]
}

func newViewerTrack(kind webrtc.RTPCodecType, prefs []webrtc.RTPCodecParameters) *viewerTrack {
	return &viewerTrack{kind: kind, id: kind.String(), prefs: prefs}
}

// Bind picks the codec to send among the negotiated ones and keeps the
// binding's SSRC, payload type and writer.
func (t *viewerTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codec, ok := webrtcapi.ChooseCodec(t.prefs, ctx.CodecParameters())
	if !ok {
		return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
	}
	b := &binding{ssrc: uint32(ctx.SSRC()), pt: uint8(codec.PayloadType), writer: ctx.WriteStream()}
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == webrtcapi.PlayoutDelayURI && e.ID > 0 && e.ID < 15 {
			b.playoutID = uint8(e.ID)
		}
	}
	t.bound.Store(b)
	return codec, nil
}

// Unbind forgets the binding.
func (t *viewerTrack) Unbind(webrtc.TrackLocalContext) error {
	t.bound.Store(nil)
	return nil
}

// ID is "video" or "audio".
func (t *viewerTrack) ID() string { return t.id }

// RID is empty: there is one encoding.
func (t *viewerTrack) RID() string { return "" }

// StreamID groups the viewer's two tracks into one media stream.
func (t *viewerTrack) StreamID() string { return "lightspeed" }

// Kind is audio or video.
func (t *viewerTrack) Kind() webrtc.RTPCodecType { return t.kind }
