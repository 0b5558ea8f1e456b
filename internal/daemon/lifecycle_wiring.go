package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/vmm"
)

// This file adapts the daemon's pieces (store, disks, network, VMM driver,
// guest agent, events) to the ports of the lifecycle package, and maps its
// values and errors to and from the API's and the store's.

// newLifecycle builds the VM lifecycle over the daemon's pieces, each port
// given only what it uses. driver, d.net and d.overlays may each be nil;
// fwd runs the port forwards the vmManager changes live too.
func newLifecycle(d *Daemon, fwd *hostForwards, driver vmm.Driver) *lifecycle.Manager {
	cfg := d.opts.Config
	layout := d.opts.Layout
	files := lcFiles{layout: layout, overlays: d.overlays, runner: d.opts.Runner, log: d.log}
	guest := lcGuest{
		store: d.store, ownerDir: layout.OwnerDir(), domain: cfg.Network.Domain,
		syncPaths: configuredSyncPaths(cfg), log: d.log,
	}
	ports := lifecycle.Ports{
		Store:      lcStore{d.store},
		Files:      files,
		Forwards:   lcForwards{fwd: fwd, ttl: d.ttl},
		Specs:      lcSpecs{layout: layout},
		Agent:      agentWaiter{},
		Guest:      guest,
		Processes:  hostProcesses{runDir: layout.VMsRunDir()},
		Events:     lcEvents{hub: d.events, now: d.now},
		Now:        d.now,
		Log:        d.log,
		NewID:      store.NewID,
		CrashPoint: d.opts.CrashPoint,

		Snapshots:     lcSnapshots{d.store},
		SnapshotFiles: newSnapshotFiles(files),
		Identity:      lcIdentity{guest: guest, net: d.net, now: d.now},
		Golden: newGoldenKeys(driver, goldenMode(d.overlays != nil, d.net != nil), d.opts.Build,
			cfg, d.opts.Runner),
	}
	// Interfaces holding a nil pointer are not nil: set only what exists.
	if driver != nil {
		ports.Driver = driver
	}
	if d.overlays != nil {
		ports.Overlays = lcOverlays{disks: d.overlays, layout: layout, log: d.log}
	}
	if d.net != nil {
		ports.Network = lcNetwork{d.net}
	}
	return lifecycle.New(lifecycle.Config{
		VCPUs:         cfg.VM.VCPUs,
		MemoryMiB:     cfg.VM.MemoryMiB,
		DiskSizeBytes: int64(cfg.VM.DiskSize),
		Image:         cfg.VM.Image,
		BootTimeout:   cfg.VM.BootTimeout.Std(),
		StopTimeout:   cfg.VM.StopTimeout.Std(),
		FormatBytes:   config.FormatBytes,
		// The config's 0 means "no warm creates"; the lifecycle's 0 means
		// "no limit", which the config does not offer.
		GoldenPerImage: cmp.Or(cfg.Image.GoldenSnapshots, -1),
	}, ports)
}

// vmNamePattern is the lifecycle's name rule; image names follow it too.
var vmNamePattern nameRule

type nameRule struct{}

func (nameRule) MatchString(s string) bool { return lifecycle.ValidName(s) }

// apiState maps a lifecycle state to the API's.
func apiState(s lifecycle.State) api.VMState { return api.VMState(s) }

// apiError maps a lifecycle refusal to an API error, keeping the context
// wrapped around it; other errors pass as they are.
func apiError(err error) error {
	var e *lifecycle.Error
	if err == nil || !errors.As(err, &e) {
		return err
	}
	return &api.Error{Code: apiCode(e.Kind), Message: err.Error(), Hint: e.Hint}
}

func apiCode(k lifecycle.ErrorKind) api.Code {
	switch k {
	case lifecycle.Invalid:
		return api.CodeInvalidArgument
	case lifecycle.NotFound:
		return api.CodeNotFound
	case lifecycle.Exists:
		return api.CodeAlreadyExists
	case lifecycle.Precondition:
		return api.CodeFailedPrecondition
	case lifecycle.Unavailable:
		return api.CodeUnavailable
	}
	return api.CodeInternal
}

// progressTo sends lifecycle progress to an API caller.
func progressTo(p api.Progress) lifecycle.Progress {
	return func(r lifecycle.Report) {
		p(api.Event{VM: r.VM, Stage: r.Stage, Message: r.Message, Done: r.Done, Total: r.Total})
	}
}

// progressFrom sends the API-shaped progress of guest setup on to the
// lifecycle's progress (which progressTo maps back).
func progressFrom(p lifecycle.Progress) api.Progress {
	return func(ev api.Event) {
		p(lifecycle.Report{VM: ev.VM, Stage: ev.Stage, Message: ev.Message, Done: ev.Done, Total: ev.Total})
	}
}

