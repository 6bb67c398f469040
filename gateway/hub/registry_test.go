package hub_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"lightspeed/gateway/hub"
)

func TestRegistryKeepsOneHubPerChannel(t *testing.T) {
	r := hub.NewRegistry(testOptions(&clock{t: t0}))
	if h := r.Get(77); h != nil {
		t.Fatalf("Get on an empty registry = %v, want nil", h)
	}
	h77 := r.GetOrCreate(77)
	if h77.Channel() != 77 || r.GetOrCreate(77) != h77 || r.Get(77) != h77 {
		t.Fatal("GetOrCreate does not return the same hub for the same channel")
	}
	r.GetOrCreate(3)
	r.GetOrCreate(1000)
	var channels []uint32
	for _, h := range r.List() {
		channels = append(channels, h.Channel())
	}
	if len(channels) != 3 || channels[0] != 3 || channels[1] != 77 || channels[2] != 1000 {
		t.Errorf("List channels %v, want [3 77 1000]", channels)
	}

	s := h77.Subscribe(hub.SubscribeOptions{})
	r.Close()
	if _, err := s.Next(context.Background()); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Next after Registry.Close: %v, want ErrClosed", err)
	}
	if len(r.List()) != 0 || r.Get(77) != nil {
		t.Error("the registry still holds hubs after Close")
	}
	if _, err := r.GetOrCreate(5).Subscribe(hub.SubscribeOptions{}).Next(context.Background()); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("hub created after Close is open: %v", err)
	}
}

func TestClaimingAHeldChannelFailsWithErrInUse(t *testing.T) {
	tests := []struct {
		name          string
		started       bool // the holder started its session
		wantPublishes int
	}{
		{"holder not started", false, 0},
		{"holder live", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hub.NewRegistry(testOptions(&clock{t: t0}))
			defer r.Close()
			holder, err := r.Claim(77)
			if err != nil {
				t.Fatalf("first Claim: %v", err)
			}
			if tt.started {
				holder.Start(obs)
			}
			second, err := r.Claim(77)
			if second != nil || !errors.Is(err, hub.ErrInUse) {
				t.Fatalf("second Claim = %v, %v; want nil and ErrInUse", second, err)
			}
			if got, want := err.Error(), "hub: channel 77: in use"; got != want {
				t.Errorf("error %q, want %q", got, want)
			}
			if st := holder.Hub().Stats(); st.Live != tt.started || st.Publishes != tt.wantPublishes {
				t.Errorf("the refused claim changed the holder's session: live %v, publishes %d", st.Live, st.Publishes)
			}
			if _, err := r.Claim(78); err != nil {
				t.Errorf("Claim of another channel: %v", err)
			}
		})
	}
}

func TestReleaseTakesTheChannelOfflineAndTheNextClaimContinuesTheNumbering(t *testing.T) {
	clk := &clock{t: t0}
	r := hub.NewRegistry(testOptions(clk))
	defer r.Close()
	first := claim(t, r, 77, obs)
	h := first.Hub()
	s := subscribe(t, h, hub.SubscribeOptions{})
	writeSeqs(first, t0, 1, 2, 3)

	first.Release()
	first.Release() // idempotent
	if st := h.Stats(); st.Live {
		t.Fatal("channel live after Release")
	}
	second := claim(t, r, 77, hub.PublisherInfo{Software: "OBS Studio 30.0.0"})
	if second.Hub() != h {
		t.Fatal("the new claim got another hub: the output numbering restarts")
	}
	writeSeqs(second, clk.Advance(time.Second), 500, 501)

	got := drain(t, s)
	if seqs := payloadSeqs(got); !equal(seqs, []uint16{1, 2, 3, 500, 501}) {
		t.Fatalf("publisher seqs %v, want [1 2 3 500 501]", seqs)
	}
	contiguous(t, got)
	if d := got[3].Timestamp - got[2].Timestamp; d != 90000 {
		t.Errorf("timestamp step across the new claim %d, want 90000 (the 1 s pause)", d)
	}
	if st := h.Stats(); !st.Live || st.Publishes != 2 || st.Publisher.Software != "OBS Studio 30.0.0" {
		t.Errorf("stats live %v publishes %d publisher %q", st.Live, st.Publishes, st.Publisher.Software)
	}
}

