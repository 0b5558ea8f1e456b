package privileged

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
)

// Launching Firecracker under its jailer. The jailer must start as root: it
// builds a chroot, makes device nodes in it, and drops to the owner before
// exec-ing Firecracker. The helper does it for an unprivileged daemon, and
// everything root touches stays out of the owner's reach:
//
//   - The binaries are the helper's own configuration, never the caller's,
//     and must be root's and writable by nobody else, down the whole path.
//   - The jail tree (<base>/<exec name>/<vm id>/root) is created fresh by the
//     helper, root-owned, under a root-owned base, so no component the
//     jailer resolves as root can be swapped for a symlink by the owner. The
//     jailer hands the jail root to the owner only after pivot_root.
//   - The VM's files arrive as descriptors the owner opened, are checked to
//     be the owner's own regular files in banger's state dir (or banger's
//     loop and device-mapper devices); the helper never opens the owner's
//     files by path. A file is hard-linked into the jail through
//     /proc/self/fd when it can be: one inode, so what the guest writes is
//     what banger keeps. Across mount namespaces (a systemd-sandboxed daemon
//     and helper each have their own) the kernel refuses links with EXDEV;
//     then a drive is attached to a loop device whose node is made in the
//     jail (still the same file underneath), and the kernel and initrd are
//     copied (read-only, and small).
//   - Drives are staged in <root>/drives, which stays root's after the
//     jailer hands the jail root over, so the owner can neither remove nor
//     rename a drive node. Device nodes are the owner's while the VM runs
//     (Firecracker opens them by path as the owner) and could be hard-linked
//     out of the jail, so they are revoked (root's, mode 0: every link to
//     the inode) before their loop or device-mapper device is released; see
//     revoke.go.

// JailerLaunch asks for one VM's Firecracker to be started under the jailer.
type JailerLaunch struct {
	// VMID names the jail and the Firecracker instance (--id).
	VMID string
	// Console receives the jailer's and Firecracker's stdout and stderr: the
	// guest's serial console. It must be open for writing.
	Console *os.File
	Kernel  *os.File
	// Initrd is optional.
	Initrd *os.File
	// Drives are staged as "drive-<ID>"; the root drive comes first.
	Drives []JailDrive
	// VMMLog asks for an empty firecracker.log, owned by the owner, in the
	// jail (Firecracker opens its log but does not create it).
	VMMLog bool
}

// JailDrive is one disk for the jailed VM. A writable drive's descriptor must
// be open read-write, so the owner proves it may write what the VM will.
type JailDrive struct {
	ID       string
	ReadOnly bool
	File     *os.File
}

// JailedVMM describes a started jailed Firecracker. Paths are host paths
// inside the jail root; Firecracker sees them relative to Root.
type JailedVMM struct {
	PID int `json:"pid"`
	// Root is the jail's root directory.
	Root string `json:"root"`
	// APISocket is where Firecracker creates its API socket (--api-sock
	// /api.socket inside the jail).
	APISocket string            `json:"api_socket"`
	Kernel    string            `json:"kernel"`
	Initrd    string            `json:"initrd,omitempty"`
	Drives    map[string]string `json:"drives"`
	VMMLog    string            `json:"vmm_log,omitempty"`
}

// JailerPolicy enables jailer.launch. Its paths come from the helper's own
// configuration (root's config file), never from a request.
type JailerPolicy struct {
	// Jailer and Firecracker are absolute paths of the binaries.
	Jailer      string
	Firecracker string
	// ChrootBase is the jailer's --chroot-base-dir (paths.Layout.JailDir).
	ChrootBase string
}

// JailedAPISocket is --api-sock as the jailed Firecracker sees it.
const JailedAPISocket = "/api.socket"

// APISocketIn is the host path of the API socket in the jail rooted at root.
func APISocketIn(root string) string {
	return filepath.Join(root, strings.TrimPrefix(JailedAPISocket, "/"))
}

// maxJailDrives bounds a launch's drives (and so its descriptors).
const maxJailDrives = 4

// JailProcess is a jailer (then Firecracker) process the backend started.
type JailProcess interface {
	PID() int
	// Done is closed once the process has exited and been reaped.
	Done() <-chan struct{}
	// Kill sends SIGKILL; it is a no-op once the process is gone.
	Kill() error
}

