package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// plainSnapshotFiles is snapshotFiles over plain VM disks in a temp layout.
func plainSnapshotFiles(t *testing.T) snapshotFiles {
	t.Helper()
	layout := testLayoutAt(t.TempDir())
	return snapshotFiles{
		layout:    layout,
		diskOf:    func(id string) string { return filepath.Join(layout.VMStateDir(id), "rootfs.ext4") },
		freeBytes: disk.FreeBytes,
		log:       slog.New(slog.DiscardHandler),
	}
}

// makeExt4 makes an ext4 file system of size bytes at path.
func makeExt4(t *testing.T, path string, size int64) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
}

// writeSnapshot fills snapshot s's state and memory files as a VMM would.
func writeSnapshot(t *testing.T, f snapshotFiles, s lifecycle.Snapshot) {
	t.Helper()
	p := f.Paths(s.ID)
	for _, path := range []string{p.State, p.Memory} {
		if err := os.WriteFile(path, []byte("vmm bytes"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSnapshotDiskSavesAndRestoresWithTheVMsContent(t *testing.T) {
	f := plainSnapshotFiles(t)
	ctx := context.Background()
	const size = 16 << 20
	vmDisk := f.diskOf("vm1")
	makeExt4(t, vmDisk, size)
	s := lifecycle.Snapshot{ID: "snap1", Name: "s1", VMM: "firecracker", DiskSizeBytes: size}
	if err := f.Make(s.ID); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(f.dir(s.ID)); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot dir: %v, %v; want mode 0700", st, err)
	}
	writeSnapshot(t, f, s)
	if err := f.SaveDisk(ctx, "vm1", s.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(s); err != nil {
		t.Fatalf("Verify of a whole snapshot: %v", err)
	}
	saved, _ := os.ReadFile(vmDisk)

	// The VM writes on; a rollback brings back the saved bytes.
	scribble(t, vmDisk, 8<<20, "changed after the snapshot")
	if err := f.RestoreDisk(ctx, s.ID, "vm1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(vmDisk); !bytes.Equal(got, saved) {
		t.Fatal("the restored disk differs from the disk at snapshot time")
	}
	// A fork's disk: a VM that has none yet gets a copy.
	if err := f.RestoreDisk(ctx, s.ID, "fork1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(f.diskOf("fork1")); !bytes.Equal(got, saved) {
		t.Fatal("the fork's disk differs from the snapshot's")
	}
	if left, _ := filepath.Glob(filepath.Join(f.layout.VMsStateDir(), "*", "*"+restoreSuffix)); len(left) > 0 {
		t.Fatalf("restores left %v", left)
	}
}

func scribble(t *testing.T, path string, off int64, text string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt([]byte(text), off); err != nil {
		t.Fatal(err)
	}
}

// A restore whose copy fails leaves the VM's disk as it was, whole.
func TestRestoreDiskFailureLeavesTheVMsDisk(t *testing.T) {
	f := plainSnapshotFiles(t)
	vmDisk := f.diskOf("vm1")
	makeExt4(t, vmDisk, 16<<20)
	before, _ := os.ReadFile(vmDisk)
	if err := f.Make("gone"); err != nil {
		t.Fatal(err)
	}
	// The snapshot has no disk file.
	if err := f.RestoreDisk(context.Background(), "gone", "vm1"); err == nil {
		t.Fatal("RestoreDisk from a snapshot without a disk succeeded")
	}
	if after, _ := os.ReadFile(vmDisk); !bytes.Equal(after, before) {
		t.Fatal("a failed restore changed the VM's disk")
	}
	if _, err := os.Stat(vmDisk + restoreSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed restore left its temp file: %v", err)
	}
}

func TestVerifyRefusesBrokenSnapshots(t *testing.T) {
	f := plainSnapshotFiles(t)
	const size = 16 << 20
	makeExt4(t, f.diskOf("vm1"), size)
	fresh := func(t *testing.T, vmmName string) lifecycle.Snapshot {
		s := lifecycle.Snapshot{ID: store.NewID(), Name: "s-" + vmmName, VMM: vmmName, DiskSizeBytes: size}
		if err := f.Make(s.ID); err != nil {
			t.Fatal(err)
		}
		writeSnapshot(t, f, s)
		if err := f.SaveDisk(context.Background(), "vm1", s.ID); err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name, vmm string
		breakIt   func(lifecycle.Snapshot)
		want      string
	}{
		{"state missing", "firecracker", func(s lifecycle.Snapshot) { must(t, os.Remove(f.Paths(s.ID).State)) }, "state file is missing"},
		{"state empty", "qemu", func(s lifecycle.Snapshot) { must(t, os.Truncate(f.Paths(s.ID).State, 0)) }, "state file is empty"},
		{"memory missing", "firecracker", func(s lifecycle.Snapshot) { must(t, os.Remove(f.Paths(s.ID).Memory)) }, "memory file is missing"},
		{"disk missing", "firecracker", func(s lifecycle.Snapshot) { must(t, os.Remove(f.diskPath(s.ID))) }, "disk file is missing"},
		{"disk truncated", "firecracker", func(s lifecycle.Snapshot) { must(t, os.Truncate(f.diskPath(s.ID), size/2)) }, "truncated"},
		{"disk grown", "firecracker", func(s lifecycle.Snapshot) { must(t, os.Truncate(f.diskPath(s.ID), 2*size)) }, "not the VM's"},
		{"disk garbage", "firecracker", func(s lifecycle.Snapshot) { scribble(t, f.diskPath(s.ID), 1024, strings.Repeat("x", 1024)) }, "no readable file system"},
		{"disk from an overlay daemon", "firecracker", func(s lifecycle.Snapshot) { scribble(t, f.diskPath(s.ID), 0, "SnAp") }, "dm-snapshot COW file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := fresh(t, c.vmm)
			c.breakIt(s)
			if err := f.Verify(s); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v; want an error saying %q", err, c.want)
			}
		})
	}
	// QEMU keeps memory in its state stream: no memory file is fine.
	s := fresh(t, "qemu")
	must(t, os.Remove(f.Paths(s.ID).Memory))
	if err := f.Verify(s); err != nil {
		t.Fatalf("a QEMU snapshot without a memory file: %v", err)
	}
}

// In overlay mode a snapshot's disk is the VM's COW file, which must look
// like one and have the COW size of the VM's disk.
func TestVerifyOverlaySnapshotDisk(t *testing.T) {
	f := plainSnapshotFiles(t)
	f.overlays = true
	const size = 1 << 30
	s := lifecycle.Snapshot{ID: "c1", Name: "cow", VMM: "qemu", DiskSizeBytes: size}
	if err := f.Make(s.ID); err != nil {
		t.Fatal(err)
	}
	writeSnapshot(t, f, s)
	cow, err := os.Create(f.diskPath(s.ID))
	if err != nil {
		t.Fatal(err)
	}
	must(t, cow.Truncate(disk.COWSize(size)))
	_, err = cow.WriteAt([]byte("SnAp"), 0)
	must(t, err)
	cow.Close()
	if err := f.Verify(s); err != nil {
		t.Fatalf("Verify of a COW snapshot disk: %v", err)
	}
	must(t, os.Truncate(f.diskPath(s.ID), disk.COWSize(size)-4096))
	if err := f.Verify(s); err == nil || !strings.Contains(err.Error(), "bytes, not the") {
		t.Fatalf("a truncated COW file: %v", err)
	}
	scribble(t, f.diskPath(s.ID), 0, "\x00\x00\x00\x00")
	if err := f.Verify(s); err == nil || !strings.Contains(err.Error(), "plain file system") {
		t.Fatalf("a plain disk in overlay mode: %v", err)
	}
}

// Size counts blocks, not apparent size: a sparse disk is what it holds.
func TestSnapshotSizeCountsAllocatedBlocks(t *testing.T) {
	f := plainSnapshotFiles(t)
	if err := f.Make("s"); err != nil {
		t.Fatal(err)
	}
	sparse, err := os.Create(f.diskPath("s"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, sparse.Truncate(1<<30))
	_, err = sparse.WriteAt(bytes.Repeat([]byte{1}, 64<<10), 0)
	must(t, err)
	sparse.Close()
	if err := os.WriteFile(f.Paths("s").State, bytes.Repeat([]byte{2}, 8<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	got := f.Size("s")
	if got < 72<<10 || got > 1<<20 {
		t.Fatalf("Size = %d; want the ~72 KiB written, not the 1 GiB apparent size", got)
	}
	if f.Size("none") != 0 {
		t.Fatal("Size of a missing snapshot is not 0")
	}
}

func TestCheckFitsRefusesASnapshotLargerThanTheFreeSpace(t *testing.T) {
	f := plainSnapshotFiles(t)
	f.freeBytes = func(string) (int64, error) { return 3 << 30, nil }
	if err := f.CheckFits("s", 2<<30); err != nil {
		t.Fatalf("2 GiB into 3 GiB free: %v", err)
	}
	err := f.CheckFits("s", 4<<30)
	if !api.IsCode(err, api.CodeFailedPrecondition) || !strings.Contains(err.Error(), "does not fit") || !strings.Contains(err.Error(), "3G") {
		t.Fatalf("4 GiB into 3 GiB free: %v", err)
	}
}

func TestCleanLeftoversKeepsKnownSnapshotsOnly(t *testing.T) {
	f := plainSnapshotFiles(t)
	for _, id := range []string{"keep", "orphan"} {
		if err := f.Make(id); err != nil {
			t.Fatal(err)
		}
	}
	half := f.diskOf("vm1") + restoreSuffix
	must(t, os.MkdirAll(filepath.Dir(half), 0o700))
	must(t, os.WriteFile(half, []byte("half"), 0o600))
	must(t, os.WriteFile(f.diskOf("vm1"), []byte("whole"), 0o600))
	f.CleanLeftovers(map[string]bool{"keep": true})
	if got := entries(f.layout.SnapshotsDir()); len(got) != 1 || got[0] != "keep" {
		t.Fatalf("snapshot dirs after cleanup: %v, want [keep]", got)
	}
	if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a half-restored disk survived cleanup")
	}
	if _, err := os.Stat(f.diskOf("vm1")); err != nil {
		t.Fatalf("the VM's disk went with the cleanup: %v", err)
	}
}

func entries(dir string) []string {
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// snapDriver is a driver that can restore snapshots (or not).
type snapDriver struct {
	vmm.Driver
	snapshots bool
}

func (d snapDriver) Name() string { return "firecracker" }
func (d snapDriver) Capabilities() vmm.Capabilities {
	return vmm.Capabilities{Snapshots: d.snapshots}
}
func (snapDriver) Restore(context.Context, vmm.LaunchSpec, vmm.SnapshotFiles) (vmm.Instance, error) {
	return nil, errors.New("not here")
}

// The golden key changes with everything a golden snapshot depends on, and
// only with that.
func TestGoldenKeyChangesWithWhatTheSnapshotDependsOn(t *testing.T) {
	dir := t.TempDir()
	img := lifecycle.Image{ID: "img1", Kernel: filepath.Join(dir, "vmlinux"), Rootfs: filepath.Join(dir, "rootfs.ext4")}
	for _, p := range []string{img.Kernel, img.Rootfs} {
		if err := os.WriteFile(p, []byte("v1"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	version := "Firecracker v1.16.1"
	g := goldenKeys{driver: snapDriver{snapshots: true}, build: buildinfo.Info{Version: "v1", Commit: "abc"},
		mode: "overlays=false network=true", vmmVersion: func() string { return version }}
	vm := lifecycle.VM{VCPUs: 2, MemoryMiB: 512, DiskSizeBytes: 4 << 30}
	base := g.Key(vm, img)
	if base == "" || g.Key(vm, img) != base {
		t.Fatalf("key %q is empty or not stable", base)
	}
	changed := map[string]func() string{
		"vcpus":  func() string { v := vm; v.VCPUs = 4; return g.Key(v, img) },
		"memory": func() string { v := vm; v.MemoryMiB = 1024; return g.Key(v, img) },
		"disk":   func() string { v := vm; v.DiskSizeBytes = 8 << 30; return g.Key(v, img) },
		"image":  func() string { i := img; i.ID = "img2"; return g.Key(vm, i) },
		"agent":  func() string { h := g; h.build.Commit = "def"; return h.Key(vm, img) },
		"vmm": func() string {
			h := g
			h.vmmVersion = func() string { return "Firecracker v1.17.0" }
			return h.Key(vm, img)
		},
		"mode": func() string { h := g; h.mode = "overlays=true network=true"; return h.Key(vm, img) },
		"rootfs": func() string {
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(img.Rootfs, later, later); err != nil {
				t.Fatal(err)
			}
			defer func() { must(t, os.Chtimes(img.Rootfs, time.Now(), time.Now())) }()
			return g.Key(vm, img)
		},
		"kernel": func() string {
			must(t, os.WriteFile(img.Kernel, []byte("v2 longer"), 0o600))
			defer func() { must(t, os.WriteFile(img.Kernel, []byte("v1"), 0o600)) }()
			return g.Key(vm, img)
		},
	}
	for what, key := range changed {
		if k := key(); k == base || k == "" {
			t.Errorf("a change of %s keeps the key (%q)", what, k)
		}
	}
	if k := (goldenKeys{driver: snapDriver{snapshots: false}}).Key(vm, img); k != "" {
		t.Errorf("a driver without snapshots gives key %q, want none", k)
	}
	if k := (goldenKeys{}).Key(vm, img); k != "" {
		t.Errorf("no driver gives key %q, want none", k)
	}
}

// exec, cp, sync and ssh refuse a paused VM with the resume hint instead
// of hanging on a guest that cannot answer.
func TestAccessRefusesAPausedVM(t *testing.T) {
	layout := testLayout(t)
	rd := startDaemon(t, layout)
	ctx := context.Background()
	st, err := store.Open(ctx, layout.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { must(t, st.Close()) }()
	vm := store.VM{ID: store.NewID(), Name: "frozen", VCPUs: 1, MemoryMiB: 128, State: lifecycle.Paused, VMM: "firecracker"}
	if err := st.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	want := "vm frozen is paused; `banger vm resume frozen` resumes it"
	if _, err := rd.client.VMSync(ctx, api.VMSyncRequest{Name: "frozen", Paths: []string{"~/.gitconfig"}}, nil); err == nil || err.Error() != want {
		t.Errorf("sync of a paused VM: %v; want %q", err, want)
	}
	if _, err := rd.client.VMSSHInfo(ctx, "frozen"); err == nil || err.Error() != want {
		t.Errorf("ssh info of a paused VM: %v; want %q", err, want)
	}
}

// Every field of a snapshot a user can see reaches the wire.
func TestSnapshotMapsToTheWireWhole(t *testing.T) {
	var sn lifecycle.Snapshot
	fillAll(t, &sn)
	out := reflect.ValueOf(snapshotToAPI(sn))
	for i := range out.NumField() {
		if out.Field(i).IsZero() {
			t.Errorf("api.Snapshot.%s is not filled from the snapshot", out.Type().Field(i).Name)
		}
	}
}

// A restored VM's identity carries the network its boot would have put on
// the kernel command line (one source for both), and fresh randomness the
// agent accepts.
func TestIdentityMatchesTheBootsNetwork(t *testing.T) {
	ctx := context.Background()
	n, _ := newTestNetwork(t, "banger0")
	vm := createTestVM(t, n.store, "fork-1", false)
	iface, args, err := n.attach(ctx, vm, false)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := agent.ParseBootParams(strings.Join(args, " "))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)
	i := lcIdentity{guest: lcGuest{store: n.store}, net: n, now: func() time.Time { return now }}
	id, err := i.identityFor(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	if id.Hostname != "fork-1" || id.MAC != iface.MAC || id.Address != boot.Address || id.Gateway != boot.Gateway ||
		!slices.Equal(id.DNS, boot.DNS) || id.Domain != boot.Domain || !id.Time.Equal(now) {
		t.Errorf("identity %+v does not match the boot's network %+v (MAC %s)", id, boot, iface.MAC)
	}
	if err := id.Validate(); err != nil {
		t.Errorf("the agent would refuse the identity: %v", err)
	}
	again, _ := i.identityFor(ctx, vm)
	if again.MachineID == id.MachineID || bytes.Equal(again.Seed, id.Seed) || len(id.Seed) != 64 {
		t.Errorf("machine-id %s/%s and seeds of %d bytes: want fresh ones each time", id.MachineID, again.MachineID, len(id.Seed))
	}
}
