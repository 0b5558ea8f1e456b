package privileged

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Local's side of jailer.launch and jail.remove: building jails, staging
// files, starting and stopping the jailer. The trust model is in jail.go.

// jailTable tracks the jailed VMMs this helper started, by VM id, so it can
// stop one whose launch the daemon abandons (a VMM still in the jailer's
// root phase cannot be signalled by the owner).
type jailTable struct {
	mu sync.Mutex
	m  map[string]JailProcess
}

func (t *jailTable) running(id string) JailProcess {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[id]
	if p == nil {
		return nil
	}
	select {
	case <-p.Done():
		delete(t.m, id)
		return nil
	default:
		return p
	}
}

func (t *jailTable) add(id string, p JailProcess) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]JailProcess{}
	}
	t.m[id] = p
	t.mu.Unlock()
	go func() {
		<-p.Done()
		t.mu.Lock()
		if t.m[id] == p {
			delete(t.m, id)
		}
		t.mu.Unlock()
	}()
}

func errNoJailer() error {
	return fmt.Errorf("%w: this root helper launches no jailer: set firecracker.jailer in banger's config (/etc/banger/config.toml) and restart banger-root-helper", ErrNotAvailable)
}

// launchJailer stages a VM's files into a fresh jail and starts
// Firecracker under the jailer, which drops to the owner. It returns once
// the jailer runs; the caller watches the pid (see jail.go).
func (l *Local) launchJailer(ctx context.Context, spec JailerLaunch, _ func(JailerLaunch) (JailedVMM, error)) (JailedVMM, error) {
	j := l.policy.Jailer
	if j == nil {
		return JailedVMM{}, errNoJailer()
	}
	var out JailedVMM
	err := l.locked(func() error {
		var err error
		out, err = l.launchIn(ctx, *j, spec)
		return err
	})
	return out, err
}

// launchIn launches spec under the jailer policy j.
func (l *Local) launchIn(ctx context.Context, j JailerPolicy, spec JailerLaunch) (JailedVMM, error) {
	for _, bin := range []string{j.Jailer, j.Firecracker} {
		if err := TrustedBinary(bin); err != nil {
			return JailedVMM{}, err
		}
	}
	if err := l.checkConsole(spec.Console); err != nil {
		return JailedVMM{}, err
	}
	if p := l.jails.running(spec.VMID); p != nil {
		return JailedVMM{}, fmt.Errorf("vm %s already has a jailed firecracker running (pid %d); stop it first", spec.VMID, p.PID())
	}
	jail, err := l.freshJail(ctx, j, spec.VMID)
	if err != nil {
		return JailedVMM{}, err
	}
	out, err := l.stageJail(ctx, jail, spec)
	if err != nil {
		return JailedVMM{}, l.undoJail(ctx, jail, err)
	}
	argv := []string{j.Jailer,
		"--id", spec.VMID,
		"--exec-file", j.Firecracker,
		"--uid", strconv.Itoa(l.policy.Owner.UID),
		"--gid", strconv.Itoa(l.policy.Owner.GID),
		"--chroot-base-dir", j.ChrootBase,
		"--", "--api-sock", JailedAPISocket,
	}
	p, err := l.backend.StartJailer(ctx, argv, spec.Console)
	if err != nil {
		return JailedVMM{}, l.undoJail(ctx, jail, fmt.Errorf("start jailer for vm %s: %w", spec.VMID, err))
	}
	l.jails.add(spec.VMID, p)
	out.PID = p.PID()
	return out, nil
}

// undoJail drops a jail whose launch failed with err, and says so if that
// fails too.
func (l *Local) undoJail(ctx context.Context, jail string, err error) error {
	if derr := l.dropJail(ctx, jail); derr != nil {
		return fmt.Errorf("%w (removing the jail also failed: %v)", err, derr)
	}
	return err
}

// jailsDir is <base>/<exec file name>, which holds one jail per VM id.
func jailsDir(j JailerPolicy) string {
	return filepath.Join(j.ChrootBase, filepath.Base(j.Firecracker))
}

// jailPath is <base>/<exec file name>/<id>, the jailer's layout.
func jailPath(j JailerPolicy, id string) string { return filepath.Join(jailsDir(j), id) }

// freshJail makes <base>/<exec name>/<id>/root anew, every level root-owned
// and 0755 (the owner's daemon must reach the API socket), replacing what an
// earlier run left, and returns <base>/<exec name>/<id>.
func (l *Local) freshJail(ctx context.Context, j JailerPolicy, id string) (string, error) {
	if err := trustedChain(filepath.Dir(j.ChrootBase)); err != nil {
		return "", fmt.Errorf("jail base %s: %w", j.ChrootBase, err)
	}
	for _, d := range []string{j.ChrootBase, filepath.Dir(jailPath(j, id))} {
		if err := trustedDir(d); err != nil {
			return "", err
		}
	}
	jail := jailPath(j, id)
	if err := l.clearJail(ctx, jail, id); err != nil {
		return "", err
	}
	for _, d := range []string{jail, filepath.Join(jail, "root")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("create jail: %w", err)
		}
		// The helper's umask is 0077; the owner's daemon must traverse.
		if err := os.Chmod(d, 0o755); err != nil {
			return "", fmt.Errorf("create jail: %w", err)
		}
	}
	return jail, nil
}

