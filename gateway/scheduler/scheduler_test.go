package scheduler

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// fixed returns a list function that always returns fns.
func fixed(fns ...Function) func() []Function {
	return func() []Function { return fns }
}

func fn(id, region string, capacity, viewers int) Function {
	return Function{ID: id, Region: region, Capacity: capacity, Viewers: viewers}
}

// nearerOf returns whichever of a and b is nearer to from by the table.
func nearerOf(t *testing.T, from, a, b string) string {
	t.Helper()
	da, okA := Distance(from, a)
	db, okB := Distance(from, b)
	if !okA || !okB {
		t.Fatalf("Distance(%s, %s|%s) unknown", from, a, b)
	}
	if db < da {
		return b
	}
	return a
}

func TestPick(t *testing.T) {
	draining := fn("ams-1", "ams", 10, 0)
	draining.Draining = true

	tests := []struct {
		name    string
		home    string
		fns     []Function
		region  string
		exclude []string
		want    string // function ID; "" means ErrNoCapacity
	}{
		{
			name:   "a function in the viewer's region is preferred to a less loaded one elsewhere",
			home:   "iad",
			fns:    []Function{fn("fra-1", "fra", 10, 0), fn("ams-1", "ams", 10, 9), fn("syd-1", "syd", 10, 0)},
			region: "ams",
			want:   "ams-1",
		},
		{
			name:   "a full region falls to the nearest other region",
			home:   "iad",
			fns:    []Function{fn("ams-1", "ams", 10, 10), fn("syd-1", "syd", 10, 0), fn("fra-1", "fra", 10, 0), fn("lhr-1", "lhr", 10, 0)},
			region: "ams",
			want:   nearerOf(t, "ams", "fra", "lhr") + "-1",
		},
		{
			name:   "a viewer with no function in its region goes to the nearest region",
			home:   "ams",
			fns:    []Function{fn("syd-1", "syd", 10, 0), fn("ord-1", "ord", 10, 0), fn("iad-1", "iad", 10, 0)},
			region: "ewr",
			want:   "iad-1",
		},
		{
			name:   "the least loaded function of a region is chosen",
			home:   "ams",
			fns:    []Function{fn("ams-1", "ams", 10, 6), fn("ams-2", "ams", 10, 3), fn("ams-3", "ams", 10, 5)},
			region: "ams",
			want:   "ams-2",
		},
		{
			name:   "load is relative to capacity",
			home:   "ams",
			fns:    []Function{fn("ams-1", "ams", 10, 4), fn("ams-2", "ams", 100, 30)},
			region: "ams",
			want:   "ams-2",
		},
		{
			name:   "equally loaded functions are ordered by ID",
			home:   "ams",
			fns:    []Function{fn("ams-b", "ams", 10, 2), fn("ams-a", "ams", 20, 4)},
			region: "ams",
			want:   "ams-a",
		},
		{
			name:   "a draining function is skipped",
			home:   "ams",
			fns:    []Function{draining, fn("fra-1", "fra", 10, 5)},
			region: "ams",
			want:   "fra-1",
		},
		{
			name:    "an excluded function is skipped",
			home:    "ams",
			fns:     []Function{fn("ams-1", "ams", 10, 0), fn("ams-2", "ams", 10, 5), fn("ams-3", "ams", 10, 1)},
			region:  "ams",
			exclude: []string{"ams-1", "ams-3"},
			want:    "ams-2",
		},
		{
			name:   "every function full is no capacity",
			home:   "ams",
			fns:    []Function{fn("ams-1", "ams", 10, 10), fn("fra-1", "fra", 5, 7)},
			region: "ams",
		},
		{
			name:   "a function of zero capacity takes no viewer",
			home:   "ams",
			fns:    []Function{fn("ams-1", "ams", 0, 0)},
			region: "ams",
		},
		{
			name:   "no functions is no capacity",
			home:   "ams",
			region: "ams",
		},
		{
			name:    "every function excluded or draining is no capacity",
			home:    "ams",
			fns:     []Function{draining, fn("ams-2", "ams", 10, 0)},
			region:  "ams",
			exclude: []string{"ams-2"},
		},
		{
			name:   "an empty region means the home region",
			home:   "syd",
			fns:    []Function{fn("ams-1", "ams", 10, 0), fn("syd-1", "syd", 10, 9)},
			region: "",
			want:   "syd-1",
		},
		{
			name:   "an unknown region means the home region",
			home:   "syd",
			fns:    []Function{fn("ams-1", "ams", 10, 0), fn("syd-1", "syd", 10, 9)},
			region: "zzz",
			want:   "syd-1",
		},
		{
			name:   "an unknown region with an unknown home means any region, least loaded first",
			home:   "",
			fns:    []Function{fn("ams-1", "ams", 10, 5), fn("syd-1", "syd", 10, 1), fn("fra-1", "fra", 10, 3)},
			region: "zzz",
			want:   "syd-1",
		},
		{
			name:   "a region code is case-insensitive",
			home:   "syd",
			fns:    []Function{fn("ams-1", "ams", 10, 5), fn("syd-1", "syd", 10, 1)},
			region: "AMS",
			want:   "ams-1",
		},
		{
			name:   "a function in a region the table does not know comes after known regions",
			home:   "ams",
			fns:    []Function{fn("local-1", "xyz", 10, 0), fn("syd-1", "syd", 10, 5)},
			region: "ams",
			want:   "syd-1",
		},
		{
			name:   "a function in a region the table does not know still serves when nothing else can",
			home:   "ams",
			fns:    []Function{fn("local-1", "xyz", 10, 0), fn("syd-1", "syd", 10, 10)},
			region: "ams",
			want:   "local-1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(fixed(tt.fns...), tt.home)
			got, err := s.Pick(tt.region, tt.exclude...)
			if tt.want == "" {
				if !errors.Is(err, ErrNoCapacity) {
					t.Fatalf("Pick = %+v, %v; want ErrNoCapacity", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Pick: %v", err)
			}
			if got.ID != tt.want {
				t.Errorf("Pick = %s, want %s", got.ID, tt.want)
			}
			if n := s.Assigned(got.ID); n != 1 {
				t.Errorf("Assigned(%s) = %d after one Pick, want 1", got.ID, n)
			}
		})
	}
}

func TestPickSpreadsABurstBeforeLoadReports(t *testing.T) {
	s := New(fixed(fn("ams-1", "ams", 100, 0), fn("ams-2", "ams", 100, 0)), "ams")
	for range 10 {
		if _, err := s.Pick("ams"); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := s.Assigned("ams-1"), s.Assigned("ams-2"); a != 5 || b != 5 {
		t.Errorf("Assigned = %d/%d, want 5/5", a, b)
	}
}

func TestPickCountsAssignmentsAgainstCapacity(t *testing.T) {
	s := New(fixed(fn("ams-1", "ams", 2, 0), fn("fra-1", "fra", 1, 0)), "ams")
	var got []string
	for range 3 {
		f, err := s.Pick("ams")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f.ID)
	}
	if want := "[ams-1 ams-1 fra-1]"; fmt.Sprint(got) != want {
		t.Errorf("picks = %v, want %s", got, want)
	}
	if _, err := s.Pick("ams"); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("fourth Pick: %v, want ErrNoCapacity", err)
	}

	s.Release("ams-1")
	f, err := s.Pick("ams")
	if err != nil || f.ID != "ams-1" {
		t.Errorf("Pick after Release = %s, %v; want ams-1", f.ID, err)
	}
}

