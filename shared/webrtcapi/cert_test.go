package webrtcapi

import (
	"testing"
	"time"
)

func fingerprint(t *testing.T, c *Certificates, now time.Time) string {
	t.Helper()
	cert, err := c.Get(now)
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
	var c Certificates
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
