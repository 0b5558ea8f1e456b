package daemon

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/test/testbin"
)

// jailOwner is who the jailed VMM drops to: not the test's uid, so the test
// proves the drop.
var jailOwner = privileged.Owner{UID: 65534, GID: 65534}

// jailerRig is a real root helper (privileged.Local over the host backend,
// served on a socket) whose jailer is the fake jailer, launching the fake
// Firecracker with the real agent as its guest.
type jailerRig struct {
	layout paths.Layout
	bin    string
	client *privileged.Client
}

func newJailerRig(t testing.TB) *jailerRig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the jailer starts as root (mount namespace, pivot_root, mknod, setuid); run `make test` as root")
	}
	// A short root: the API socket's path must fit a sockaddr_un.
	root, err := os.MkdirTemp("", "bj")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	// Everything the helper runs or works in must be root's and closed to
	// others, and the owner the jail drops to must reach the API socket.
	chmod755(t, root)
	bin := filepath.Join(root, "bin")
	must(t, os.Mkdir(bin, 0o755))
	for _, b := range []struct{ out, pkg string }{
		{"firecracker", "./test/fakefirecracker"},
		{"banger-vsock-agent", "./cmd/banger-vsock-agent"},
	} {
		if err := testbin.GoBuild(filepath.Join(bin, b.out), b.pkg, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := testbin.FakeJailer(bin, filepath.Join(bin, "banger-vsock-agent")); err != nil {
		t.Fatal(err)
	}

	layout := paths.System(root)
	for _, d := range []string{layout.StateDir, layout.RuntimeDir, layout.ImagesDir()} {
		must(t, os.MkdirAll(d, 0o755))
	}
	cfg := config.Default()
	cfg.Firecracker.Binary = filepath.Join(bin, "firecracker")
	cfg.Firecracker.Jailer = filepath.Join(bin, "jailer")
	policy, err := jailerPolicy(cfg, layout)
	must(t, err)
	local, err := privileged.NewLocal(privileged.Policy{
		Owner: jailOwner, StateDir: layout.StateDir, RuntimeDir: layout.RuntimeDir,
		DeviceMapperMajor: privileged.DeviceMapperMajor("/proc/devices"), Jailer: policy,
	}, privileged.HostBackend())
	must(t, err)
	// The helper serves the test process (root); what it hands out goes to
	// jailOwner, as a system install's helper serves and hands to its owner.
	srv, err := privileged.NewServer(privileged.ServerOptions{Ops: local, Owner: privileged.Owner{UID: 0, GID: 0}, Log: slog.New(slog.DiscardHandler)})
	must(t, err)
	ln, err := privileged.Listen(layout.HelperSocketPath(), 0)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("helper: %v", err)
		}
	})
	return &jailerRig{layout: layout, bin: bin, client: privileged.NewClient(layout.HelperSocketPath())}
}

func chmod755(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		must(t, os.Chmod(d, 0o755))
	}
}

// ownerFile writes a file the jail owner owns.
func ownerFile(t testing.TB, path string, size int) string {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, make([]byte, size), 0o600))
	must(t, os.Chown(path, jailOwner.UID, jailOwner.GID))
	return path
}

// driver is a Firecracker driver whose jailer the rig's helper launches.
func (r *jailerRig) driver() *firecracker.Driver {
	return firecracker.New(firecracker.Config{
		BinaryPath: filepath.Join(r.bin, "firecracker"),
		Jailer:     jailerConfig(r.client, r.layout),
	})
}

func (r *jailerRig) spec(t testing.TB, id string) vmm.LaunchSpec {
	vmDir := r.layout.VMStateDir(id)
	run := r.layout.VMRunDir(id)
	must(t, os.MkdirAll(run, 0o755))
	serial := ownerFile(t, filepath.Join(vmDir, "serial.log"), 0)
	return vmm.LaunchSpec{
		VMID: id, Name: "jailed",
		KernelPath:    ownerFile(t, filepath.Join(r.layout.ImagesDir(), "vmlinux"), 4096),
		BootArgs:      "console=ttyS0",
		RootDrive:     vmm.Drive{ID: "rootfs", Path: ownerFile(t, filepath.Join(vmDir, "rootfs.ext4"), 1<<20)},
		VCPUs:         1,
		MemoryMiB:     128,
		Agent:         vmm.AgentChannel{GuestCID: 3, UDSPath: filepath.Join(run, "vsock.sock"), Port: 1024},
		RunDir:        run,
		SerialLogPath: serial,
		VMMLogPath:    filepath.Join(run, "firecracker.log"),
	}
}

