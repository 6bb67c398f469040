package whip

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// keyMatches reports, in constant time, whether secret is the stored
// secret of the key's channel.
func keyMatches(stored, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(stored), []byte(secret)) == 1
}

// clientAddr returns the publisher's address: the first address in the
// configured client-IP header (set by a trusted proxy, such as Fly's
// Fly-Client-IP) when there is one, else the connection's remote address.
func clientAddr(r *http.Request, header string) (ip netip.Addr, text string) {
	if header != "" {
		v := r.Header.Get(header)
		first, _, _ := strings.Cut(v, ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
			return a.Unmap(), a.Unmap().String()
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap(), r.RemoteAddr
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	a, _ := netip.ParseAddr(host)
	return a.Unmap(), r.RemoteAddr
}
