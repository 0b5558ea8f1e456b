package privileged

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Revoking a jail's device nodes.
//
// While a jailed VM runs, the drive nodes the helper makes in its jail and
// the nodes the jailer makes there (/dev/kvm, /dev/net/tun) belong to the
// owner: Firecracker runs as the owner and opens them by path, so some node
// the owner can open must exist. The owner can hard-link such a node
// anywhere on the jail's file system (its own state dir is on it), and a
// block node names a device number, not a disk: once the loop or
// device-mapper device is released, whatever root attaches to the same minor
// later would open through the kept link. So before a device is released,
// every node for it is revoked: chowned to root, then given mode 0. That
// changes the inode, so every hard link to it is covered, and a descriptor
// opened earlier keeps the device bound (the kernel defers a loop detach
// until its last close, and refuses to remove a device-mapper device in
// use), so it never sees another disk either.
//
// Nodes are looked for only in directories that are root's and writable by
// root alone (the jail's drives directory, the jailer's /dev): the owner can
// add, remove or rename nothing there, so every node root made is found,
// and no node the owner put in the jail is ever touched. A root-owned
// directory cannot be moved under another parent by the owner either (that
// needs write access to the directory itself), so the walk stays shallow.

// jailDrivesDir is the root-owned directory in a jail root that holds its
// drives.
const jailDrivesDir = "drives"

// maxRevokeDepth bounds the walk below a jail root; the jailer's deepest
// node is /dev/net/tun.
const maxRevokeDepth = 4

// nodeFilter picks the device nodes to revoke.
type nodeFilter func(st *unix.Stat_t) bool

// anyNode picks every device node.
func anyNode(*unix.Stat_t) bool { return true }

// blockNode picks the block nodes of device rdev.
func blockNode(rdev uint64) nodeFilter {
	return func(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == rdev }
}

// revokeJailNodes revokes the device nodes in jail (<base>/<exec>/<id>)
// that match pick, and returns the device numbers of the block nodes among
// them. A jail without a root directory has none.
func revokeJailNodes(jail string, pick nodeFilter) ([]uint64, error) {
	fd, err := unix.Open(filepath.Join(jail, "root"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open jail root %s: %w", jail, err)
	}
	var blocks []uint64
	if err := revokeIn(fd, filepath.Join(jail, "root"), 0, pick, &blocks); err != nil {
		return blocks, fmt.Errorf("revoke the device nodes of jail %s: %w", jail, err)
	}
	return blocks, nil
}

// revokeIn walks the directory open as dirfd (and closes it): it revokes
// matching nodes if the directory is root's alone, and descends only into
// subdirectories that are.
func revokeIn(dirfd int, name string, depth int, pick nodeFilter, blocks *[]uint64) error {
	dir := os.NewFile(uintptr(dirfd), name)
	defer func() { _ = dir.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	trusted := rootsAlone(&st)
	entries, err := dir.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range entries {
		var est unix.Stat_t
		if err := unix.Fstatat(dirfd, e.Name(), &est, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed meanwhile (possible only in an owner's directory)
			}
			return err
		}
		switch est.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if depth+1 >= maxRevokeDepth || !rootsAlone(&est) {
				continue
			}
			sub, err := unix.Openat(dirfd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if err := revokeIn(sub, filepath.Join(name, e.Name()), depth+1, pick, blocks); err != nil {
				return err
			}
		case unix.S_IFBLK, unix.S_IFCHR:
			if !trusted || !pick(&est) {
				continue
			}
			if err := revokeNode(dirfd, e.Name()); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(name, e.Name()), err)
			}
			if est.Mode&unix.S_IFMT == unix.S_IFBLK {
				*blocks = append(*blocks, est.Rdev)
			}
		}
	}
	return nil
}

// rootsAlone: owned by root and writable by root only.
func rootsAlone(st *unix.Stat_t) bool { return st.Uid == 0 && st.Mode&0o022 == 0 }

// revokeNode makes the node name in dirfd (a directory root's alone, so the
// name cannot be swapped) root's with mode 0. Owner first: until then the
// owner could change the mode back.
func revokeNode(dirfd int, name string) error {
	if err := unix.Fchownat(dirfd, name, 0, 0, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown to root: %w", err)
	}
	if err := unix.Fchmodat(dirfd, name, 0, 0); err != nil {
		return fmt.Errorf("chmod 0: %w", err)
	}
	return nil
}

// revokeDeviceInJails revokes every jail's nodes for block device rdev; a
// helper without a jailer has no jails.
func (l *Local) revokeDeviceInJails(rdev uint64) error {
	j := l.policy.Jailer
	if j == nil {
		return nil
	}
	base := jailsDir(*j)
	if err := trustedChain(base); errors.Is(err, os.ErrNotExist) {
		return nil // no jail was ever made
	} else if err != nil {
		return fmt.Errorf("jail base %s: %w", j.ChrootBase, err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("list jails: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || ValidJailID(e.Name()) != nil {
			continue
		}
		if _, err := revokeJailNodes(filepath.Join(base, e.Name()), blockNode(rdev)); err != nil {
			return err
		}
	}
	return nil
}

// revokeDevice revokes the jails' nodes for the block device at path
// (followed if a symlink, as /dev/mapper names are); a missing device has
// nothing left to revoke.
func (l *Local) revokeDevice(path string) error {
	var st unix.Stat_t
	err := unix.Stat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s is %s, not a block device", path, fileKind(st.Mode))
	}
	if err := l.revokeDeviceInJails(st.Rdev); err != nil {
		return fmt.Errorf("before releasing %s: %w", path, err)
	}
	return nil
}
