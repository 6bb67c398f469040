package viewtoken

import (
	"errors"
	"testing"
	"time"
)

// FuzzVerify checks that Verify never panics, refuses with exactly one
// reason, and accepts only what it was given a key for.
func FuzzVerify(f *testing.F) {
	good, _ := Issue(testKey, 77, time.Hour, t0)
	f.Add(good, uint32(77))
	f.Add(good, uint32(78))
	f.Add("", uint32(77))
	f.Add("a.b.c", uint32(1))
	f.Add(signed(testKey, `{"alg":"none"}`, `{"ch":77,"exp":1700003600}`), uint32(77))
	f.Fuzz(func(t *testing.T, token string, channel uint32) {
		c, err := Parse(testKey, token, channel, t0)
		if err == nil {
			if c.Channel != channel || c.Channel == 0 || time.Unix(c.Expires, 0).Add(Leeway).Before(t0) {
				t.Fatalf("accepted claims %+v for channel %d", c, channel)
			}
			if len(token) > MaxLen {
				t.Fatalf("accepted a token of %d bytes", len(token))
			}
			return
		}
		n := 0
		for _, e := range []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrOtherChannel} {
			if errors.Is(err, e) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("error %q wraps %d reasons", err, n)
		}
	})
}
