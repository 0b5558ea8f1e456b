package privileged

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
)

// Backend is where the operations Local lets through take effect:
// SystemBackend on the host, a recording fake in tests. Each operation's
// effect is declared with it in the menu (Op.effect); Backend adds only
// what Local's policy asks of the machine before it acts. Local never calls
// it with an argument the policy refused.
type Backend interface {
	// apply performs op's effect for req, acting for at.
	apply(ctx context.Context, op entry, at serving, req any) (any, error)
	// CheckBridge refuses a bridge another instance than owner marked
	// (network.Owner); a missing bridge passes.
	CheckBridge(ctx context.Context, name string, owner network.Owner) error
	// LoopBackingFile returns the path of the file behind device, "" when
	// the device is not attached.
	LoopBackingFile(ctx context.Context, device string) (string, error)
	// StartJailer runs argv (argv[0] the jailer) in its own session with
	// stdout and stderr on console and returns once it runs. The process
	// must not depend on ctx: a VM outlives the request that started it.
	StartJailer(ctx context.Context, argv []string, console *os.File) (JailProcess, error)
}

// serving is whom an effect acts for, from Local's policy and never from
// the caller: the owner taps and devices are handed to, and the instance
// bridges and taps are marked with.
type serving struct {
	owner    Owner
	instance network.Owner
}

// Policy is what Local enforces beyond each request's shape.
type Policy struct {
	// Owner is the only uid/gid taps and files are handed to, and the owner
	// loop backing files must have.
	Owner Owner
	// StateDir holds the only files loop devices may be backed by.
	StateDir string
	// RuntimeDir holds the only sockets and devices Chown/Chmod may touch.
	RuntimeDir string
	// Protected are paths beneath RuntimeDir that are never targets, such as
	// the helper's own socket.
	Protected []string
	// DeviceMapperMajor is device-mapper's block major (from /proc/devices);
	// 0 when the kernel has no device-mapper.
	DeviceMapperMajor uint32
	// Jailer, when set, enables jailer.launch and jail.remove.
	Jailer *JailerPolicy
	// SysDevBlock is /sys/dev/block, where jail.remove finds which loop
	// device a jail's drive node names.
	SysDevBlock string
	// DevDir is /dev, where loop.detach and snapshot.remove find the device
	// number whose jail nodes they revoke first.
	DevDir string
	// ProcSelfFD is /proc/self/fd, where Local reads which file a descriptor
	// names; tests never need to change it, but it keeps /proc out of the
	// logic.
	ProcSelfFD string
}

// Local performs the menu's operations in this process after validating
// them against its Policy. It is what a root daemon uses directly and what the helper serves.
type Local struct {
	policy  Policy
	backend Backend
	resolve resolver
	// mu serializes operations so check-then-act sequences in the backends
	// (ensure bridge, ensure NAT, find a free loop device) never interleave.
	mu sync.Mutex
	// jails are the jailed VMMs this Local started.
	jails jailTable
	// noHardLinks makes staging take the loop/copy path, as it must across
	// mount namespaces; tests use it to cover that path on one namespace.
	noHardLinks bool
}

var _ Ops = (*Local)(nil)

// NewLocal returns Local enforcing p on top of b.
func NewLocal(p Policy, b Backend) (*Local, error) {
	for _, d := range []struct{ name, path string }{{"state dir", p.StateDir}, {"runtime dir", p.RuntimeDir}} {
		if !filepath.IsAbs(d.path) || filepath.Clean(d.path) != d.path || d.path == "/" {
			return nil, fmt.Errorf("privileged policy: %s %q must be an absolute, clean directory other than /", d.name, d.path)
		}
	}
	if p.Owner.UID < 0 || p.Owner.GID < 0 {
		return nil, fmt.Errorf("privileged policy: owner uid %d / gid %d invalid", p.Owner.UID, p.Owner.GID)
	}
	if j := p.Jailer; j != nil {
		for _, d := range []struct{ name, path string }{{"jailer", j.Jailer}, {"firecracker binary", j.Firecracker}, {"jail base", j.ChrootBase}} {
			if !filepath.IsAbs(d.path) || filepath.Clean(d.path) != d.path || d.path == "/" {
				return nil, fmt.Errorf("privileged policy: %s %q must be an absolute, clean path", d.name, d.path)
			}
		}
		// The jailer's own rule; checking here names the cause.
		if !strings.Contains(filepath.Base(j.Firecracker), "firecracker") {
			return nil, fmt.Errorf("privileged policy: the jailer runs only binaries whose name contains \"firecracker\", not %q", j.Firecracker)
		}
	}
	if p.ProcSelfFD == "" {
		p.ProcSelfFD = "/proc/self/fd"
	}
	if p.DevDir == "" {
		p.DevDir = "/dev"
	}
	if p.SysDevBlock == "" {
		p.SysDevBlock = "/sys/dev/block"
	}
	return &Local{policy: p, backend: b}, nil
}

// instance is the banger instance this Local serves, as its bridge and
// taps are marked: the policy's state dir and owner, never anything a
// caller sends.
func (l *Local) instance() network.Owner {
	return network.Owner{UID: l.policy.Owner.UID, StateDir: l.policy.StateDir}
}

