package fanout

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v3"
)

// certLifetime is how long one DTLS certificate serves new sessions.
// pion's certificates expire a month after they are made.
const certLifetime = 24 * time.Hour

// certSource is the DTLS certificate of a fan-out's PeerConnections. One
// serves every viewer, as a browser uses one for all the connections of a
// page: without it pion makes a P-256 key and a self-signed certificate
// for each PeerConnection, CPU at every join and memory for as long as the
// viewer watches. The handshake's keys are ephemeral (ECDHE) either way;
// the certificate only signs them. A new one is made for the sessions
// that start once the current one is certLifetime old.
type certSource struct {
	mu   sync.Mutex
	cert webrtc.Certificate
	made time.Time // zero: none made yet
}

// get returns the certificate for a session starting at now.
func (c *certSource) get(now time.Time) (webrtc.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.made.IsZero() || now.Sub(c.made) >= certLifetime {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("dtls key: %w", err)
		}
		cert, err := webrtc.GenerateCertificate(key)
		if err != nil {
			return webrtc.Certificate{}, fmt.Errorf("dtls certificate: %w", err)
		}
		c.cert, c.made = *cert, now
	}
	return c.cert, nil
}
