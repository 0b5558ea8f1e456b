package firecracker

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
)

// fakeEnv configures one run of the fake firecracker.
type fakeEnv struct {
	fail string // e.g. "PUT /boot-source"
	mode string // see fakefc_test.go
}

// newFakeDriver returns a driver whose "firecracker" is this test binary
// acting as the fake, and the file the fake records requests to.
func newFakeDriver(t *testing.T, fe fakeEnv, cfg Config) (*Driver, string) {
	t.Helper()
	spec := oas.SpecPathForTest(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "requests.log")
	cfg.BinaryPath = self
	cfg.ExtraEnv = []string{
		envHelper + "=1",
		envRecord + "=" + record,
		envFail + "=" + fe.fail,
		envMode + "=" + fe.mode,
		fcspec.EnvSpecPath + "=" + spec,
		// The race runtime otherwise sleeps 1 s in every exiting fake.
		"GORACE=atexit_sleep_ms=0",
	}
	return New(cfg), record
}

func testSpec(t *testing.T) vmm.LaunchSpec {
	dir := shortTempDir(t)
	return vmm.LaunchSpec{
		VMID:        "vm-0123",
		Name:        "dev",
		KernelPath:  filepath.Join(dir, "vmlinux"),
		InitrdPath:  filepath.Join(dir, "initrd.img"),
		BootArgs:    "console=ttyS0 reboot=k panic=1",
		RootDrive:   vmm.Drive{ID: "rootfs", Path: filepath.Join(dir, "root.ext4")},
		ExtraDrives: []vmm.Drive{{ID: "data", Path: filepath.Join(dir, "data.ext4"), ReadOnly: true}},
		Network:     []vmm.NetInterface{{ID: "eth0", TapName: "bgr-test0", MAC: "06:00:ac:10:00:02"}},
		VCPUs:       2,
		MemoryMiB:   256,
		Agent:       vmm.AgentChannel{GuestCID: 3, UDSPath: filepath.Join(dir, "run", "vsock.sock"), Port: 1024},
		RunDir:      filepath.Join(dir, "run"),
		// Logs live outside RunDir so they survive it.
		SerialLogPath: filepath.Join(dir, "serial.log"),
		VMMLogPath:    filepath.Join(dir, "firecracker.log"),
	}
}

// launch starts a VM and makes sure the test never leaks its process.
func launch(t *testing.T, d *Driver, spec vmm.LaunchSpec) *Instance {
	t.Helper()
	inst, err := d.Launch(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Kill() })
	return inst.(*Instance)
}

// recorded returns the requests the fake saw, failing on any the spec rejected.
func recorded(t *testing.T, record string) (reqs []string, pid int) {
	t.Helper()
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		switch {
		case strings.HasPrefix(line, "INVALID"):
			t.Errorf("fake firecracker rejected a request: %s", line)
		case strings.HasPrefix(line, "PID "):
			pid, _ = strconv.Atoi(strings.TrimPrefix(line, "PID "))
		case line == "GET /" && len(reqs) > 0 && reqs[len(reqs)-1] == "GET /":
			// readiness polls may repeat
		default:
			reqs = append(reqs, line)
		}
	}
	return reqs, pid
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestLaunchBootSequence(t *testing.T) {
	d, record := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	inst := launch(t, d, spec)

	got, pid := recorded(t, record)
	want := []string{
		"GET /",
		"PUT /logger",
		"PUT /machine-config",
		"PUT /boot-source",
		"PUT /drives/rootfs",
		"PUT /drives/data",
		"PUT /network-interfaces/eth0",
		"PUT /vsock",
		"PUT /actions",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("boot sequence:\n got %q\nwant %q", got, want)
	}
	if pid != inst.PID() {
		t.Errorf("fake reported pid %d, instance says %d", pid, inst.PID())
	}
	if st, err := os.Stat(spec.RunDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("run dir: %v, mode %v; want 0700", err, st.Mode().Perm())
	}
	if pgid, _ := syscall.Getpgid(inst.PID()); pgid != inst.PID() {
		t.Errorf("firecracker should lead its own process group, pgid=%d pid=%d", pgid, inst.PID())
	}
	serial, _ := os.ReadFile(spec.SerialLogPath)
	if !strings.Contains(string(serial), "fake guest: booted") {
		t.Errorf("serial log lacks the console output: %q", serial)
	}
	vmmLog, _ := os.ReadFile(spec.VMMLogPath)
	if !strings.Contains(string(vmmLog), "logger configured") {
		t.Errorf("VMM log not written through PUT /logger: %q", vmmLog)
	}

	ctx := context.Background()
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: filepath.Join(spec.RunDir, "state"), Memory: filepath.Join(spec.RunDir, "mem")}); err != nil {
		t.Fatal(err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "hello agent"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("hello agent"))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello agent" {
		t.Fatalf("agent echo %q, %v", buf, err)
	}
	conn.Close()

	if err := inst.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := inst.Exit(); st.Code != 0 || st.Signal != "" {
		t.Fatalf("clean stop should exit 0, got %s", st)
	}
	got, _ = recorded(t, record)
	if tail := got[len(want):]; !slices.Equal(tail, []string{"PATCH /vm", "PUT /snapshot/create", "PATCH /vm", "PUT /actions"}) {
		t.Errorf("post-boot requests %q", tail)
	}
	for _, p := range []string{filepath.Join(spec.RunDir, apiSocketName), spec.Agent.UDSPath} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after exit (%v)", p, err)
		}
	}
}

