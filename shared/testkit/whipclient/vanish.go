package whipclient

// Vanish closes the PeerConnection without the DELETE, as an encoder that
// crashes or loses its network mid-stream: the gateway is not told that
// the session ended and learns it only from the connection. Stop Stream
// before (its writes go nowhere after); Close after Vanish still DELETEs.
func (p *Publisher) Vanish() error { return p.closePC() }
