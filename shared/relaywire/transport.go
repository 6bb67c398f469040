package relaywire

import (
	"crypto/tls"
	"time"

	"github.com/quic-go/quic-go"
)

// Timings both ends of the relay keep (docs/relay.md).
const (
	// KeepAlivePeriod is how often an end sends a QUIC keep-alive when it
	// has nothing else to send.
	KeepAlivePeriod = 5 * time.Second
	// IdleTimeout is how long a connection may go without a packet from
	// the peer before it counts as lost: three keep-alive periods.
	IdleTimeout = 15 * time.Second
	// AuthTimeout bounds the QUIC handshake and, after it, the whole of
	// hello, challenge, auth and welcome; past it the connection is closed.
	AuthTimeout = 5 * time.Second
	// WriteTimeout is how long an end waits for the peer to take one write:
	// a control message, or the gateway's packet on a fallback stream. A
	// peer that does not read its control stream for that long is
	// disconnected.
	WriteTimeout = 5 * time.Second
	// StreamTimeout is how long the function reads one packet sent on a
	// fallback stream (a datagram QUIC could not carry) before dropping it.
	StreamTimeout = 2 * time.Second
)

// QUICConfig returns the QUIC settings both ends use: datagrams on, the
// keep-alive and idle timeouts above, and the handshake bounded by
// AuthTimeout. Each end adds the limits of the streams it accepts: the
// gateway one bidirectional control stream opened by the function, the
// function the gateway's unidirectional fallback streams.
func QUICConfig() *quic.Config {
	return &quic.Config{
		EnableDatagrams:      true,
		KeepAlivePeriod:      KeepAlivePeriod,
		MaxIdleTimeout:       IdleTimeout,
		HandshakeIdleTimeout: AuthTimeout,
	}
}

// TLSConfig returns the TLS settings both ends start from: the relay's
// ALPN and TLS 1.3. The gateway adds its certificate, the function how it
// verifies the gateway's.
func TLSConfig() *tls.Config {
	return &tls.Config{NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
}
