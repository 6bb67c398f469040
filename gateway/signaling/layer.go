package signaling

import (
	"encoding/json"
	"fmt"
	"net/url"
)

// maxLayer is the longest rid a viewer may pin. RFC 8851 leaves a rid's
// length open; publishers name their layers with a character or two
// ("0", "1", "2"; "h", "m", "l"), and 16 bounds what a viewer can make the
// gateway carry to a function.
const maxLayer = 16

// checkLayer returns why layer cannot name a video layer, or "". A layer
// is the RTP stream id (rid) of one of a simulcast publisher's video
// encodings: 1 to maxLayer characters of A-Z, a-z, 0-9, "-" and "_"
// (RFC 8851's rid-id, alphanumeric plus "-" and "_"). The empty string is
// no pin (the highest layer) and is not checked here.
func checkLayer(layer string) string {
	if len(layer) > maxLayer {
		return fmt.Sprintf("layer %.20q… is too long: a layer is a rid of 1 to %d characters", layer, maxLayer)
	}
	for i := 0; i < len(layer); i++ {
		c := layer[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Sprintf("layer %q is not a rid: a layer is 1 to %d characters of A-Z, a-z, 0-9, - and _", layer, maxLayer)
		}
	}
	return ""
}

// queryLayer reads the "layer" parameter of a query: "" when it is absent
// or empty (the highest layer), or why it is not a layer.
func queryLayer(q url.Values) (layer, why string) {
	vs := q["layer"]
	switch len(vs) {
	case 0:
		return "", ""
	case 1:
	default:
		return "", fmt.Sprintf("%d layer parameters: give one", len(vs))
	}
	if why := checkLayer(vs[0]); why != "" {
		return "", why
	}
	return vs[0], ""
}

// messageLayer reads the data of a websocket "layer" message: a JSON
// string, the rid of the layer to pin or "" for the highest. why says
// what is wrong with anything else.
func messageLayer(data json.RawMessage) (layer, why string) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return "", `the layer message's data is not JSON: send {"event":"layer","data":"<rid>"}, or "" for the highest layer`
	}
	layer, ok := v.(string)
	if !ok {
		return "", `the layer message's data is not a string: send {"event":"layer","data":"<rid>"}, or "" for the highest layer`
	}
	return layer, checkLayer(layer)
}

// wsError is the data of a websocket "error" message: the event of the
// page's message that was refused and why. The refused message changed
// nothing; the socket and its session go on.
type wsError struct {
	Event   string `json:"event"`
	Message string `json:"message"`
}
