package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// JailLauncher starts Firecracker under its jailer for the driver and
// removes jails. The jailer must start as root, so the driver never runs it
// itself: the daemon's wiring gives it the root helper (or, in a daemon
// that is root, the same code in-process), which stages the VM's files
// into a fresh jail from descriptors the driver opened, with the checks of
// the privilege boundary (docs/privileges.md).
type JailLauncher interface {
	LaunchJailer(ctx context.Context, req JailLaunch) (Jail, error)
	RemoveJail(ctx context.Context, vmID string) error
}

// JailLaunch is what the launcher needs to start one VM's jailed
// Firecracker: the VM's files, already open in the modes the guest uses.
type JailLaunch struct {
	// VMID names the jail and the Firecracker instance (--id).
	VMID string
	// Console receives the jailer's and Firecracker's output: the guest's
	// serial log, open for appending.
	Console *os.File
	Kernel  *os.File
	// Initrd is optional.
	Initrd *os.File
	// Drives come root drive first; each is staged as "drive-<ID>".
	Drives []JailDrive
	// VMMLog asks for an empty Firecracker log, the owner's, in the jail.
	VMMLog bool
}

// JailDrive is one disk of a jailed VM, open read-write unless ReadOnly.
type JailDrive struct {
	ID       string
	ReadOnly bool
	File     *os.File
}

// Jail is a started jailed Firecracker: its pid and where its staged files
// are, as host paths inside the jail root.
type Jail struct {
	PID    int
	Root   string
	Kernel string
	Initrd string
	// Drives maps drive IDs to their staged paths.
	Drives map[string]string
	VMMLog string
}

// JailerConfig runs Firecracker under Firecracker's jailer (chroot, mount
// namespace, the owner's uid).
type JailerConfig struct {
	Launcher JailLauncher
	// ChrootBaseDir is the jail base (paths.Layout.JailDir); Attach finds a
	// surviving VM's API socket beneath it.
	ChrootBaseDir string
	// APISocket is the --api-sock the launcher gives the jailed
	// Firecracker, a path inside the jail ("/api.socket").
	APISocket string
}

// removeJailTimeout bounds the cleanup call made when a jailed VMM exits.
const removeJailTimeout = 30 * time.Second

// layout says where one VM's files are, as the host sees them and as
// Firecracker sees them (they differ under the jailer's chroot).
type layout struct {
	// apiSock is the API socket's host path; apiSockArg is --api-sock.
	apiSock    string
	apiSockArg string
	// jailRoot is the chroot directory, empty when not jailed.
	jailRoot string
}

func (d *Driver) layoutFor(spec vmm.LaunchSpec) (layout, error) {
	j := d.cfg.Jailer
	if j == nil {
		sock := filepath.Join(spec.RunDir, apiSocketName)
		return layout{apiSock: sock, apiSockArg: sock}, nil
	}
	bin, err := d.firecrackerBinary()
	if err != nil {
		return layout{}, err
	}
	// The jailer builds <base>/<exec file name>/<id>/root.
	return j.layout(filepath.Join(j.ChrootBaseDir, filepath.Base(bin), spec.VMID, "root")), nil
}

// layout is where the files of the jail rooted at root are.
func (j *JailerConfig) layout(root string) layout {
	return layout{
		apiSock:    filepath.Join(root, strings.TrimPrefix(j.APISocket, "/")),
		apiSockArg: j.APISocket,
		jailRoot:   root,
	}
}

// jailedVsock is where the jailed Firecracker creates the hybrid vsock
// socket: its jail root, the one directory it may write.
func jailedVsock(l layout) string { return filepath.Join(l.jailRoot, "vsock.sock") }

// inside translates a host path to the path Firecracker must be given. Under
// the jailer, Firecracker only sees its chroot, so every file it opens must
// have been staged into the jail first.
func (l layout) inside(hostPath string) (string, error) {
	if l.jailRoot == "" || hostPath == "" {
		return hostPath, nil
	}
	rel, err := filepath.Rel(l.jailRoot, hostPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s is outside the jail %s; stage it inside the jail first", hostPath, l.jailRoot)
	}
	return "/" + rel, nil
}

// firecrackerBinary resolves BinaryPath to an absolute path; the jail's
// directory is named after its file name.
func (d *Driver) firecrackerBinary() (string, error) {
	bin, err := exec.LookPath(d.cfg.BinaryPath)
	if err != nil {
		return "", fmt.Errorf("find firecracker binary %q: %w", d.cfg.BinaryPath, err)
	}
	return filepath.Abs(bin)
}

