package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Snapshot saves VM ref's memory, device state and disk at one instant as
// snapshot name ("" names it <vm>-<YYYYMMDD-HHMMSS>, UTC). A running VM is
// paused for as short as it takes and resumed; a paused one stays paused.
// A failure leaves no part of the snapshot behind.
func (m *Manager) Snapshot(ctx context.Context, ref, name string, p Progress) (Snapshot, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return Snapshot{}, err
	}
	if name != "" {
		if err := ValidateSnapshotName(name); err != nil {
			return Snapshot{}, err
		}
	}
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return Snapshot{}, err
	}
	defer unlock()
	if vm.State != Running && vm.State != Paused {
		return Snapshot{}, Errorf(Precondition, "vm %q is %s; only a running or paused VM can be snapshotted", vm.Name, vm.State).
			WithHint("`banger vm start " + vm.Name + "` boots it")
	}
	inst := m.Instance(vm.ID)
	if inst == nil {
		return Snapshot{}, Errorf(Precondition, "vm %q has no VMM this daemon supervises", vm.Name).
			WithHint("`banger vm restart " + vm.Name + "` boots it under this daemon")
	}
	if name == "" {
		name = defaultSnapshotName(vm.Name, m.ports.Now())
	}
	return m.save(ctx, &vm, inst, m.newSnapshot(vm, name), p)
}

// defaultSnapshotName is <vm>-<YYYYMMDD-HHMMSS> (UTC), the VM's name cut
// so that the whole stays within the name rule's 63 characters.
func defaultSnapshotName(vmName string, now time.Time) string {
	stamp := now.UTC().Format("20060102-150405")
	if room := 63 - len(stamp) - 1; len(vmName) > room {
		vmName = strings.TrimRight(vmName[:room], "-")
	}
	return vmName + "-" + stamp
}

// newSnapshot is snapshot name of vm, about to be saved.
func (m *Manager) newSnapshot(vm VM, name string) Snapshot {
	return Snapshot{
		ID: m.ports.NewID(), Name: name, VMID: vm.ID, VMName: vm.Name,
		ImageID: vm.ImageID, ImageName: vm.ImageName, VMM: vm.VMM,
		VCPUs: vm.VCPUs, MemoryMiB: vm.MemoryMiB, DiskSizeBytes: vm.DiskSizeBytes,
		Network: vm.Network, State: SnapshotSaving, CreatedAt: m.ports.Now().UTC(),
	}
}

// save writes snapshot s of vm, whose VMM is inst. The caller holds vm's
// lock. s is recorded saving before any of its files exists and ready once
// they all do; a running guest is paused for the VMM's state and the disk
// copy, then resumed. On failure nothing of s is left and the guest runs
// as before. When only the resume fails, s is kept (it is whole) and vm is
// recorded paused, if its state allows, for `banger vm resume` to retry.
func (m *Manager) save(ctx context.Context, vm *VM, inst vmm.Instance, s Snapshot, p Progress) (Snapshot, error) {
	pauser, canPause := inst.(vmm.Pauser)
	snapper, canSave := inst.(vmm.Snapshotter)
	if !canPause || !canSave {
		return Snapshot{}, Errorf(Unavailable, "the %s driver cannot snapshot vm %q", vm.VMM, vm.Name).
			WithHint("`banger doctor` shows what the VMM driver supports")
	}
	files := m.ports.SnapshotFiles
	if err := files.CheckFits(s.ID, int64(vm.MemoryMiB)<<20+vm.DiskSizeBytes); err != nil {
		return Snapshot{}, err
	}
	unlock := m.lockSnapshot(s.ID, true)
	defer unlock()
	if err := m.ports.Snapshots.InsertSnapshot(ctx, s); err != nil {
		if errors.Is(err, ErrExists) {
			return Snapshot{}, Errorf(Exists, "a snapshot named %q already exists", s.Name).
				WithHint("pick another name, or delete it with `banger snapshot delete " + s.Name + "`")
		}
		return Snapshot{}, fmt.Errorf("record snapshot %q: %w", s.Name, err)
	}
	m.crash(CrashSnapshotSaving)
	st := m.stager(vm.Name, p)
	paused, err := m.writeSnapshot(ctx, *vm, pauser, snapper, s, st)
	var resumeErr error
	if paused {
		rctx, cancel := cleanupContext()
		resumeErr = pauser.Resume(rctx)
		cancel()
		if resumeErr == nil {
			st.report("resume", "resumed the VM")
		}
	}
	if err == nil {
		s.State, s.SizeBytes = SnapshotReady, files.Size(s.ID)
		err = m.ports.Snapshots.SaveSnapshot(ctx, s)
	}
	if err != nil {
		m.undoSnapshot(s)
		return Snapshot{}, fmt.Errorf("snapshot vm %q: %w", vm.Name, errors.Join(err, resumeErr))
	}
	st.report("saved", fmt.Sprintf("snapshot %s saved: %s", s.Name, m.cfg.FormatBytes(s.SizeBytes)))
	m.ports.Log.Info("snapshot saved", "vm", vm.Name, "snapshot", s.Name, "bytes", s.SizeBytes)
	if resumeErr != nil {
		m.ports.Log.Error("resume vm after snapshot", "vm", vm.Name, "err", resumeErr)
		if vm.State.CanBecome(Paused) {
			if err := m.record(context.WithoutCancel(ctx), vm, Paused); err != nil {
				m.ports.Log.Error("record vm paused", "vm", vm.Name, "err", err)
			}
		}
		return s, Errorf(Precondition, "snapshot %q is saved, but vm %q stays paused: resume: %v", s.Name, vm.Name, resumeErr).
			WithHint("`banger vm resume " + vm.Name + "` retries")
	}
	return s, nil
}

