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

// apply implements Backend: the effect the menu declares for op.
func (b SystemBackend) apply(ctx context.Context, op entry, at serving, req any) (any, error) {
	return op.applyOn(ctx, b, at, req)
}

// The effects of the menu's operations (Op.effect), in its order.

func (SystemBackend) ensureBridge(ctx context.Context, at serving, s BridgeSpec) (None, error) {
	return nothing(netErr(network.EnsureBridge(ctx, network.Bridge{Name: s.Name, Subnet: s.Subnet}, at.instance)))
}

func (SystemBackend) deleteBridge(ctx context.Context, at serving, n Named) (None, error) {
	return nothing(netErr(network.DeleteBridge(ctx, n.Name, at.instance)))
}

func (SystemBackend) createTap(ctx context.Context, _ serving, s TapSpec) (None, error) {
	return nothing(netErr(network.CreateTap(ctx, s.Name, s.Bridge, s.UID, s.GID)))
}

// deleteTap deletes the tap only if the owner owns it.
func (SystemBackend) deleteTap(ctx context.Context, at serving, n Named) (None, error) {
	return nothing(netErr(network.DeleteTap(ctx, n.Name, at.owner.UID)))
}

func (SystemBackend) ensureNAT(ctx context.Context, _ serving, s NATSpec) (None, error) {
	return nothing(netErr(firewall.Ensure(ctx, firewall.Config{Bridge: s.Bridge, Subnet: s.Subnet})))
}

// removeNAT: firewall.Remove drops the bridge's two tables (and nothing
// else), whatever the subnet.
func (SystemBackend) removeNAT(ctx context.Context, _ serving, s NATSpec) (None, error) {
	return nothing(netErr(firewall.Remove(ctx, s.Bridge)))
}

func (SystemBackend) isolate(ctx context.Context, _ serving, s IsolationSpec) (None, error) {
	mac, err := network.ParseGuestMAC(s.MAC)
	if err != nil {
		return nothing(netErr(err))
	}
	return nothing(netErr(firewall.Admit(ctx, firewall.Guest{Bridge: s.Bridge, Tap: s.Tap, MAC: mac, Addr: s.Addr, Isolated: s.Isolated})))
}

func (SystemBackend) unisolate(ctx context.Context, _ serving, s IsolationSpec) (None, error) {
	return nothing(netErr(firewall.Evict(ctx, s.Bridge, s.Tap, s.Addr)))
}

func (SystemBackend) enableIPForward(context.Context, serving, None) (None, error) {
	return nothing(network.SetIPForward(true))
}

// configureResolver goes through resolvectl. A host without
// systemd-resolved reports ErrNotAvailable: guests resolve names anyway.
func (b SystemBackend) configureResolver(ctx context.Context, _ serving, s ResolverSpec) (None, error) {
	return nothing(resolvedErr(dns.Resolved{Runner: b.Runner}.Configure(ctx, s.Link, s.Server, s.Domain)))
}

func (b SystemBackend) revertResolver(ctx context.Context, _ serving, r LinkRef) (None, error) {
	return nothing(resolvedErr(dns.Resolved{Runner: b.Runner}.Revert(ctx, r.Link)))
}

func resolvedErr(err error) error {
	if errors.Is(err, dns.ErrResolvedUnavailable) {
		return fmt.Errorf("%w: %w", ErrNotAvailable, err)
	}
	return netErr(err)
}

// attachLoop binds the loop device to the very descriptor the daemon
// passed (already checked by Local): no reopening by path, which the
// hardened helper (no CAP_DAC_OVERRIDE) could not do for the owner's 0600
// files.
func (b SystemBackend) attachLoop(_ context.Context, _ serving, s LoopAttach) (DevicePath, error) {
	if err := b.Loops.Available(); err != nil {
		return DevicePath{}, fmt.Errorf("%w: %v", ErrNotAvailable, err)
	}
	lp, err := b.Loops.AttachFile(s.Backing, disk.LoopOptions{Name: s.Name, ReadOnly: s.ReadOnly})
	if err != nil {
		return DevicePath{}, err
	}
	return DevicePath{Device: lp.Device}, nil
}

func (b SystemBackend) detachLoop(_ context.Context, _ serving, d DeviceRef) (None, error) {
	return nothing(b.Loops.Detach(d.Device))
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

// CheckBridge implements Backend.
func (SystemBackend) CheckBridge(ctx context.Context, name string, owner network.Owner) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return netErr(network.CheckBridgeOwner(name, owner))
}

// snapshotChunkSectors is the dm-snapshot chunk: 8 sectors = 4 KiB, the
// ext4 block, so one guest block write copies one chunk.
const snapshotChunkSectors = "8"

// createSnapshot makes optionally a zero-extended origin "<name>-origin",
// then the persistent snapshot "<name>", then hands the node to the owner
// (the VMM opens it unprivileged). On failure what it made is removed.
func (b SystemBackend) createSnapshot(ctx context.Context, at serving, spec SnapshotSpec) (DevicePath, error) {
	dev, err := b.snapshot(ctx, spec, at.owner)
	return DevicePath{Device: dev}, err
}

func (b SystemBackend) snapshot(ctx context.Context, spec SnapshotSpec, owner Owner) (dev string, err error) {
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

// removeSnapshot removes the snapshot, then its extended origin if there
// is one; missing devices are not an error.
func (b SystemBackend) removeSnapshot(ctx context.Context, _ serving, n Named) (None, error) {
	if err := b.DM.Available(); err != nil {
		return nothing(fmt.Errorf("%w: %v", ErrNotAvailable, err))
	}
	names, err := b.DM.List(ctx)
	if err != nil {
		return nothing(err)
	}
	name := n.Name
	var errs []error
	for _, n := range []string{name, name + "-origin"} {
		for _, have := range names {
			if have == n {
				errs = append(errs, b.DM.Remove(ctx, n))
			}
		}
	}
	return nothing(errors.Join(errs...))
}

// chown acts on the O_PATH descriptor Local resolved, so the file changed
// is the one that was checked.
func (SystemBackend) chown(_ context.Context, _ serving, s ChownSpec) (None, error) {
	if err := unix.Fchownat(int(s.target.Fd()), "", s.UID, s.GID, unix.AT_EMPTY_PATH); err != nil {
		return nothing(fmt.Errorf("chown %s: %w", s.target.Name(), err))
	}
	return None{}, nil
}

// chmod goes through /proc/self/fd/N, which names exactly the checked
// inode (fchmod does not accept O_PATH descriptors).
func (b SystemBackend) chmod(_ context.Context, _ serving, s ChmodSpec) (None, error) {
	p := filepath.Join(b.ProcSelfFD, strconv.Itoa(int(s.target.Fd())))
	if err := unix.Fchmodat(unix.AT_FDCWD, p, s.Mode, 0); err != nil {
		return nothing(fmt.Errorf("chmod %s: %w", s.target.Name(), err))
	}
	return None{}, nil
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
