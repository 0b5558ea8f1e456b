package daemon

import (
	"context"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/privileged"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
)

// The daemon's ports onto the privileged menu, in one place: VM networking
// (netOps), dm-snapshot disks (diskOps) and the Firecracker jailer
// (firecracker.JailLauncher) each speak their own types; these adapters map
// them to privileged's requests. Nothing else in the daemon's logic, nor
// the VMM drivers, imports privileged.

// available reports whether ops can perform anything at all.
func available(ops privileged.Ops) bool {
	return ops != nil && ops != privileged.Unavailable()
}

// netPort is VM networking's port over ops; nil when there are no
// privileged operations.
func netPort(ops privileged.Ops) netOps {
	if !available(ops) {
		return nil
	}
	return privilegedNet{ops}
}

// privilegedNet is netOps over privileged.Ops.
type privilegedNet struct{ ops privileged.Ops }

func (p privilegedNet) EnsureBridge(ctx context.Context, b network.Bridge) error {
	return privileged.Do(ctx, p.ops, privileged.OpEnsureBridge, privileged.BridgeSpec{Name: b.Name, Subnet: b.Subnet})
}

func (p privilegedNet) EnableIPForward(ctx context.Context) error {
	return privileged.Do(ctx, p.ops, privileged.OpEnableIPForward, privileged.None{})
}

func (p privilegedNet) EnsureNAT(ctx context.Context, b network.Bridge) error {
	return privileged.Do(ctx, p.ops, privileged.OpEnsureNAT, privileged.NATSpec{Subnet: b.Subnet, Bridge: b.Name})
}

func (p privilegedNet) RouteDNS(ctx context.Context, r dnsRoute) error {
	return privileged.Do(ctx, p.ops, privileged.OpConfigureResolver,
		privileged.ResolverSpec{Link: r.Link, Server: r.Server, Domain: r.Domain})
}

func (p privilegedNet) CreateTap(ctx context.Context, t tapRequest) error {
	return privileged.Do(ctx, p.ops, privileged.OpCreateTap,
		privileged.TapSpec{Name: t.Name, Bridge: t.Bridge, UID: t.UID, GID: t.GID})
}

func (p privilegedNet) DeleteTap(ctx context.Context, name string) error {
	return privileged.Do(ctx, p.ops, privileged.OpDeleteTap, privileged.Named{Name: name})
}

func (p privilegedNet) Admit(ctx context.Context, g guestPort) error {
	return privileged.Do(ctx, p.ops, privileged.OpIsolate, isolationSpec(g))
}

func (p privilegedNet) Evict(ctx context.Context, g guestPort) error {
	return privileged.Do(ctx, p.ops, privileged.OpUnisolate, isolationSpec(g))
}

func (p privilegedNet) ApplyEgress(ctx context.Context, e firewall.Egress) error {
	spec := privileged.EgressSpec{Bridge: e.Bridge, Tap: e.Tap, Addr: e.Addr, Mode: e.Mode}
	for _, r := range e.Allow {
		spec.Allow = append(spec.Allow, privileged.EgressNet{Net: r.Net, Port: r.Port})
	}
	return privileged.Do(ctx, p.ops, privileged.OpApplyEgress, spec)
}

func (p privilegedNet) LearnEgress(ctx context.Context, l firewall.LearnSpec) error {
	spec := privileged.LearnSpec{Bridge: l.Bridge, Tap: l.Tap}
	for _, a := range l.Addrs {
		spec.Addrs = append(spec.Addrs, privileged.LearnedAddr{Addr: a.Addr, Port: a.Port, TTLSeconds: uint32(firewall.ClampTTL(a.TTL).Seconds())})
	}
	return privileged.Do(ctx, p.ops, privileged.OpLearnEgress, spec)
}

// isolationSpec is a VM's port as the helper's firewall operations take it.
func isolationSpec(g guestPort) privileged.IsolationSpec {
	return privileged.IsolationSpec{Bridge: g.Bridge, Tap: g.Tap, MAC: g.MAC, Addr: g.Addr, Isolated: g.Isolated}
}

// diskPort is dm-snapshot disks' port over ops; nil when there are no
// privileged operations.
func diskPort(ops privileged.Ops) diskOps {
	if !available(ops) {
		return nil
	}
	return privilegedDisks{ops}
}

// privilegedDisks is diskOps over privileged.Ops.
type privilegedDisks struct{ ops privileged.Ops }

func (p privilegedDisks) AttachLoop(ctx context.Context, r loopRequest) (string, error) {
	dev, err := privileged.Call(ctx, p.ops, privileged.OpAttachLoop,
		privileged.LoopAttach{Backing: r.Backing, Name: r.Name, ReadOnly: r.ReadOnly})
	return dev.Device, err
}

func (p privilegedDisks) DetachLoop(ctx context.Context, device string) error {
	return privileged.Do(ctx, p.ops, privileged.OpDetachLoop, privileged.DeviceRef{Device: device})
}

func (p privilegedDisks) CreateSnapshot(ctx context.Context, r snapshotRequest) (string, error) {
	dev, err := privileged.Call(ctx, p.ops, privileged.OpCreateSnapshot,
		privileged.SnapshotSpec{Name: r.Name, Origin: r.Origin, COW: r.COW, SizeBytes: r.SizeBytes})
	return dev.Device, err
}

func (p privilegedDisks) RemoveSnapshot(ctx context.Context, name string) error {
	return privileged.Do(ctx, p.ops, privileged.OpRemoveSnapshot, privileged.Named{Name: name})
}

// jailerConfig runs Firecracker under the jailer that ops launches: the
// root helper for an unprivileged daemon, privileged.Local for a root one.
func jailerConfig(ops privileged.Ops, layout paths.Layout) *firecracker.JailerConfig {
	return &firecracker.JailerConfig{Launcher: privilegedJails{ops}, ChrootBaseDir: layout.JailDir(),
		APISocket: privileged.JailedAPISocket}
}

// privilegedJails is firecracker.JailLauncher over privileged.Ops.
type privilegedJails struct{ ops privileged.Ops }

func (p privilegedJails) LaunchJailer(ctx context.Context, req firecracker.JailLaunch) (firecracker.Jail, error) {
	spec := privileged.JailerLaunch{VMID: req.VMID, Console: req.Console, Kernel: req.Kernel, Initrd: req.Initrd, VMMLog: req.VMMLog}
	for _, d := range req.Drives {
		spec.Drives = append(spec.Drives, privileged.JailDrive{ID: d.ID, ReadOnly: d.ReadOnly, File: d.File})
	}
	j, err := privileged.Call(ctx, p.ops, privileged.OpLaunchJailer, spec)
	if err != nil {
		return firecracker.Jail{}, err
	}
	return firecracker.Jail{PID: j.PID, Root: j.Root, Kernel: j.Kernel, Initrd: j.Initrd, Drives: j.Drives, VMMLog: j.VMMLog}, nil
}

func (p privilegedJails) RemoveJail(ctx context.Context, vmID string) error {
	return privileged.Do(ctx, p.ops, privileged.OpRemoveJail, privileged.VMRef{VMID: vmID})
}