func TestLoadIsTheLargerOfReportedAndAssigned(t *testing.T) {
	var mu sync.Mutex
	reported := fn("ams-1", "ams", 4, 0)
	report := func(viewers int) {
		mu.Lock()
		reported.Viewers = viewers
		mu.Unlock()
	}
	s := New(func() []Function {
		mu.Lock()
		defer mu.Unlock()
		return []Function{reported}
	}, "ams")

	// A report above the assignments counts: 3 reported, 0 assigned.
	report(3)
	if _, err := s.Pick("ams"); err != nil {
		t.Fatalf("Pick at load 3 of 4: %v", err)
	}
	report(4) // the function now reports the viewer just picked
	if _, err := s.Pick("ams"); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Pick with 4 of 4 reported and 1 assigned: %v, want ErrNoCapacity", err)
	}

	// Assignments above a stale report count: 0 reported, 1 assigned.
	report(0)
	for i := 2; i <= 4; i++ {
		if _, err := s.Pick("ams"); err != nil {
			t.Fatalf("Pick %d of 4: %v", i, err)
		}
	}
	if _, err := s.Pick("ams"); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("Pick with 0 reported and 4 assigned: %v, want ErrNoCapacity", err)
	}
}

func TestRelease(t *testing.T) {
	s := New(fixed(fn("ams-1", "ams", 10, 0)), "ams")
	for range 3 {
		if _, err := s.Pick(""); err != nil {
			t.Fatal(err)
		}
	}
	s.Release("ams-1")
	if n := s.Assigned("ams-1"); n != 2 {
		t.Errorf("Assigned after 3 picks and 1 release = %d, want 2", n)
	}
	s.Release("ams-1")
	s.Release("ams-1")
	s.Release("ams-1") // one too many
	s.Release("nope")  // never assigned
	if n := s.Assigned("ams-1"); n != 0 {
		t.Errorf("Assigned after releasing everything = %d, want 0", n)
	}
	if n := s.Assigned("nope"); n != 0 {
		t.Errorf("Assigned of an unknown function = %d, want 0", n)
	}
}

func TestPickIsSafeForConcurrentUse(t *testing.T) {
	const (
		perFunction = 50
		viewers     = 4 * perFunction
	)
	s := New(fixed(fn("ams-1", "ams", perFunction, 0), fn("fra-1", "fra", perFunction, 0)), "ams")

	// Twice as many viewers as there is room for, all at once: exactly the
	// capacity is handed out, whatever the interleaving.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		picked []string
	)
	for range viewers {
		wg.Go(func() {
			f, err := s.Pick("ams")
			if errors.Is(err, ErrNoCapacity) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			picked = append(picked, f.ID)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(picked) != 2*perFunction {
		t.Fatalf("%d picks succeeded, want %d", len(picked), 2*perFunction)
	}
	for _, id := range []string{"ams-1", "fra-1"} {
		if n := s.Assigned(id); n != perFunction {
			t.Errorf("Assigned(%s) = %d, want %d", id, n, perFunction)
		}
	}

	for _, id := range picked {
		wg.Go(func() { s.Release(id) })
	}
	wg.Wait()
	for _, id := range []string{"ams-1", "fra-1"} {
		if n := s.Assigned(id); n != 0 {
			t.Errorf("Assigned(%s) after releasing all = %d, want 0", id, n)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	var fns []Function
	for i, r := range Regions() {
		fns = append(fns, fn(fmt.Sprintf("%s-%d", r.Code, i), r.Code, 1<<30, i))
	}
	s := New(fixed(fns...), "ams")
	b.ReportAllocs()
	for b.Loop() {
		f, err := s.Pick("waw")
		if err != nil {
			b.Fatal(err)
		}
		s.Release(f.ID)
	}
}
