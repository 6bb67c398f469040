package flyprovider

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"lightspeed/gateway/fleet"
)

func TestRetryAfterReadsSecondsAndHTTPDates(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, tc := range []struct {
		h    string
		want time.Duration
	}{
		{"", -1},
		{"0", 0},
		{"5", 5 * time.Second},
		{" 12 ", 12 * time.Second},
		{"-1", -1},
		{"1.5", -1},
		{"soon", -1},
		{"99999999999999", maxRetryAfter},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},               // past: now
		{"Tuesday, 04-Mar-25 05:06:17 GMT", 10 * time.Second},            // RFC 850
		{now.Add(48 * time.Hour).Format(http.TimeFormat), maxRetryAfter}, // capped
	} {
		if got := retryAfter(tc.h, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestBackoffGrowsExponentiallyWithJitterUpToACap(t *testing.T) {
	for n := 1; n <= 40; n++ {
		step := retryCap
		if n <= 6 {
			step = retryBase << (n - 1)
		}
		seen := map[time.Duration]bool{}
		for range 50 {
			d := jittered(n)
			if d < step/2 || d > step {
				t.Fatalf("jittered(%d) = %v, want between %v and %v", n, d, step/2, step)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("jittered(%d) always %v: no jitter", n, seen)
		}
	}
}

func TestErrorsNameLayerSubjectActionAndAnswer(t *testing.T) {
	cause := errors.New("EOF")
	for _, tc := range []struct {
		e        *Error
		want     string
		notFound bool
	}{
		{&Error{App: "ls-fn", Machine: "3d8d413b29d089", Op: "stop", Status: 409, Message: "machine is stopping"},
			"fly: machine 3d8d413b29d089: stop: 409 Conflict: machine is stopping", false},
		{&Error{App: "ls-fn", Op: "create in fra", Err: cause, Attempts: 1},
			"fly: app ls-fn: create in fra: EOF", false},
		{&Error{App: "ls-fn", Op: "list", Status: 503, Message: "busy", Attempts: 5},
			"fly: app ls-fn: list: 503 Service Unavailable: busy (after 5 attempts)", false},
		{&Error{App: "ls-fn", Machine: "3d8d413b29d089", Op: "start", Status: 404, Message: "machine not found"},
			"fly: machine 3d8d413b29d089: start: 404 Not Found: machine not found", true},
		{&Error{App: "nope", Op: "list", Status: 404, Message: "app not found"},
			"fly: app nope: list: 404 Not Found: app not found", false}, // no machine: not ErrNotFound
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if errors.Is(tc.e, fleet.ErrNotFound) != tc.notFound {
			t.Errorf("%q: errors.Is(ErrNotFound) = %v, want %v", tc.want, !tc.notFound, tc.notFound)
		}
		if tc.e.Err != nil && !errors.Is(tc.e, tc.e.Err) {
			t.Errorf("%q does not wrap its cause", tc.want)
		}
	}
}

func TestErrorMessageIsTheErrorFieldOrABoundedLine(t *testing.T) {
	for _, tc := range []struct {
		body string
		want string
	}{
		{`{"error":"unable to stop machine from current state: 'stopped'"}`, "unable to stop machine from current state: 'stopped'"},
		{"<html>\n<h1>502 Bad Gateway</h1>\n</html>\n", "<html> <h1>502 Bad Gateway</h1> </html>"},
		{`{"status":"x"}`, `{"status":"x"}`},
		{"", ""},
		{strings.Repeat("é", 300), strings.Repeat("é", 100) + "…"},
		{"a\xffb", "a\uFFFDb"},
	} {
		got := errorMessage(strings.NewReader(tc.body))
		if got != tc.want {
			t.Errorf("errorMessage(%.40q) = %.60q, want %.60q", tc.body, got, tc.want)
		}
	}
	long := errorMessage(strings.NewReader(strings.Repeat("x ", 10000)))
	if len(long) > maxMessage+len("…") || !utf8.ValidString(long) {
		t.Errorf("errorMessage of a long answer: %d bytes", len(long))
	}
}

func TestAMacaroonTokenIsSentAsItIs(t *testing.T) {
	for token, want := range map[string]string{
		"FlyV1 fm2_abc,fm2_def": "FlyV1 fm2_abc,fm2_def",
		"fo1_plain":             "Bearer fo1_plain",
	} {
		if got := authorization(token); got != want {
			t.Errorf("authorization(%q) = %q, want %q", token, got, want)
		}
	}
}
