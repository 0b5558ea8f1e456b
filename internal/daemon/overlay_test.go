package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// fakeDiskOps records privileged disk calls and keeps the loop table the
// way the kernel would, so detach's lookup by name is exercised too.
type fakeDiskOps struct {
	mu        sync.Mutex
	calls     []string
	loops     []disk.Loop
	snapshots map[string]bool
	failSnap  error
	device    string // what CreateSnapshot returns
}

func (f *fakeDiskOps) AttachLoop(_ context.Context, s loopRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.Backing == nil {
		return "", errors.New("no backing descriptor")
	}
	dev := "/dev/loop" + string(rune('0'+len(f.loops)))
	f.loops = append(f.loops, disk.Loop{Device: dev, Name: s.Name, ReadOnly: s.ReadOnly})
	f.calls = append(f.calls, "attach "+s.Name)
	return dev, nil
}

func (f *fakeDiskOps) DetachLoop(_ context.Context, dev string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loops = slices.DeleteFunc(f.loops, func(l disk.Loop) bool { return l.Device == dev })
	f.calls = append(f.calls, "detach "+dev)
	return nil
}

func (f *fakeDiskOps) CreateSnapshot(_ context.Context, s snapshotRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "snapshot "+s.Name+" "+s.Origin+" "+s.COW)
	if f.failSnap != nil {
		return "", f.failSnap
	}
	f.snapshots[s.Name] = true
	return f.device, nil
}

func (f *fakeDiskOps) RemoveSnapshot(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.snapshots, name)
	f.calls = append(f.calls, "remove "+name)
	return nil
}

func (f *fakeDiskOps) list() ([]disk.Loop, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.loops), nil
}

func overlayFixture(t *testing.T) (*overlayDisks, *fakeDiskOps, *systemtest.Runner, store.VM, store.Image, string) {
	t.Helper()
	dir := t.TempDir()
	base := filepath.Join(dir, "image.ext4")
	if err := os.WriteFile(base, []byte("image"), 0o600); err != nil {
		t.Fatal(err)
	}
	ops := &fakeDiskOps{snapshots: map[string]bool{}, device: "/dev/mapper/banger-0123456789abcdef"}
	run := &systemtest.Runner{}
	o := &overlayDisks{ops: ops, log: slog.New(slog.DiscardHandler), runner: run, loops: ops.list}
	vm := store.VM{ID: "0123456789abcdef", Name: "dev", DiskSizeBytes: 256 << 20}
	stateDir := filepath.Join(dir, "vm")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	return o, ops, run, vm, store.Image{RootfsPath: base}, stateDir
}

func TestOverlayAttachAndDetach(t *testing.T) {
	o, ops, _, vm, img, stateDir := overlayFixture(t)
	if err := o.prepare(vm, stateDir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(cowPath(stateDir))
	if err != nil || st.Size() < vm.DiskSizeBytes {
		t.Fatalf("COW file: %v size %d", err, st.Size())
	}
	if err := o.prepare(vm, stateDir); err == nil {
		t.Fatal("prepare overwrote an existing COW file")
	}
	dev, err := o.attach(context.Background(), vm, img, stateDir, false)
	if err != nil || dev != ops.device {
		t.Fatalf("attach: %q %v", dev, err)
	}
	want := []string{"attach banger-0123456789abcdef-base", "attach banger-0123456789abcdef-cow", "snapshot banger-0123456789abcdef /dev/loop0 /dev/loop1"}
	if !slices.Equal(ops.calls, want) {
		t.Fatalf("calls %q, want %q", ops.calls, want)
	}
	if !ops.loops[0].ReadOnly || ops.loops[1].ReadOnly {
		t.Fatal("the image must be attached read-only and the COW file read-write")
	}
	// A foreign loop device is never touched.
	ops.loops = append(ops.loops, disk.Loop{Device: "/dev/loop7", Name: "/home/someone/other.img"})
	if err := o.detach(context.Background(), vm.ID); err != nil {
		t.Fatal(err)
	}
	if len(ops.snapshots) != 0 || len(ops.loops) != 1 || ops.loops[0].Device != "/dev/loop7" {
		t.Fatalf("after detach: snapshots %v loops %+v", ops.snapshots, ops.loops)
	}
}

func TestOverlayAttachUndoesOnFailure(t *testing.T) {
	o, ops, _, vm, img, stateDir := overlayFixture(t)
	if err := o.prepare(vm, stateDir); err != nil {
		t.Fatal(err)
	}
	ops.failSnap = errors.New("dm: table load failed")
	if _, err := o.attach(context.Background(), vm, img, stateDir, false); err == nil || !strings.Contains(err.Error(), "table load failed") {
		t.Fatalf("attach: %v", err)
	}
	if len(ops.loops) != 0 {
		t.Fatalf("loops left after a failed attach: %+v", ops.loops)
	}
}

func TestOverlayFirstBootGrowsFileSystem(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	o, ops, run, vm, img, stateDir := overlayFixture(t)
	// The "snapshot device" is a real 64M ext4 file so Resize can read its superblock.
	dev := filepath.Join(t.TempDir(), "dm")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	ops.device = dev
	if err := o.prepare(vm, stateDir); err != nil {
		t.Fatal(err)
	}
	if _, err := o.attach(context.Background(), vm, img, stateDir, true); err != nil {
		t.Fatal(err)
	}
	ran := programs(run)
	if !slices.Contains(ran, "resize2fs") {
		t.Fatalf("first boot did not grow the file system: %v", ran)
	}
	_ = o.detach(context.Background(), vm.ID)
	if _, err := o.attach(context.Background(), vm, img, stateDir, false); err != nil {
		t.Fatal(err)
	}
	if again := programs(run); len(again) != len(ran) {
		t.Fatalf("a later boot resized again: %v", again[len(ran):])
	}
}

// programs lists the programs r ran, in order.
func programs(r *systemtest.Runner) []string {
	var out []string
	for _, c := range r.Commands() {
		out = append(out, c.Path)
	}
	return out
}

func TestOverlayOrphanCleanupTouchesOnlyDeadBangerDevices(t *testing.T) {
	o, ops, _, _, _, _ := overlayFixture(t)
	ops.loops = []disk.Loop{
		{Device: "/dev/loop0", Name: "banger-aaaaaaaaaaaaaaaa-base"},
		{Device: "/dev/loop1", Name: "banger-aaaaaaaaaaaaaaaa-cow"},
		{Device: "/dev/loop2", Name: "banger-bbbbbbbbbbbbbbbb-base"},
		{Device: "/dev/loop3", Name: "banger-bbbbbbbbbbbbbbbb-cow"},
		{Device: "/dev/loop4", Name: "/var/lib/docker/devicemapper"},
	}
	ops.snapshots["banger-aaaaaaaaaaaaaaaa"] = true
	ops.snapshots["banger-bbbbbbbbbbbbbbbb"] = true
	o.cleanOrphans(context.Background(), map[string]bool{"bbbbbbbbbbbbbbbb": true})
	var left []string
	for _, l := range ops.loops {
		left = append(left, l.Device)
	}
	if !slices.Equal(left, []string{"/dev/loop2", "/dev/loop3", "/dev/loop4"}) || ops.snapshots["banger-aaaaaaaaaaaaaaaa"] || !ops.snapshots["banger-bbbbbbbbbbbbbbbb"] {
		t.Fatalf("loops left %v, snapshots %v", left, ops.snapshots)
	}
}