func (l *Local) serving() serving {
	return serving{owner: l.policy.Owner, instance: l.instance()}
}

// ownBridge runs op if bridge is not another instance's.
func (l *Local) ownBridge(ctx context.Context, bridge string, op func() error) error {
	return l.locked(func() error {
		if err := l.backend.CheckBridge(ctx, bridge, l.instance()); err != nil {
			return err
		}
		return op()
	})
}

// perform implements Ops: every request is checked against the menu's
// rules before the operation's own policy checks run.
func (l *Local) perform(ctx context.Context, op entry, req any) (any, error) {
	if err := op.validate(req); err != nil {
		return nil, err
	}
	return op.runLocal(ctx, l, req)
}

// createTap hands the tap only to the owner, on a bridge of this
// instance.
func (l *Local) createTap(ctx context.Context, spec TapSpec, effect func(TapSpec) (None, error)) (None, error) {
	if err := l.ownerIDs(spec.UID, spec.GID); err != nil {
		return None{}, err
	}
	return onOwnBridge(l, ctx, spec, effect)
}

// attachLoop: the backing file must be a regular file owned by the owner,
// singly linked, inside the state dir, and opened read-write unless
// ReadOnly: the descriptor is the caller's proof of access, so the loop
// device grants nothing the caller did not already have.
func (l *Local) attachLoop(_ context.Context, spec LoopAttach, effect func(LoopAttach) (DevicePath, error)) (DevicePath, error) {
	if err := l.checkBacking(spec.Backing, spec.ReadOnly); err != nil {
		return DevicePath{}, err
	}
	var dev DevicePath
	err := l.locked(func() (err error) {
		dev, err = effect(spec)
		return err
	})
	return dev, err
}

// detachLoop detaches a loop device of banger's, revoking its jail nodes
// first.
func (l *Local) detachLoop(ctx context.Context, ref DeviceRef, effect func(DeviceRef) (None, error)) (None, error) {
	return nothing(l.locked(func() error {
		if err := l.checkLoopInState(ctx, ref.Device); err != nil {
			return err
		}
		if err := l.revokeDevice(l.devPath(ref.Device)); err != nil {
			return err
		}
		_, err := effect(ref)
		return err
	}))
}

// createSnapshot builds a snapshot over two loop devices of banger's.
func (l *Local) createSnapshot(ctx context.Context, spec SnapshotSpec, effect func(SnapshotSpec) (DevicePath, error)) (DevicePath, error) {
	var dev DevicePath
	err := l.locked(func() (err error) {
		for _, d := range []string{spec.Origin, spec.COW} {
			if err := l.checkLoopInState(ctx, d); err != nil {
				return err
			}
		}
		dev, err = effect(spec)
		return err
	})
	return dev, err
}

// removeSnapshot removes a snapshot (and its extended origin), revoking
// their jail nodes first.
func (l *Local) removeSnapshot(_ context.Context, n Named, effect func(Named) (None, error)) (None, error) {
	return nothing(l.locked(func() error {
		for _, dm := range []string{n.Name, n.Name + "-origin"} {
			if err := l.revokeDevice(filepath.Join(l.policy.DevDir, "mapper", dm)); err != nil {
				return err
			}
		}
		_, err := effect(n)
		return err
	}))
}

// devPath maps a validated /dev/… device path into the policy's DevDir.
func (l *Local) devPath(device string) string {
	return filepath.Join(l.policy.DevDir, strings.TrimPrefix(device, "/dev/"))
}

// chown hands a socket or device beneath the runtime dir to the owner.
func (l *Local) chown(_ context.Context, spec ChownSpec, effect func(ChownSpec) (None, error)) (None, error) {
	if err := l.ownerIDs(spec.UID, spec.GID); err != nil {
		return None{}, err
	}
	return nothing(l.withTarget(spec.Path, func(f *os.File) error {
		spec.target = f
		_, err := effect(spec)
		return err
	}))
}

// chmod changes the mode of a socket or device beneath the runtime dir.
func (l *Local) chmod(_ context.Context, spec ChmodSpec, effect func(ChmodSpec) (None, error)) (None, error) {
	return nothing(l.withTarget(spec.Path, func(f *os.File) error {
		spec.target = f
		_, err := effect(spec)
		return err
	}))
}

func (l *Local) locked(f func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return f()
}

func (l *Local) ownerIDs(uid, gid int) error {
	if uid != l.policy.Owner.UID || gid != l.policy.Owner.GID {
		return invalid("uid %d / gid %d is not the owner's (%d/%d): banger hands things only to its owner",
			uid, gid, l.policy.Owner.UID, l.policy.Owner.GID)
	}
	return nil
}

