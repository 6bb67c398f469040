package envconfig

import (
	"bytes"
	"errors"
	"os"
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

type boundedConfig struct {
	Capacity int           `env:"CAPACITY" envDefault:"500" min:"1" help:"most viewers"`
	Port     int           `env:"PORT" min:"0" max:"65535" help:"a port"`
	Channel  uint32        `env:"CHANNEL" envDefault:"77" min:"1" help:"a channel"`
	Hold     time.Duration `env:"HOLD" envDefault:"40ms" min:"1ms" help:"hold time"`
}

func TestLoadChecksBounds(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string // "" for no error
	}{
		{nil, ""},
		{map[string]string{"LS_CAPACITY": "1", "LS_PORT": "65535", "LS_CHANNEL": "1", "LS_HOLD": "1ms"}, ""},
		{map[string]string{"LS_CAPACITY": "0"}, "LS_CAPACITY: 0 is less than 1"},
		{map[string]string{"LS_CAPACITY": "-5"}, "LS_CAPACITY: -5 is less than 1"},
		{map[string]string{"LS_PORT": "65536"}, "LS_PORT: 65536 is more than 65535"},
		{map[string]string{"LS_PORT": "-1"}, "LS_PORT: -1 is less than 0"},
		{map[string]string{"LS_CHANNEL": "0"}, "LS_CHANNEL: 0 is less than 1"},
		{map[string]string{"LS_HOLD": "0s"}, "LS_HOLD: 0s is less than 1ms"},
		{map[string]string{"LS_HOLD": "-2ms"}, "LS_HOLD: -2ms is less than 1ms"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		var c boundedConfig
		err := Load(&c, "cmd", nil, &bytes.Buffer{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: error %v, want one saying %q", tc.env, err, tc.want)
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}

func TestLoadReportsEveryValueOutOfBounds(t *testing.T) {
	t.Setenv("LS_CAPACITY", "0")
	t.Setenv("LS_HOLD", "0s")
	var c boundedConfig
	err := Load(&c, "cmd", nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "LS_CAPACITY") || !strings.Contains(err.Error(), "LS_HOLD") {
		t.Fatalf("want an error naming LS_CAPACITY and LS_HOLD, got %v", err)
	}
}

func TestHelpShowsBounds(t *testing.T) {
	var out bytes.Buffer
	var c boundedConfig
	Load(&c, "cmd", []string{"-h"}, &out)
	for _, want := range []string{"most viewers (at least 1)", "a port (0 to 65535)", "hold time (at least 1ms)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestABoundOnAFieldItCannotApplyToPanics(t *testing.T) {
	type bad struct {
		Name string `env:"NAME" min:"1"`
	}
	defer func() {
		if recover() == nil {
			t.Error("a min tag on a string field was accepted")
		}
	}()
	var c bad
	Load(&c, "cmd", nil, &bytes.Buffer{})
}
