//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in /proc:
// 100 on every Linux architecture Go runs on.
const clockTicks = 100

// procSample is one reading of a process: the CPU time it used so far
// (user + system, all threads, from /proc/<pid>/stat) and its resident
// memory (VmRSS from /proc/<pid>/status).
type procSample struct {
	CPU time.Duration
	RSS int64 // bytes
}

// readProc reads the CPU time and resident memory of process pid.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("proc: %d: %w", pid, err)
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, fmt.Errorf("proc: %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("proc: %d: %w", pid, err)
	}
	if s.RSS, err = parseStatusRSS(status); err != nil {
		return s, fmt.Errorf("proc: %d: %w", pid, err)
	}
	return s, nil
}

// parseStatCPU returns utime + stime of a /proc/<pid>/stat line. The
// command name (field 2) may hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f)+2)
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: cpu time %q: %w", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatusRSS returns VmRSS of a /proc/<pid>/status file, in bytes.
func parseStatusRSS(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: VmRSS %q", strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("status: no VmRSS")
}

// machineSample is the machine's CPU time so far, summed over all CPUs,
// from the first line of /proc/stat.
type machineSample struct {
	Busy, Total uint64 // clock ticks
}

// readMachine reads /proc/stat.
func readMachine() (machineSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineSample{}, fmt.Errorf("proc: machine: %w", err)
	}
	return parseMachine(b)
}

// parseMachine reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal (guest time is inside user).
func parseMachine(b []byte) (machineSample, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return machineSample{}, errors.New("proc: machine: no cpu line")
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return machineSample{}, fmt.Errorf("proc: machine: %w", err)
		}
		v[i] = n
	}
	idle := v[3] + v[4]
	busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return machineSample{Busy: busy, Total: busy + idle}, nil
}

// busyCores is how many CPUs were busy on average between a and b, given
// the machine has cpus of them.
func busyCores(a, b machineSample, cpus int) float64 {
	total := b.Total - a.Total
	if total == 0 {
		return 0
	}
	return float64(b.Busy-a.Busy) / float64(total) * float64(cpus)
}

// readUDPDrops reads how many UDP datagrams the kernel dropped because a
// socket's receive buffer was full (RcvbufErrors in /proc/net/snmp), in
// this network namespace.
func readUDPDrops() (uint64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, fmt.Errorf("proc: udp: %w", err)
	}
	return parseUDPDrops(b)
}

// parseUDPDrops finds RcvbufErrors in the two "Udp:" lines of
// /proc/net/snmp: names, then values.
func parseUDPDrops(b []byte) (uint64, error) {
	var names []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
		break
	}
	return 0, errors.New("proc: udp: no RcvbufErrors")
}
