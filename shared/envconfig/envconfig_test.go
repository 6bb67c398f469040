package envconfig

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Addr  string        `env:"ADDR" envDefault:":8080" help:"listen address"`
	Hold  time.Duration `env:"HOLD" envDefault:"40ms" help:"hold time"`
	Key   string        `env:"KEY" help:"a key"`
	Other int
}

func TestLoadReadsPrefixedVariablesWithDefaults(t *testing.T) {
	t.Setenv("LS_HOLD", "15ms")
	var c testConfig
	if err := Load(&c, "cmd", nil, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.Hold != 15*time.Millisecond || c.Key != "" {
		t.Fatalf("got %+v", c)
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	t.Setenv("LS_HOLD", "soon")
	var c testConfig
	err := Load(&c, "cmd", nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "LS_HOLD") {
		t.Fatalf("want an error naming LS_HOLD, got %v", err)
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	var c testConfig
	err := Load(&c, "gateway", []string{"--help"}, &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("want ErrHelp, got %v", err)
	}
	for _, want := range []string{"LS_ADDR", ":8080", "listen address", "LS_HOLD", "40ms", "LS_KEY"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "Other") {
		t.Errorf("usage lists an untagged field:\n%s", out.String())
	}
}
