package privileged

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/system"
)

// SystemBackend is the real Backend: network operations through
// internal/network, loop and device-mapper through internal/disk, file
// ownership through syscalls on the resolved descriptor.
type SystemBackend struct {
	// Runner runs resolvectl (the one external program the helper uses
	// for networking).
	Runner system.Runner
	Loops  disk.Loops
	DM     disk.DMRunner
	// Sys is the root of sysfs (loop backing files are read from it).
	Sys string
	// ProcSelfFD is /proc/self/fd (chmod of an O_PATH descriptor goes
	// through it, as fchmod refuses O_PATH descriptors).
	ProcSelfFD string
	// DeviceSize returns a block device's size in bytes.
	DeviceSize func(device string) (int64, error)
}

var _ Backend = SystemBackend{}

// HostBackend is SystemBackend on this host.
func HostBackend() SystemBackend {
	return SystemBackend{
		Runner:     system.ExecRunner{},
		Loops:      disk.HostLoops(),
		DM:         disk.HostDMSetup(system.ExecRunner{}),
		Sys:        "/sys",
		ProcSelfFD: "/proc/self/fd",
		DeviceSize: blockDeviceSize,
	}
}

// netErr keeps internal/network's validation failures recognisable as
// invalid arguments on the far side of the helper socket.
func netErr(err error) error {
	if errors.Is(err, network.ErrInvalid) {
		return asArg(err)
	}
	return err
}

// EnsureBridge implements Backend.
func (SystemBackend) EnsureBridge(ctx context.Context, spec BridgeSpec, owner network.Owner) error {
	return netErr(network.EnsureBridge(ctx, network.Bridge{Name: spec.Name, Subnet: spec.Subnet}, owner))
}

// DeleteBridge implements Backend.
func (SystemBackend) DeleteBridge(ctx context.Context, name string, owner network.Owner) error {
	return netErr(network.DeleteBridge(ctx, name, owner))
}

// CheckBridge implements Backend.
func (SystemBackend) CheckBridge(ctx context.Context, name string, owner network.Owner) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return netErr(network.CheckBridgeOwner(name, owner))
}

// CreateTap implements Backend.
func (SystemBackend) CreateTap(ctx context.Context, spec TapSpec) error {
	return netErr(network.CreateTap(ctx, spec.Name, spec.Bridge, spec.UID, spec.GID))
}

// DeleteTap implements Backend.
func (SystemBackend) DeleteTap(ctx context.Context, name string, owner Owner) error {
	return netErr(network.DeleteTap(ctx, name, owner.UID))
}

// EnsureNAT implements Backend.
func (SystemBackend) EnsureNAT(ctx context.Context, spec NATSpec) error {
	return netErr(firewall.Ensure(ctx, firewall.Config{Bridge: spec.Bridge, Subnet: spec.Subnet}))
}

// RemoveNAT implements Backend: firewall.Remove drops the bridge's two
// tables (and nothing else), whatever the subnet.
func (SystemBackend) RemoveNAT(ctx context.Context, spec NATSpec) error {
	return netErr(firewall.Remove(ctx, spec.Bridge))
}

// Isolate implements Backend: firewall.Admit.
func (SystemBackend) Isolate(ctx context.Context, spec IsolationSpec) error {
	mac, err := network.ParseGuestMAC(spec.MAC)
	if err != nil {
		return netErr(err)
	}
	return netErr(firewall.Admit(ctx, firewall.Guest{Bridge: spec.Bridge, Tap: spec.Tap, MAC: mac, Addr: spec.Addr, Isolated: spec.Isolated}))
}

// Unisolate implements Backend: firewall.Evict.
func (SystemBackend) Unisolate(ctx context.Context, spec IsolationSpec) error {
	return netErr(firewall.Evict(ctx, spec.Bridge, spec.Tap, spec.Addr))
}

// EnableIPForward implements Backend.
func (SystemBackend) EnableIPForward(context.Context) error {
	return network.SetIPForward(true)
}

// ConfigureResolver implements Backend through resolvectl. A host without
// systemd-resolved reports ErrNotAvailable: guests resolve names anyway.
func (b SystemBackend) ConfigureResolver(ctx context.Context, spec ResolverSpec) error {
	return resolvedErr(dns.Resolved{Runner: b.Runner}.Configure(ctx, spec.Link, spec.Server, spec.Domain))
}

// RevertResolver implements Backend.
func (b SystemBackend) RevertResolver(ctx context.Context, link string) error {
	return resolvedErr(dns.Resolved{Runner: b.Runner}.Revert(ctx, link))
}

func resolvedErr(err error) error {
	if errors.Is(err, dns.ErrResolvedUnavailable) {
		return fmt.Errorf("%w: %w", ErrNotAvailable, err)
	}
	return netErr(err)
}

