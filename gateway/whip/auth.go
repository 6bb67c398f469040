package whip

import (
	"crypto/subtle"
	"net/http"
	"net/netip"

	"lightspeed/gateway/ratelimit"
)

// keyMatches reports, in constant time, whether secret is the stored
// secret of the key's channel.
func keyMatches(stored, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(stored), []byte(secret)) == 1
}

// clientAddr returns the publisher's IP (ratelimit.ClientIP: the
// configured client-IP header of a trusted proxy, such as Fly's
// Fly-Client-IP, else the connection's) and, for logs, its address: the
// connection's, with its port, when that is where the IP came from.
func clientAddr(r *http.Request, header string) (ip netip.Addr, text string) {
	ip = ratelimit.ClientIP(r, header)
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && ap.Addr().Unmap() == ip {
		return ip, r.RemoteAddr
	}
	return ip, ip.String()
}
