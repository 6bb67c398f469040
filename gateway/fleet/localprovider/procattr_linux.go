package localprovider

import "syscall"

// sysProcAttr is the process attributes of a function.
//
// Without a state directory (detach false) it has a process group of its
// own, so that only the gateway decides when it stops (a terminal's
// Ctrl-C reaches the gateway alone, which then stops its functions), and
// the kernel sends it SIGTERM if the gateway dies without stopping it.
// The kernel sends that signal when the thread that started the process
// ends; Go ends a thread only when a goroutine locked to it returns,
// which the gateway's goroutines do not.
//
// With one (detach true) it has a session of its own, so that neither a
// terminal's signals nor the end of the gateway's session reach it, and
// no signal when the gateway dies: it outlives a gateway that is killed,
// for the next one to adopt.
func sysProcAttr(detach bool) *syscall.SysProcAttr {
	if detach {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
