//go:build !linux

package viewer

func setReadBuffer(c syscallConn, size int) { _ = c.SetReadBuffer(size) }
