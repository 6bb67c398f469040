package localprovider

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// A state directory's processes are known by /proc: a pid alone may be
// another process's by the time a gateway reads it back, so a process is
// also known by its start time, which a reused pid does not share.

// procStat returns pid's state (field 3 of /proc/<pid>/stat: R, S, Z, …)
// and start time (field 22, in clock ticks since boot).
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// Field 2, the command, is in parentheses and may hold spaces and
	// parentheses itself: the fields after it follow its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	fields := strings.Fields(string(b[i+1:])) // fields 3, 4, …
	if len(fields) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	start, err = strconv.ParseUint(fields[22-3], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return fields[0][0], start, nil
}

// running reports whether pid is the process that started at start and
// has not exited. A zombie has exited: it waits for its parent to reap
// it, which an adopted process's parent does, not the provider.
func running(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	state, s, err := procStat(pid)
	return err == nil && s == start && state != 'Z' && state != 'X'
}

// hasEnv reports whether the environment pid started with holds kv.
func hasEnv(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for e := range bytes.SplitSeq(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// signalProc sends sig to pid if it is still the process that started at
// start (one that exited meanwhile is no error).
func signalProc(pid int, start uint64, sig syscall.Signal) error {
	if !running(pid, start) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