func TestLaunchFailureKillsAndCleansUp(t *testing.T) {
	for _, tc := range []struct {
		fail, step string
	}{
		{"PUT /logger", "configure logger"},
		{"PUT /boot-source", "set boot source"},
		{"PUT /drives/data", `attach drive "data"`},
		{"PUT /vsock", "configure vsock"},
		{"PUT /actions", "start instance"},
	} {
		t.Run(tc.step, func(t *testing.T) {
			d, record := newFakeDriver(t, fakeEnv{fail: tc.fail}, Config{})
			spec := testSpec(t)
			_, err := d.Launch(context.Background(), spec)
			if err == nil {
				t.Fatal("launch succeeded despite the failing step")
			}
			if !strings.Contains(err.Error(), tc.step+": ") || !strings.Contains(err.Error(), "fake failure at "+tc.fail) {
				t.Fatalf("error should name the step and the fault message: %v", err)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 400 {
				t.Fatalf("want a wrapped *APIError, got %v", err)
			}
			_, pid := recorded(t, record)
			if pid == 0 || !processGone(pid) {
				t.Fatalf("firecracker pid %d still exists after a failed launch", pid)
			}
			if _, err := os.Lstat(filepath.Join(spec.RunDir, apiSocketName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("API socket left behind: %v", err)
			}
		})
	}
}

func TestLaunchProcessExitsEarly(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{mode: "exit-early"}, Config{})
	_, err := d.Launch(context.Background(), testSpec(t))
	if err == nil || !strings.Contains(err.Error(), "exited with code 3") || !strings.Contains(err.Error(), "refuses to start") {
		t.Fatalf("want the exit code and the serial log tail, got %v", err)
	}
}

func TestLaunchAPINeverAnswers(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{mode: "no-api"}, Config{APIReadyTimeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := d.Launch(context.Background(), testSpec(t))
	if err == nil || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Fatalf("want an API timeout, got %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("timeout not honoured")
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	d, record := newFakeDriver(t, fakeEnv{mode: "ignore-ctrl-alt-del"}, Config{})
	inst := launch(t, d, testSpec(t))
	start := time.Now()
	if err := inst.Stop(context.Background(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("killed after %v, before the 200ms grace period", waited)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Stop returned while the process still runs")
	}
	if st := inst.Exit(); st.Signal != "SIGKILL" || st.Code != -1 {
		t.Fatalf("want killed by SIGKILL, got %+v", st)
	}
	if got, _ := recorded(t, record); got[len(got)-1] != "PUT /actions" {
		t.Errorf("Ctrl-Alt-Del was not sent first: %q", got)
	}
}

func TestKill(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	inst := launch(t, d, testSpec(t))
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	if !processGone(inst.PID()) {
		t.Fatal("process survived Kill")
	}
	if err := inst.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	if err := inst.Stop(context.Background(), time.Second); err != nil {
		t.Fatalf("Stop after exit: %v", err)
	}
}

// staleSocket leaves a socket file at path that nothing accepts on, as a
// crashed firecracker would.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

func TestLaunchReclaimsStaleSockets(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	staleSocket(t, filepath.Join(spec.RunDir, apiSocketName))
	staleSocket(t, spec.Agent.UDSPath)
	launch(t, d, spec)
}

func TestLaunchRefusesLiveSocket(t *testing.T) {
	d, record := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(spec.RunDir, apiSocketName)
	listenUnix(t, sock)
	_, err := d.Launch(context.Background(), spec)
	if !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), "another firecracker is using "+sock) {
		t.Fatalf("want 'another firecracker is using %s', got %v", sock, err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the live socket was removed: %v", err)
	}
	if _, err := os.Stat(record); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a firecracker process was started despite the live socket")
	}
}

func TestLaunchHandsFilesToOwner(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{Owner: &Owner{UID: 4242, GID: 4343}})
	var chowned []string
	d.files.Chown = func(path string, uid, gid int) error {
		if uid != 4242 || gid != 4343 {
			t.Errorf("chown %s to %d:%d", path, uid, gid)
		}
		chowned = append(chowned, path)
		return nil
	}
	spec := testSpec(t)
	launch(t, d, spec)
	want := []string{spec.RunDir, spec.SerialLogPath, spec.VMMLogPath, filepath.Join(spec.RunDir, apiSocketName), spec.Agent.UDSPath}
	if !slices.Equal(chowned, want) {
		t.Fatalf("chowned %q\nwant %q", chowned, want)
	}
}

func TestLaunchRejectsIncompleteSpec(t *testing.T) {
	d := New(Config{BinaryPath: "/nonexistent/firecracker"})
	spec := testSpec(t)
	spec.KernelPath = ""
	spec.VCPUs = 0
	_, err := d.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "missing kernel_path") {
		t.Fatalf("got %v", err)
	}
}