// writeSnapshot writes s's files: the VMM's state (the guest paused first
// unless vm is paused already) and a copy of the disk. paused says it
// paused the guest, for the caller to resume it.
func (m *Manager) writeSnapshot(ctx context.Context, vm VM, pauser vmm.Pauser, snapper vmm.Snapshotter, s Snapshot, st stager) (paused bool, err error) {
	files := m.ports.SnapshotFiles
	if err := files.Make(s.ID); err != nil {
		return false, fmt.Errorf("make the snapshot's directory: %w", err)
	}
	if vm.State != Paused {
		st.report("pause", "pausing the VM")
		if err := pauser.Pause(ctx); err != nil {
			return false, fmt.Errorf("pause: %w", err)
		}
		paused = true
	}
	st.report("save-state", fmt.Sprintf("writing memory (%s) and device state", m.cfg.FormatBytes(int64(vm.MemoryMiB)<<20)))
	if err := snapper.CreateSnapshot(ctx, files.Paths(s.ID)); err != nil {
		return paused, fmt.Errorf("write memory and device state: %w", err)
	}
	m.crash(CrashSnapshotStateWritten)
	st.report("save-disk", fmt.Sprintf("copying the disk (%s)", m.cfg.FormatBytes(vm.DiskSizeBytes)))
	if err := files.SaveDisk(ctx, vm.ID, s.ID); err != nil {
		return paused, fmt.Errorf("copy the disk: %w", err)
	}
	m.crash(CrashSnapshotFilesWritten)
	return paused, nil
}

// undoSnapshot removes what a failed save left of s: its files and record.
func (m *Manager) undoSnapshot(s Snapshot) {
	ctx, cancel := cleanupContext()
	defer cancel()
	if err := m.ports.SnapshotFiles.Remove(s.ID); err != nil {
		m.ports.Log.Error("undo snapshot: remove files", "snapshot", s.Name, "err", err)
	}
	if err := m.ports.Snapshots.DeleteSnapshot(ctx, s.ID); err != nil && !errors.Is(err, ErrNotFound) {
		m.ports.Log.Error("undo snapshot: delete record", "snapshot", s.Name, "err", err)
	}
}

// ListSnapshots lists every snapshot, golden ones included.
func (m *Manager) ListSnapshots(ctx context.Context) ([]Snapshot, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return nil, err
	}
	return m.ports.Snapshots.ListSnapshots(ctx)
}

// GetSnapshot loads a snapshot by name or ID.
func (m *Manager) GetSnapshot(ctx context.Context, ref string) (Snapshot, error) {
	if err := m.snapshotsAvailable(); err != nil {
		return Snapshot{}, err
	}
	if ref == "" {
		return Snapshot{}, Errorf(Invalid, "no snapshot name given")
	}
	s, err := m.ports.Snapshots.GetSnapshot(ctx, ref)
	if errors.Is(err, ErrNotFound) {
		return s, Errorf(NotFound, "no snapshot named %q", ref).WithHint("`banger snapshot list` shows your snapshots")
	}
	return s, err
}