// ValidJailID is the VMM's instance id rule (vmm.ValidInstanceID): the id
// becomes an argument of the jailer and a directory of the jail base.
func ValidJailID(id string) error { return asArg(vmm.ValidInstanceID(id)) }

// validDriveID: drive ids name files in the jail ("drive-<id>") and
// Firecracker's drive_id.
func validDriveID(id string) error { return asArg(vmm.ValidDriveID(id)) }

// Validate checks the request's shape; what the descriptors are is checked
// when they are staged.
func (s JailerLaunch) Validate() error {
	if err := ValidJailID(s.VMID); err != nil {
		return err
	}
	if s.Console == nil || s.Kernel == nil {
		return invalid("a jailed launch needs the console and kernel descriptors")
	}
	if len(s.Drives) == 0 || len(s.Drives) > maxJailDrives {
		return invalid("a jailed launch takes 1 to %d drives, got %d", maxJailDrives, len(s.Drives))
	}
	seen := map[string]bool{}
	for _, d := range s.Drives {
		if err := validDriveID(d.ID); err != nil {
			return err
		}
		if seen[d.ID] {
			return invalid("drive id %q appears twice", d.ID)
		}
		seen[d.ID] = true
		if d.File == nil {
			return invalid("drive %q has no descriptor", d.ID)
		}
	}
	return nil
}

// jailerArgs is jailer.launch on the wire. The protocol carries only flat
// arguments, so the drive list is "id:rw,id:ro" (root drive first); the
// descriptors follow in order: console, kernel, initrd (if any), drives.
type jailerArgs struct {
	VMID   string `json:"vm_id"`
	Drives string `json:"drives"`
	Initrd bool   `json:"initrd"`
	VMMLog bool   `json:"vmm_log"`
}

func (s JailerLaunch) wire() (jailerArgs, []*os.File) {
	files := []*os.File{s.Console, s.Kernel}
	if s.Initrd != nil {
		files = append(files, s.Initrd)
	}
	drives := make([]string, len(s.Drives))
	for i, d := range s.Drives {
		mode := "rw"
		if d.ReadOnly {
			mode = "ro"
		}
		drives[i] = d.ID + ":" + mode
		files = append(files, d.File)
	}
	return jailerArgs{VMID: s.VMID, Drives: strings.Join(drives, ","), Initrd: s.Initrd != nil, VMMLog: s.VMMLog}, files
}

// driveList parses Drives; the count bounds the descriptors a request may
// carry, so it is checked before any are used.
func (a jailerArgs) driveList() ([]JailDrive, error) {
	items := strings.Split(a.Drives, ",")
	if a.Drives == "" || len(items) > maxJailDrives {
		return nil, malformed("drives must list 1 to %d drives as id:rw or id:ro", maxJailDrives)
	}
	out := make([]JailDrive, len(items))
	for i, it := range items {
		id, mode, ok := strings.Cut(it, ":")
		if !ok || (mode != "rw" && mode != "ro") {
			return nil, malformed("drive %q must be written id:rw or id:ro", it)
		}
		out[i] = JailDrive{ID: id, ReadOnly: mode == "ro"}
	}
	return out, nil
}

// fileCount is how many descriptors the request must arrive with; -1 when
// the drive list is malformed.
func (a jailerArgs) fileCount() int {
	d, err := a.driveList()
	if err != nil {
		return -1
	}
	n := 2 + len(d)
	if a.Initrd {
		n++
	}
	return n
}

// launch rebuilds the request from the wire arguments and the descriptors
// (whose count the server has checked against fileCount).
func (a jailerArgs) launch(files []*os.File) (JailerLaunch, error) {
	drives, err := a.driveList()
	if err != nil {
		return JailerLaunch{}, err
	}
	if len(files) != a.fileCount() {
		return JailerLaunch{}, malformed("jailer.launch takes %d descriptors, got %d", a.fileCount(), len(files))
	}
	s := JailerLaunch{VMID: a.VMID, Console: files[0], Kernel: files[1], VMMLog: a.VMMLog}
	files = files[2:]
	if a.Initrd {
		s.Initrd, files = files[0], files[1:]
	}
	for i := range drives {
		drives[i].File = files[i]
	}
	s.Drives = drives
	return s, nil
}
