package webrtcapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v3"
)

// certLifetime is how long one DTLS certificate serves new
// PeerConnections. pion's certificates expire a month after they are
// made.
const certLifetime = 24 * time.Hour

// Certificates is the DTLS certificate of an endpoint's PeerConnections.
// One serves every PeerConnection, as a browser uses one for all the
// connections of a page: without it pion makes a P-256 key and a
// self-signed certificate for each PeerConnection, CPU at every join and
// memory for as long as the peer stays. The handshake's keys are
// ephemeral (ECDHE) either way; the certificate only signs them. A new
// one is made for the PeerConnections made once the current one is a day
// old. The zero value is ready to use; its methods are safe for
// concurrent use.
type Certificates struct {
	mu   sync.Mutex
	cert webrtc.Certificate
	made time.Time // zero: none made yet
}

// Get returns the certificate for a PeerConnection made at now, to pass
// in webrtc.Configuration.Certificates.
func (c *Certificates) Get(now time.Time) (webrtc.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.made.IsZero() || now.Sub(c.made) >= certLifetime {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("webrtcapi: dtls key: %w", err)
		}
		cert, err := webrtc.GenerateCertificate(key)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("webrtcapi: dtls certificate: %w", err)
		}
		c.cert, c.made = *cert, now
	}
	return c.cert, nil
}