func toStoreVM(vm lifecycle.VM) store.VM {
	return store.VM{
		ID: vm.ID, Name: vm.Name, ImageID: vm.ImageID, ImageName: vm.ImageName,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskSizeBytes: vm.DiskSizeBytes,
		Network: vm.Network, Autostart: vm.Autostart, CreatedAt: vm.CreatedAt, Labels: vm.Labels,
		State: vm.State, VMM: vm.VMM, PID: vm.PID, PIDStart: vm.PIDStart, APISocket: vm.APISocket,
		RunDir: vm.RunDir, StartedAt: vm.StartedAt, StoppedAt: vm.StoppedAt,
		LastError: vm.LastError, ExitStatus: vm.ExitStatus,
	}
}

func fromStoreVM(vm store.VM) lifecycle.VM {
	return lifecycle.VM{
		ID: vm.ID, Name: vm.Name, ImageID: vm.ImageID, ImageName: vm.ImageName,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskSizeBytes: vm.DiskSizeBytes,
		Network: vm.Network, Autostart: vm.Autostart, CreatedAt: vm.CreatedAt, Labels: vm.Labels,
		State: vm.State, VMM: vm.VMM, PID: vm.PID, PIDStart: vm.PIDStart, APISocket: vm.APISocket,
		RunDir: vm.RunDir, StartedAt: vm.StartedAt, StoppedAt: vm.StoppedAt,
		LastError: vm.LastError, ExitStatus: vm.ExitStatus,
	}
}

func toStoreImage(img lifecycle.Image) store.Image {
	return store.Image{ID: img.ID, Name: img.Name, KernelPath: img.Kernel, InitrdPath: img.Initrd,
		RootfsPath: img.Rootfs, RootfsSizeBytes: img.RootfsSizeBytes}
}

// lcStore is the lifecycle's Store: the state database.
type lcStore struct{ st *store.Store }

// notFound marks store.ErrNotFound as the lifecycle's too.
func notFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", lifecycle.ErrNotFound, err)
	}
	return err
}

func (s lcStore) GetVM(ctx context.Context, ref string) (lifecycle.VM, error) {
	vm, err := s.st.GetVM(ctx, ref)
	return fromStoreVM(vm), notFound(err)
}

func (s lcStore) ListVMs(ctx context.Context) ([]lifecycle.VM, error) {
	vms, err := s.st.ListVMs(ctx)
	out := make([]lifecycle.VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, fromStoreVM(vm))
	}
	return out, err
}

func (s lcStore) InsertVM(ctx context.Context, vm lifecycle.VM) error {
	err := s.st.CreateVM(ctx, toStoreVM(vm))
	if errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("%w: %w", lifecycle.ErrExists, err)
	}
	return err
}

func (s lcStore) SaveVM(ctx context.Context, vm lifecycle.VM) error {
	return s.st.UpdateVMState(ctx, vm.ID, toStoreVM(vm).Observed())
}

func (s lcStore) DeleteVM(ctx context.Context, id string) error {
	return notFound(s.st.DeleteVM(ctx, id))
}

func (s lcStore) GetImage(ctx context.Context, ref string) (lifecycle.Image, error) {
	img, err := s.st.GetImage(ctx, ref)
	return lifecycle.Image{ID: img.ID, Name: img.Name, Kernel: img.KernelPath, Initrd: img.InitrdPath,
		Rootfs: img.RootfsPath, RootfsSizeBytes: img.RootfsSizeBytes, BootArgs: imageBootArgs(img)}, notFound(err)
}

// lcFiles is the lifecycle's Files: the VM's directories and disk.
type lcFiles struct {
	layout paths.Layout
	// overlays, when set, makes VM disks dm-snapshot COW files over their
	// image (overlay.go); nil: reflink or sparse clones.
	overlays *overlayDisks
	// runner grows a cloned disk's file system (resize2fs).
	runner system.Runner
	log    *slog.Logger
}

func (f lcFiles) LockDisk(id string) (*os.File, error) { return lockDisk(f.lockedDiskPath(id)) }

func (f lcFiles) MakeRunDir(id string) error {
	return os.MkdirAll(f.layout.VMRunDir(id), 0o700)
}

func (f lcFiles) RemoveRunDir(id string) { _ = os.RemoveAll(f.layout.VMRunDir(id)) }

func (f lcFiles) RemoveAll(id string) error {
	if err := os.RemoveAll(f.layout.VMRunDir(id)); err != nil {
		return err
	}
	// A jailed VM's chroot (<jail dir>/<vmm binary>/<id>) holds links to its disk.
	jails, _ := filepath.Glob(filepath.Join(f.layout.JailDir(), "*", id))
	for _, j := range jails {
		if err := os.RemoveAll(j); err != nil {
			return err
		}
	}
	return os.RemoveAll(f.layout.VMStateDir(id))
}

