// Package ports finds free UDP ports on loopback for tests and the bench.
package ports

import (
	"fmt"
	"net"
)

// FreeUDPRange returns n consecutive UDP ports on 127.0.0.1 that were
// free a moment ago, written "first-last".
func FreeUDPRange(n int) (string, error) {
	for range 100 {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return "", fmt.Errorf("ports: %w", err)
		}
		first := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		if first+n-1 > 65535 {
			continue
		}
		free := true
		for p := first; p < first+n && free; p++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				free = false
				continue
			}
			c.Close()
		}
		if free {
			return fmt.Sprintf("%d-%d", first, first+n-1), nil
		}
	}
	return "", fmt.Errorf("ports: no %d free consecutive UDP ports", n)
}
