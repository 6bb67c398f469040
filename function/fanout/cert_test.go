package fanout

import (
	"regexp"
	"testing"
	"time"
)

func fingerprint(t *testing.T, c *certSource, now time.Time) string {
	t.Helper()
	cert, err := c.get(now)
	if err != nil {
		t.Fatal(err)
	}
	fps, err := cert.GetFingerprints()
	if err != nil || len(fps) == 0 {
		t.Fatalf("fingerprints %v, %v", fps, err)
	}
	if !cert.Expires().After(now.Add(certLifetime)) {
		t.Fatalf("certificate made at %v expires %v, before its last session could start", now, cert.Expires())
	}
	return fps[0].Value
}

func TestOneCertificateServesSessionsForItsLifetime(t *testing.T) {
	var c certSource
	t0 := time.Now()
	first := fingerprint(t, &c, t0)
	if got := fingerprint(t, &c, t0.Add(certLifetime-time.Second)); got != first {
		t.Errorf("a session within the lifetime got another certificate")
	}
	second := fingerprint(t, &c, t0.Add(certLifetime))
	if second == first {
		t.Errorf("a session after the lifetime got the old certificate")
	}
	if got := fingerprint(t, &c, t0.Add(certLifetime+time.Hour)); got != second {
		t.Errorf("the renewed certificate was not kept")
	}
}

var fingerprintLine = regexp.MustCompile(`(?m)^a=fingerprint:(\S+ \S+)\r?$`)

func TestViewersConnectWithTheFanoutsOneCertificate(t *testing.T) {
	h := newHarness(t, Config{}, hooks{})
	h.writeGOP(3)
	var seen []string
	for _, id := range []string{"one", "two"} {
		p := newPeer(t, viewerAPI(t, false))
		h.connectWHEP(p, id) // the DTLS handshake checks the fingerprint
		m := fingerprintLine.FindStringSubmatch(p.pc.RemoteDescription().SDP)
		if m == nil {
			t.Fatalf("%s: no fingerprint in the answer", id)
		}
		seen = append(seen, m[1])
	}
	if seen[0] != seen[1] {
		t.Errorf("fingerprints %q and %q, want one certificate for both viewers", seen[0], seen[1])
	}
}
