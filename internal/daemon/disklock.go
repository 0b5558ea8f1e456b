package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// diskLockByte is the one byte of a VM's disk file that banger's lock
// covers. QEMU locks bytes 100-299 of the images it opens (its own image
// locking); a whole-file lock would make QEMU refuse the disk, one far-off
// byte does not. A lock may lie past the end of the file.
const diskLockByte = 0x62616e67 // "bang"

// errDiskInUse means another process holds the lock on a VM's disk.
var errDiskInUse = errors.New("disk is in use")

// lockedDiskPath is the file whose lock stands for the VM's disk: the COW
// file when disks are overlays, else the cloned root file system.
func (f lcFiles) lockedDiskPath(id string) string {
	if f.overlays != nil {
		return cowPath(f.layout.VMStateDir(id))
	}
	return vmDiskPath(f.layout, id)
}

// lockDisk takes an open-file-description (OFD) write lock on the disk file
// at path. An OFD lock belongs to the open file, not to a process: handed
// to the VMM as an inherited descriptor, it lasts exactly as long as the
// VMM, across daemon restarts, and a second lock on the same disk fails
// while it lives. The caller closes its own copy once the VMM has inherited
// it.
func lockDisk(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk %s to lock it: %w", path, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: diskLockByte, Len: 1}
	err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if err == nil {
		return f, nil
	}
	_ = f.Close()
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return nil, fmt.Errorf("%w: %s is locked by %s", errDiskInUse, path, holdersOf(path))
	}
	return nil, fmt.Errorf("lock disk %s: %w", path, err)
}

// holdersOf names the processes that have path open, as "pid N (comm)".
// An OFD lock records no owner, so the open descriptors are the best
// witness.
func holdersOf(path string) string {
	procs, _ := os.ReadDir("/proc")
	var found []string
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if target, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && target == path {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				found = append(found, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	if len(found) == 0 {
		return "a process this daemon cannot see"
	}
	return strings.Join(found, ", ")
}