// clearJail removes what is left of a jail (its loop devices too), unless
// a Firecracker still answers in it: a survivor of a helper restart is not
// in the table, but its live API socket says the jail is in use.
func (l *Local) clearJail(ctx context.Context, jail, id string) error {
	if _, err := os.Lstat(jail); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if c, err := net.DialTimeout("unix", APISocketIn(filepath.Join(jail, "root")), 200*time.Millisecond); err == nil {
		_ = c.Close()
		return fmt.Errorf("the jail of vm %s is in use by a running firecracker; stop the VM first", id)
	}
	return l.dropJail(ctx, jail)
}

// stageJail puts the VM's files into the jail root.
func (l *Local) stageJail(ctx context.Context, jail string, spec JailerLaunch) (JailedVMM, error) {
	root := filepath.Join(jail, "root")
	var rootSt unix.Stat_t
	if err := unix.Stat(root, &rootSt); err != nil {
		return JailedVMM{}, err
	}
	out := JailedVMM{Root: root, APISocket: APISocketIn(root), Drives: map[string]string{}}
	var err error
	if out.Kernel, err = l.stage(ctx, spec.Kernel, root, "kernel", stageOpts{dev: rootSt.Dev}); err != nil {
		return out, fmt.Errorf("kernel: %w", err)
	}
	if spec.Initrd != nil {
		if out.Initrd, err = l.stage(ctx, spec.Initrd, root, "initrd", stageOpts{dev: rootSt.Dev}); err != nil {
			return out, fmt.Errorf("initrd: %w", err)
		}
	}
	// Drives live in a directory that stays root's after the jailer hands
	// the jail root to the owner, so the owner cannot remove or rename a
	// drive node and every one is found and revoked at the end (revoke.go).
	drivesDir := filepath.Join(root, jailDrivesDir)
	if err := os.Mkdir(drivesDir, 0o755); err != nil {
		return out, fmt.Errorf("create the drives directory: %w", err)
	}
	if err := os.Chmod(drivesDir, 0o755); err != nil { // the helper's umask is 0077
		return out, fmt.Errorf("create the drives directory: %w", err)
	}
	for i, d := range spec.Drives {
		o := stageOpts{dev: rootSt.Dev, writable: !d.ReadOnly, loopName: fmt.Sprintf("banger-%s-j%d", strings.ToLower(spec.VMID), i)}
		p, err := l.stage(ctx, d.File, drivesDir, d.ID, o)
		if err != nil {
			return out, fmt.Errorf("drive %s: %w", d.ID, err)
		}
		out.Drives[d.ID] = p
	}
	if spec.VMMLog {
		out.VMMLog = filepath.Join(root, "firecracker.log")
		f, err := l.createOwned(out.VMMLog, 0o600)
		if err != nil {
			return out, fmt.Errorf("create the VMM log: %w", err)
		}
		_ = f.Close()
	}
	return out, nil
}

// stageOpts says how one file is staged.
type stageOpts struct {
	// dev is the jail's device: a hard link is only tried on it.
	dev uint64
	// writable: the guest may write the file (a drive not read-only).
	writable bool
	// loopName names the loop device a drive falls back to; empty for the
	// kernel and initrd, which are copied instead.
	loopName string
}

// stage makes f visible in the jail root as name: an owner's regular file is
// hard-linked, or failing that looped (drives) or copied (kernel, initrd);
// a banger loop or device-mapper device gets its own node there.
func (l *Local) stage(ctx context.Context, f *os.File, root, name string, o stageOpts) (string, error) {
	if err := checkOpenFor(f, o.writable, "the descriptor"); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("stat: %w", err)
	}
	kind := st.Mode & unix.S_IFMT
	if kind != unix.S_IFREG && kind != unix.S_IFBLK {
		return "", invalid("the descriptor is %s, not a regular file or block device", fileKind(st.Mode))
	}
	if int(st.Uid) != l.policy.Owner.UID {
		return "", invalid("the file belongs to uid %d, not the owner (%d)", st.Uid, l.policy.Owner.UID)
	}
	dst := filepath.Join(root, name)
	if kind == unix.S_IFBLK {
		return dst, l.nodeInJail(dst, st.Rdev)
	}
	if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return "", invalid("the file is set-uid or set-gid")
	}
	src, err := l.checkInStateDir(f, "the file")
	if err != nil {
		return "", err
	}
	if st.Dev == o.dev && !l.noHardLinks {
		err := unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
		if err == nil {
			return dst, nil
		}
		if !errors.Is(err, unix.EXDEV) {
			return "", fmt.Errorf("link into the jail: %w", err)
		}
	}
	if o.loopName == "" {
		return dst, l.copyIntoJail(f, st.Size, dst)
	}
	loop, err := apply(ctx, l, OpAttachLoop, LoopAttach{Backing: f, Name: o.loopName, ReadOnly: !o.writable})
	if err != nil {
		return "", fmt.Errorf("attach a loop device for the jail: %w", err)
	}
	var dst2 unix.Stat_t
	if err := unix.Stat(loop.Device, &dst2); err != nil {
		_, _ = apply(ctx, l, OpDetachLoop, DeviceRef(loop))
		return "", err
	}
	if err := l.nodeInJail(dst, dst2.Rdev); err != nil {
		_, _ = apply(ctx, l, OpDetachLoop, DeviceRef(loop))
		return "", err
	}
	return dst, nil
}

