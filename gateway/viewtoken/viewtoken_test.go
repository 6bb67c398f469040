package viewtoken

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testKey = []byte("0123456789abcdef0123456789abcdef")
	t0      = time.Unix(1_700_000_000, 0)
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signed makes a token from a raw header and payload, signed with key.
func signed(key []byte, header, payload string) string {
	in := enc(header) + "." + enc(payload)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestIssueThenVerify(t *testing.T) {
	tok, err := Issue(testKey, 77, 2*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, "=+/") {
		t.Fatalf("token %q is not a compact JWT in base64url without padding", tok)
	}
	c, err := Parse(testKey, tok, 77, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Claims{Channel: 77, IssuedAt: t0.Unix(), Expires: t0.Add(2 * time.Hour).Unix()}); c != want {
		t.Fatalf("claims %+v, want %+v", c, want)
	}
	h, _, _ := strings.Cut(tok, ".")
	if hb, _ := base64.RawURLEncoding.DecodeString(h); string(hb) != `{"alg":"HS256","typ":"JWT"}` {
		t.Fatalf("header %s", hb)
	}
}

// TestVerifiesATokenMadeElsewhere checks a token as a JWT library of
// another backend makes it: other header fields and order, a subject.
func TestVerifiesATokenMadeElsewhere(t *testing.T) {
	tok := signed(testKey, `{"typ":"JWT","kid":"1","alg":"HS256"}`, `{"sub":"alice","exp":1700003600,"ch":77,"iat":1700000000,"aud":"x"}`)
	c, err := Parse(testKey, tok, 77, t0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || c.Channel != 77 {
		t.Fatalf("claims %+v", c)
	}
	tok, err = IssueClaims(testKey, Claims{Channel: 5, Expires: t0.Unix() + 60, Subject: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Parse(testKey, tok, 5, t0); err != nil || c.Subject != "bob" {
		t.Fatalf("Parse = %+v, %v", c, err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	good, _ := Issue(testKey, 77, time.Hour, t0)
	h, rest, _ := strings.Cut(good, ".")
	p, sig, _ := strings.Cut(rest, ".")
	other := []byte("another key, 32 bytes long......")
	okClaims := `{"ch":77,"exp":1700003600}`
	tests := []struct {
		name  string
		token string
		want  error
		says  string
	}{
		{"empty", "", ErrMalformed, "three"},
		{"two parts", h + "." + p, ErrMalformed, "three"},
		{"four parts", good + ".x", ErrMalformed, "three"},
		{"header not base64url", "*." + p + "." + sig, ErrMalformed, "header is not base64url"},
		{"padded base64", h + "=." + p + "." + sig, ErrMalformed, "header is not base64url"},
		{"header not JSON", enc("hello") + "." + p + "." + sig, ErrMalformed, "header is not a JSON object"},
		{"alg none", enc(`{"alg":"none","typ":"JWT"}`) + "." + p + ".", ErrMalformed, `algorithm "none"`},
		{"alg none, signed anyway", signed(testKey, `{"alg":"none"}`, okClaims), ErrMalformed, `algorithm "none"`},
		{"alg HS512", signed(testKey, `{"alg":"HS512"}`, okClaims), ErrMalformed, `algorithm "HS512"`},
		{"alg RS256", signed(testKey, `{"alg":"RS256"}`, okClaims), ErrMalformed, `algorithm "RS256"`},
		{"alg in lower case", signed(testKey, `{"alg":"hs256"}`, okClaims), ErrMalformed, "algorithm"},
		{"no alg", signed(testKey, `{"typ":"JWT"}`, okClaims), ErrMalformed, "algorithm"},
		{"critical extension", signed(testKey, `{"alg":"HS256","crit":["b64"],"b64":false}`, okClaims), ErrMalformed, "critical"},
		{"signature not base64url", h + "." + p + ".!!", ErrMalformed, "signature is not base64url"},
		{"no signature", h + "." + p + ".", ErrBadSignature, ""},
		{"signed with another key", signed(other, `{"alg":"HS256"}`, okClaims), ErrBadSignature, ""},
		{"tampered payload", h + "." + enc(`{"ch":78,"exp":1700003600,"iat":1700000000}`) + "." + sig, ErrBadSignature, ""},
		{"tampered header", enc(`{"alg":"HS256"}`) + "." + p + "." + sig, ErrBadSignature, ""},
		{"truncated signature", h + "." + p + "." + sig[:40], ErrBadSignature, ""},
		{"claims not base64url", signedRaw(testKey, enc(`{"alg":"HS256"}`)+".@@"), ErrMalformed, "claims are not base64url"},
		{"claims not JSON", signed(testKey, `{"alg":"HS256"}`, `[77]`), ErrMalformed, "claims"},
		{"channel as a string", signed(testKey, `{"alg":"HS256"}`, `{"ch":"77","exp":1700003600}`), ErrMalformed, "claims"},
		{"negative channel", signed(testKey, `{"alg":"HS256"}`, `{"ch":-77,"exp":1700003600}`), ErrMalformed, "claims"},
		{"no channel", signed(testKey, `{"alg":"HS256"}`, `{"exp":1700003600}`), ErrMalformed, "no channel"},
		{"no expiry", signed(testKey, `{"alg":"HS256"}`, `{"ch":77}`), ErrMalformed, "no expiry"},
		{"data after the claims", signed(testKey, `{"alg":"HS256"}`, okClaims+`{}`), ErrMalformed, "after"},
		{"expired", signed(testKey, `{"alg":"HS256"}`, `{"ch":77,"exp":1699999000}`), ErrExpired, "2023-11-14T"},
		{"other channel", signed(testKey, `{"alg":"HS256"}`, `{"ch":78,"exp":1700003600}`), ErrOtherChannel, "channel 78"},
		{"too long", good + strings.Repeat("A", MaxLen), ErrMalformed, "longer than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(testKey, tt.token, 77, t0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not say %q", err, tt.says)
			}
			if len(tt.token) > 10 && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q holds the token", err)
			}
			n := 0
			for _, e := range []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrOtherChannel} {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("error %q wraps %d reasons, want 1", err, n)
			}
		})
	}
}

// signedRaw signs an already encoded header and payload.
func signedRaw(key []byte, in string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestExpiryAllowsLeeway(t *testing.T) {
	tok, err := Issue(testKey, 77, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	exp := t0.Add(time.Minute)
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{exp.Add(-time.Second), nil},
		{exp, nil},
		{exp.Add(Leeway), nil},
		{exp.Add(Leeway + time.Second), ErrExpired},
		{exp.Add(24 * time.Hour), ErrExpired},
	} {
		if err := Verify(testKey, tok, 77, tc.at); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("Verify %v after expiry: %v, want %v", tc.at.Sub(exp), err, tc.want)
		}
	}
}

func TestReason(t *testing.T) {
	for err, want := range map[error]string{
		ErrMalformed: "malformed", ErrBadSignature: "bad_signature", ErrExpired: "expired",
		ErrOtherChannel: "other_channel", errors.New("x"): "error",
	} {
		if got := Reason(errors.Join(errors.New("wrapped"), err)); got != want {
			t.Errorf("Reason(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestIssueRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		key     []byte
		channel uint32
		ttl     time.Duration
		says    string
	}{
		{"no key", nil, 77, time.Hour, "no signing key"},
		{"channel 0", testKey, 0, time.Hour, "channel id 0"},
		{"ttl too short", testKey, 77, 59 * time.Second, "lifetime 59s is outside 1m0s to 30d"},
		{"ttl too long", testKey, 77, MaxTTL + time.Second, "outside"},
		{"negative ttl", testKey, 77, -time.Hour, "outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Issue(tc.key, tc.channel, tc.ttl, t0)
			if err == nil || !strings.Contains(err.Error(), tc.says) || tok != "" {
				t.Fatalf("Issue = %q, %v; want an error saying %q", tok, err, tc.says)
			}
		})
	}
	for _, ttl := range []time.Duration{MinTTL, MaxTTL} {
		if _, err := Issue(testKey, 77, ttl, t0); err != nil {
			t.Errorf("Issue with ttl %v: %v", ttl, err)
		}
	}
}

func TestVerifyWithoutAKeyRefusesEverything(t *testing.T) {
	tok := signed(nil, `{"alg":"HS256"}`, `{"ch":77,"exp":1700003600}`)
	if err := Verify(nil, tok, 77, t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Verify with no key: %v", err)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	key, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize {
		t.Fatalf("key of %d bytes", len(key))
	}
	path := filepath.Join(dir, KeyFileName)
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want mode %o", p, fi.Mode(), err, want)
		}
	}
	again, err := LoadOrCreateKey(dir)
	if err != nil || string(again) != string(key) {
		t.Fatalf("second load gave another key (%v)", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data directory holds %d entries, want only the key (no temporary files)", len(entries))
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("a key file others can read kept mode %o", fi.Mode().Perm())
	}
}

func TestLoadOrCreateKeyRefusesADamagedKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFileName)
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil || !strings.Contains(err.Error(), "damaged signing key: 5 bytes, want 32") {
		t.Fatalf("LoadOrCreateKey on a damaged key: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "short" {
		t.Errorf("damaged key was rewritten to %q", b)
	}
	if _, err := LoadOrCreateKey(""); err == nil {
		t.Error("no data directory accepted")
	}
}

// TestConcurrentCreatorsAgree: processes that make the key at once (the
// gateway starting while "gateway tokens issue" runs) end with one key.
func TestConcurrentCreatorsAgree(t *testing.T) {
	dir := t.TempDir()
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if string(k) != string(keys[0]) {
			t.Fatal("concurrent creators got different keys")
		}
	}
}
