package flyprovider

import (
	"context"
	"math"
	"sync"
	"time"
)

// Clock is the time the provider paces and backs off by. Tests give a
// clock whose Sleep advances it at once.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Sleep returns after d, or with ctx's error when ctx ends first.
	Sleep(ctx context.Context, d time.Duration) error
}

// realClock is the system's clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fly limits the Machines API per action and per machine: "1 request, per
// second, per action (i.e. Create Machine, Start Machine etc.) — with a
// short-term burst limit up to 3 req/s, per action".
const (
	paceRate  = 1.0 // requests per second, per (machine, action)
	paceBurst = 3.0
	// tokenSlack absorbs the rounding of adding up seconds as floats.
	tokenSlack = 1e-9
)

// paceKey is what Fly limits by: a machine (or the app, for list and
// create, which name no machine) and an action.
type paceKey struct {
	subject string // machine id; "" for the app
	action  string // "list", "create", "start", "stop", "destroy"
}

// pacer queues requests per paceKey and lets them go at Fly's rate: a
// token bucket per key, whose requests wait their turn in line.
type pacer struct {
	clock Clock

	mu      sync.Mutex
	buckets map[paceKey]*bucket
}

// bucket is one key's tokens and line.
type bucket struct {
	turn      chan struct{} // holds one value while a request waits for a token
	users     int           // requests holding this bucket; guarded by pacer.mu
	tokens    float64       // guarded by pacer.mu
	last      time.Time     // when tokens was last refilled; guarded by pacer.mu
	notBefore time.Time     // no token before this (a 429's Retry-After); guarded by pacer.mu
}

// sweepAbove is the number of buckets above which idle, full ones are
// forgotten, so that machines long destroyed do not keep theirs.
const sweepAbove = 256

func newPacer(clock Clock) *pacer {
	return &pacer{clock: clock, buckets: make(map[paceKey]*bucket)}
}

// wait returns when k may send a request, after those queued before it.
func (p *pacer) wait(ctx context.Context, k paceKey) error {
	b := p.acquire(k)
	defer p.release(b)
	select {
	case b.turn <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.turn }()
	for {
		p.mu.Lock()
		now := p.clock.Now()
		p.refill(b, now)
		var d time.Duration
		switch {
		case now.Before(b.notBefore):
			d = b.notBefore.Sub(now)
		case b.tokens >= 1-tokenSlack:
			b.tokens = max(b.tokens-1, 0)
			p.mu.Unlock()
			return nil
		default:
			// Rounded up, so that the sleep earns the token.
			d = time.Duration(math.Ceil((1 - b.tokens) / paceRate * float64(time.Second)))
		}
		p.mu.Unlock()
		if err := p.clock.Sleep(ctx, d); err != nil {
			return err
		}
	}
}

// hold keeps k from sending before t: the API said so (429 Retry-After).
func (p *pacer) hold(k paceKey, t time.Time) {
	b := p.acquire(k)
	defer p.release(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.After(b.notBefore) {
		b.notBefore = t
	}
}

func (p *pacer) acquire(k paceKey) *bucket {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.buckets[k]
	if b == nil {
		if len(p.buckets) >= sweepAbove {
			p.sweep()
		}
		b = &bucket{turn: make(chan struct{}, 1), tokens: paceBurst, last: p.clock.Now()}
		p.buckets[k] = b
	}
	b.users++
	return b
}

func (p *pacer) release(b *bucket) {
	p.mu.Lock()
	b.users--
	p.mu.Unlock()
}

// refill adds the tokens earned since b.last. p.mu is held.
func (p *pacer) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(paceBurst, b.tokens+el.Seconds()*paceRate)
		b.last = now
	}
}

// sweep forgets the buckets nobody holds that are full again: a new
// bucket would start the same. p.mu is held.
func (p *pacer) sweep() {
	now := p.clock.Now()
	for k, b := range p.buckets {
		p.refill(b, now)
		if b.users == 0 && b.tokens >= paceBurst && !now.Before(b.notBefore) {
			delete(p.buckets, k)
		}
	}
}