// withTarget resolves path beneath the runtime dir, checks what it is, and
// runs f on the O_PATH descriptor.
func (l *Local) withTarget(path string, f func(*os.File) error) error {
	for _, p := range l.policy.Protected {
		if path == filepath.Clean(p) {
			return invalid("%s is banger's own control socket and cannot be changed", path)
		}
	}
	return l.locked(func() error {
		t, err := l.resolve.openBeneath(l.policy.RuntimeDir, path)
		if err != nil {
			return err
		}
		defer func() { _ = t.Close() }()
		if err := l.checkTarget(t); err != nil {
			return err
		}
		return f(t)
	})
}

// Char devices a VMM may need handed over: kvm, tun, vhost-vsock, vhost-net.
// Their device numbers never name anything else, so a kept link grants only
// what the owner's VMM already had.
func allowedCharDevice(major, minor uint32) bool {
	if major != 10 {
		return false
	}
	switch minor {
	case 232, 200, 241, 238:
		return true
	}
	return false
}

const loopMajor = 7

func (l *Local) checkTarget(t *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(t.Fd()), &st); err != nil {
		return fmt.Errorf("stat %s: %w", t.Name(), err)
	}
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
	case unix.S_IFCHR:
		if !allowedCharDevice(major, minor) {
			return invalid("%s is character device %d:%d, not one a VMM uses (kvm, tun, vhost)", t.Name(), major, minor)
		}
	case unix.S_IFBLK:
		// Nothing in banger hands a disk over by path: the VMM gets its
		// disks as jail nodes (revoked before the device is released) or as
		// /dev/mapper nodes (in /dev, which the owner cannot link from). A
		// block node under the runtime dir could only be a link the owner
		// kept, perhaps to a revoked node, which must never be handed back.
		return invalid("%s is block device %d:%d: disks are never handed over by path", t.Name(), major, minor)
	default:
		return invalid("%s is %s: only sockets and VM device nodes may be changed", t.Name(), fileKind(st.Mode))
	}
	// A second name could live outside the runtime dir; banger never makes
	// hard links, so refuse rather than reason about where the other is.
	if st.Nlink != 1 {
		return invalid("%s has %d links; only singly-linked files may be changed", t.Name(), st.Nlink)
	}
	return nil
}

// diskMajor reports whether a block major is one banger's VM disks use:
// loop, or device-mapper (when the kernel has it).
func (l *Local) diskMajor(major uint32) bool {
	return major == loopMajor || (l.policy.DeviceMapperMajor != 0 && major == l.policy.DeviceMapperMajor)
}

// checkOpenFor checks how a passed descriptor was opened: for reading (not
// O_PATH, not write-only), and read-write when writable, so the caller
// proves the access it asks the helper to extend. what names it in errors.
func checkOpenFor(f *os.File, writable bool, what string) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", what, err)
	}
	if flags&unix.O_PATH != 0 {
		return invalid("%s was opened with O_PATH; open it for reading (and writing)", what)
	}
	switch flags & unix.O_ACCMODE {
	case unix.O_RDWR:
	case unix.O_RDONLY:
		if writable {
			return invalid("%s is open read-only but must be writable; open it read-write", what)
		}
	default:
		return invalid("%s is open write-only", what)
	}
	return nil
}

// checkInStateDir checks that a passed descriptor names a file, not
// deleted, inside banger's state dir (by /proc/self/fd, so the answer is
// about the open file, not a path that could be swapped), and returns
// that /proc/self/fd path for acting on the file itself.
func (l *Local) checkInStateDir(f *os.File, what string) (string, error) {
	src := filepath.Join(l.policy.ProcSelfFD, strconv.Itoa(int(f.Fd())))
	name, err := os.Readlink(src)
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", what, err)
	}
	if strings.HasSuffix(name, " (deleted)") {
		return "", invalid("%s %s has been deleted", what, name)
	}
	if _, err := relBeneath(l.policy.StateDir, name); err != nil {
		return "", invalid("%s %s is not a file in banger's state dir %s", what, name, l.policy.StateDir)
	}
	return src, nil
}

func (l *Local) checkBacking(f *os.File, readOnly bool) error {
	if err := checkOpenFor(f, !readOnly, "loop backing file"); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat backing file: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return invalid("loop backing file is %s, not a regular file", fileKind(st.Mode))
	}
	if int(st.Uid) != l.policy.Owner.UID {
		return invalid("loop backing file belongs to uid %d, not the owner (%d)", st.Uid, l.policy.Owner.UID)
	}
	if st.Nlink != 1 {
		return invalid("loop backing file has %d links; banger's disk files have one", st.Nlink)
	}
	_, err := l.checkInStateDir(f, "loop backing file")
	return err
}

// checkLoopInState refuses loop devices that are not banger's, so the owner
// cannot detach or build on someone else's (a snap's, a container's).
func (l *Local) checkLoopInState(ctx context.Context, device string) error {
	backing, err := l.backend.LoopBackingFile(ctx, device)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", device, err)
	}
	if backing == "" {
		return invalid("%s is not attached", device)
	}
	backing = strings.TrimSuffix(backing, " (deleted)")
	if _, err := relBeneath(l.policy.StateDir, backing); err != nil {
		return invalid("%s is backed by %s, which is not inside banger's state dir %s", device, backing, l.policy.StateDir)
	}
	return nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return "of unknown type"
}
