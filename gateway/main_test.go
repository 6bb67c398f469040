package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"lightspeed/gateway/app"
	"lightspeed/gateway/keys"
	"lightspeed/shared/envconfig"
)

// TestSettingsOutOfBoundsAreRefused checks that the gateway refuses
// settings it cannot use, naming the variable. The bad log level stops
// run right after the settings if they were accepted.
func TestSettingsOutOfBoundsAreRefused(t *testing.T) {
	t.Setenv("LS_LOG_LEVEL", "bogus")
	t.Setenv("LS_DATA_DIR", t.TempDir())
	for _, tc := range []struct{ name, value, want string }{
		{"LS_FUNCTION_CAPACITY", "0", "LS_FUNCTION_CAPACITY: 0 is less than 1"},
		{"LS_HUB_MAX_HOLD", "0s", "LS_HUB_MAX_HOLD: 0s is less than 1ms"},
		{"LS_FTL_ANNOUNCE_PORT", "70000", "LS_FTL_ANNOUNCE_PORT: 70000 is more than 65535"},
		{"LS_DEFAULT_CHANNEL", "0", "LS_DEFAULT_CHANNEL: 0 is less than 1"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			err := run(nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestKeysWithoutAChannelUseTheDefaultChannel checks that the keys
// subcommand, given no channel, acts on LS_DEFAULT_CHANNEL, and on 77 when
// it is not set.
func TestKeysWithoutAChannelUseTheDefaultChannel(t *testing.T) {
	for _, tc := range []struct {
		name, setting string
		want          uint32
	}{
		{"LS_DEFAULT_CHANNEL=5", "5", 5},
		{"LS_DEFAULT_CHANNEL unset", "", 77},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("LS_DATA_DIR", t.TempDir())
			t.Setenv("LS_STREAM_KEY", "")
			if tc.setting != "" {
				t.Setenv("LS_DEFAULT_CHANNEL", tc.setting)
			} else {
				t.Setenv("LS_DEFAULT_CHANNEL", "")
				os.Unsetenv("LS_DEFAULT_CHANNEL")
			}
			cmd := func(args ...string) keys.Key {
				t.Helper()
				var out bytes.Buffer
				if err := run(append([]string{"keys"}, args...), &out); err != nil {
					t.Fatalf("keys %v: %v", args, err)
				}
				k, err := keys.Parse(strings.TrimSpace(out.String()))
				if err != nil {
					t.Fatalf("keys %v printed %q: %v", args, out.String(), err)
				}
				return k
			}
			added := cmd("add")
			rotated := cmd("rotate")
			if added.Channel != tc.want || rotated.Channel != tc.want || rotated.Secret == added.Secret {
				t.Fatalf("keys add gave %v, keys rotate gave %v; want two keys of channel %d with different secrets", added, rotated, tc.want)
			}
			var out bytes.Buffer
			if err := run([]string{"keys", "list"}, &out); err != nil || out.String() != rotated.String()+"\n" {
				t.Fatalf("keys list printed %q, %v; want the rotated key alone", out.String(), err)
			}
		})
	}
}

// TestHelpSaysWhatAMissingChannelMeans checks that --help tells the
// operator which channel keys add and rotate use when given none.
func TestHelpSaysWhatAMissingChannelMeans(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out); err != envconfig.ErrHelp {
		t.Fatalf("run --help: %v, want ErrHelp", err)
	}
	for _, want := range []string{"gateway keys rotate [channel]", "A missing channel is the default channel (LS_DEFAULT_CHANNEL", "LS_DEFAULT_CHANNEL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not say %q:\n%s", want, out.String())
		}
	}
}

// TestFunctionSubcommandRunsAFunction: "gateway function" is the function
// command (the local fleet provider runs it): its --help lists the
// function's settings, not the gateway's.
func TestFunctionSubcommandRunsAFunction(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"function", "--help"}, &out)
	if !errors.Is(err, envconfig.ErrHelp) || !strings.Contains(out.String(), "LS_GATEWAY_ADDR") || strings.Contains(out.String(), "LS_FTL_ADDR") {
		t.Fatalf("gateway function --help: %v\n%s", err, out.String())
	}
}

func TestPublicURLDefaultsToThePublicHostAndTheHTTPPort(t *testing.T) {
	tests := []struct {
		cfg  app.Config
		want string
	}{
		{app.Config{PublicHost: "live.example.com", HTTPAddr: ":8080"}, "http://live.example.com:8080"},
		{app.Config{PublicHost: "live.example.com:8084", HTTPAddr: "127.0.0.1:9000"}, "http://live.example.com:9000"},
		{app.Config{PublicHost: "2001:db8::1", HTTPAddr: ":8080"}, "http://[2001:db8::1]:8080"},
		{app.Config{PublicURL: "https://live.example.com", PublicHost: "x", HTTPAddr: ":8080"}, "https://live.example.com"},
	}
	for _, tt := range tests {
		if got := publicURL(tt.cfg); got != tt.want {
			t.Errorf("publicURL(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}
