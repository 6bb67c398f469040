//go:build !linux

package localprovider

import "syscall"

// sysProcAttr is nil where the kernel cannot signal a function when the
// gateway dies: a function then outlives a gateway that was killed.
func sysProcAttr() *syscall.SysProcAttr { return nil }
