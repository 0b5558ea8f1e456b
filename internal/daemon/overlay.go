package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system"
)

// diskOps is what dm-snapshot disks need from the privileged side, in the
// daemon's terms; privilegedDisks (privileged_ports.go) maps it onto the
// root helper's menu.
type diskOps interface {
	// AttachLoop attaches a loop device over the already-open file and
	// returns its path; DetachLoop detaches one of banger's.
	AttachLoop(ctx context.Context, req loopRequest) (string, error)
	DetachLoop(ctx context.Context, device string) error
	// CreateSnapshot builds the snapshot device and returns its path;
	// RemoveSnapshot removes it (a missing one is not an error).
	CreateSnapshot(ctx context.Context, req snapshotRequest) (string, error)
	RemoveSnapshot(ctx context.Context, name string) error
}

// loopRequest is a loop device over Backing, which the daemon opened (read
// only when ReadOnly), named Name so banger finds its loops again.
type loopRequest struct {
	Backing  *os.File
	Name     string
	ReadOnly bool
}

// snapshotRequest is the snapshot Name of the Origin loop with writes
// going to the COW loop; SizeBytes is the disk the VM sees (0: the
// origin's size).
type snapshotRequest struct {
	Name, Origin, COW string
	SizeBytes         int64
}

// overlayDisks gives each VM a device-mapper snapshot of its image: the
// image stays read-only and shared, the VM's writes go to a sparse COW
// file, so create costs O(1) whatever the image size (the Ignite approach).
// It is used only when disk.Probe finds device-mapper and privileged
// operations are available; otherwise VMs get reflink or sparse clones.
type overlayDisks struct {
	ops diskOps
	log *slog.Logger
	// runner resizes the file system on the snapshot device at first boot.
	runner system.Runner
	// loops lists loop devices (sysfs, no privilege needed) so detach finds
	// a VM's loops by their banger names, even after a daemon restart.
	loops func() ([]disk.Loop, error)
}

// cowPath is the VM's copy-on-write file: its disk, as far as banger keeps it.
func cowPath(stateDir string) string { return filepath.Join(stateDir, "disk.cow") }

// prepare creates the VM's empty, sparse COW file at create time.
func (o *overlayDisks) prepare(vm store.VM, stateDir string) error {
	f, err := os.OpenFile(cowPath(stateDir), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create COW file: %w", err)
	}
	if err := f.Truncate(disk.COWSize(vm.DiskSizeBytes)); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// attach builds the snapshot device for a boot and returns its path. Each
// step is undone if a later one fails.
func (o *overlayDisks) attach(ctx context.Context, vm store.VM, img store.Image, stateDir string, firstBoot bool) (dev string, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	attach := func(path, name string, ro bool) (string, error) {
		flag := os.O_RDWR
		if ro {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			return "", err
		}
		defer f.Close()
		loop, err := o.ops.AttachLoop(ctx, loopRequest{Backing: f, Name: name, ReadOnly: ro})
		if err != nil {
			return "", fmt.Errorf("attach %s: %w", filepath.Base(path), err)
		}
		undo = append(undo, func() { _ = o.ops.DetachLoop(context.WithoutCancel(ctx), loop) })
		return loop, nil
	}
	base, err := attach(img.RootfsPath, disk.NamePrefix+vm.ID+"-base", true)
	if err != nil {
		return "", err
	}
	cow, err := attach(cowPath(stateDir), disk.NamePrefix+vm.ID+"-cow", false)
	if err != nil {
		return "", err
	}
	name := disk.NamePrefix + vm.ID
	dev, err = o.ops.CreateSnapshot(ctx, snapshotRequest{Name: name, Origin: base, COW: cow, SizeBytes: vm.DiskSizeBytes})
	if err != nil {
		return "", fmt.Errorf("create snapshot %s: %w", name, err)
	}
	undo = append(undo, func() { _ = o.ops.RemoveSnapshot(context.WithoutCancel(ctx), name) })
	if firstBoot {
		if err := disk.Resize(ctx, o.runner, dev, vm.DiskSizeBytes); err != nil {
			return "", fmt.Errorf("grow the file system on %s: %w", dev, err)
		}
	}
	return dev, nil
}

// detach removes the VM's snapshot and its loops; the COW file stays.
func (o *overlayDisks) detach(ctx context.Context, vmID string) error {
	errs := []error{o.ops.RemoveSnapshot(ctx, disk.NamePrefix+vmID)}
	loops, err := o.loops()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range loops {
		if l.Name == disk.NamePrefix+vmID+"-base" || l.Name == disk.NamePrefix+vmID+"-cow" {
			errs = append(errs, o.ops.DetachLoop(ctx, l.Device))
		}
	}
	return errors.Join(errs...)
}

// chooseDisks probes the host once at start: dm-snapshot when device-mapper
// and privileged operations are both there, else nil (reflink or sparse
// clones, which need no privilege).
func chooseDisks(layout paths.Layout, ops diskOps, runner system.Runner, log *slog.Logger) *overlayDisks {
	loops := disk.HostLoops()
	methods, missing := disk.Probe(disk.ProbeSpec{
		Dir:        layout.StateDir,
		Privileged: ops != nil,
		DM:         disk.HostDMSetup(runner),
		Loops:      loops,
	})
	log.Info("vm disks", "method", methods[0], "unavailable", missing)
	if methods[0] != disk.DMSnapshot {
		return nil
	}
	return &overlayDisks{ops: ops, log: log, runner: runner, loops: loops.List}
}

// cleanOrphans removes snapshots and loops left by VMs that are not running
// (a crash, a VM deleted while the daemon was down). Only banger-named
// devices are considered; others are never touched.
func (o *overlayDisks) cleanOrphans(ctx context.Context, running map[string]bool) {
	loops, err := o.loops()
	if err != nil {
		o.log.Warn("list loop devices", "err", err)
		return
	}
	seen := map[string]bool{}
	for _, l := range loops {
		id, ok := disk.OwnerID(l.Name)
		if !ok || running[id] || seen[id] {
			continue
		}
		seen[id] = true
		o.log.Info("removing leftover disk devices", "vm_id", id)
		if err := o.detach(ctx, id); err != nil {
			o.log.Warn("remove leftover disk devices", "vm_id", id, "err", err)
		}
	}
}
