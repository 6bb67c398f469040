package fleet

import (
	"errors"
	"strings"
	"time"

	"lightspeed/gateway/scheduler"
)

// Picker chooses a function for each viewer through the scheduler and
// tells the fleet where functions are missing: a viewer served outside
// its region (or the nearest region functions may run in) makes the fleet
// start one there, while the viewer is served at once from where there is
// room. Only when no function anywhere has room does Pick wait for a new
// one, up to Wait.
type Picker struct {
	Scheduler *scheduler.Scheduler
	Fleet     *Fleet
	Wait      time.Duration // how long a viewer waits for a function to start, default 15s
}

// Pick returns the function that should serve a viewer in region (see
// scheduler.Scheduler.Pick), waiting for the fleet when none has room.
func (p *Picker) Pick(region string, exclude ...string) (scheduler.Function, error) {
	wait := p.Wait
	if wait <= 0 {
		wait = 15 * time.Second
	}
	var deadline <-chan time.Time
	for {
		ready := p.Fleet.Ready() // before Pick: a function that becomes ready after it wakes the wait
		fn, err := p.Scheduler.Pick(region, exclude...)
		if err == nil {
			if p.Fleet.Managed() && !strings.EqualFold(fn.Region, p.Fleet.regionFor(region)) {
				p.Fleet.Want(region)
			}
			return fn, nil
		}
		if !errors.Is(err, scheduler.ErrNoCapacity) || !p.Fleet.Managed() {
			return fn, err
		}
		p.Fleet.Want(region)
		if deadline == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-ready:
		case <-deadline:
			return scheduler.Function{}, err
		}
	}
}

// Release records that a viewer's session on the function ended.
func (p *Picker) Release(functionID string) { p.Scheduler.Release(functionID) }
