package main

import (
	"io"
	"strings"
	"testing"

	"lightspeed/function/app"
)

// TestSettingsOutOfBoundsAreRefused checks that a function refuses a
// capacity or an idle time it cannot use, naming the variable. The bad
// log level stops run right after the settings if they were accepted.
func TestSettingsOutOfBoundsAreRefused(t *testing.T) {
	t.Setenv("LS_LOG_LEVEL", "bogus")
	for _, tc := range []struct{ name, value, want string }{
		{"LS_CAPACITY", "0", "LS_CAPACITY: 0 is less than 1"},
		{"LS_CAPACITY", "-5", "LS_CAPACITY: -5 is less than 1"},
		{"LS_IDLE_EXIT", "-1s", "LS_IDLE_EXIT: -1s is less than 0s"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			err := app.Main(nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
