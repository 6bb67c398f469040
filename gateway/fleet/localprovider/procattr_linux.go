package localprovider

import "syscall"

// sysProcAttr puts a function in a process group of its own, so that only
// the gateway decides when it stops (a terminal's Ctrl-C reaches the
// gateway alone, which then stops its functions), and has the kernel send
// it SIGTERM if the gateway dies without stopping it.
//
// The kernel sends that signal when the thread that started the process
// ends; Go ends a thread only when a goroutine locked to it returns, which
// the gateway's goroutines do not.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
