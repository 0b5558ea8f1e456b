package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// Rollback returns VM vmRef to snapshot snapRef, one of its own: memory,
// processes and disk as they were saved. The VM runs afterwards, even if
// it was stopped. A snapshot of another VM, image or shape, or one whose
// files fail verification, is refused with the VM left as it was.
func (m *Manager) Rollback(ctx context.Context, vmRef, snapRef string, p Progress) (VM, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return VM{}, err
	}
	driver, err := m.restorer()
	if err != nil {
		return VM{}, err
	}
	if _, err := m.GetSnapshot(ctx, snapRef); err != nil {
		return VM{}, err // before the VM's lock: a typo waits for nothing
	}
	vm, unlock, err := m.locked(ctx, vmRef)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	s, sunlock, err := m.lockedSnapshot(ctx, snapRef, false)
	if err != nil {
		return VM{}, err
	}
	defer sunlock()
	if err := m.checkRollback(vm, s, driver.Name()); err != nil {
		return VM{}, err
	}
	img, err := m.ports.Store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return VM{}, fmt.Errorf("vm %q: image %q: %w", vm.Name, vm.ImageName, err)
	}
	// From here on the VM changes: finish even if the client hangs up.
	ctx = context.WithoutCancel(ctx)
	st := m.stager(vm.Name, p)
	if m.Instance(vm.ID) != nil || vm.State.hasVMM() {
		st.report("stop", "stopping the VM")
		if err := m.stopLocked(ctx, &vm, true, 0, p); err != nil {
			return VM{}, fmt.Errorf("rollback vm %q: %w", vm.Name, err)
		}
	}
	m.crash(CrashRollbackStopped)
	st.report("disk", "restoring the disk of snapshot "+s.Name)
	if err := m.ports.SnapshotFiles.RestoreDisk(ctx, s.ID, vm.ID); err != nil {
		return VM{}, Errorf(Precondition, "rollback vm %q: restore its disk from snapshot %q: %v; the VM is stopped, its disk as it was", vm.Name, s.Name, err).
			WithHint("`banger vm start " + vm.Name + "` boots it; `banger vm rollback` retries")
	}
	m.crash(CrashRollbackDiskRestored)
	if err := m.bootIn(ctx, &vm, img, bootMode{from: &s}, p); err != nil {
		return VM{}, fmt.Errorf("rollback vm %q: %w", vm.Name, err)
	}
	st.report("rolled-back", "vm "+vm.Name+" is back at snapshot "+s.Name)
	return vm, nil
}

// checkRollback refuses a rollback of vm to s that cannot work.
func (m *Manager) checkRollback(vm VM, s Snapshot, driver string) error {
	switch vm.State {
	case Running, Paused, Stopped, Failed:
	default:
		return Errorf(Precondition, "vm %q is %s; wait for it to settle", vm.Name, vm.State)
	}
	forkHint := "`banger vm fork " + s.Name + " --name NEW` starts a new VM from it"
	switch {
	case s.Golden:
		return Errorf(Precondition, "snapshot %q is the golden snapshot of image %q, not a snapshot of vm %q", s.Name, s.ImageName, vm.Name).WithHint(forkHint)
	case s.VMID != vm.ID:
		return Errorf(Precondition, "snapshot %q is of vm %q, not of vm %q", s.Name, s.VMName, vm.Name).WithHint(forkHint)
	case s.ImageID != vm.ImageID:
		return Errorf(Precondition, "snapshot %q is of image %q; vm %q runs image %q", s.Name, s.ImageName, vm.Name, vm.ImageName).WithHint(forkHint)
	case s.VCPUs != vm.VCPUs || s.MemoryMiB != vm.MemoryMiB:
		return Errorf(Precondition, "snapshot %q has %d vCPUs and %d MiB of memory; vm %q has %d and %d", s.Name, s.VCPUs, s.MemoryMiB, vm.Name, vm.VCPUs, vm.MemoryMiB).WithHint(forkHint)
	}
	if err := m.checkRestorable(s, driver); err != nil {
		return err
	}
	return nil
}