// lcOverlays is the lifecycle's Overlays: dm-snapshot disks.
type lcOverlays struct {
	disks  *overlayDisks
	layout paths.Layout // the VM's state dir holds its COW file
	log    *slog.Logger
}

func (o lcOverlays) Attach(ctx context.Context, vm lifecycle.VM, img lifecycle.Image) (string, error) {
	return o.disks.attach(ctx, toStoreVM(vm), toStoreImage(img), o.layout.VMStateDir(vm.ID), vm.StartedAt.IsZero())
}

func (o lcOverlays) Detach(ctx context.Context, id string) {
	if err := o.disks.detach(ctx, id); err != nil {
		o.log.Warn("release vm disk", "vm_id", id, "err", err)
	}
}

func (o lcOverlays) CleanOrphans(ctx context.Context, running map[string]bool) {
	o.disks.cleanOrphans(ctx, running)
}

// lcNetwork is the lifecycle's Network: the bridge, taps, leases and DNS.
type lcNetwork struct{ n *vmNetwork }

func (n lcNetwork) Bridge() string { return n.n.bridge.Name }

func (n lcNetwork) Attach(ctx context.Context, vm lifecycle.VM) (vmm.NetInterface, []string, error) {
	sv := toStoreVM(vm)
	return n.n.attach(ctx, sv, settingsOf(sv).Isolated)
}

func (n lcNetwork) Detach(ctx context.Context, id string) { n.n.detach(ctx, id) }
func (n lcNetwork) Forget(name string)                    { n.n.forget(name) }
func (n lcNetwork) RemoveStaleTaps(ctx context.Context, running map[string]bool) {
	n.n.removeStaleTaps(ctx, running)
}

// lcForwards is the lifecycle's Forwards: host port forwards.
type lcForwards struct {
	fwd *hostForwards
	ttl *lifetimes // nil: no idle clock to restart
}

func (f lcForwards) Start(ctx context.Context, vm lifecycle.VM) {
	f.ttl.touch(vm.ID) // each run starts the idle clock afresh (ttl.go)
	f.fwd.start(ctx, toStoreVM(vm))
}
func (f lcForwards) Stop(id string) { f.fwd.stop(id) }

// lcSpecs is the lifecycle's Specs.
type lcSpecs struct{ layout paths.Layout }

func (s lcSpecs) LaunchSpec(vm lifecycle.VM, img lifecycle.Image) vmm.LaunchSpec {
	spec := launchSpec(s.layout, toStoreVM(vm), toStoreImage(img))
	if img.BootArgs != "" {
		spec.BootArgs += " " + img.BootArgs
	}
	return spec
}

func (s lcSpecs) ConsoleExcerpt(id string) string {
	return bootConsoleExcerpt(serialLogPath(s.layout, id))
}

// agentWaiter is the lifecycle's Agent.
type agentWaiter struct{}

func (agentWaiter) Wait(ctx context.Context, inst vmm.Instance) (string, error) {
	info, err := waitForAgent(ctx, inst)
	return info.AgentVersion, err
}

// lcGuest is the lifecycle's Guest: guest setup (guest_setup.go) and
// pinned host keys.
type lcGuest struct {
	store *store.Store // a VM's lease: its address is one of its host names
	// ownerDir holds the owner's SSH key and known_hosts.
	ownerDir string
	// domain is the VMs' DNS domain; syncPaths the files synced into each
	// guest at boot (config [sync] paths).
	domain    string
	syncPaths []string
	log       *slog.Logger
}

// Forget drops the VM's pinned host keys (a recreate would replace them anyway).
func (g lcGuest) Forget(vm lifecycle.VM) {
	_ = ssh.KnownHosts{Path: ssh.KnownHostsPath(g.ownerDir)}.Forget(vm.ID)
}

// lcEvents is the lifecycle's Events: the events.watch hub.
type lcEvents struct {
	hub *hub
	now func() time.Time
}

func (e lcEvents) Changed(vm lifecycle.VM) {
	e.hub.publish(api.Event{Time: e.now(), Kind: "vm.state", VM: vm.Name, State: apiState(vm.State),
		Stage: string(vm.State), Message: "vm " + vm.Name + " is " + string(vm.State)})
}

func (e lcEvents) Deleted(vm lifecycle.VM) {
	e.hub.publish(api.Event{Time: e.now(), Kind: "vm.deleted", VM: vm.Name, Stage: "deleted", Message: "vm " + vm.Name + " deleted"})
}
