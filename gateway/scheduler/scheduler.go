// Package scheduler picks the function (edge WebRTC worker) that serves
// each viewer: one in the viewer's region if it has room, else one in the
// nearest region that has, least loaded first.
package scheduler

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
)

// Function is a function as the scheduler sees it.
type Function struct {
	ID       string
	Region   string // Fly region code, e.g. "ams"
	Capacity int    // max viewers
	Viewers  int    // as last reported by the function
	Draining bool
}

// ErrNoCapacity is returned by Pick when every candidate function is full,
// draining or excluded, or there are none.
var ErrNoCapacity = errors.New("scheduler: no function can take another viewer")

// Scheduler assigns viewers to functions. Safe for concurrent use.
//
// Functions report their viewer counts only now and then, so the scheduler
// also counts the viewers it has assigned itself and not yet seen released:
// a function's load is the larger of the two, and a burst of viewers
// spreads over the functions before the next reports arrive.
type Scheduler struct {
	list func() []Function
	home string

	mu       sync.Mutex
	assigned map[string]int // function ID → viewers picked and not released
}

// New returns a scheduler choosing among the functions list returns (it is
// called on every Pick, outside the scheduler's lock). home is the region
// of the gateway itself, assumed for viewers whose region is missing or
// unknown.
func New(list func() []Function, home string) *Scheduler {
	return &Scheduler{
		list:     list,
		home:     strings.ToLower(home),
		assigned: make(map[string]int),
	}
}

// Pick returns the function that should serve a viewer in region, skipping
// the functions whose IDs are in exclude, and counts one assignment to it;
// call Release when that viewer's session ends.
//
// A function is a candidate if it is not draining and its load (the larger
// of its reported viewers and its assignments) is below its capacity. The
// candidates in the viewer's region come first, then those of other
// regions by distance from the viewer's region; functions equally far are
// ordered by load relative to capacity, then by ID. A region of "" or one
// not in the region table means the scheduler's home region; if that is
// unknown too, every region is equally near.
func (s *Scheduler) Pick(region string, exclude ...string) (Function, error) {
	fns := s.list()
	from := s.viewerRegion(region)

	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		best     Function
		bestRank rank
		found    bool
	)
	for _, f := range fns {
		if f.Draining || slices.Contains(exclude, f.ID) {
			continue
		}
		r := rank{distance: distanceFrom(from, f.Region), load: max(f.Viewers, s.assigned[f.ID]), capacity: f.Capacity, id: f.ID}
		if r.load >= r.capacity {
			continue
		}
		if !found || r.less(bestRank) {
			best, bestRank, found = f, r, true
		}
	}
	if !found {
		return Function{}, ErrNoCapacity
	}
	s.assigned[best.ID]++
	return best, nil
}

// Release records that a session that Pick assigned to the function with
// the given ID has ended. Releasing more than was assigned is harmless.
func (s *Scheduler) Release(functionID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch n := s.assigned[functionID]; {
	case n > 1:
		s.assigned[functionID] = n - 1
	case n == 1:
		delete(s.assigned, functionID)
	}
}

// Assigned returns the number of viewers Pick assigned to the function with
// the given ID and not yet released.
func (s *Scheduler) Assigned(functionID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.assigned[functionID]
}

// viewerRegion returns the region distances are measured from: region if
// the table knows it, else home if the table knows that, else "" (any).
func (s *Scheduler) viewerRegion(region string) string {
	region = strings.ToLower(region)
	if _, ok := LookupRegion(region); ok {
		return region
	}
	if _, ok := LookupRegion(s.home); ok {
		return s.home
	}
	return ""
}

// distanceFrom returns how far a function in region to is from a viewer in
// region from, in kilometres: 0 for the same region or when from is ""
// (any), +Inf when the table does not know to.
func distanceFrom(from, to string) float64 {
	if from == "" || strings.EqualFold(from, to) {
		return 0
	}
	km, ok := Distance(from, strings.ToLower(to))
	if !ok {
		return math.Inf(1)
	}
	return km
}

// rank is what Pick orders candidates by.
type rank struct {
	distance       float64
	load, capacity int // capacity > load >= 0
	id             string
}

// less reports whether a is a better choice than b: nearer, then less
// loaded relative to capacity, then smaller ID.
func (a rank) less(b rank) bool {
	if c := cmp.Compare(a.distance, b.distance); c != 0 {
		return c < 0
	}
	// a.load/a.capacity < b.load/b.capacity, without division.
	if x, y := a.load*b.capacity, b.load*a.capacity; x != y {
		return x < y
	}
	return a.id < b.id
}
