package main

import (
	"strings"
	"testing"
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
			err := run(nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