// checkRestorable refuses a snapshot this daemon cannot start a VM from:
// one still saving, saved by another VMM, or whose files fail
// verification.
func (m *Manager) checkRestorable(s Snapshot, driver string) error {
	if s.State != SnapshotReady {
		return Errorf(Precondition, "snapshot %q is still being saved", s.Name).WithHint("wait for its save to finish")
	}
	if s.VMM != driver {
		return Errorf(Precondition, "snapshot %q was saved by %s; this daemon runs %s", s.Name, s.VMM, driver).
			WithHint("only the VMM that saved a snapshot restores it")
	}
	if err := m.ports.SnapshotFiles.Verify(s); err != nil {
		return Errorf(Precondition, "snapshot %q cannot be restored: %v", s.Name, err).
			WithHint("`banger snapshot delete " + s.Name + "` removes it")
	}
	return nil
}

// ForkRequest asks for new VMs started from one saved state.
type ForkRequest struct {
	// Source names a snapshot, or a VM: a VM is snapshotted first (with a
	// generated name) and the new VMs start from that snapshot.
	Source string
	// Name is the new VM's name; with Count > 1 the VMs are Name-1..Name-N.
	Name string
	// Count is how many VMs to make (0 means 1).
	Count int
	// Network is each new VM's network settings (see VM.Network).
	Network []byte
	// Labels are each new VM's key=value tags (see ValidateLabels).
	Labels map[string]string
}

// maxForks bounds one fork request.
const maxForks = 64

// Fork makes new VMs from a snapshot (or a VM, snapshotted first), each
// with its own identity, disk, address and name, running when it returns.
// Several are made at once (forkParallelism); a fork that fails is undone
// entirely, and the VMs the others made are returned with the error, whole.
func (m *Manager) Fork(ctx context.Context, req ForkRequest, p Progress) ([]VM, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return nil, err
	}
	driver, err := m.restorer()
	if err != nil {
		return nil, err
	}
	if m.ports.Identity == nil {
		return nil, Errorf(Unavailable, "this daemon cannot give restored VMs their own identity").
			WithHint("`banger doctor` says what is missing")
	}
	names, err := m.forkNames(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := ValidateLabels(req.Labels); err != nil {
		return nil, err
	}
	src, err := m.forkSource(ctx, req.Source, p)
	if err != nil {
		return nil, err
	}
	s, unlock, err := m.lockedSnapshot(ctx, src.ID, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.checkRestorable(s, driver.Name()); err != nil {
		return nil, err
	}
	img, err := m.ports.Store.GetImage(ctx, s.ImageID)
	if errors.Is(err, ErrNotFound) {
		return nil, Errorf(Precondition, "snapshot %q is of image %q, which is gone", s.Name, s.ImageName).
			WithHint("import the image again with `banger image import`, or delete the snapshot")
	}
	if err != nil {
		return nil, err
	}
	return m.forkAll(ctx, s, img, names, req, p)
}

// maxParallelForks bounds how many forks of one request restore at once:
// each is a VMM loading the snapshot and a guest re-identifying itself,
// CPU-bound work that gains nothing past the host's cores.
const maxParallelForks = 4

// forkAll makes the VMs names from snapshot s, up to forkParallelism at a
// time. A fork that fails is undone entirely and the others still run to
// the end; the VMs made come back in name order, with every failure joined
// into the error.
func (m *Manager) forkAll(ctx context.Context, s Snapshot, img Image, names []string, req ForkRequest, p Progress) ([]VM, error) {
	p = p.Serialized()
	made := make([]*VM, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, forkParallelism())
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			vm, err := m.forkOne(ctx, s, img, name, req, p)
			if err != nil {
				errs[i] = fmt.Errorf("fork vm %q from snapshot %q: %w", name, s.Name, err)
				return
			}
			made[i] = &vm
		}()
	}
	wg.Wait()
	var out []VM
	for _, vm := range made {
		if vm != nil {
			out = append(out, *vm)
		}
	}
	return out, errors.Join(errs...)
}

// forkParallelism is how many forks restore at once on this host.
func forkParallelism() int {
	return max(1, min(runtime.GOMAXPROCS(0), maxParallelForks))
}