func TestAttachSeesExitThroughPidfd(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	first := launch(t, d, spec)

	// A new daemon adopts the VMM it did not start.
	adopted, err := New(Config{}).Attach(context.Background(), spec, vmm.Process{PID: first.PID()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adopted.(*Instance).Client().InstanceInfo(context.Background()); err != nil {
		t.Fatalf("adopted instance cannot reach the API: %v", err)
	}
	if err := adopted.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-adopted.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("adopted instance never saw the exit")
	}
	if st := adopted.Exit(); st.Code != -1 || st.Err != "" || !st.NotChild {
		t.Fatalf("adopted exit status %+v, want code -1 and not our child", st)
	}
	<-first.Done()
	if st := first.Exit(); st.Signal != "SIGKILL" {
		t.Fatalf("original parent saw %s", st)
	}
}

func TestAttachWatchesExternalExit(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	first := launch(t, d, spec)
	adopted, err := New(Config{}).Attach(context.Background(), spec, vmm.Process{PID: first.PID()})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-adopted.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("pidfd watcher missed the exit")
	}
}

func TestAttachRefusesOtherProcesses(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	inst := launch(t, d, spec)

	other := spec
	other.VMID = "vm-other"
	if _, err := d.Attach(context.Background(), other, vmm.Process{PID: inst.PID()}); !errors.Is(err, ErrNotThisVMM) {
		t.Errorf("attach with another VM's id: want ErrNotThisVMM, got %v", err)
	}
	moved := spec
	moved.RunDir = filepath.Join(spec.RunDir, "elsewhere")
	if _, err := d.Attach(context.Background(), moved, vmm.Process{PID: inst.PID()}); !errors.Is(err, ErrNotThisVMM) {
		t.Errorf("attach with another api socket: want ErrNotThisVMM, got %v", err)
	}

	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Skipf("cannot start sleep: %v", err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	if _, err := d.Attach(context.Background(), spec, vmm.Process{PID: sleeper.Process.Pid}); !errors.Is(err, ErrNotThisVMM) {
		t.Errorf("attach to sleep: want ErrNotThisVMM, got %v", err)
	}
	if err := sleeper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = sleeper.Wait() // "signal: killed"
	if _, err := d.Attach(context.Background(), spec, vmm.Process{PID: sleeper.Process.Pid}); !errors.Is(err, ErrNotThisVMM) {
		t.Errorf("attach to a reaped pid: want ErrNotThisVMM, got %v", err)
	}
}

func TestLaunchHonoursContext(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{mode: "no-api"}, Config{APIReadyTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	spec := testSpec(t)
	_, err := d.Launch(ctx, spec)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "wait for API socket") {
		t.Fatalf("want the context's deadline at the API wait, got %v", err)
	}
}
