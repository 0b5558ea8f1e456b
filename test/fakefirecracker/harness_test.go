package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/test/fcspec"
)

// The binaries under test, built once by TestMain. skipReason is set when
// this machine cannot build or validate them, and every test skips with it.
var (
	fakeBin    string
	agentBin   string
	specPath   string
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fakefc-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := prepare(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func prepare(dir string) error {
	var err error
	if specPath, err = fcspec.SpecPath(); err != nil {
		skipReason = fmt.Sprintf("needs the official Firecracker API spec: %v", err)
		return nil
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		skipReason = "needs the go toolchain in PATH to build the fake and the agent"
		return nil
	}
	fakeBin = filepath.Join(dir, "fake-firecracker")
	agentBin = filepath.Join(dir, "banger-vsock-agent")
	for bin, pkg := range map[string]string{fakeBin: ".", agentBin: "../../cmd/banger-vsock-agent"} {
		cmd := exec.Command(goBin, "build", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return nil
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip("skipping: " + skipReason)
	}
}

// shortTempDir is a temp dir with a short path: unix socket paths are capped
// at 107 bytes and the fake nests the guest's sockets under the API socket.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ffc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeVM is one running fake-firecracker process.
type fakeVM struct {
	t      *testing.T
	dir    string
	sock   string
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	exited chan struct{}
	client *http.Client
}

type fakeOptions struct {
	withAgent bool
	env       []string
	args      []string
}

// startFake runs the fake on a fresh API socket and waits until it answers.
// Cleanup ends it by PID: SIGTERM, then SIGKILL if it lingers.
func startFake(t *testing.T, opts fakeOptions) *fakeVM {
	t.Helper()
	requireBinaries(t)
	dir := shortTempDir(t)
	f := &fakeVM{
		t:      t,
		dir:    dir,
		sock:   filepath.Join(dir, "fc.sock"),
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		exited: make(chan struct{}),
	}
	args := append([]string{"--api-sock", f.sock, "--id", "vm_test"}, opts.args...)
	f.cmd = exec.Command(fakeBin, args...)
	f.cmd.Env = append(os.Environ(), fcspec.EnvSpecPath+"="+specPath, envGuest+"=")
	if opts.withAgent {
		f.cmd.Env = append(f.cmd.Env, envGuest+"="+agentBin)
	}
	f.cmd.Env = append(f.cmd.Env, opts.env...)
	f.cmd.Stdout, f.cmd.Stderr = f.stdout, f.stderr
	// The guest inherits the output pipes; if one ever outlived the fake,
	// Wait must not hang on it.
	f.cmd.WaitDelay = 5 * time.Second
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = f.cmd.Wait()
		close(f.exited)
	}()
	t.Cleanup(f.stop)
	f.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", f.sock)
		}},
	}
	f.waitReady()
	return f
}

func (f *fakeVM) waitReady() {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-f.exited:
			f.t.Fatalf("fake exited during startup: %v\nstderr:\n%s", f.cmd.ProcessState, f.stderr)
		default:
		}
		if conn, err := net.Dial("unix", f.sock); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fake not answering on %s after 10s\nstderr:\n%s", f.sock, f.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fakeVM) stop() {
	select {
	case <-f.exited:
		return
	default:
	}
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.exited:
	case <-time.After(5 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exited
	}
}

// waitExit waits for the fake to end and returns how it ended.
func (f *fakeVM) waitExit(within time.Duration) *os.ProcessState {
	f.t.Helper()
	select {
	case <-f.exited:
		return f.cmd.ProcessState
	case <-time.After(within):
		f.t.Fatalf("fake still running after %s\nstderr:\n%s", within, f.stderr)
		return nil
	}
}

// call sends one API request and returns the status and the fault message
// (or raw body for successes).
func (f *fakeVM) call(method, path, body string) (int, string) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://localhost"+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v\nstderr:\n%s", method, path, err, f.stderr)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		if err := json.Unmarshal(data, &fault); err != nil || fault.FaultMessage == "" {
			f.t.Fatalf("%s %s: status %d with body %q, want {\"fault_message\": ...}", method, path, resp.StatusCode, data)
		}
		return resp.StatusCode, fault.FaultMessage
	}
	return resp.StatusCode, string(data)
}

// must sends a request that has to succeed with 204 No Content.
func (f *fakeVM) must(method, path, body string) {
	f.t.Helper()
	if status, msg := f.call(method, path, body); status != http.StatusNoContent {
		f.t.Fatalf("%s %s %s: status %d: %s", method, path, body, status, msg)
	}
}

// wantFault sends a request that has to fail with 400 and a fault message
// containing want.
func (f *fakeVM) wantFault(method, path, body, want string) {
	f.t.Helper()
	status, msg := f.call(method, path, body)
	if status != http.StatusBadRequest || !strings.Contains(msg, want) {
		f.t.Fatalf("%s %s %s: got %d %q, want 400 with fault containing %q", method, path, body, status, msg, want)
	}
}

func (f *fakeVM) state() string {
	f.t.Helper()
	_, body := f.call("GET", "/", "")
	var info instanceInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		f.t.Fatalf("GET /: %q: %v", body, err)
	}
	return info.State
}

// file creates a file under the fake's dir, for kernels and drives.
func (f *fakeVM) file(name string) string {
	f.t.Helper()
	path := filepath.Join(f.dir, name)
	if err := os.WriteFile(path, []byte("fake "+name), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// configureMinimal sets the boot source (with extra kernel args), a root
// drive and, when vsock is true, the hybrid vsock at <dir>/v.sock.
func (f *fakeVM) configureMinimal(bootArgs string, vsock bool) {
	f.t.Helper()
	f.must("PUT", "/boot-source", jsonBody(map[string]any{
		"kernel_image_path": f.file("vmlinux"),
		"boot_args":         "console=ttyS0 reboot=k panic=1 " + bootArgs,
	}))
	f.must("PUT", "/drives/rootfs", jsonBody(map[string]any{
		"drive_id": "rootfs", "path_on_host": f.file("rootfs.ext4"), "is_root_device": true, "is_read_only": false,
	}))
	if vsock {
		f.must("PUT", "/vsock", jsonBody(map[string]any{"guest_cid": 3, "uds_path": f.vsockPath()}))
	}
}

func (f *fakeVM) vsockPath() string { return filepath.Join(f.dir, "v.sock") }

func (f *fakeVM) start() { f.must("PUT", "/actions", `{"action_type":"InstanceStart"}`) }

// waitConsole waits until the serial console (stdout) contains want.
func (f *fakeVM) waitConsole(want string) {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.stdout.String(), want) {
		if time.Now().After(deadline) {
			f.t.Fatalf("console never showed %q\nconsole:\n%s\nstderr:\n%s", want, f.stdout, f.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// guestPIDs lists the fake's child processes, i.e. the stand-in guest.
func (f *fakeVM) guestPIDs() []int {
	f.t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", f.cmd.Process.Pid))
	var pids []int
	for _, path := range tasks {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// procState is the one-letter state from /proc/<pid>/stat ("S", "T", ...),
// or "" when the process is gone.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(data)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

func jsonBody(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func assertGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after the fake exited (lstat: %v)", path, err)
	}
}
