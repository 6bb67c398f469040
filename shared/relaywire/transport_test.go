package relaywire

import (
	"crypto/tls"
	"testing"
)

func TestQUICConfigIsANewValueEachEndMayChange(t *testing.T) {
	a := QUICConfig()
	a.MaxIncomingStreams = 1
	a.KeepAlivePeriod = 0
	b := QUICConfig()
	if b.MaxIncomingStreams != 0 || b.KeepAlivePeriod != KeepAlivePeriod {
		t.Fatalf("QUICConfig shares its value: got %+v after changing another", b)
	}
	if !b.EnableDatagrams || b.MaxIdleTimeout != IdleTimeout || b.HandshakeIdleTimeout != AuthTimeout {
		t.Fatalf("QUICConfig = %+v; want datagrams on, idle %v, handshake %v", b, IdleTimeout, AuthTimeout)
	}
}

func TestIdleTimeoutOutlastsKeepAlives(t *testing.T) {
	// A connection whose keep-alives arrive must never count as idle, even
	// when one of them is lost.
	if IdleTimeout < 2*KeepAlivePeriod {
		t.Fatalf("IdleTimeout %v is less than two keep-alive periods (%v)", IdleTimeout, KeepAlivePeriod)
	}
}

func TestTLSConfigSpeaksTheRelayALPNOverTLS13(t *testing.T) {
	a := TLSConfig()
	a.NextProtos[0] = "other"
	b := TLSConfig()
	if len(b.NextProtos) != 1 || b.NextProtos[0] != ALPN || b.MinVersion != tls.VersionTLS13 {
		t.Fatalf("TLSConfig = protos %q, min version %#x; want [%q], TLS 1.3", b.NextProtos, b.MinVersion, ALPN)
	}
}