// launchJailed has the launcher stage spec's files into a jail and start
// the jailer, then adopts the process through a pidfd (it is the
// launcher's child, not ours) and boots the guest.
func (d *Driver) launchJailed(ctx context.Context, spec vmm.LaunchSpec) (*Instance, error) {
	j := d.cfg.Jailer
	want, err := d.layoutFor(spec)
	if err != nil {
		return nil, err
	}
	if err := vmmproc.CreateLog(spec.SerialLogPath); err != nil {
		return nil, err
	}
	req, closeAll, err := openForJail(spec)
	if err != nil {
		return nil, err
	}
	res, err := j.Launcher.LaunchJailer(ctx, req)
	closeAll()
	if err != nil {
		return nil, err
	}
	l := j.layout(res.Root)
	spec, err = stagedSpec(spec, res, l)
	if err == nil && res.Root != want.jailRoot {
		err = fmt.Errorf("the jail is %s but this daemon expects %s: firecracker.binary must name the same file for the daemon and the root helper (restart both after changing it)", res.Root, want.jailRoot)
	}
	if err != nil {
		d.removeJail(spec)
		return nil, err
	}
	inst, err := d.adoptJailed(spec, l, res.PID)
	if err != nil {
		d.removeJail(spec)
		return nil, fmt.Errorf("watch the jailed firecracker: %w%s", err, vmmproc.LogTail(spec.SerialLogPath))
	}
	return inst, nil
}

// openForJail opens every file the jailed VM needs, in the modes the guest
// will use them, and returns a closer for the lot.
func openForJail(spec vmm.LaunchSpec) (JailLaunch, func(), error) {
	var opened []*os.File
	closeAll := func() {
		for _, f := range opened {
			_ = f.Close()
		}
	}
	open := func(path string, flag int) (*os.File, error) {
		f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		opened = append(opened, f)
		return f, nil
	}
	req := JailLaunch{VMID: spec.VMID, VMMLog: spec.VMMLogPath != ""}
	var err error
	if req.Console, err = open(spec.SerialLogPath, os.O_WRONLY|os.O_APPEND); err != nil {
		closeAll()
		return req, nil, fmt.Errorf("open serial log: %w", err)
	}
	if req.Kernel, err = open(spec.KernelPath, os.O_RDONLY); err != nil {
		closeAll()
		return req, nil, fmt.Errorf("open kernel: %w", err)
	}
	if spec.InitrdPath != "" {
		if req.Initrd, err = open(spec.InitrdPath, os.O_RDONLY); err != nil {
			closeAll()
			return req, nil, fmt.Errorf("open initrd: %w", err)
		}
	}
	for _, dr := range drives(spec) {
		flag := os.O_RDWR
		if dr.ReadOnly {
			flag = os.O_RDONLY
		}
		f, err := open(dr.Path, flag)
		if err != nil {
			closeAll()
			return req, nil, fmt.Errorf("open drive %q: %w", dr.ID, err)
		}
		req.Drives = append(req.Drives, JailDrive{ID: dr.ID, ReadOnly: dr.ReadOnly, File: f})
	}
	return req, closeAll, nil
}

// drives is the root drive (with its default ID) followed by the others.
func drives(spec vmm.LaunchSpec) []vmm.Drive {
	root := spec.RootDrive
	if root.ID == "" {
		root.ID = defaultRootDriveID
	}
	return append([]vmm.Drive{root}, spec.ExtraDrives...)
}

// stagedSpec points spec's paths at the jail's copies.
func stagedSpec(spec vmm.LaunchSpec, res Jail, l layout) (vmm.LaunchSpec, error) {
	out := spec
	out.KernelPath, out.InitrdPath, out.VMMLogPath = res.Kernel, res.Initrd, res.VMMLog
	ds := drives(spec)
	for i, dr := range ds {
		p, ok := res.Drives[dr.ID]
		if !ok {
			return spec, fmt.Errorf("the jail has no drive %q", dr.ID)
		}
		ds[i].Path = p
	}
	out.RootDrive, out.ExtraDrives = ds[0], ds[1:]
	if spec.Agent.UDSPath != "" {
		out.Agent.UDSPath = jailedVsock(l)
	}
	return out, nil
}

// adoptJailed supervises pid, the jailer that becomes Firecracker, through
// a pidfd: it is the launcher's child, not ours.
func (d *Driver) adoptJailed(spec vmm.LaunchSpec, l layout, pid int) (*Instance, error) {
	p, err := vmmproc.Pin(pid)
	if err != nil {
		return nil, err
	}
	return d.newInstance(spec, l, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		// Until the jailer drops to the owner the owner cannot signal it,
		// so a kill that is refused goes through the launcher, which
		// started it.
		cfg.Kill = func() error {
			err := p.Kill()
			if errors.Is(err, unix.EPERM) {
				ctx, cancel := context.WithTimeout(context.Background(), removeJailTimeout)
				defer cancel()
				return d.cfg.Jailer.Launcher.RemoveJail(ctx, spec.VMID)
			}
			return err
		}
		return p.Supervise(cfg), nil
	})
}

// removeJail drops the VM's jail (and the hard links that would keep a
// deleted disk's blocks alive); failures are logged, not fatal.
func (d *Driver) removeJail(spec vmm.LaunchSpec) {
	ctx, cancel := context.WithTimeout(context.Background(), removeJailTimeout)
	defer cancel()
	if err := d.cfg.Jailer.Launcher.RemoveJail(ctx, spec.VMID); err != nil {
		d.cfg.Logger.Warn("remove jail", "vm", spec.Name, "err", err)
	}
}

// validInstanceID is vmm.ValidInstanceID, the rule the root helper also
// applies. Checking up front turns a cryptic early exit into a clear error.
func validInstanceID(id string) bool { return vmm.ValidInstanceID(id) == nil }