func TestJailedVMThroughTheRootHelper(t *testing.T) {
	r := newJailerRig(t)
	driver := r.driver()
	spec := r.spec(t, "vm-jail1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	inst, err := driver.Launch(ctx, spec)
	if err != nil {
		t.Fatalf("launch: %v\nserial log:\n%s", err, readFile(spec.SerialLogPath))
	}
	t.Cleanup(func() { _ = inst.Kill() })
	pid := inst.PID()
	jail := filepath.Join(r.layout.JailDir(), "firecracker", spec.VMID)

	// The VMM dropped to the owner...
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	must(t, err)
	if !strings.Contains(string(status), "\nUid:\t65534\t65534\t65534\t65534\n") || !strings.Contains(string(status), "\nGid:\t65534\t65534\t65534\t65534\n") {
		t.Fatalf("jailed firecracker's credentials:\n%s", status)
	}
	// ...runs the jail's copy of firecracker with the jailer's arguments...
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	must(t, err)
	if args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"); args[0] != "/firecracker" || args[1] != "--id=vm-jail1" ||
		!strings.Contains(string(cmdline), "--api-sock\x00/api.socket") {
		t.Fatalf("jailed firecracker's command line: %q", args)
	}
	// ...inside the jail: its root holds the very kernel inode we own.
	var inJail, ours syscall.Stat_t
	must(t, syscall.Stat("/proc/"+strconv.Itoa(pid)+"/root/kernel", &inJail))
	must(t, syscall.Stat(spec.KernelPath, &ours))
	if inJail.Ino != ours.Ino || inJail.Dev != ours.Dev {
		t.Fatal("the jailed VMM's /kernel is not the staged kernel")
	}
	fi, err := os.Stat(filepath.Join(jail, "root", "api.socket"))
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("API socket in the jail: %v %v", fi, err)
	}
	// The guest agent answers through the jail's hybrid vsock socket.
	info, err := waitForAgent(ctx, inst)
	if err != nil {
		t.Fatalf("agent: %v\nserial log:\n%s", err, readFile(spec.SerialLogPath))
	}
	if info.AgentVersion == "" && info.Hostname == "" {
		t.Fatalf("agent health without a version: %+v", info)
	}

	// A clean stop ends the VMM and removes the jail; the VM's files stay.
	if err := inst.Stop(ctx, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Lstat(jail); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("jail left after the VM stopped: %v", err)
	}
	for _, p := range []string{spec.KernelPath, spec.RootDrive.Path} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s lost with the jail: %v", p, err)
		}
	}
	if !strings.Contains(readFile(spec.SerialLogPath), "fake-firecracker: booting /kernel") {
		t.Errorf("the serial log lacks the jailed VMM's console:\n%s", readFile(spec.SerialLogPath))
	}
}

func TestJailedLaunchFailureLeavesNothing(t *testing.T) {
	r := newJailerRig(t)
	driver := r.driver()
	spec := r.spec(t, "vm-jail2")
	// A kernel that belongs to root, not the owner: the helper refuses to
	// stage it, and nothing is started or left behind.
	must(t, os.Chown(spec.KernelPath, 0, 0))
	_, err := driver.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 0, not the owner (65534)") {
		t.Fatalf("launch with root's kernel: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(r.layout.JailDir(), "firecracker", spec.VMID)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("refused launch left a jail: %v", err)
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkJailedLaunch is one jailed VM's launch through the root helper
// (descriptors passed, files staged, jailer: namespace, pivot_root, drop,
// exec; API ready; boot calls) and its kill and jail removal. Needs root.
func BenchmarkJailedLaunch(b *testing.B) {
	r := newJailerRig(b)
	benchLaunch(b, r, r.driver())
}

// BenchmarkUnjailedLaunch is the same launch of the same fake Firecracker
// and guest without the jailer, as a baseline for the jail's cost.
func BenchmarkUnjailedLaunch(b *testing.B) {
	r := newJailerRig(b)
	benchLaunch(b, r, firecracker.New(firecracker.Config{
		BinaryPath: filepath.Join(r.bin, "firecracker"),
		ExtraEnv:   []string{"BANGER_FC_SPEC=" + testbin.SpecPath(), "BANGER_FAKE_GUEST=" + filepath.Join(r.bin, "banger-vsock-agent")},
	}))
}

func benchLaunch(b *testing.B, r *jailerRig, driver *firecracker.Driver) {
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		spec := r.spec(b, "vm-bench"+strconv.Itoa(i))
		b.StartTimer()
		inst, err := driver.Launch(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		if err := inst.Kill(); err != nil {
			b.Fatal(err)
		}
	}
}
