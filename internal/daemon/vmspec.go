package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// guestCID is the VM's vsock context ID. Firecracker's hybrid vsock is
// per-VM, but vhost-vsock (QEMU) CIDs are host-wide, so each VM gets its own,
// derived from its ID so it is stable across restarts. 0-2 are reserved.
func guestCID(vmID string) uint32 {
	h := sha256.Sum256([]byte("cid:" + vmID))
	return 3 + binary.BigEndian.Uint32(h[:4])%(1<<31)
}

// launchSpec is the one place that turns a VM record into what a driver
// boots; layout places the VM's files.
func launchSpec(layout paths.Layout, vm store.VM, img store.Image) vmm.LaunchSpec {
	runDir := layout.VMRunDir(vm.ID)
	return vmm.LaunchSpec{
		VMID:       vm.ID,
		Name:       vm.Name,
		KernelPath: img.KernelPath,
		InitrdPath: img.InitrdPath,
		BootArgs:   bootArgs(vm),
		RootDrive:  vmm.Drive{ID: "rootfs", Path: vmDiskPath(layout, vm.ID)},
		VCPUs:      vm.VCPUs,
		MemoryMiB:  vm.MemoryMiB,
		Agent: vmm.AgentChannel{
			GuestCID: guestCID(vm.ID),
			UDSPath:  filepath.Join(runDir, "vsock.sock"),
			Port:     agentPort,
		},
		RunDir:        runDir,
		SerialLogPath: serialLogPath(layout, vm.ID),
		VMMLogPath:    filepath.Join(layout.VMStateDir(vm.ID), "vmm.log"),
	}
}

// bootArgs is the guest kernel command line. banger.* parameters are read
// by the guest agent, so one image works for every VM and every VMM. The
// root device is named for kernels booted without an initrd (the microVM
// kernel); banger's initrd reads the same parameters.
func bootArgs(vm store.VM) string {
	guest := agent.BootParams{Hostname: vm.Name, AgentPort: agentPort}
	return strings.Join(append([]string{"console=ttyS0", "reboot=k", "panic=1", "pci=off",
		"root=/dev/vda", "rootfstype=ext4", "rw"}, guest.Args()...), " ")
}

// CheckFits refuses a VM disk larger than the free space where VM disks
// live. Disks are sparse, so this is a promise, not an allocation; but a
// guest that fills a disk larger than the free space fills the host's file
// system, and growing the disk's ext4 writes metadata in proportion to its
// size (a 1 TiB grow fails on a host with a few GiB free, deep inside
// resize2fs). Refusing up front says what fits instead.
func (f lcFiles) CheckFits(size int64) error {
	return diskFits(size, f.layout.VMsStateDir(), disk.FreeBytes)
}

// diskFits is CheckFits with the free-space probe passed in (tests).
// dir need not exist yet: its nearest existing parent is measured.
func diskFits(size int64, dir string, freeBytes func(string) (int64, error)) error {
	dir, free, err := freeAt(dir, freeBytes)
	if err != nil {
		return fmt.Errorf("check room for the VM disk: %w", err)
	}
	if size <= free {
		return nil
	}
	room := "free space there, or choose a smaller --disk"
	if fit := free &^ (1<<30 - 1); fit >= 1<<30 {
		room = fmt.Sprintf("choose --disk %dG or smaller, or free space there", fit>>30)
	} else if fit := free &^ (1<<20 - 1); fit >= 64<<20 {
		room = fmt.Sprintf("choose --disk %dM or smaller, or free space there", fit>>20)
	}
	return api.Errorf(api.CodeFailedPrecondition, "a %s disk does not fit: %s has %s free; %s",
		config.FormatBytes(size), dir, config.FormatBytes(max(free, 0)), room)
}

// freeAt measures the free space where dir is or will be: dir need not
// exist yet, its nearest existing parent is measured (and returned).
func freeAt(dir string, freeBytes func(string) (int64, error)) (string, int64, error) {
	for {
		if _, err := os.Stat(dir); err == nil || filepath.Dir(dir) == dir {
			break
		}
		dir = filepath.Dir(dir)
	}
	free, err := freeBytes(dir)
	return dir, free, err
}

// vmDiskPath is VM id's root disk file when disks are clones.
func vmDiskPath(layout paths.Layout, id string) string {
	return filepath.Join(layout.VMStateDir(id), "rootfs.ext4")
}

// Prepare gives the VM its own root disk: an empty COW file when disks
// are dm snapshots, else a clone of the image grown to the VM's size.
func (f lcFiles) Prepare(ctx context.Context, lvm lifecycle.VM, limg lifecycle.Image) error {
	vm, img := toStoreVM(lvm), toStoreImage(limg)
	dir := f.layout.VMStateDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create vm dir: %w", err)
	}
	if f.overlays != nil {
		return f.overlays.prepare(vm, dir)
	}
	// The clone grows to the VM's disk size, file system included.
	method, err := disk.CloneResized(ctx, f.runner, img.RootfsPath, vmDiskPath(f.layout, vm.ID), vm.DiskSizeBytes)
	if err != nil {
		return fmt.Errorf("clone image %q: %w", img.Name, err)
	}
	f.log.Debug("disk cloned", "vm", vm.Name, "method", method)
	return nil
}