// AttachLoop implements Backend by binding the loop device to the very
// descriptor the daemon passed (already checked by Local): no reopening by
// path, which the hardened helper (no CAP_DAC_OVERRIDE) could not do for
// the owner's 0600 files.
func (b SystemBackend) AttachLoop(_ context.Context, spec LoopAttach) (string, error) {
	if err := b.Loops.Available(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	lp, err := b.Loops.AttachFile(spec.Backing, disk.LoopOptions{Name: spec.Name, ReadOnly: spec.ReadOnly})
	if err != nil {
		return "", err
	}
	return lp.Device, nil
}

// LoopBackingFile implements Backend from sysfs: "" when the device exists
// but is not bound.
func (b SystemBackend) LoopBackingFile(_ context.Context, device string) (string, error) {
	name := filepath.Base(device)
	dir := filepath.Join(b.Sys, "block", name)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("%s: no such loop device", device)
	}
	data, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// DetachLoop implements Backend.
func (b SystemBackend) DetachLoop(_ context.Context, device string) error {
	return b.Loops.Detach(device)
}

// snapshotChunkSectors is the dm-snapshot chunk: 8 sectors = 4 KiB, the
// ext4 block, so one guest block write copies one chunk.
const snapshotChunkSectors = "8"

// CreateSnapshot implements Backend: optionally a zero-extended origin
// "<name>-origin", then the persistent snapshot "<name>", then the node
// handed to owner. On failure what it made is removed.
func (b SystemBackend) CreateSnapshot(ctx context.Context, spec SnapshotSpec, owner Owner) (dev string, err error) {
	if err := b.DM.Available(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	originBytes, err := b.DeviceSize(spec.Origin)
	if err != nil {
		return "", fmt.Errorf("size of %s: %w", spec.Origin, err)
	}
	size := spec.SizeBytes
	if size == 0 {
		size = originBytes
	}
	if size < originBytes || size%512 != 0 || originBytes%512 != 0 {
		return "", invalid("snapshot size %d bytes is smaller than the origin %s (%d bytes) or not sector-aligned", size, spec.Origin, originBytes)
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	origin := spec.Origin
	if size > originBytes {
		name := spec.Name + "-origin"
		table := []disk.DMTarget{
			{Start: 0, Length: originBytes / 512, Type: "linear", Args: []string{spec.Origin, "0"}},
			{Start: originBytes / 512, Length: (size - originBytes) / 512, Type: "zero"},
		}
		if err := b.DM.Create(ctx, name, table); err != nil {
			return "", err
		}
		undo = append(undo, func() { _ = b.DM.Remove(context.WithoutCancel(ctx), name) })
		origin = filepath.Join("/dev/mapper", name)
	}
	table := []disk.DMTarget{{Start: 0, Length: size / 512, Type: "snapshot",
		Args: []string{origin, spec.COW, "P", snapshotChunkSectors}}}
	if err := b.DM.Create(ctx, spec.Name, table); err != nil {
		return "", err
	}
	undo = append(undo, func() { _ = b.DM.Remove(context.WithoutCancel(ctx), spec.Name) })
	dev = filepath.Join("/dev/mapper", spec.Name)
	// The VMM runs as the owner and opens the disk itself.
	if err := os.Chown(dev, owner.UID, owner.GID); err != nil {
		return "", fmt.Errorf("hand %s to uid %d: %w", dev, owner.UID, err)
	}
	return dev, nil
}

// RemoveSnapshot implements Backend: the snapshot, then its extended origin
// if there is one; missing devices are not an error.
func (b SystemBackend) RemoveSnapshot(ctx context.Context, name string) error {
	if err := b.DM.Available(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	names, err := b.DM.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range []string{name, name + "-origin"} {
		for _, have := range names {
			if have == n {
				errs = append(errs, b.DM.Remove(ctx, n))
			}
		}
	}
	return errors.Join(errs...)
}

// Chown implements Backend on the O_PATH descriptor, so the file changed is
// the one that was checked.
func (SystemBackend) Chown(_ context.Context, target *os.File, uid, gid int) error {
	if err := unix.Fchownat(int(target.Fd()), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("chown %s: %w", target.Name(), err)
	}
	return nil
}

// Chmod implements Backend through /proc/self/fd/N, which names exactly the
// checked inode (fchmod does not accept O_PATH descriptors).
func (b SystemBackend) Chmod(_ context.Context, target *os.File, mode uint32) error {
	p := filepath.Join(b.ProcSelfFD, strconv.Itoa(int(target.Fd())))
	if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", target.Name(), err)
	}
	return nil
}

// blockDeviceSize seeks to the end of the device, which for a block device
// is its size (same answer as BLKGETSIZE64, no unsafe ioctl plumbing).
func blockDeviceSize(device string) (int64, error) {
	f, err := os.OpenFile(device, os.O_RDONLY, 0)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	return f.Seek(0, io.SeekEnd)
}

// StartJailer starts the jailer as a child of the helper, in its own session
// (terminal and helper signals stay away from VMs), with an empty
// environment apart from PATH (the jailer clears it anyway) and only the
// console as stdout and stderr. The helper reaps it; a VM outlives the
// request, so ctx is not tied to the process.
func (SystemBackend) StartJailer(_ context.Context, argv []string, console *os.File) (JailProcess, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &childProcess{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// childProcess is a process this helper started and reaps.
type childProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *childProcess) PID() int              { return p.cmd.Process.Pid }
func (p *childProcess) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL. os.Process signals through a pidfd, so a reaped and
// recycled pid is never hit.
func (p *childProcess) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}