// Serialized returns p made safe to call from several goroutines: a
// progress sink writes to one stream.
func (p Progress) Serialized() Progress {
	var mu sync.Mutex
	return func(r Report) {
		mu.Lock()
		defer mu.Unlock()
		p(r)
	}
}

// forkNames checks a fork request's name and count and returns the names
// of the VMs it makes, none of them taken.
func (m *Manager) forkNames(ctx context.Context, req ForkRequest) ([]string, error) {
	count := req.Count
	if count == 0 {
		count = 1
	}
	if count < 1 || count > maxForks {
		return nil, Errorf(Invalid, "invalid count %d: use 1 to %d", req.Count, maxForks)
	}
	names := []string{req.Name}
	if count > 1 {
		names = names[:0]
		for i := 1; i <= count; i++ {
			names = append(names, fmt.Sprintf("%s-%d", req.Name, i))
		}
	}
	for _, name := range names {
		if err := ValidateName(name); err != nil {
			return nil, err
		}
		if _, err := m.ports.Store.GetVM(ctx, name); err == nil {
			return nil, Errorf(Exists, "a VM named %q already exists", name).
				WithHint("pick another name, or remove it with `banger vm delete " + name + "`")
		}
	}
	return names, nil
}

// forkSource is the snapshot ref names, or a new snapshot of the VM ref
// names.
func (m *Manager) forkSource(ctx context.Context, ref string, p Progress) (Snapshot, error) {
	if ref == "" {
		return Snapshot{}, Errorf(Invalid, "no snapshot or VM to fork given")
	}
	s, err := m.ports.Snapshots.GetSnapshot(ctx, ref)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return s, err
	}
	vm, err := m.ports.Store.GetVM(ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return Snapshot{}, Errorf(NotFound, "no snapshot or VM named %q", ref).
			WithHint("`banger snapshot list` and `banger vm list` show what there is")
	}
	if err != nil {
		return Snapshot{}, err
	}
	p(Report{VM: vm.Name, Stage: "snapshot", Message: "snapshotting vm " + vm.Name + " to fork it"})
	return m.Snapshot(ctx, vm.ID, "", p)
}

// forkOne makes VM name from snapshot s. On failure nothing of it is left.
func (m *Manager) forkOne(ctx context.Context, s Snapshot, img Image, name string, req ForkRequest, p Progress) (VM, error) {
	vm := VM{
		ID: m.ports.NewID(), Name: name, ImageID: s.ImageID, ImageName: img.Name, VMM: s.VMM,
		VCPUs: s.VCPUs, MemoryMiB: s.MemoryMiB, DiskSizeBytes: s.DiskSizeBytes, Network: req.Network, Labels: req.Labels,
		State: Creating, CreatedAt: m.ports.Now().UTC(),
	}
	if err := m.ports.Files.CheckFits(vm.DiskSizeBytes); err != nil {
		return VM{}, err
	}
	unlock := m.Lock(vm.ID)
	defer unlock()
	if err := m.insertVM(ctx, vm); err != nil {
		return VM{}, err
	}
	m.crash(CrashForkRecorded)
	if err := m.diskFromSnapshot(ctx, vm, s, p); err != nil {
		m.undoCreate(vm)
		return VM{}, err
	}
	m.crash(CrashForkDiskReady)
	if err := m.bootIn(ctx, &vm, img, bootMode{from: &s, reidentify: true, failTo: Creating}, p); err != nil {
		m.undoCreate(vm)
		return VM{}, err
	}
	return vm, nil
}

// diskFromSnapshot gives the new VM vm a copy of snapshot s's disk.
func (m *Manager) diskFromSnapshot(ctx context.Context, vm VM, s Snapshot, p Progress) error {
	p(Report{VM: vm.Name, Stage: "disk", Message: "copying the disk of snapshot " + s.Name})
	if err := m.ports.SnapshotFiles.RestoreDisk(ctx, s.ID, vm.ID); err != nil {
		return fmt.Errorf("copy the disk of snapshot %q: %w", s.Name, err)
	}
	return nil
}
