package fanout

import "testing"

func TestRoundsStartOneViewerFurtherOn(t *testing.T) {
	vs := []*viewer{{id: "a"}, {id: "b"}, {id: "c"}}
	ids := func(vs []*viewer) (s string) {
		for _, v := range vs {
			s += v.id
		}
		return s
	}
	var scratch []*viewer
	for turn, want := range []string{"abc", "bca", "cab", "abc", "bca"} {
		scratch = rotated(scratch[:0], vs, turn)
		if got := ids(scratch); got != want {
			t.Errorf("turn %d: order %s, want %s", turn, got, want)
		}
	}
	if got := rotated(nil, nil, 7); len(got) != 0 {
		t.Errorf("no viewers: %d in the round", len(got))
	}
}
