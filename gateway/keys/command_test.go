package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// defaultChannel is the gateway's default channel when LS_DEFAULT_CHANNEL
// is not set.
const defaultChannel uint32 = 77

func run(t *testing.T, s *Store, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Command(args, s, defaultChannel, &out)
	return out.String(), err
}

func TestCommandManagesKeys(t *testing.T) {
	s, _ := openTemp(t)

	out, err := run(t, s, "add")
	if err != nil {
		t.Fatal(err)
	}
	added, err := Parse(strings.TrimSuffix(out, "\n"))
	if err != nil || added.Channel != defaultChannel || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("add printed %q; want one line with a key for channel 77", out)
	}

	out, err = run(t, s, "add", "5")
	if err != nil {
		t.Fatal(err)
	}
	five, _ := Parse(strings.TrimSpace(out))
	if five.Channel != 5 {
		t.Fatalf("add 5 printed %q", out)
	}

	out, err = run(t, s, "list")
	if err != nil {
		t.Fatal(err)
	}
	if want := five.String() + "\n" + added.String() + "\n"; out != want {
		t.Fatalf("list printed %q, want %q", out, want)
	}

	out, err = run(t, s, "rotate")
	if err != nil {
		t.Fatal(err)
	}
	rotated, _ := Parse(strings.TrimSpace(out))
	if rotated.Channel != defaultChannel || rotated.Secret == added.Secret {
		t.Fatalf("rotate printed %q; want a new key for channel 77", out)
	}
	if secret, _ := s.Secret(defaultChannel); secret != rotated.Secret {
		t.Fatalf("store has %q after rotate, want %q", secret, rotated.Secret)
	}

	out, err = run(t, s, "rotate", "5")
	if err != nil || !strings.HasPrefix(out, "5-") {
		t.Fatalf("rotate 5 printed %q, %v", out, err)
	}

	out, err = run(t, s, "remove", "5")
	if err != nil || out != "removed the key of channel 5\n" {
		t.Fatalf("remove 5 printed %q, %v", out, err)
	}
	out, _ = run(t, s, "list")
	if out != rotated.String()+"\n" {
		t.Fatalf("list after remove printed %q", out)
	}
}

func TestCommandWithoutAChannelUsesTheGivenDefault(t *testing.T) {
	s, _ := openTemp(t)
	var out bytes.Buffer
	if err := Command([]string{"add"}, s, 5, &out); err != nil {
		t.Fatal(err)
	}
	added, err := Parse(strings.TrimSpace(out.String()))
	if err != nil || added.Channel != 5 {
		t.Fatalf("add with default 5 printed %q; want a key for channel 5", out.String())
	}
	out.Reset()
	if err := Command([]string{"rotate"}, s, 5, &out); err != nil {
		t.Fatal(err)
	}
	rotated, err := Parse(strings.TrimSpace(out.String()))
	if err != nil || rotated.Channel != 5 || rotated.Secret == added.Secret {
		t.Fatalf("rotate with default 5 printed %q; want a new key for channel 5", out.String())
	}
	if _, ok := s.Secret(defaultChannel); ok {
		t.Errorf("channel %d got a key; only channel 5 was meant", defaultChannel)
	}
	if err := Command([]string{"remove"}, s, 5, &out); !errors.Is(err, ErrUsage) {
		t.Errorf("remove without a channel: %v; want a usage error (remove never defaults)", err)
	}
}

func TestCommandListOfAnEmptyStorePrintsNothing(t *testing.T) {
	s, _ := openTemp(t)
	out, err := run(t, s, "list")
	if err != nil || out != "" {
		t.Fatalf("list printed %q, %v; want nothing", out, err)
	}
}

func TestCommandHelpPrintsUsage(t *testing.T) {
	s, _ := openTemp(t)
	out, err := run(t, s, "help")
	if err != nil || !strings.Contains(out, "gateway keys rotate [channel]") || !strings.Contains(out, "gateway keys private [channel]") || !strings.Contains(out, "gateway keys public [channel]") {
		t.Fatalf("help printed %q, %v", out, err)
	}
}

func TestCommandErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		usage   bool // the error wraps ErrUsage
		wantErr string
	}{
		{"no command", nil, true, "keys: missing command"},
		{"unknown command", []string{"delete", "77"}, true, `keys: unknown command "delete"`},
		{"list with an argument", []string{"list", "77"}, true, "keys: list takes no arguments"},
		{"remove without a channel", []string{"remove"}, true, "keys: remove needs a channel"},
		{"add with two channels", []string{"add", "1", "2"}, true, "keys: add takes one channel, got 2 arguments"},
		{"channel that is not a number", []string{"rotate", "seventy"}, false, `keys: rotate: channel id "seventy" is not a decimal number`},
		{"channel 0", []string{"add", "0"}, false, "keys: add: channel id 0 is not allowed"},
		{"adding an existing key", []string{"add", "77"}, false, "keys: channel 77: already has a key"},
		{"rotating a missing key", []string{"rotate", "9"}, false, "keys: channel 9: has no key"},
		{"removing a missing key", []string{"remove", "9"}, false, "keys: channel 9: has no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			s.Add(77)
			out, err := run(t, s, tt.args...)
			if err == nil {
				t.Fatalf("no error; printed %q", out)
			}
			if out != "" {
				t.Errorf("printed %q on error", out)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not start with %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrUsage); got != tt.usage {
				t.Errorf("errors.Is(err, ErrUsage) = %v, want %v", got, tt.usage)
			}
			if tt.usage && !strings.Contains(err.Error(), "gateway keys add [channel]") {
				t.Errorf("usage error %q does not show the usage", err)
			}
		})
	}
}

func TestCommandOnAStaticStore(t *testing.T) {
	s := NewStatic(Key{Channel: 77, Secret: "fromenv"})
	out, err := run(t, s, "list")
	if err != nil || out != "77-fromenv\n" {
		t.Fatalf("list printed %q, %v", out, err)
	}
	for _, args := range [][]string{{"add", "5"}, {"rotate"}, {"remove", "77"}} {
		_, err := run(t, s, args...)
		if !errors.Is(err, ErrStatic) {
			t.Errorf("%v on a static store: %v; want %v", args, err, ErrStatic)
		}
	}
}

func TestCommandMakesChannelsPrivateAndPublic(t *testing.T) {
	s, _ := openTemp(t)
	s.Add(defaultChannel)
	s.Add(5)
	out, err := run(t, s, "private")
	if err != nil || out != "channel 77 is private: viewers need a viewer token (gateway tokens issue 77)\n" {
		t.Fatalf("private printed %q, %v", out, err)
	}
	if !s.Private(defaultChannel) || s.Private(5) {
		t.Fatal("private without a channel did not make the default channel, and only it, private")
	}
	out, err = run(t, s, "private", "5")
	if err != nil || !strings.HasPrefix(out, "channel 5 is private") || !s.Private(5) {
		t.Fatalf("private 5 printed %q, %v", out, err)
	}
	out, err = run(t, s, "public", "5")
	if err != nil || out != "channel 5 is public: anyone may watch it\n" || s.Private(5) {
		t.Fatalf("public 5 printed %q, %v", out, err)
	}
	out, err = run(t, s, "public")
	if err != nil || out != "channel 77 is public: anyone may watch it\n" || s.Private(defaultChannel) {
		t.Fatalf("public printed %q, %v", out, err)
	}
	out, _ = run(t, s, "list")
	if strings.Contains(out, "private") || strings.Count(out, "\n") != 2 {
		t.Errorf("list printed %q; want the keys alone", out)
	}
	var buf bytes.Buffer
	if err := Command([]string{"private"}, s, 5, &buf); err != nil || !s.Private(5) || s.Private(defaultChannel) {
		t.Errorf("private with default 5: %v; want channel 5 private", err)
	}
}

func TestCommandPrivacyErrors(t *testing.T) {
	tests := []struct {
		args    []string
		usage   bool
		wantErr string
	}{
		{[]string{"private", "9"}, false, "keys: channel 9: has no key"},
		{[]string{"public", "9"}, false, "keys: channel 9: has no key"},
		{[]string{"private", "1", "2"}, true, "keys: private takes one channel, got 2 arguments"},
		{[]string{"public", "x"}, false, `keys: public: channel id "x" is not a decimal number`},
		{[]string{"private", "0"}, false, "keys: private: channel id 0 is not allowed"},
	}
	for _, tt := range tests {
		s, _ := openTemp(t)
		s.Add(77)
		out, err := run(t, s, tt.args...)
		if err == nil || out != "" || !strings.HasPrefix(err.Error(), tt.wantErr) || errors.Is(err, ErrUsage) != tt.usage {
			t.Errorf("%v: printed %q, error %v; want %q (usage %v)", tt.args, out, err, tt.wantErr, tt.usage)
		}
	}
	st := NewStatic(Key{Channel: 77, Secret: "fromenv"})
	for _, args := range [][]string{{"private"}, {"public", "77"}} {
		if _, err := run(t, st, args...); !errors.Is(err, ErrStatic) {
			t.Errorf("%v on a static store: %v; want %v", args, err, ErrStatic)
		}
	}
}