func TestReleasedPublisherChangesNothing(t *testing.T) {
	ops := []struct {
		name string
		do   func(p *hub.Publisher)
	}{
		{"WriteRTP", func(p *hub.Publisher) { writeSeqs(p, t0, 4, 5) }},
		{"AddNACKs", func(p *hub.Publisher) { p.AddNACKs(3) }},
		{"AddRecovered", func(p *hub.Publisher) { p.AddRecovered(2) }},
		{"Start", func(p *hub.Publisher) { p.Start(hub.PublisherInfo{Software: "stale"}) }},
		{"Release", func(p *hub.Publisher) { p.Release() }},
	}
	for _, next := range []struct {
		name  string
		claim bool
	}{{"channel free", false}, {"channel held by the next publisher", true}} {
		for _, op := range ops {
			t.Run(next.name+"/"+op.name, func(t *testing.T) {
				r := hub.NewRegistry(testOptions(&clock{t: t0}))
				defer r.Close()
				old := claim(t, r, 77, obs)
				h := old.Hub()
				writeSeqs(old, t0, 1, 3) // 3 is held behind the missing 2
				old.Release()
				if next.claim {
					claim(t, r, 77, hub.PublisherInfo{Software: "next"})
				}
				s := subscribe(t, h, hub.SubscribeOptions{})
				before := h.Stats()

				op.do(old)

				if after := h.Stats(); !reflect.DeepEqual(after, before) {
					t.Errorf("stats changed:\n%+v\nwant\n%+v", after, before)
				}
				if got := drain(t, s); len(got) != 0 {
					t.Errorf("%d packets released", len(got))
				}
				if _, err := r.Claim(77); next.claim != errors.Is(err, hub.ErrInUse) {
					t.Errorf("Claim after the stale %s: %v", op.name, err)
				}
			})
		}
	}
}

func TestStartingTwiceKeepsTheSession(t *testing.T) {
	h, pub, _ := newLiveHub(t)
	writeSeqs(pub, t0, 1, 3) // 3 is held
	pub.Start(hub.PublisherInfo{Software: "again"})
	if st := h.Stats(); st.Publishes != 1 || st.Publisher.Software != obs.Software || st.Lost != 0 {
		t.Errorf("publishes %d publisher %q lost %d, want 1 %q 0", st.Publishes, st.Publisher.Software, st.Lost, obs.Software)
	}
}

func TestConcurrentClaimsHaveExactlyOneWinner(t *testing.T) {
	const rounds, claimants = 50, 8
	r := hub.NewRegistry(testOptions(&clock{t: t0}))
	defer r.Close()
	for round := range rounds {
		channel := uint32(1 + round%3) // later rounds race for released channels
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			winners = make(chan *hub.Publisher, claimants)
			errs    = make(chan error, claimants)
		)
		for range claimants {
			wg.Go(func() {
				<-start
				p, err := r.Claim(channel)
				if err != nil {
					errs <- err
					return
				}
				p.Start(obs)
				winners <- p
			})
		}
		close(start)
		wg.Wait()
		close(winners)
		close(errs)
		if len(winners) != 1 {
			t.Fatalf("round %d: %d claims won, want 1", round, len(winners))
		}
		for err := range errs {
			if !errors.Is(err, hub.ErrInUse) {
				t.Fatalf("round %d: losing claim: %v, want ErrInUse", round, err)
			}
		}
		(<-winners).Release()
	}
}

func TestClaimAfterCloseFails(t *testing.T) {
	r := hub.NewRegistry(testOptions(&clock{t: t0}))
	r.Close()
	if p, err := r.Claim(77); p != nil || !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Claim after Close = %v, %v; want nil and ErrClosed", p, err)
	}
}
