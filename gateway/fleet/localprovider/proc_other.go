//go:build !linux

package localprovider

import (
	"errors"
	"syscall"
)

// Without /proc no process can be recognised again, so New refuses a
// state directory: these are never called.

func procStat(int) (byte, uint64, error)           { return 0, 0, errors.ErrUnsupported }
func running(int, uint64) bool                     { return false }
func hasEnv(int, string) bool                      { return false }
func signalProc(int, uint64, syscall.Signal) error { return errors.ErrUnsupported }
