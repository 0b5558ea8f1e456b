// Package systemtest holds test helpers for code that runs processes: the
// one fake system.Runner, and checks that nothing a command started
// outlived it.
package systemtest

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireGone fails the test unless every pid listed (space-separated) in
// file has exited. A zombie waiting for init to reap it counts as exited.
// SIGKILL lands asynchronously, so each pid gets a few seconds.
func RequireGone(t testing.TB, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the command did not record its pids: %v", err)
	}
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %s holds %q", file, data)
		}
		deadline := time.Now().Add(5 * time.Second)
		for state := procState(pid); state != ""; state = procState(pid) {
			if time.Now().After(deadline) {
				t.Errorf("process %d outlived the command that started it (state %s)", pid, state)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// procState is pid's state letter from /proc, "" once it has exited.
func procState(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The state follows the parenthesised command name, which may itself
	// hold parentheses.
	s := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(s) == 0 || s[0] == "Z" {
		return ""
	}
	return s[0]
}
