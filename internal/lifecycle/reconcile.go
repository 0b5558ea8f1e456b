package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Reconcile makes the records agree with the world after a daemon start:
// VMs whose VMM survived are adopted (paused ones stay paused; running ones
// a snapshot left paused are resumed), VMs whose VMM died are recorded
// stopped, VMMs caught mid-boot are stopped, half-done creates and deletes
// are finished, snapshots caught saving are removed, files of deleted VMs
// and snapshots are removed, and VMM processes nobody supervises are
// reported (Orphans). It returns the VMs to autostart.
func (m *Manager) Reconcile(ctx context.Context) ([]string, error) {
	vms, err := m.ports.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	live := m.ports.Processes.Scan()
	known := map[string]bool{}
	var autostart []string
	for _, vm := range vms {
		known[vm.ID] = true
		switch vm.State {
		case Running, Paused, Starting, Stopping:
			was := vm.State
			adopted, stray := m.settleVMM(ctx, vm, live[vm.ID])
			if adopted {
				continue
			}
			if err := m.recordNoVMM(ctx, vm, stray); err != nil {
				return nil, err
			}
			if vm.Autostart && (was == Running || was == Paused) && !stray {
				autostart = append(autostart, vm.Name)
			}
		case Creating:
			// Create records the VM, makes its disk and only then boots
			// (as starting): the disk of a VM still creating may be half
			// written, so the create is undone, as a failed one would be.
			m.undoCreate(vm)
			m.ports.Log.Warn("removed a vm whose create was interrupted", "vm", vm.Name)
			delete(known, vm.ID)
		case Deleting:
			if err := m.finishDelete(ctx, vm, live[vm.ID]); err != nil {
				return nil, err
			}
		case Stopped, Failed:
			if vm.Autostart {
				autostart = append(autostart, vm.Name)
			}
		}
	}
	m.ports.Files.CleanLeftovers(known)
	if err := m.reconcileSnapshots(ctx); err != nil {
		return nil, err
	}
	m.findOrphans()
	running := map[string]bool{}
	m.mu.Lock()
	for id := range m.instances {
		running[id] = true
	}
	m.mu.Unlock()
	if m.ports.Network != nil {
		m.ports.Network.RemoveStaleTaps(ctx, running)
	}
	if m.ports.Overlays != nil {
		m.ports.Overlays.CleanOrphans(ctx, running)
	}
	return autostart, nil
}

// reconcileSnapshots removes the snapshots a save left half-made (recorded
// saving) with their files, and the snapshot files nobody owns.
func (m *Manager) reconcileSnapshots(ctx context.Context) error {
	if m.ports.Snapshots == nil || m.ports.SnapshotFiles == nil {
		return nil
	}
	all, err := m.ports.Snapshots.ListSnapshots(ctx)
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	known := map[string]bool{}
	for _, s := range all {
		if s.State == SnapshotReady {
			known[s.ID] = true
			continue
		}
		if err := m.removeSnapshot(ctx, s); err != nil {
			return err
		}
		m.ports.Log.Warn("removed a snapshot whose save was interrupted", "snapshot", s.Name, "vm", s.VMName)
	}
	m.ports.SnapshotFiles.CleanLeftovers(known)
	return nil
}

func (m *Manager) finishDelete(ctx context.Context, vm VM, seen Process) error {
	m.killLeft(vm, seen)
	// A VM recorded deleting was deleted with its snapshots (forced, or it
	// had none): those left are the interrupted delete's.
	snaps, err := m.snapshotsOf(ctx, vm.ID)
	if err != nil {
		return err
	}
	if err := m.removeSnapshotsOf(ctx, snaps); err != nil {
		return err
	}
	if err := m.ports.Files.RemoveAll(vm.ID); err != nil {
		return err
	}
	if err := m.deleteRecord(ctx, vm); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	m.ports.Log.Info("finished interrupted delete", "vm", vm.Name)
	return nil
}

// recordNoVMM records the truth about a VM that was running, starting or
// stopping and has no VMM under this daemon now. Its run dir (sockets) goes
// unless stray: a VMM this daemon could not verify still uses it.
func (m *Manager) recordNoVMM(ctx context.Context, vm VM, stray bool) error {
	was := vm.State
	vm.clearProcess()
	vm.StoppedAt = m.ports.Now().UTC()
	to := Stopped
	switch {
	case stray:
		to = Failed
		vm.LastError = "a VMM process this daemon cannot verify still uses this VM's files; `banger daemon status` lists it"
	case was == Starting:
		to = Failed
		vm.LastError = "the daemon stopped while this VM was booting; `banger vm start " + vm.Name + "` retries"
	case was == Running || was == Paused:
		vm.LastError = "the VMM was gone when the daemon restarted"
	}
	if !stray {
		m.ports.Files.RemoveRunDir(vm.ID) // taps: RemoveStaleTaps in Reconcile
	}
	if err := m.record(ctx, &vm, to); err != nil {
		return err
	}
	m.ports.Log.Warn("reconciled vm without a VMM", "vm", vm.Name, "was", was, "now", to)
	return nil
}

