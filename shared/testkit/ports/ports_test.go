package ports

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestFreeUDPRangeCanBeBound(t *testing.T) {
	r, err := FreeUDPRange(3)
	if err != nil {
		t.Fatal(err)
	}
	a, b, _ := strings.Cut(r, "-")
	first, _ := strconv.Atoi(a)
	last, _ := strconv.Atoi(b)
	if last-first != 2 {
		t.Fatalf("range %q, want 3 ports", r)
	}
	for p := first; p <= last; p++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		c.Close()
	}
}
