package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/vmm"
)

// This file adapts the daemon's pieces to the lifecycle's snapshot ports:
// the snapshots table, the snapshot files under the state dir, a restored
// guest's new identity, and the key golden snapshots are valid for.

// lcSnapshots is the lifecycle's SnapshotStore: the snapshots table.
type lcSnapshots struct{ st *store.Store }

func (s lcSnapshots) InsertSnapshot(ctx context.Context, sn lifecycle.Snapshot) error {
	err := s.st.CreateSnapshot(ctx, sn)
	if errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("%w: %w", lifecycle.ErrExists, err)
	}
	return err
}

func (s lcSnapshots) SaveSnapshot(ctx context.Context, sn lifecycle.Snapshot) error {
	return notFound(s.st.UpdateSnapshot(ctx, sn))
}

func (s lcSnapshots) GetSnapshot(ctx context.Context, ref string) (lifecycle.Snapshot, error) {
	sn, err := s.st.GetSnapshot(ctx, ref)
	return sn, notFound(err)
}

func (s lcSnapshots) ListSnapshots(ctx context.Context) ([]lifecycle.Snapshot, error) {
	return s.st.ListSnapshots(ctx)
}

func (s lcSnapshots) DeleteSnapshot(ctx context.Context, id string) error {
	return notFound(s.st.DeleteSnapshot(ctx, id))
}

// The files of a snapshot in its directory. The VMM writes state and
// memory (QEMU writes only state); the daemon writes disk.
const (
	snapshotStateFile  = "state"
	snapshotMemoryFile = "memory"
	snapshotDiskFile   = "disk"
)

// restoreSuffix marks a VM disk being restored from a snapshot: it is
// renamed over the disk once whole, and removed at start if a crash left it.
const restoreSuffix = ".restoring"

// snapshotFiles is the lifecycle's SnapshotFiles: one directory per
// snapshot under the state dir. A snapshot's disk is a copy of the VM's
// disk file as this daemon keeps it: the cloned root file system, or with
// dm-snapshot overlays the VM's COW file (which holds the VM's writes over
// its image, which stays shared and read-only).
type snapshotFiles struct {
	layout paths.Layout
	// overlays says VM disks are dm COW files over their image.
	overlays bool
	// diskOf is VM id's disk file (the clone, or its COW file).
	diskOf func(id string) string
	// flush writes VM id's disk device's cached writes through to its disk
	// file before the file is copied; nil when the file is the device.
	flush func(id string) error
	// freeBytes measures free space (disk.FreeBytes; a fake in tests).
	freeBytes func(path string) (int64, error)
	log       *slog.Logger
}

// newSnapshotFiles keeps snapshots of the disks that vm holds.
func newSnapshotFiles(vm lcFiles) snapshotFiles {
	f := snapshotFiles{
		layout:    vm.layout,
		overlays:  vm.overlays != nil,
		diskOf:    vm.lockedDiskPath,
		freeBytes: disk.FreeBytes,
		log:       vm.log,
	}
	if f.overlays {
		f.flush = flushOverlay
	}
	return f
}

// flushOverlay fsyncs VM id's dm-snapshot device: the VMM writes through
// the device's page cache, so until the flush the COW file behind it may
// lack the newest writes (or the metadata that maps them). The device is
// the owner's (the VMM opens it too), so the daemon may open it.
func flushOverlay(id string) error {
	dev := filepath.Join("/dev/mapper", disk.NamePrefix+id)
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("open the VM's disk device to flush it: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flush the VM's disk device %s: %w", dev, err)
	}
	return nil
}

func (f snapshotFiles) dir(id string) string { return f.layout.SnapshotDir(id) }

func (f snapshotFiles) Paths(id string) vmm.SnapshotFiles {
	return vmm.SnapshotFiles{
		State:  filepath.Join(f.dir(id), snapshotStateFile),
		Memory: filepath.Join(f.dir(id), snapshotMemoryFile),
	}
}

func (f snapshotFiles) diskPath(id string) string { return filepath.Join(f.dir(id), snapshotDiskFile) }

// CheckFits refuses a snapshot of about size bytes that the file system of
// the snapshots dir has no room for.
func (f snapshotFiles) CheckFits(_ string, size int64) error {
	dir, free, err := freeAt(f.layout.SnapshotsDir(), f.freeBytes)
	if err != nil {
		return fmt.Errorf("check room for the snapshot: %w", err)
	}
	if size <= free {
		return nil
	}
	return api.Errorf(api.CodeFailedPrecondition, "a snapshot of about %s does not fit: %s has %s free; free space there or delete snapshots you no longer need (`banger snapshot list`)",
		config.FormatBytes(size), dir, config.FormatBytes(max(free, 0)))
}

