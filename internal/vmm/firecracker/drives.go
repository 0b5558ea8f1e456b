package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/banger-dev/banger/internal/vmm"
)

// Drive paths and snapshots. Firecracker records each block device's
// path_on_host in a snapshot and re-opens exactly that path when the
// snapshot is loaded; the load has no drive override, and PATCH
// /drives/{id} is too late (the load itself fails on a missing path) and,
// worse, could open the snapshot's own VM's disk if that still exists. So
// banger never gives Firecracker a path that names one VM's disk:
//
//   - unjailed, each drive is a link in the VM's run dir, "drive-<id>" ->
//     the disk, and Firecracker runs with the run dir as its working
//     directory and is given the relative name. A snapshot records
//     "drive-rootfs"; a restore (rollback, fork, warm create) runs in the
//     new VM's run dir, whose link points at the new VM's disk.
//   - jailed, the launcher stages each drive at a fixed name inside the
//     jail ("drives/drive-<id>"), which is what Firecracker records; a
//     restore's jail stages the new disk at the same name.
//
// The kernel and initrd are not re-opened by a restore; the vsock socket
// and taps are overridden by the load (vsock_override, network_overrides).

// driveLink is the name of a drive's link in the run dir, and what an
// unjailed Firecracker is told to open.
func driveLink(id string) string { return "drive-" + id }

// drivePath is path_on_host for dr: its staged path in the jail, else its
// run-dir link, relative to Firecracker's working directory.
func drivePath(l layout, tr *jailPaths, dr vmm.Drive) string {
	if l.jailRoot != "" {
		return tr.path(dr.Path)
	}
	return driveLink(dr.ID)
}

// linkDrives makes (or replaces) the run-dir link of every drive of spec,
// pointing at the drive's absolute path.
func linkDrives(spec vmm.LaunchSpec) error {
	for _, dr := range drives(spec) {
		target, err := filepath.Abs(dr.Path)
		if err != nil {
			return fmt.Errorf("link drive %q: %w", dr.ID, err)
		}
		link := filepath.Join(spec.RunDir, driveLink(dr.ID))
		if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("link drive %q: %w", dr.ID, err)
		}
		if err := os.Symlink(target, link); err != nil {
			return fmt.Errorf("link drive %q: %w", dr.ID, err)
		}
	}
	return nil
}

// validDeviceID is Firecracker's rule for drive and interface ids
// (checked_id: letters, digits and underscores); a drive id also names its
// link in the run dir, so it must be checked before it is used.
func validDeviceID(id string) bool {
	if id == "" {
		return false
	}
	for _, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && r != '_' {
			return false
		}
	}
	return true
}
