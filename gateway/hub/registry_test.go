package hub_test

import (
	"context"
	"errors"
	"testing"

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