// nodeInJail makes a block device node for a banger loop or device-mapper
// device at dst, usable by the owner only until it is revoked (revoke.go).
func (l *Local) nodeInJail(dst string, rdev uint64) error {
	major := unix.Major(rdev)
	if !l.diskMajor(major) {
		return invalid("block device %d:%d is not a loop or device-mapper device", major, unix.Minor(rdev))
	}
	if err := unix.Mknod(dst, unix.S_IFBLK|0o600, int(rdev)); err != nil {
		return fmt.Errorf("create the device node in the jail: %w", err)
	}
	if err := os.Lchown(dst, l.policy.Owner.UID, l.policy.Owner.GID); err != nil {
		return fmt.Errorf("hand the device node to the owner: %w", err)
	}
	return nil
}

// createOwned creates a new file at path in the jail (never through a
// symlink, never over an existing name) and hands it to the owner.
func (l *Local) createOwned(path string, mode uint32) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	if err := f.Chown(l.policy.Owner.UID, l.policy.Owner.GID); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// copyIntoJail copies size bytes of f (from offset 0, whatever its file
// offset) to a new file at dst, read-only and the owner's.
func (l *Local) copyIntoJail(f *os.File, size int64, dst string) error {
	out, err := l.createOwned(dst, 0o400)
	if err != nil {
		return fmt.Errorf("copy into the jail: %w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(f, 0, size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy into the jail: %w", err)
	}
	return nil
}

// dropJail revokes the jail's device nodes, then detaches the loop devices
// made for its drives and removes the jail. Revocation comes first and must
// succeed: a node that outlives its loop device would open whatever root
// attaches to that minor next. RemoveAll never follows the symlinks the
// owner may have made in the (owner-owned, once the jailer ran) jail root.
func (l *Local) dropJail(ctx context.Context, jail string) error {
	blocks, err := revokeJailNodes(jail, anyNode)
	if err != nil {
		return err
	}
	var firstErr error
	for _, rdev := range blocks {
		if unix.Major(rdev) != loopMajor {
			continue // device-mapper devices are the daemon's to remove
		}
		name, err := os.Readlink(filepath.Join(l.policy.SysDevBlock, fmt.Sprintf("%d:%d", loopMajor, unix.Minor(rdev))))
		if err != nil {
			continue // the loop is gone already
		}
		dev := "/dev/" + filepath.Base(name)
		// Only loops over banger's own files: a drive may be a loop device
		// the owner passed in, and it could be someone else's.
		if err := l.checkLoopInState(ctx, dev); err != nil {
			continue
		}
		if _, err := apply(ctx, l, OpDetachLoop, DeviceRef{Device: dev}); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := os.RemoveAll(jail); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("remove jail %s: %w", jail, err)
	}
	return firstErr
}

// checkConsole accepts the owner's regular file (the serial log), open for
// writing.
func (l *Local) checkConsole(f *os.File) error {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("inspect console descriptor: %w", err)
	}
	if flags&unix.O_PATH != 0 || flags&unix.O_ACCMODE == unix.O_RDONLY {
		return invalid("the console descriptor must be open for writing")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat console: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != l.policy.Owner.UID {
		return invalid("the console must be the owner's regular file (the VM's serial log), not %s of uid %d", fileKind(st.Mode), st.Uid)
	}
	return nil
}

// removeJail stops the VM's jailed Firecracker if it still runs and
// removes its jail; a missing jail is not an error.
func (l *Local) removeJail(ctx context.Context, ref VMRef, _ func(VMRef) (None, error)) (None, error) {
	vmID := ref.VMID
	j := l.policy.Jailer
	if j == nil {
		return None{}, errNoJailer()
	}
	if p := l.jails.running(vmID); p != nil {
		if err := p.Kill(); err != nil {
			return None{}, fmt.Errorf("stop the jailed firecracker of vm %s (pid %d): %w", vmID, p.PID(), err)
		}
		select {
		case <-p.Done():
		case <-ctx.Done():
			return None{}, fmt.Errorf("stop the jailed firecracker of vm %s (pid %d): %w", vmID, p.PID(), ctx.Err())
		}
	}
	return nothing(l.locked(func() error {
		if _, err := os.Lstat(jailPath(*j, vmID)); errors.Is(err, os.ErrNotExist) {
			return nil // no jail, or none was ever made
		}
		// Nothing on the way to the jail may be the owner's to swap.
		if err := trustedChain(filepath.Dir(jailPath(*j, vmID))); err != nil {
			return fmt.Errorf("jail base %s: %w", j.ChrootBase, err)
		}
		return l.clearJail(ctx, jailPath(*j, vmID), vmID)
	}))
}
