package keys

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("a", MaxSecretLen)
	tests := []struct {
		name string
		in   string
		want Key
	}{
		{"channel and hex secret", "77-0123456789abcdef", Key{77, "0123456789abcdef"}},
		{"secret may contain dashes after the first", "77-ab-cd", Key{77, "ab-cd"}},
		{"comma separates like in the FTL SDK", "5,secret", Key{5, "secret"}},
		{"any printable ASCII in the secret", `1-!"#$%&'()*+,./:;<=>?@[\]^_{|}~`, Key{1, `!"#$%&'()*+,./:;<=>?@[\]^_{|}~`}},
		{"largest channel id", "4294967295-x", Key{4294967295, "x"}},
		{"leading zeros in the channel id", "0077-x", Key{77, "x"}},
		{"longest secret the SDK holds", "9-" + long, Key{9, long}},
		{"Lightspeed's old default key", "123456789-aBcDeFgHiJkLmNoPqRsTuVwXyZ123456", Key{123456789, "aBcDeFgHiJkLmNoPqRsTuVwXyZ123456"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty string", "", "no '-'"},
		{"no separator", "77secret", "no '-'"},
		{"empty channel id", "-secret", "channel id is empty"},
		{"channel id 0", "0-secret", "channel id 0"},
		{"channel id with letters", "7a-secret", "not a decimal number"},
		{"signed channel id", "+77-secret", "not a decimal number"},
		{"channel id with a space", " 77-secret", "not a decimal number"},
		{"channel id beyond uint32", "4294967296-secret", "larger than 4294967295"},
		{"empty secret", "77-", "secret is empty"},
		{"space in the secret", "77-sec ret", "0x20 at offset 3"},
		{"trailing newline", "77-secret\n", "0x0a at offset 6"},
		{"tab in the secret", "77-\tsecret", "0x09"},
		{"DEL in the secret", "77-secret\x7f", "0x7f"},
		{"non-ASCII secret", "77-sécret", "non-ASCII"},
		{"secret too long for the SDK", "77-" + strings.Repeat("a", MaxSecretLen+1), "at most 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.in, k)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Parse(%q) error %q does not mention %q", tt.in, err, tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "keys: ") {
				t.Errorf("Parse(%q) error %q does not name its layer", tt.in, err)
			}
		})
	}
}

func TestKeyStringIsWhatParseReads(t *testing.T) {
	k := Key{Channel: 77, Secret: "s3cr3t"}
	if got := k.String(); got != "77-s3cr3t" {
		t.Fatalf("String() = %q, want %q", got, "77-s3cr3t")
	}
	back, err := Parse(k.String())
	if err != nil || back != k {
		t.Fatalf("Parse(String()) = %+v, %v; want %+v", back, err, k)
	}
}

func TestGenerateMakesFortyHexCharacters(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k, err := Generate(42)
		if err != nil {
			t.Fatal(err)
		}
		if k.Channel != 42 {
			t.Fatalf("channel = %d, want 42", k.Channel)
		}
		if len(k.Secret) != 40 || strings.Trim(k.Secret, "0123456789abcdef") != "" {
			t.Fatalf("secret %q is not 40 lowercase hex characters", k.Secret)
		}
		if seen[k.Secret] {
			t.Fatalf("secret %q generated twice", k.Secret)
		}
		seen[k.Secret] = true
		if _, err := Parse(k.String()); err != nil {
			t.Fatalf("generated key does not parse: %v", err)
		}
	}
}

func TestGenerateRejectsChannelZero(t *testing.T) {
	if k, err := Generate(0); err == nil {
		t.Fatalf("Generate(0) = %+v, want an error", k)
	}
}

func TestLogValueLeavesSecretOut(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("published", "key", Key{77, "topsecret"})
	if strings.Contains(buf.String(), "topsecret") {
		t.Fatalf("log line shows the secret: %s", buf.String())
	}
	if !strings.Contains(buf.String(), "key.channel=77") {
		t.Fatalf("log line lacks the channel: %s", buf.String())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"77-0123456789abcdef0123456789abcdef01234567",
		"1,x",
		"-",
		"0-a",
		"4294967296-a",
		"77-a b",
		"77-ab-cd",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := Parse(s)
		if err != nil {
			return
		}
		if err := k.validate(); err != nil {
			t.Fatalf("Parse(%q) = %+v, which is invalid: %v", s, k, err)
		}
		back, err := Parse(k.String())
		if err != nil || back != k {
			t.Fatalf("Parse(%q).String() = %q parses to %+v, %v", s, k.String(), back, err)
		}
	})
}