// settleVMM finds the VMM an earlier daemon left for vm and either adopts
// it (a running VM whose agent answers, or a paused VM) or stops it: a VM
// caught mid-boot cannot be adopted, since nobody knows how far its boot
// got, and it must not get a second VMM. adopted says the VM now runs under
// this daemon; stray that a process still uses its run dir that could not
// be verified as its VMM, and so was left alone.
func (m *Manager) settleVMM(ctx context.Context, vm VM, seen Process) (adopted, stray bool) {
	inst := m.attachLeft(ctx, vm, seen)
	if inst == nil {
		return false, seen.PID > 0 && m.ports.Processes.Alive(seen.PID)
	}
	to := Paused
	if vm.State != Paused {
		to = Running
		// A snapshot the daemon died in may have left the guest paused
		// (recorded as it was): let it run. Resuming a running guest is
		// harmless.
		if pauser, ok := inst.(vmm.Pauser); ok {
			if err := pauser.Resume(ctx); err != nil {
				m.ports.Log.Warn("resume adopted vmm", "vm", vm.Name, "pid", inst.PID(), "err", err)
			}
		}
	}
	if vm.State == Starting {
		m.stopUnadoptable(ctx, vm, inst, "it was caught booting")
		return false, false
	}
	if to == Running {
		// A paused guest's agent cannot answer; its process was verified.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := m.ports.Agent.Wait(actx, inst)
		cancel()
		if err != nil {
			m.ports.Log.Warn("adopted vmm has no answering agent; killing it", "vm", vm.Name, "pid", inst.PID(), "err", err)
			m.kill(vm, inst)
			return false, false
		}
	}
	if err := m.record(ctx, &vm, to); err != nil {
		m.kill(vm, inst)
		return false, false
	}
	m.setInstance(vm.ID, inst)
	m.watch(vm, inst)
	m.ports.Forwards.Start(ctx, vm)
	m.ports.Log.Info("adopted vm", "vm", vm.Name, "pid", inst.PID(), "state", to)
	return true, false
}

// attachLeft attaches the VMM of vm that an earlier daemon left: the
// recorded process (its pid and start time must match), else seen, the
// process whose command line names this VM's run dir and ID (a VMM spawned
// just before the daemon died, before its pid was recorded; the driver
// verifies that command line). nil when there is none.
func (m *Manager) attachLeft(ctx context.Context, vm VM, seen Process) vmm.Instance {
	if m.ports.Driver == nil {
		return nil
	}
	img, _ := m.ports.Store.GetImage(ctx, vm.ImageID)
	spec := m.ports.Specs.LaunchSpec(vm, img)
	if vm.PID > 0 {
		inst, err := m.ports.Driver.Attach(ctx, spec, vmm.Process{PID: vm.PID, StartTime: vm.PIDStart})
		if err == nil {
			return inst
		}
		m.ports.Log.Info("recorded vmm not adoptable", "vm", vm.Name, "pid", vm.PID, "err", err)
	}
	if seen.PID <= 0 || seen.PID == vm.PID {
		return nil
	}
	inst, err := m.ports.Driver.Attach(ctx, spec, vmm.Process{PID: seen.PID})
	if err != nil {
		m.ports.Log.Warn("a process uses this vm's run dir but is not its VMM; leaving it alone", "vm", vm.Name, "pid", seen.PID, "err", err)
		return nil
	}
	m.ports.Log.Warn("found the unrecorded VMM of a vm", "vm", vm.Name, "pid", seen.PID)
	return inst
}

// stopUnadoptable ends a VMM that cannot be adopted. A guest whose agent
// answers is up and is asked to power off, with the stop timeout before the
// driver kills it; one that does not answer is killed at once. It returns
// once the process is gone.
func (m *Manager) stopUnadoptable(ctx context.Context, vm VM, inst vmm.Instance, why string) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := m.ports.Agent.Wait(actx, inst)
	cancel()
	if err != nil {
		m.ports.Log.Warn("killing a vmm that cannot be adopted", "vm", vm.Name, "pid", inst.PID(), "why", why)
		m.kill(vm, inst)
		return
	}
	m.ports.Log.Warn("powering off a vm that cannot be adopted", "vm", vm.Name, "pid", inst.PID(), "why", why)
	if err := inst.Stop(context.WithoutCancel(ctx), m.cfg.StopTimeout); err != nil {
		m.ports.Log.Error("power off unadoptable vm", "vm", vm.Name, "err", err)
		m.kill(vm, inst)
	}
}

func (m *Manager) kill(vm VM, inst vmm.Instance) {
	if err := inst.Kill(); err != nil {
		m.ports.Log.Error("kill vmm", "vm", vm.Name, "pid", inst.PID(), "err", err)
	}
}

// killLeft kills the VMM of a VM being deleted, if one verifiably is (see
// attachLeft).
func (m *Manager) killLeft(vm VM, seen Process) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if inst := m.attachLeft(ctx, vm, seen); inst != nil {
		m.kill(vm, inst)
	}
}

// findOrphans records the VMM processes this daemon does not supervise: of
// VMs it does not know, or stray ones it could not verify as a VM's VMM.
func (m *Manager) findOrphans() {
	var orphans []Process
	for id, p := range m.ports.Processes.Scan() {
		if m.Instance(id) == nil {
			orphans = append(orphans, p)
			m.ports.Log.Warn("found a VMM process this daemon does not supervise; leaving it running", "pid", p.PID, "vm_id", id)
		}
	}
	m.mu.Lock()
	m.orphans = orphans
	m.mu.Unlock()
}
