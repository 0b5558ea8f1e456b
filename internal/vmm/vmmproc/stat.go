package vmmproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"github.com/banger-dev/banger/internal/vmm"
)

// StartTime reads when process pid started: field 22 of /proc/PID/stat, in
// clock ticks after boot. With the PID it names one process for good, since
// a reused PID starts later.
func StartTime(pid int) (uint64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself; the fields after the last ')' start at field 3.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, fmt.Errorf("read start time of pid %d: malformed stat line", pid)
	}
	fields := bytes.Fields(raw[i+1:])
	const startTimeField = 22 - 3
	if len(fields) <= startTimeField {
		return 0, fmt.Errorf("read start time of pid %d: stat line has %d fields", pid, len(fields)+2)
	}
	st, err := strconv.ParseUint(string(fields[startTimeField]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	return st, nil
}

// identify returns pid with its start time.
func identify(pid int) (vmm.Process, error) {
	st, err := StartTime(pid)
	if err != nil {
		return vmm.Process{}, err
	}
	return vmm.Process{PID: pid, StartTime: st}, nil
}

// checkStarted verifies that the live process proc.PID started at
// proc.StartTime (any time when that is zero) and returns its start time.
// Call it while holding a pidfd for the process, so the PID cannot be
// reused between the check and its use. Errors wrap notThis.
func checkStarted(proc vmm.Process, notThis error) (uint64, error) {
	st, err := StartTime(proc.PID)
	if err != nil {
		return 0, fmt.Errorf("process is gone: %w", notThis)
	}
	if proc.StartTime != 0 && st != proc.StartTime {
		return 0, fmt.Errorf("pid %d started at tick %d, not %d as recorded: the PID was reused: %w", proc.PID, st, proc.StartTime, notThis)
	}
	return st, nil
}
