package firecracker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// fakeFirecrackerBinary creates an executable named firecracker for
// exec.LookPath; it is never run.
func fakeFirecrackerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "firecracker")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// fakeLauncher records what the driver hands the launcher: the access mode
// of every descriptor, by role.
type fakeLauncher struct {
	mu      sync.Mutex
	modes   map[string]int
	vmmLog  bool
	removed []string
	result  Jail
	err     error
}

func accessMode(t *testing.T, f *os.File) int {
	t.Helper()
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl & (unix.O_ACCMODE | unix.O_APPEND)
}

func (f *fakeLauncher) launcher(t *testing.T) *launcherFunc {
	return &launcherFunc{
		launch: func(spec JailLaunch) (Jail, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.modes = map[string]int{"console": accessMode(t, spec.Console), "kernel": accessMode(t, spec.Kernel)}
			if spec.Initrd != nil {
				f.modes["initrd"] = accessMode(t, spec.Initrd)
			}
			for _, d := range spec.Drives {
				f.modes["drive-"+d.ID] = accessMode(t, d.File)
			}
			f.vmmLog = spec.VMMLog
			return f.result, f.err
		},
		remove: func(id string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.removed = append(f.removed, id)
			return nil
		},
	}
}

type launcherFunc struct {
	launch func(JailLaunch) (Jail, error)
	remove func(string) error
}

func (l *launcherFunc) LaunchJailer(_ context.Context, s JailLaunch) (Jail, error) {
	return l.launch(s)
}
func (l *launcherFunc) RemoveJail(_ context.Context, id string) error { return l.remove(id) }

// jailedDriver is a driver whose jail base is a temp dir, with spec's files
// created so the driver can open them.
func jailedDriver(t *testing.T, fl *fakeLauncher) (*Driver, vmm.LaunchSpec, string) {
	t.Helper()
	base := t.TempDir()
	d := New(Config{BinaryPath: fakeFirecrackerBinary(t), Jailer: &JailerConfig{Launcher: fl.launcher(t), ChrootBaseDir: base, APISocket: "/api.socket"}})
	spec := testSpec(t)
	for _, p := range []string{spec.KernelPath, spec.InitrdPath, spec.RootDrive.Path, spec.ExtraDrives[0].Path} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d, spec, filepath.Join(base, "firecracker", spec.VMID, "root")
}

// jailResult is what a launcher reports for testSpec's files staged in root.
func jailResult(root string, pid int) Jail {
	return Jail{PID: pid, Root: root, Kernel: root + "/kernel", Initrd: root + "/initrd",
		Drives: map[string]string{"rootfs": root + "/drive-rootfs", "data": root + "/drive-data"}}
}

func TestJailedLayout(t *testing.T) {
	d, spec, root := jailedDriver(t, &fakeLauncher{})
	l, err := d.layoutFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	if l.jailRoot != root || l.apiSock != root+"/api.socket" || l.apiSockArg != "/api.socket" {
		t.Fatalf("layout %+v", l)
	}
}

func TestJailedLaunchHandsTheLauncherDescriptors(t *testing.T) {
	fl := &fakeLauncher{err: errors.New("helper says no")}
	d, spec, _ := jailedDriver(t, fl)
	_, err := d.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "helper says no") {
		t.Fatalf("launcher failure: %v", err)
	}
	want := map[string]int{
		"console": unix.O_WRONLY | unix.O_APPEND, "kernel": unix.O_RDONLY, "initrd": unix.O_RDONLY,
		"drive-rootfs": unix.O_RDWR, "drive-data": unix.O_RDONLY,
	}
	if len(fl.modes) != len(want) {
		t.Fatalf("descriptors %v, want %v", fl.modes, want)
	}
	for k, v := range want {
		if fl.modes[k] != v {
			t.Errorf("%s opened with %#o, want %#o", k, fl.modes[k], v)
		}
	}
	if !fl.vmmLog {
		t.Error("the VMM log was not asked for")
	}
	if _, err := os.Stat(spec.SerialLogPath); err != nil {
		t.Errorf("serial log not created before the launch: %v", err)
	}
}

func TestJailedLaunchRefusesAnUnexpectedJail(t *testing.T) {
	fl := &fakeLauncher{}
	d, spec, _ := jailedDriver(t, fl)
	other := filepath.Join(t.TempDir(), "firecracker-v2", spec.VMID, "root")
	fl.result = jailResult(other, os.Getpid())
	_, err := d.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "firecracker.binary must name the same file") {
		t.Fatalf("mismatched jail: %v", err)
	}
	if !slices.Equal(fl.removed, []string{spec.VMID}) {
		t.Fatalf("jail not removed after the failed launch: %v", fl.removed)
	}
}