// lockedSnapshot loads snapshot ref, takes its lock (exclusive or shared)
// and loads it again: an operation that waited sees what the one before
// it left (it may have deleted it).
func (m *Manager) lockedSnapshot(ctx context.Context, ref string, exclusive bool) (Snapshot, func(), error) {
	s, err := m.GetSnapshot(ctx, ref)
	if err != nil {
		return Snapshot{}, nil, err
	}
	unlock := m.lockSnapshot(s.ID, exclusive)
	if s, err = m.GetSnapshot(ctx, s.ID); err != nil {
		unlock()
		return Snapshot{}, nil, err
	}
	return s, unlock, nil
}

// DeleteSnapshot removes a snapshot and its files. VMs forked from it keep
// their disks.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref string) error {
	s, unlock, err := m.lockedSnapshot(ctx, ref, true)
	if err != nil {
		return err
	}
	defer unlock()
	return m.removeSnapshot(context.WithoutCancel(ctx), s)
}

// removeSnapshot deletes s's record, then its files; the caller holds its
// lock exclusively. Files left by a failure or a crash in between belong
// to no snapshot, and reconcile removes them.
func (m *Manager) removeSnapshot(ctx context.Context, s Snapshot) error {
	if err := m.ports.Snapshots.DeleteSnapshot(ctx, s.ID); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete snapshot %q: %w", s.Name, err)
	}
	if err := m.ports.SnapshotFiles.Remove(s.ID); err != nil {
		m.ports.Log.Warn("remove snapshot files; the daemon's next start removes them", "snapshot", s.Name, "err", err)
	}
	m.mu.Lock()
	delete(m.snapLocks, s.ID)
	m.mu.Unlock()
	m.ports.Log.Info("snapshot deleted", "snapshot", s.Name)
	return nil
}

// snapshotsOf lists the snapshots of VM id a delete would orphan: its own,
// not golden ones (those serve the image, not the VM).
func (m *Manager) snapshotsOf(ctx context.Context, id string) ([]Snapshot, error) {
	if m.ports.Snapshots == nil {
		return nil, nil
	}
	all, err := m.ports.Snapshots.ListSnapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	var own []Snapshot
	for _, s := range all {
		if s.VMID == id && !s.Golden {
			own = append(own, s)
		}
	}
	return own, nil
}

// removeSnapshotsOf deletes the snapshots of a VM being deleted.
func (m *Manager) removeSnapshotsOf(ctx context.Context, snaps []Snapshot) error {
	for _, s := range snaps {
		unlock := m.lockSnapshot(s.ID, true)
		err := m.removeSnapshot(ctx, s)
		unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// snapshotsAvailable refuses snapshot operations on a daemon without them.
func (m *Manager) snapshotsAvailable() error {
	if m.ports.Snapshots == nil || m.ports.SnapshotFiles == nil {
		return Errorf(Unavailable, "this daemon has no snapshot support").
			WithHint("`banger doctor` says what is missing")
	}
	return nil
}

// restorer is the driver, when it can start VMs from snapshots.
func (m *Manager) restorer() (Driver, error) {
	driver, err := m.driver()
	if err != nil {
		return nil, err
	}
	if _, ok := driver.(vmm.Restorer); !ok {
		return nil, Errorf(Unavailable, "the %s driver cannot restore snapshots", driver.Name()).
			WithHint("`banger doctor` shows what the VMM driver supports")
	}
	return driver, nil
}

// stager reports an operation's stages with the time since it began.
type stager struct {
	vm    string
	p     Progress
	now   func() time.Time
	start time.Time
}

func (m *Manager) stager(vm string, p Progress) stager {
	return stager{vm: vm, p: p, now: m.ports.Now, start: m.ports.Now()}
}

func (s stager) report(stage, msg string) {
	elapsed := s.now().Sub(s.start).Round(time.Millisecond)
	s.p(Report{VM: s.vm, Stage: stage, Message: fmt.Sprintf("%s (%s)", msg, elapsed)})
}
