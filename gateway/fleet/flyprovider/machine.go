package flyprovider

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"lightspeed/gateway/fleet"
)

// The marks the provider puts in a machine's config.metadata. Fly keeps
// metadata with the machine and filters List by it
// (?metadata.<key>=<value>), so a restarted gateway finds its machines.
const (
	// MetaRole marks a machine as a function: its value is RoleFunction.
	MetaRole = "lightspeed_role"
	// MetaGateway names the gateway (Config.GatewayID) that owns the machine.
	MetaGateway = "lightspeed_gateway"
	// MetaPort is the machine's WebRTC UDP port, in decimal.
	MetaPort = "lightspeed_port"
	// MetaCreate is the unique mark of the Create call that made the
	// machine: when a create's answer is lost, a List by this mark tells
	// whether the machine exists.
	MetaCreate = "lightspeed_create"
	// RoleFunction is MetaRole's value.
	RoleFunction = "function"
)

// createRequest is the body of POST /v1/apps/{app}/machines: the target
// region and the machine's config. Nothing else: no name (Fly generates
// one), no skip_launch (the machine boots on create), no lease.
type createRequest struct {
	Region string        `json:"region,omitempty"`
	Config machineConfig `json:"config"`
}

// machineConfig is the part of a machine's config object the provider
// sends and reads back.
type machineConfig struct {
	Image    string            `json:"image"`
	Env      map[string]string `json:"env,omitempty"`
	Guest    *guest            `json:"guest,omitempty"`
	Services []service         `json:"services,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Restart  *restartPolicy    `json:"restart,omitempty"`
	Metrics  *metricsEndpoint  `json:"metrics,omitempty"`
	// AutoDestroy is sent as false: a function that exits (LS_IDLE_EXIT)
	// leaves a stopped machine the fleet can start again quickly.
	AutoDestroy bool `json:"auto_destroy"`
}

// metricsEndpoint is where Fly's Prometheus scrapes the machine, over the
// private network.
type metricsEndpoint struct {
	Port int    `json:"port"`
	Path string `json:"path"`
}

// guest is the machine's size.
type guest struct {
	CPUKind  string `json:"cpu_kind"`
	CPUs     int    `json:"cpus"`
	MemoryMB int    `json:"memory_mb"`
}

// service routes public traffic to the machine. A function has one: UDP,
// the same port outside and inside, because Fly does not rewrite UDP
// ports.
type service struct {
	Protocol     string        `json:"protocol"`
	InternalPort int           `json:"internal_port"`
	Ports        []servicePort `json:"ports"`
}

// servicePort is one public port of a service.
type servicePort struct {
	Port int `json:"port"`
}

// restartPolicy tells Fly what to do when the machine's process exits.
type restartPolicy struct {
	Policy string `json:"policy"`
}

// machine is a Machine resource as the API returns it (list, create).
// Fields the provider does not use are not decoded.
type machine struct {
	ID        string        `json:"id"`
	Name      string        `json:"name"`
	State     string        `json:"state"`
	Region    string        `json:"region"`
	CreatedAt string        `json:"created_at"`
	UpdatedAt string        `json:"updated_at"`
	Config    machineConfig `json:"config"`
}

// errNoID is the decoding error of a machine without an id.
var errNoID = errors.New("machine without id")

// decodeMachines decodes the answer of GET /v1/apps/{app}/machines.
func decodeMachines(body []byte) ([]machine, error) {
	var ms []machine
	if err := json.Unmarshal(body, &ms); err != nil {
		return nil, fmt.Errorf("decode machine list: %w", err)
	}
	for i, m := range ms {
		if m.ID == "" {
			return nil, fmt.Errorf("decode machine list: entry %d: %w", i, errNoID)
		}
	}
	return ms, nil
}

// decodeMachine decodes the answer of POST /v1/apps/{app}/machines.
func decodeMachine(body []byte) (machine, error) {
	var m machine
	if err := json.Unmarshal(body, &m); err != nil {
		return machine{}, fmt.Errorf("decode machine: %w", err)
	}
	if m.ID == "" {
		return machine{}, fmt.Errorf("decode machine: %w", errNoID)
	}
	return m, nil
}

// fleetState maps a Fly machine state (fly.io/docs/machines/machine-states)
// to the fleet's. A state Fly adds later, or none, is Failed: the fleet
// then neither counts the machine as running nor starts it again.
func fleetState(s string) fleet.State {
	switch s {
	case "creating", "created", "starting", "restarting", "updating", "replacing",
		// Reported for an old version of a machine whose new version
		// (another host, another config) is taking over.
		"replaced", "migrated":
		return fleet.Starting
	case "started":
		return fleet.Started
	case "stopping", "suspending":
		return fleet.Stopping
	case "stopped", "suspended":
		return fleet.Stopped
	case "destroying", "destroyed":
		return fleet.Destroyed
	default: // "failed", "launch_failed", unknown
		return fleet.Failed
	}
}

// ours tells whether m carries the marks of gateway's functions.
func (m machine) ours(gateway string) bool {
	return m.Config.Metadata[MetaRole] == RoleFunction && m.Config.Metadata[MetaGateway] == gateway
}

// port is the machine's WebRTC UDP port: its MetaPort mark, else its
// first UDP service's internal port, else 0.
func (m machine) port() int {
	if p, err := strconv.Atoi(m.Config.Metadata[MetaPort]); err == nil && p > 0 && p <= 65535 {
		return p
	}
	for _, s := range m.Config.Services {
		if s.Protocol == "udp" && s.InternalPort > 0 && s.InternalPort <= 65535 {
			return s.InternalPort
		}
	}
	return 0
}

// fleetMachine is m as the fleet sees it.
func (m machine) fleetMachine() fleet.Machine {
	created, _ := time.Parse(time.RFC3339, m.CreatedAt) // zero when absent or malformed
	return fleet.Machine{
		ID:      m.ID,
		Region:  m.Region,
		State:   fleetState(m.State),
		Port:    m.port(),
		Image:   m.Config.Image,
		Created: created,
	}
}
