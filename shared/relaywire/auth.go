package relaywire

import (
	"crypto/hmac"
	"crypto/sha256"
)

// Authentication constants (docs/relay.md, "TLS and authentication").
const (
	// ExporterLabel is the TLS exporter label whose output binds the
	// function's proof to one connection.
	ExporterLabel = "EXPORTER-lightspeed-relay"
	// ExporterLength is the length of the exported keying material.
	ExporterLength = 32
	// NonceSize is the length of the gateway's challenge nonce.
	NonceSize = 32
	// authPrefix starts the authenticated message.
	authPrefix = "lightspeed-relay/1 auth"
)

// QUIC application error codes the relay closes connections with.
const (
	CodeNone         = 0x0   // normal close: shutdown, function leaving
	CodeUnauthorized = 0x101 // authentication failed or timed out
	CodeProtocol     = 0x102 // a message broke the protocol
	CodeReplaced     = 0x103 // a newer connection of the same machine took over
)

// AuthMAC returns HMAC-SHA256(secret, "lightspeed-relay/1 auth" ||
// exporter || nonce), the proof a function sends in Auth (hex encoded).
func AuthMAC(secret string, exporter, nonce []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(authPrefix))
	m.Write(exporter)
	m.Write(nonce)
	return m.Sum(nil)
}
