package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/test/fcspec"
)

// runFake runs the fake to completion and returns its exit code and output.
func runFake(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	requireBinaries(t)
	cmd := exec.Command(fakeBin, args...)
	cmd.Env = append(os.Environ(), fcspec.EnvSpecPath+"="+specPath)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func TestVersionFlag(t *testing.T) {
	code, stdout, _ := runFake(t, "--version")
	if code != 0 || stdout != "Firecracker v1.16.1\n" {
		t.Fatalf("--version: exit %d, stdout %q", code, stdout)
	}
}

func TestRefusesExistingSocketPath(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "fc.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runFake(t, "--api-sock", sock)
	if code != 1 || !strings.Contains(stderr, "Failed to open the API socket at: "+sock) {
		t.Fatalf("exit %d, stderr %q; want 1 and Firecracker's socket error", code, stderr)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("the fake removed a path it did not create: %v", err)
	}
}

func TestArgumentErrors(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "fc.sock")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"--api-sock", sock, "--bogus"}, 153, "Arguments parsing error"},
		{"no api socket", nil, 153, "--api-sock is required"},
		{"config file", []string{"--api-sock", sock, "--config-file", "vm.json"}, 1, "not supported by the fake"},
		{"missing log file", []string{"--api-sock", sock, "--log-path", sock + ".log"}, 1, "Failed to initialize logger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runFake(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			assertGone(t, sock)
		})
	}
}

func TestAcceptsRealFirecrackerFlags(t *testing.T) {
	dir := shortTempDir(t)
	logPath := filepath.Join(dir, "fc.log")
	if err := os.WriteFile(logPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFake(t, fakeOptions{args: []string{
		"--log-path", logPath, "--level", "Debug", "--show-level", "--show-log-origin",
		"--boot-timer", "--no-seccomp",
	}})
	if got := f.state(); got != stateNotStarted {
		t.Fatalf("state %q, want %q", got, stateNotStarted)
	}
	data, _ := os.ReadFile(logPath)
	if !strings.Contains(string(data), "[vm_test:fc_api:INFO] Running Firecracker v1.16.1") {
		t.Fatalf("log file %q lacks the startup line", data)
	}
}
