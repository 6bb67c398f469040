// Package keys holds the stream keys publishers authenticate with.
//
// A stream key is "<channel id>-<secret>", the form OBS and the FTL SDK
// take: the SDK splits it at the first '-' (or ','), sends the channel id in
// CONNECT and proves it knows the secret with HMAC-SHA512 keyed by the
// secret's ASCII bytes. The secret itself never crosses the wire.
//
// Keys live in one JSON file in the data directory (LS_DATA_DIR), or, for
// stateless deployments, come from LS_STREAM_KEY and are never written.
package keys

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// MaxSecretLen is the longest secret the FTL SDK can hold: it copies the
// secret into a 100-byte buffer, terminating NUL included.
const MaxSecretLen = 99

// secretBytes is the number of random bytes in a generated secret. Hex
// encoded they make 40 lowercase characters: 160 bits, easy to paste.
const secretBytes = 20

// Key is one stream key: a channel and the secret that authorizes
// publishing to it.
type Key struct {
	Channel uint32
	Secret  string
}

// Parse reads a stream key as OBS and the FTL SDK send it:
// "<channel id>-<secret>". The channel id is a decimal number from 1 to
// 4294967295; the secret is everything after the separator, 1 to
// MaxSecretLen printable ASCII characters without spaces. Like the SDK,
// Parse also takes ',' as the separator.
func Parse(s string) (Key, error) {
	i := strings.IndexAny(s, "-,")
	if i < 0 {
		return Key{}, errors.New("keys: stream key has no '-' between channel id and secret")
	}
	ch, err := parseChannel(s[:i])
	if err != nil {
		return Key{}, fmt.Errorf("keys: stream key: %w", err)
	}
	k := Key{Channel: ch, Secret: s[i+1:]}
	if err := checkSecret(k.Secret); err != nil {
		return Key{}, fmt.Errorf("keys: stream key for channel %d: %w", ch, err)
	}
	return k, nil
}

// String returns the key as it is pasted into OBS: "77-secret".
func (k Key) String() string {
	return strconv.FormatUint(uint64(k.Channel), 10) + "-" + k.Secret
}

// LogValue keeps the secret out of structured logs.
func (k Key) LogValue() slog.Value {
	return slog.GroupValue(slog.Uint64("channel", uint64(k.Channel)))
}

// Generate returns a new key for channel with a random secret of 40
// lowercase hex characters (160 bits from crypto/rand).
func Generate(channel uint32) (Key, error) {
	if channel == 0 {
		return Key{}, errors.New("keys: channel id 0 is not allowed")
	}
	var b [secretBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Key{}, fmt.Errorf("keys: channel %d: generate secret: %w", channel, err)
	}
	return Key{Channel: channel, Secret: hex.EncodeToString(b[:])}, nil
}

// validate reports whether k could have come from Parse.
func (k Key) validate() error {
	if k.Channel == 0 {
		return errors.New("channel id 0 is not allowed")
	}
	if err := checkSecret(k.Secret); err != nil {
		return fmt.Errorf("channel %d: %w", k.Channel, err)
	}
	return nil
}

// ParseChannel reads a channel id as the keys command takes it: decimal
// digits only (no sign, no spaces), 1 to 4294967295.
func ParseChannel(s string) (uint32, error) { return parseChannel(s) }

// parseChannel reads a channel id: decimal digits only (no sign, no
// spaces), 1 to 4294967295.
func parseChannel(s string) (uint32, error) {
	if s == "" {
		return 0, errors.New("channel id is empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("channel id %q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("channel id %q is larger than 4294967295", s)
	}
	if n == 0 {
		return 0, errors.New("channel id 0 is not allowed")
	}
	return uint32(n), nil
}

// checkSecret accepts 1 to MaxSecretLen printable ASCII characters other
// than space: what survives being pasted into OBS and read back by the SDK.
func checkSecret(s string) error {
	if s == "" {
		return errors.New("secret is empty")
	}
	if len(s) > MaxSecretLen {
		return fmt.Errorf("secret is %d characters long; the FTL SDK takes at most %d", len(s), MaxSecretLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("secret has a space, control or non-ASCII byte 0x%02x at offset %d", c, i)
		}
	}
	return nil
}