func (f snapshotFiles) Make(id string) error {
	if err := os.MkdirAll(f.layout.SnapshotsDir(), 0o700); err != nil {
		return fmt.Errorf("create snapshots dir: %w", err)
	}
	// Empty: whatever an earlier attempt with this ID left goes.
	if err := os.RemoveAll(f.dir(id)); err != nil {
		return fmt.Errorf("clear snapshot dir: %w", err)
	}
	if err := os.Mkdir(f.dir(id), 0o700); err != nil {
		return fmt.Errorf("create snapshot dir: %w", err)
	}
	return nil
}

func (f snapshotFiles) SaveDisk(_ context.Context, vmID, id string) error {
	if f.flush != nil {
		if err := f.flush(vmID); err != nil {
			return err
		}
	}
	method, err := disk.Clone(f.diskOf(vmID), f.diskPath(id), 0)
	if err != nil {
		return fmt.Errorf("copy the VM's disk into the snapshot: %w", err)
	}
	f.log.Debug("snapshot disk saved", "snapshot_id", id, "vm_id", vmID, "method", method)
	return nil
}

// RestoreDisk copies the snapshot's disk next to the VM's and renames it
// over, so the VM has its old disk or the new one, never half of either.
func (f snapshotFiles) RestoreDisk(_ context.Context, id, vmID string) error {
	dst := f.diskOf(vmID)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("create vm dir: %w", err)
	}
	tmp := dst + restoreSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove an earlier restore's leftover: %w", err)
	}
	method, err := disk.Clone(f.diskPath(id), tmp, 0)
	if err != nil {
		return fmt.Errorf("copy the snapshot's disk: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace the VM's disk: %w", err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return fmt.Errorf("replace the VM's disk: %w", err)
	}
	f.log.Debug("disk restored from snapshot", "snapshot_id", id, "vm_id", vmID, "method", method)
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// dmSnapshotMagic starts a persistent dm-snapshot COW device's header
// ("SnAp", the kernel's SNAP_MAGIC 0x70416e53 little-endian).
var dmSnapshotMagic = []byte("SnAp")

// Verify checks snapshot s's files before anything of a target VM changes:
// the VMM state (non-empty), guest memory where the driver writes it, and a
// disk of the form this daemon's VM disks have.
func (f snapshotFiles) Verify(s lifecycle.Snapshot) error {
	p := f.Paths(s.ID)
	required := []string{p.State}
	if writesMemory(s.VMM) {
		required = append(required, p.Memory)
	}
	for _, path := range required {
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("its %s file is missing", filepath.Base(path))
		}
		if st.Size() == 0 {
			return fmt.Errorf("its %s file is empty", filepath.Base(path))
		}
	}
	return f.verifyDisk(s)
}

func (f snapshotFiles) verifyDisk(s lifecycle.Snapshot) error {
	path := f.diskPath(s.ID)
	st, err := os.Stat(path)
	if err != nil {
		return errors.New("its disk file is missing")
	}
	head := make([]byte, len(dmSnapshotMagic))
	if fh, err := os.Open(path); err == nil {
		_, _ = fh.ReadAt(head, 0)
		fh.Close()
	}
	isCOW := bytes.Equal(head, dmSnapshotMagic)
	switch {
	case f.overlays && !isCOW:
		return errors.New("its disk is a plain file system, but this daemon's VM disks are dm-snapshot overlays; it was made by a daemon without device-mapper")
	case !f.overlays && isCOW:
		return errors.New("its disk is a dm-snapshot COW file, but this daemon's VM disks are plain files; it was made by a daemon with device-mapper")
	case f.overlays:
		if want := disk.COWSize(s.DiskSizeBytes); st.Size() != want {
			return fmt.Errorf("its disk is %d bytes, not the %d of a %s VM disk", st.Size(), want, config.FormatBytes(s.DiskSizeBytes))
		}
	default:
		info, err := disk.ReadExt4(path)
		if err != nil {
			return fmt.Errorf("its disk holds no readable file system (%v)", err)
		}
		if st.Size() != s.DiskSizeBytes || info.FSBytes > st.Size() {
			return fmt.Errorf("its disk is %d bytes, not the VM's %d", st.Size(), s.DiskSizeBytes)
		}
	}
	return nil
}

// writesMemory says whether driver vmmName keeps guest memory in a file of
// its own (Firecracker) rather than in its state stream (QEMU).
func writesMemory(vmmName string) bool { return vmmName != "qemu" }

// Size is what the snapshot's files take on the host: allocated blocks,
// so a sparse or reflinked disk counts what it really holds.
func (f snapshotFiles) Size(id string) int64 {
	var total int64
	_ = filepath.WalkDir(f.dir(id), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				total += st.Blocks * 512
			}
		}
		return nil
	})
	return total
}

func (f snapshotFiles) Remove(id string) error {
	if err := os.RemoveAll(f.dir(id)); err != nil {
		return fmt.Errorf("remove snapshot files: %w", err)
	}
	return nil
}

// CleanLeftovers removes snapshot dirs no snapshot owns (a save or delete
// the daemon died in) and VM disks half-restored from a snapshot.
func (f snapshotFiles) CleanLeftovers(known map[string]bool) {
	entries, _ := os.ReadDir(f.layout.SnapshotsDir())
	for _, e := range entries {
		if known[e.Name()] {
			continue
		}
		path := filepath.Join(f.layout.SnapshotsDir(), e.Name())
		if err := os.RemoveAll(path); err == nil {
			f.log.Info("removed leftover snapshot files", "dir", path)
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(f.layout.VMsStateDir(), "*", "*"+restoreSuffix))
	for _, tmp := range tmps {
		if err := os.Remove(tmp); err == nil {
			f.log.Info("removed a VM disk left half-restored", "file", tmp)
		}
	}
}

// lcIdentity is the lifecycle's Identity: it makes a VM restored from a
// snapshot of another VM a machine of its own.
type lcIdentity struct {
	guest lcGuest    // setup, leases, host names and the known_hosts to repin
	net   *vmNetwork // nil: VMs get no network, so no address to give
	now   func() time.Time
}

// Reidentify sends the guest its identity (hostname, MAC and address as
// the network attach gave them, a fresh machine-id, RNG seed and the
// host's time) and pins the SSH host keys it generated in their place;
// alongside, over another stream of the same agent session, it runs the
// usual guest setup, which needs nothing the identity changes (the host
// keys it would pin are the identity's to pin).
func (i lcIdentity) Reidentify(ctx context.Context, lvm lifecycle.VM, inst vmm.Instance, p lifecycle.Progress) error {
	vm := toStoreVM(lvm)
	id, err := i.identityFor(ctx, vm)
	if err != nil {
		return err
	}
	return withAgent(ctx, inst, func(c *agent.Client) error { return i.reidentifyOver(ctx, vm, c, id, p) })
}

// reidentifyOver is Reidentify over the open agent session c.
func (i lcIdentity) reidentifyOver(ctx context.Context, vm store.VM, c *agent.Client, id agent.Identity, p lifecycle.Progress) error {
	p = p.Serialized() // the two report concurrently
	setupErr := make(chan error, 1)
	go func() { setupErr <- i.guest.setupWith(ctx, vm, c, progressFrom(p), true) }()
	return errors.Join(i.giveIdentity(ctx, vm, c, id, p), <-setupErr)
}

// giveIdentity sends the guest id over c and re-pins the host keys it
// reports.
func (i lcIdentity) giveIdentity(ctx context.Context, vm store.VM, c *agent.Client, id agent.Identity, p lifecycle.Progress) error {
	res, err := c.Reidentify(ctx, id)
	if err != nil {
		return fmt.Errorf("give the guest its own identity: %w", err)
	}
	if err := i.repinHostKeys(ctx, vm, res.HostKeys); err != nil {
		return err
	}
	p(lifecycle.Report{VM: vm.Name, Stage: "identity", Message: identityLine(id, res)})
	return nil
}

func identityLine(id agent.Identity, res agent.IdentityResult) string {
	parts := []string{"hostname " + res.Hostname}
	if id.Address.IsValid() {
		parts = append(parts, "address "+id.Address.Addr().String(), "MAC "+id.MAC)
	}
	parts = append(parts, fmt.Sprintf("%d new SSH host keys", len(res.HostKeys)))
	return "new identity: " + strings.Join(parts, ", ")
}

// identityFor is VM vm's identity: its name, its network as its lease and
// the bridge give it (when the daemon has networking), and fresh
// randomness.
func (i lcIdentity) identityFor(ctx context.Context, vm store.VM) (agent.Identity, error) {
	id := agent.Identity{Hostname: vm.Name, MachineID: newMachineID(), Seed: randomBytes(64), Time: i.now()}
	if i.net == nil {
		return id, nil
	}
	lease, err := i.guest.store.GetLease(ctx, vm.ID)
	if err != nil {
		return id, fmt.Errorf("vm %q has no address yet: %w", vm.Name, err)
	}
	gp := i.net.guestParams(lease)
	id.MAC, id.Address, id.Gateway, id.DNS, id.Domain = lease.MAC, gp.Address, gp.Gateway, gp.DNS, gp.Domain
	return id, nil
}

// repinHostKeys replaces whatever known_hosts holds for the VM with the
// keys its guest just generated.
func (i lcIdentity) repinHostKeys(ctx context.Context, vm store.VM, keys []string) error {
	kh := ssh.KnownHosts{Path: ssh.KnownHostsPath(i.guest.ownerDir)}
	if err := kh.Forget(vm.ID); err != nil {
		return fmt.Errorf("forget the snapshot's host keys: %w", err)
	}
	if len(keys) == 0 {
		return nil // no sshd in the guest
	}
	if _, err := kh.Pin(vm.ID, i.guest.hostNames(ctx, vm), keys); err != nil {
		return fmt.Errorf("pin the new host keys: %w", err)
	}
	return nil
}

// newMachineID is a random /etc/machine-id: 128 bits, lowercase hex.
func newMachineID() string {
	b := randomBytes(16)
	b[0] |= 1 // never all zeros, which machine-id forbids
	return hex.EncodeToString(b)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (see crypto/rand.Read)
	return b
}

// goldenKeys is the lifecycle's GoldenKeys: a golden snapshot is valid for
// one image (its files as they are now), one banger agent, one VMM binary,
// one VM shape and this daemon's disk and network mode; a change to any
// gives another key, so a stale golden snapshot is never restored.
type goldenKeys struct {
	driver vmm.Driver
	build  buildinfo.Info
	// mode is the daemon's settings that shape a snapshot's files.
	mode string
	// vmmVersion is the VMM binary's identity, asked once per daemon.
	vmmVersion func() string
}

// goldenMode names the daemon's settings that shape a snapshot's files:
// whether VM disks are dm-snapshot overlays and whether VMs are networked.
func goldenMode(overlays, networked bool) string {
	return fmt.Sprintf("overlays=%t network=%t", overlays, networked)
}

// newGoldenKeys keys golden snapshots for driver (nil: none), this build
// and mode (goldenMode); cfg names the VMM binaries, which r asks for
// their version.
func newGoldenKeys(driver vmm.Driver, mode string, build buildinfo.Info, cfg config.Config, r system.Runner) goldenKeys {
	g := goldenKeys{driver: driver, build: build, mode: mode}
	if driver != nil {
		binary := map[string]string{"firecracker": cfg.Firecracker.Binary, "qemu": cfg.QEMU.Binary}[driver.Name()]
		g.vmmVersion = sync.OnceValue(func() string { return vmmBinaryVersion(r, binary) })
	}
	return g
}

// Key is "" when this daemon's driver cannot restore snapshots.
func (g goldenKeys) Key(vm lifecycle.VM, img lifecycle.Image) string {
	if g.driver == nil || !g.driver.Capabilities().Snapshots {
		return ""
	}
	if _, ok := g.driver.(vmm.Restorer); !ok {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "image %s\n", img.ID)
	for _, path := range []string{img.Kernel, img.Initrd, img.Rootfs} {
		fmt.Fprintf(h, "file %s\n", fileIdentity(path))
	}
	fmt.Fprintf(h, "agent %s %s\n", g.build.Version, g.build.Commit)
	fmt.Fprintf(h, "vmm %s %s\n", g.driver.Name(), g.vmmVersion())
	fmt.Fprintf(h, "shape vcpus=%d memory=%d disk=%d\n", vm.VCPUs, vm.MemoryMiB, vm.DiskSizeBytes)
	fmt.Fprintf(h, "mode %s\n", g.mode)
	return hex.EncodeToString(h.Sum(nil))
}

// fileIdentity names a file as it is now: path, size and modification
// time (an image file is replaced, never edited in place, so a change
// shows in one of them).
func fileIdentity(path string) string {
	if path == "" {
		return "none"
	}
	st, err := os.Stat(path)
	if err != nil {
		return path + " missing"
	}
	return fmt.Sprintf("%s %d %d", path, st.Size(), st.ModTime().UnixNano())
}

// vmmBinaryVersion is what the VMM binary says of itself (`--version`)
// together with its file identity, which catches a rebuild that kept the
// version.
func vmmBinaryVersion(r system.Runner, binary string) string {
	path, err := exec.LookPath(binary)
	if err != nil {
		return binary + " not found"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	version := "unknown version"
	if out, err := system.RunChecked(ctx, r, system.Command{Path: path, Args: []string{"--version"}}); err == nil {
		version = strings.TrimSpace(string(out.Stdout))
	}
	return version + "; " + fileIdentity(path)
}
