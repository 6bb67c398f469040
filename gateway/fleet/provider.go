package fleet

import (
	"context"
	"errors"
	"time"
)

// State is where a machine is in its provider's life cycle.
type State string

// The states a provider reports.
const (
	Starting  State = "starting"  // created or woken, not running yet
	Started   State = "started"   // running (its function may not have connected to the relay yet)
	Stopping  State = "stopping"  // asked to stop
	Stopped   State = "stopped"   // not running; can be started again quickly
	Destroyed State = "destroyed" // gone for good
	Failed    State = "failed"    // the provider could not run it
)

// Machine is one function instance as its provider knows it.
type Machine struct {
	// ID is the provider's id of the machine (a Fly machine id, a local
	// process's key). The function announces it to the relay as its
	// machine id, so it is also the relay's function id.
	ID      string
	Region  string
	State   State
	Port    int    // the WebRTC UDP port of the function (distinct per machine)
	Image   string // what it runs: a container image, a binary's path
	Created time.Time
}

// Spec is what the fleet asks a provider to create.
type Spec struct {
	Region string
	Port   int               // the function's WebRTC UDP port, from LS_FUNCTION_UDP_PORTS
	Env    map[string]string // the function's environment: relay address, secret, fingerprint, …
}

// Provider runs function machines. Its methods are safe for concurrent use
// and return when the provider has accepted the request (not when the
// machine reached its new state: List tells). Errors wrap ErrNotFound for a
// machine the provider does not know.
type Provider interface {
	// Name is the provider's name: "local", "fly".
	Name() string
	// List returns every machine the provider runs for this gateway
	// (those it created, by its marks), whatever their state, so that a
	// restarted gateway adopts them.
	List(ctx context.Context) ([]Machine, error)
	// Create creates and starts a machine; its function connects to the
	// relay by itself.
	Create(ctx context.Context, spec Spec) (Machine, error)
	// Start starts a stopped machine again.
	Start(ctx context.Context, id string) error
	// Stop stops a machine, keeping it to start again.
	Stop(ctx context.Context, id string) error
	// Destroy removes a machine for good (stopping it first if needed).
	Destroy(ctx context.Context, id string) error
}

// Imager is a Provider that knows the image new machines get. The fleet
// drains machines that run another one (a deploy of the function app),
// starting their replacements first.
type Imager interface {
	Image(ctx context.Context) (string, error)
}

// ErrNotFound is wrapped by a Provider's errors about a machine it does not
// know.
var ErrNotFound = errors.New("fleet: no such machine")
