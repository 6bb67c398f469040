//go:build !linux

package localprovider

import "syscall"

// sysProcAttr is nil where the kernel cannot signal a function when the
// gateway dies: a function then outlives a gateway that was killed.
// detach is never true here: New refuses a state directory.
func sysProcAttr(detach bool) *syscall.SysProcAttr { return nil }
