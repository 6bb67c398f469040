package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lightspeed/gateway/app"
	"lightspeed/gateway/keys"
	"lightspeed/gateway/viewtoken"
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
			err := run(nil, io.Discard, io.Discard)
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
				if err := run(append([]string{"keys"}, args...), &out, io.Discard); err != nil {
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
			if err := run([]string{"keys", "list"}, &out, io.Discard); err != nil || out.String() != rotated.String()+"\n" {
				t.Fatalf("keys list printed %q, %v; want the rotated key alone", out.String(), err)
			}
		})
	}
}

// TestHelpSaysWhatAMissingChannelMeans checks that --help tells the
// operator which channel keys add and rotate use when given none.
func TestHelpSaysWhatAMissingChannelMeans(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out, io.Discard); err != envconfig.ErrHelp {
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
	err := run([]string{"function", "--help"}, &out, io.Discard)
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

// tokensEnv is a data directory with a key for channel 77, private, and
// one for 5, public; the gateway's public URL is https://live.example.com.
func tokensEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("LS_DATA_DIR", dir)
	t.Setenv("LS_STREAM_KEY", "")
	t.Setenv("LS_PUBLIC_URL", "https://live.example.com/")
	for _, args := range [][]string{{"keys", "add", "77"}, {"keys", "add", "5"}, {"keys", "private", "77"}} {
		if err := run(args, io.Discard, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	return dir
}

// TestTokensIssuePrintsAWatchURL checks that "gateway tokens issue" prints
// the watch URL alone, with a token that verifies for the channel under
// the key in the data directory and lives as long as --ttl says.
func TestTokensIssuePrintsAWatchURL(t *testing.T) {
	dir := tokensEnv(t)
	for _, tc := range []struct {
		args []string
		ttl  time.Duration
	}{
		{[]string{"77"}, 2 * time.Hour},
		{[]string{"77", "--ttl", "90m"}, 90 * time.Minute},
		{[]string{"--ttl=7d", "77"}, 7 * 24 * time.Hour},
		{[]string{"77", "-ttl", "1m"}, time.Minute},
		{[]string{"77", "--ttl", "30d"}, 30 * 24 * time.Hour},
	} {
		var out, errOut bytes.Buffer
		before := time.Now()
		if err := run(append([]string{"tokens", "issue"}, tc.args...), &out, &errOut); err != nil {
			t.Fatalf("tokens issue %v: %v", tc.args, err)
		}
		line := out.String()
		const prefix = "https://live.example.com/watch/77?token="
		if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
			t.Fatalf("tokens issue %v printed %q; want one line %s<token>", tc.args, line, prefix)
		}
		if errOut.Len() != 0 {
			t.Errorf("tokens issue for a private channel noted %q", errOut.String())
		}
		token := strings.TrimSuffix(strings.TrimPrefix(line, prefix), "\n")
		key, err := viewtoken.LoadOrCreateKey(dir)
		if err != nil {
			t.Fatal(err)
		}
		c, err := viewtoken.Parse(key, token, 77, time.Now())
		if err != nil {
			t.Fatalf("the printed token does not verify: %v", err)
		}
		exp := time.Unix(c.Expires, 0)
		if lo, hi := before.Add(tc.ttl).Add(-time.Second), time.Now().Add(tc.ttl); exp.Before(lo) || exp.After(hi) {
			t.Errorf("tokens issue %v: expires at %v, want %v from now", tc.args, exp, tc.ttl)
		}
		if err := viewtoken.Verify(key, token, 5, time.Now()); !errors.Is(err, viewtoken.ErrOtherChannel) {
			t.Errorf("the token verifies for channel 5: %v", err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, viewtoken.KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signing key: %v, %v; want mode 600", fi, err)
	}
}

func TestTokensIssueForAPublicChannelSaysSo(t *testing.T) {
	tokensEnv(t)
	t.Setenv("LS_PUBLIC_URL", "")
	t.Setenv("LS_PUBLIC_HOST", "live.example.com")
	t.Setenv("LS_HTTP_ADDR", ":9000")
	var out, errOut bytes.Buffer
	if err := run([]string{"tokens", "issue", "5"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "http://live.example.com:9000/watch/5?token=") {
		t.Errorf("printed %q", out.String())
	}
	if !strings.Contains(errOut.String(), "channel 5 is public") || !strings.Contains(errOut.String(), "gateway keys private 5") {
		t.Errorf("noted %q; want a note that channel 5 is public", errOut.String())
	}
}

func TestTokensErrors(t *testing.T) {
	tokensEnv(t)
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"tokens"}, true, "tokens: missing command"},
		{[]string{"tokens", "mint", "77"}, true, `tokens: unknown command "mint"`},
		{[]string{"tokens", "issue"}, true, "tokens: issue needs a channel"},
		{[]string{"tokens", "issue", "77", "78"}, true, "tokens: issue takes one channel, got 2"},
		{[]string{"tokens", "issue", "77", "--for", "2h"}, true, `tokens: issue: unknown option "--for"`},
		{[]string{"tokens", "issue", "77", "--ttl"}, true, "tokens: issue: --ttl needs a duration"},
		{[]string{"tokens", "issue", "seventy"}, false, `tokens: issue: channel id "seventy" is not a decimal number`},
		{[]string{"tokens", "issue", "0"}, false, "tokens: issue: channel id 0 is not allowed"},
		{[]string{"tokens", "issue", "9"}, false, "tokens: issue: channel 9 has no stream key (gateway keys add 9)"},
		{[]string{"tokens", "issue", "77", "--ttl", "soon"}, false, `tokens: issue: --ttl: "soon" is not a duration, like 2h, 90m or 7d`},
		{[]string{"tokens", "issue", "77", "--ttl", "30s"}, false, "tokens: issue: --ttl: 30s is outside 1m to 30d"},
		{[]string{"tokens", "issue", "77", "--ttl", "31d"}, false, "tokens: issue: --ttl: 31d is outside 1m to 30d"},
		{[]string{"tokens", "issue", "77", "--ttl", "99999999999d"}, false, "tokens: issue: --ttl: 99999999999d is outside 1m to 30d"},
		{[]string{"tokens", "issue", "77", "--ttl", "721h"}, false, "tokens: issue: --ttl: 721h is outside"},
		{[]string{"tokens", "issue", "77", "--ttl=-1h"}, false, "tokens: issue: --ttl: -1h is outside"},
	} {
		var out, errOut bytes.Buffer
		err := run(tc.args, &out, &errOut)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error starting %q", tc.args, err, tc.want)
			continue
		}
		if errors.Is(err, errTokensUsage) != tc.usage {
			t.Errorf("%v: usage error %v, want %v", tc.args, errors.Is(err, errTokensUsage), tc.usage)
		}
		if out.Len() != 0 || errOut.Len() != 0 {
			t.Errorf("%v printed %q and noted %q on error", tc.args, out.String(), errOut.String())
		}
	}
}

func TestHelpListsTheTokensAndPrivacyCommands(t *testing.T) {
	t.Setenv("LS_DATA_DIR", t.TempDir())
	var out bytes.Buffer
	if err := run([]string{"--help"}, &out, io.Discard); err != envconfig.ErrHelp {
		t.Fatalf("run --help: %v", err)
	}
	for _, want := range []string{"gateway keys private [channel]", "gateway keys public [channel]", "gateway tokens issue <channel> [--ttl 2h]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not list %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run([]string{"tokens", "help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "gateway tokens issue") {
		t.Errorf("tokens help: %v, %q", err, out.String())
	}
}