func TestJailedLaunchProcessGone(t *testing.T) {
	fl := &fakeLauncher{}
	d, spec, root := jailedDriver(t, fl)
	// A pid that has exited and been reaped.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	fl.result = jailResult(root, cmd.Process.Pid)
	_, err := d.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "watch the jailed firecracker") {
		t.Fatalf("vanished jailer: %v", err)
	}
	if !slices.Equal(fl.removed, []string{spec.VMID}) {
		t.Fatalf("jail not removed after the failed launch: %v", fl.removed)
	}
}

func TestStagedSpecPointsIntoTheJail(t *testing.T) {
	spec := testSpec(t)
	root := "/var/lib/banger-jail/firecracker/vm-0123/root"
	res := jailResult(root, 0)
	res.VMMLog = root + "/firecracker.log"
	got, err := stagedSpec(spec, res, (&JailerConfig{APISocket: "/api.socket"}).layout(root))
	if err != nil {
		t.Fatal(err)
	}
	if got.KernelPath != res.Kernel || got.RootDrive.Path != res.Drives["rootfs"] || got.ExtraDrives[0].Path != res.Drives["data"] ||
		got.Agent.UDSPath != root+"/vsock.sock" || got.VMMLogPath != res.VMMLog || !got.ExtraDrives[0].ReadOnly {
		t.Fatalf("staged spec %+v", got)
	}
	if spec.RootDrive.Path == got.RootDrive.Path {
		t.Fatal("stagedSpec changed its input")
	}
	delete(res.Drives, "data")
	if _, err := stagedSpec(spec, res, (&JailerConfig{APISocket: "/api.socket"}).layout(root)); err == nil {
		t.Fatal("a drive missing from the jail was accepted")
	}
}

func TestUnjailedCommand(t *testing.T) {
	d := New(Config{})
	spec := testSpec(t)
	l, _ := d.layoutFor(spec)
	cmd := d.command(spec, l)
	want := []string{"firecracker", "--api-sock", filepath.Join(spec.RunDir, "firecracker.sock"), "--id", "vm-0123"}
	if !slices.Equal(cmd.Args, want) {
		t.Fatalf("argv\n got %q\nwant %q", cmd.Args, want)
	}
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid {
		t.Fatal("the VMM must run in its own process group")
	}
}

func TestJailPathTranslation(t *testing.T) {
	l := layout{jailRoot: "/srv/jailer/firecracker/vm-1/root"}
	in, err := l.inside("/srv/jailer/firecracker/vm-1/root/images/rootfs.ext4")
	if err != nil || in != "/images/rootfs.ext4" {
		t.Fatalf("inside = %q, %v", in, err)
	}
	for _, outside := range []string{"/var/lib/banger/rootfs.ext4", "/srv/jailer/firecracker/vm-1/rootfs.ext4", "/srv/jailer/firecracker/vm-1/root/../x"} {
		if _, err := l.inside(outside); err == nil || !strings.Contains(err.Error(), "stage it inside the jail") {
			t.Errorf("%s: want an outside-the-jail error, got %v", outside, err)
		}
	}
	if in, err := (layout{}).inside("/any/path"); err != nil || in != "/any/path" {
		t.Fatalf("unjailed paths must pass through: %q, %v", in, err)
	}
}

func TestJailedBootNeedsStagedFiles(t *testing.T) {
	d, spec, _ := jailedDriver(t, &fakeLauncher{})
	l, _ := d.layoutFor(spec)
	if _, err := d.bootSteps(spec, l, nil); err == nil || !strings.Contains(err.Error(), "outside the jail") {
		t.Fatalf("kernel outside the jail must be refused, got %v", err)
	}
}

func TestRejectsBadInstanceID(t *testing.T) {
	d := New(Config{})
	spec := testSpec(t)
	spec.VMID = "dev_vm.1"
	if err := d.validate(spec); err == nil || !strings.Contains(err.Error(), "instance id") {
		t.Fatalf("got %v", err)
	}
	if !validInstanceID(strings.Repeat("a", 64)) || validInstanceID(strings.Repeat("a", 65)) {
		t.Fatal("64 characters is Firecracker's limit")
	}
	if validInstanceID("-help") || validInstanceID("") || !validInstanceID("0vm-a") {
		t.Fatal("an id must start with a letter or digit, so it never reads as the jailer's option")
	}
}
