package localprovider

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestOutputLogsEachLineWithinBounds(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	// "é" is two bytes; a cut in its middle backs off to its start.
	accented := strings.Repeat("x", maxLine-1) + "é" + "tail"
	for _, tc := range []struct {
		name   string
		writes []string
		want   []string // messages; a trailing "+" marks a truncated line
	}{
		{"one line per write", []string{"a\n", "b\n"}, []string{"a", "b"}},
		{"lines split across writes", []string{"ab", "c\nd", "e\n"}, []string{"abc", "de"}},
		{"several lines in one write", []string{"a\nb\nc\n"}, []string{"a", "b", "c"}},
		{"empty lines and carriage returns dropped", []string{"\n\r\na\r\n"}, []string{"a"}},
		{"last line without newline logged at the end", []string{"a\nb"}, []string{"a", "b"}},
		{"long line cut", []string{long + "\nnext\n"}, []string{long[:maxLine] + "+", "next"}},
		{"long line cut across writes", []string{long[:maxLine-1], long[maxLine-1:], "\nnext\n"}, []string{long[:maxLine] + "+", "next"}},
		{"cut at a character's start", []string{accented + "\n"}, []string{accented[:maxLine-1] + "+"}},
		{"cut at a character's start across writes", []string{accented[:maxLine-1], accented[maxLine-1:], "\n"}, []string{accented[:maxLine-1] + "+"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &logs{changed: make(chan struct{})}
			o := &output{log: slog.New(recorder{logs: l})}
			for _, w := range tc.writes {
				if n, err := o.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("write: %d, %v; want %d, nil", n, err, len(w))
				}
			}
			o.flush()
			var got []string
			for _, r := range l.all() {
				if r.attrs["truncated"] == "true" {
					r.msg += "+"
				}
				got = append(got, r.msg)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
