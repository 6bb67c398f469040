package fleet

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of UDP ports, written "10000-10999".
type PortRange struct{ First, Last int }

// ParsePortRange reads "first-last" (or one port).
func ParsePortRange(s string) (PortRange, error) {
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		b = a
	}
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || first < 1 || last > 65535 || first > last {
		return PortRange{}, fmt.Errorf("fleet: port range %q: want first-last within 1-65535", s)
	}
	return PortRange{First: first, Last: last}, nil
}

// String is the range as ParsePortRange reads it.
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }
