// Package viewtoken issues and checks viewer tokens: what a viewer of a
// private channel shows to watch it.
//
// A token is a JWT (RFC 7519) signed with HS256 (HMAC-SHA256) under the
// gateway's signing key, so any backend that holds the key can mint one
// with an ordinary JWT library. Its header is {"alg":"HS256","typ":"JWT"};
// its claims are
//
//	ch   the channel it lets the bearer watch (a number, required)
//	exp  when it stops working, in Unix seconds (required)
//	iat  when it was issued, in Unix seconds
//	sub  who it was issued to (optional, free text)
//
// The signing key is 32 random bytes in KeyFileName in the data directory
// (mode 0600), made on first use. A backend minting tokens uses those 32
// bytes as the HMAC key (for a text setting: base64 of the file). Removing
// the file, and restarting the gateway, invalidates every token issued.
package viewtoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

const (
	// MaxLen is the longest token Verify reads; longer ones are
	// malformed without being decoded.
	MaxLen = 4 << 10
	// Leeway is how long after its exp a token still verifies, for clocks
	// that disagree a little.
	Leeway = 30 * time.Second
	// MinTTL and MaxTTL bound the lifetime Issue gives a token.
	MinTTL = time.Minute
	MaxTTL = 30 * 24 * time.Hour
)

// The reasons Verify refuses a token. Its errors wrap exactly one of them,
// with details after it; Reason names them for metrics.
var (
	ErrMalformed    = errors.New("malformed viewer token")
	ErrBadSignature = errors.New("viewer token signature does not match")
	ErrExpired      = errors.New("viewer token expired")
	ErrOtherChannel = errors.New("viewer token is for another channel")
)

// Reason is a short name for why err refused a token, fit for a metric
// label: "malformed", "bad_signature", "expired", "other_channel", or
// "error" for anything else.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrOtherChannel):
		return "other_channel"
	}
	return "error"
}

// header is the JOSE header. Tokens from elsewhere may carry more fields
// (kid, for one); only alg and crit matter here.
type header struct {
	Alg  string   `json:"alg"`
	Typ  string   `json:"typ,omitempty"`
	Crit []string `json:"crit,omitempty"`
}

// Claims are what a token says.
type Claims struct {
	Channel  uint32 `json:"ch"`
	Expires  int64  `json:"exp"`
	IssuedAt int64  `json:"iat,omitempty"`
	Subject  string `json:"sub,omitempty"`
}

// The encoded header of every token Issue makes.
var hs256Header = b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

// b64 is base64url without padding, as JWTs use it; Strict refuses
// encodings with stray bits, so one token has one spelling.
var b64 = base64.RawURLEncoding.Strict()

// Issue returns a token for channel, issued at now, that expires ttl
// later. ttl must lie within MinTTL and MaxTTL.
func Issue(key []byte, channel uint32, ttl time.Duration, now time.Time) (string, error) {
	if ttl < MinTTL || ttl > MaxTTL {
		return "", fmt.Errorf("viewtoken: lifetime %v is outside %v to %s", ttl, MinTTL, fmtDays(MaxTTL))
	}
	return IssueClaims(key, Claims{Channel: channel, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix()})
}

// IssueClaims returns a token carrying c as they are: a channel and an
// expiry are required, nothing else is checked.
func IssueClaims(key []byte, c Claims) (string, error) {
	if len(key) == 0 {
		return "", errors.New("viewtoken: no signing key")
	}
	if c.Channel == 0 {
		return "", errors.New("viewtoken: channel id 0 is not allowed")
	}
	if c.Expires == 0 {
		return "", errors.New("viewtoken: no expiry")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("viewtoken: encode claims: %w", err)
	}
	signed := hs256Header + "." + b64.EncodeToString(payload)
	return signed + "." + b64.EncodeToString(sign(key, signed)), nil
}

// fmtDays writes a duration of whole days as days.
func fmtDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func sign(key []byte, signed string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// Verify checks that token is signed with key, lets its bearer watch
// channel, and has not expired at now (allowing Leeway). Its errors wrap
// ErrMalformed, ErrBadSignature, ErrExpired or ErrOtherChannel, and never
// contain the token.
func Verify(key []byte, token string, channel uint32, now time.Time) error {
	_, err := Parse(key, token, channel, now)
	return err
}

// Parse is Verify that also returns the token's claims.
func Parse(key []byte, token string, channel uint32, now time.Time) (Claims, error) {
	if len(key) == 0 {
		// Nothing verifies without a key: a server that lost it refuses.
		return Claims{}, fmt.Errorf("%w: the server has no signing key", ErrBadSignature)
	}
	if len(token) > MaxLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxLen)
	}
	h64, rest, ok1 := strings.Cut(token, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return Claims{}, fmt.Errorf("%w: not three dot-separated parts", ErrMalformed)
	}
	hb, err := b64.DecodeString(h64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	var h header
	if err := decodeJSON(hb, &h); err != nil {
		return Claims{}, fmt.Errorf("%w: header is not a JSON object", ErrMalformed)
	}
	if h.Alg != "HS256" {
		return Claims{}, fmt.Errorf("%w: algorithm %q is not accepted (only HS256)", ErrMalformed, clip(h.Alg))
	}
	if len(h.Crit) != 0 {
		return Claims{}, fmt.Errorf("%w: critical header extensions are not supported", ErrMalformed)
	}
	sig, err := b64.DecodeString(s64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if !hmac.Equal(sig, sign(key, token[:len(h64)+1+len(p64)])) {
		return Claims{}, ErrBadSignature
	}
	// Signed by us (or a backend holding the key) from here on.
	pb, err := b64.DecodeString(p64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: claims are not base64url", ErrMalformed)
	}
	var c Claims
	if err := decodeJSON(pb, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	if c.Channel == 0 {
		return Claims{}, fmt.Errorf("%w: no channel (ch)", ErrMalformed)
	}
	if c.Expires == 0 {
		return Claims{}, fmt.Errorf("%w: no expiry (exp)", ErrMalformed)
	}
	if exp := time.Unix(c.Expires, 0); now.After(exp.Add(Leeway)) {
		return Claims{}, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if c.Channel != channel {
		return Claims{}, fmt.Errorf("%w (channel %d)", ErrOtherChannel, c.Channel)
	}
	return c, nil
}

// decodeJSON reads exactly one JSON object from b.
func decodeJSON(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// clip shortens text from a token before it goes into an error.
func clip(s string) string {
	const n = 20
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
