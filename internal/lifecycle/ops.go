package lifecycle

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Start boots a stopped or failed VM; a running one is left as it is.
func (m *Manager) Start(ctx context.Context, ref string, p Progress) (VM, error) {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	switch vm.State {
	case Running:
		return vm, nil
	case Stopped, Failed:
	case Paused:
		return VM{}, Errorf(Precondition, "vm %q is paused", vm.Name).WithHint("`banger vm resume " + vm.Name + "` resumes it")
	default:
		return VM{}, Errorf(Precondition, "vm %q is %s; wait for it to settle", vm.Name, vm.State)
	}
	if err := m.bootRecorded(ctx, &vm, p); err != nil {
		return VM{}, err
	}
	return vm, nil
}

// bootRecorded boots a VM that exists, with the image it was created from.
func (m *Manager) bootRecorded(ctx context.Context, vm *VM, p Progress) error {
	if !vm.State.CanBecome(Starting) {
		return Errorf(Precondition, "vm %q is %s; wait for it to settle", vm.Name, vm.State)
	}
	img, err := m.ports.Store.GetImage(ctx, vm.ImageID)
	if err != nil {
		return fmt.Errorf("vm %q: image %q: %w", vm.Name, vm.ImageName, err)
	}
	return m.boot(ctx, vm, img, p)
}

// Stop shuts a VM down: the guest is asked first unless force, and the VM is
// recorded stopped only once its VMM process is gone. timeout <= 0 means
// the configured stop timeout.
func (m *Manager) Stop(ctx context.Context, ref string, force bool, timeout time.Duration, p Progress) (VM, error) {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	if err := m.stopLocked(ctx, &vm, force, timeout, p); err != nil {
		return VM{}, err
	}
	return vm, nil
}

func (m *Manager) stopLocked(ctx context.Context, vm *VM, force bool, timeout time.Duration, p Progress) error {
	inst := m.Instance(vm.ID)
	if inst == nil {
		if vm.State.hasVMM() {
			// Recorded with a VMM that is not ours: reconcile missed it; record the truth.
			vm.StoppedAt = m.ports.Now().UTC()
			vm.clearProcess()
			return m.record(ctx, vm, Stopped)
		}
		return nil
	}
	if timeout <= 0 {
		timeout = m.cfg.StopTimeout
	}
	// A VMM whose stop fails is left as it was: running, or paused.
	was := Running
	if vm.State == Paused {
		was = Paused
	}
	if err := m.record(ctx, vm, Stopping); err != nil {
		return err
	}
	m.crash(CrashStopStopping)
	sctx := context.WithoutCancel(ctx)
	if was == Paused && !force {
		// A paused guest cannot act on the request to shut down: let it
		// run, or kill it when it cannot.
		if err := m.resumeToStop(sctx, vm, inst); err != nil {
			force = true
		} else {
			was = Running
		}
	}
	var err error
	if force {
		p(Report{VM: vm.Name, Stage: "stop", Message: "killing the VMM"})
		err = inst.Kill()
	} else {
		p(Report{VM: vm.Name, Stage: "stop", Message: fmt.Sprintf("asking the guest to shut down (up to %s)", timeout)})
		err = inst.Stop(sctx, timeout)
	}
	select {
	case <-inst.Done():
	default:
		// The process is still there: report it, keep the VM recorded as it was.
		_ = m.record(sctx, vm, was)
		return fmt.Errorf("stop vm %q: the VMM (pid %d) is still running: %v", vm.Name, inst.PID(), err)
	}
	m.crash(CrashStopVMMGone)
	m.setInstance(vm.ID, nil)
	m.releaseRuntime(sctx, vm.ID)
	m.crash(CrashStopReleased)
	vm.StoppedAt, vm.ExitStatus = m.ports.Now().UTC(), inst.Exit().String()
	vm.clearProcess()
	return m.record(sctx, vm, Stopped)
}

// resumeToStop resumes the paused VMM inst of vm before a stop.
func (m *Manager) resumeToStop(ctx context.Context, vm *VM, inst vmm.Instance) error {
	pauser, ok := inst.(vmm.Pauser)
	if !ok {
		return fmt.Errorf("the %s driver cannot resume vm %q", vm.VMM, vm.Name)
	}
	if err := pauser.Resume(ctx); err != nil {
		m.ports.Log.Warn("resume paused vm to stop it; killing it instead", "vm", vm.Name, "err", err)
		return err
	}
	return nil
}

// Restart stops the VM (if running) and boots it again.
func (m *Manager) Restart(ctx context.Context, ref string, p Progress) (VM, error) {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	if err := m.stopLocked(ctx, &vm, false, 0, p); err != nil {
		return VM{}, err
	}
	if err := m.bootRecorded(ctx, &vm, p); err != nil {
		return VM{}, err
	}
	return vm, nil
}

// Delete stops the VM if needed and removes it, its disk and its files.
// A VM with snapshots is refused unless force, which deletes them too.
// Golden snapshots made from it stay: they serve its image.
func (m *Manager) Delete(ctx context.Context, ref string, force bool, p Progress) error {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	snaps, err := m.snapshotsOf(ctx, vm.ID)
	if err != nil {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	if len(snaps) > 0 && !force {
		return Errorf(Precondition, "vm %q has %s: %s", vm.Name, plural(len(snaps), "snapshot"), snapshotNames(snaps)).
			WithHint("`banger vm delete " + vm.Name + " --force` deletes them too; `banger snapshot delete NAME` deletes one")
	}
	ctx = context.WithoutCancel(ctx)
	if m.Instance(vm.ID) != nil {
		p(Report{VM: vm.Name, Stage: "stop", Message: "stopping the VM"})
		if err := m.stopLocked(ctx, &vm, false, 0, p); err != nil {
			return err
		}
	}
	if err := m.record(ctx, &vm, Deleting); err != nil {
		return err
	}
	m.crash(CrashDeleteDeleting)
	if len(snaps) > 0 {
		p(Report{VM: vm.Name, Stage: "delete", Message: "deleting " + plural(len(snaps), "snapshot")})
		if err := m.removeSnapshotsOf(ctx, snaps); err != nil {
			return fmt.Errorf("delete vm %q: %w", vm.Name, err)
		}
	}
	p(Report{VM: vm.Name, Stage: "delete", Message: "removing disk and files"})
	if err := m.ports.Files.RemoveAll(vm.ID); err != nil {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	m.crash(CrashDeleteFilesRemoved)
	if err := m.deleteRecord(ctx, vm); err != nil {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	if m.ports.Network != nil {
		m.ports.Network.Forget(vm.Name)
	}
	m.ports.Guest.Forget(vm)
	m.mu.Lock()
	delete(m.locks, vm.ID)
	m.mu.Unlock()
	m.ports.Log.Info("vm deleted", "vm", vm.Name)
	return nil
}

// watch records the VM as stopped or failed when its VMM exits on its own
// (the guest powered off, or the process was killed behind our back).
func (m *Manager) watch(vm VM, inst vmm.Instance) {
	m.mu.Lock()
	if m.watching[inst] {
		m.mu.Unlock()
		return
	}
	m.watching[inst] = true
	m.mu.Unlock()
	go func() {
		<-inst.Done()
		unlock := m.Lock(vm.ID)
		defer unlock()
		m.mu.Lock()
		delete(m.watching, inst)
		current := m.instances[vm.ID]
		m.mu.Unlock()
		if current != inst {
			return // an operation (stop, delete) already handled this exit
		}
		m.setInstance(vm.ID, nil)
		m.exited(vm.ID, inst.Exit())
	}()
}

// exited records how the VMM of VM id ended. The caller holds its lock.
func (m *Manager) exited(id string, exit vmm.ExitStatus) {
	ctx, cancel := cleanupContext()
	defer cancel()
	vm, err := m.ports.Store.GetVM(ctx, id)
	if err != nil {
		return
	}
	vm.clearProcess()
	vm.StoppedAt, vm.ExitStatus = m.ports.Now().UTC(), exit.String()
	to := Failed
	switch {
	case exit.Clean():
		to = Stopped
	case exit.NotChild:
		// A guest that powered off and a SIGKILL look the same from here.
		vm.LastError = "the VMM exited and how it ended is unknown: it is not the daemon's child (it was adopted after a daemon restart, or started by the jailer), so its exit status cannot be read; `banger vm logs " + vm.Name + "` shows how the guest ended"
	default:
		vm.LastError = "the VMM exited unexpectedly: " + exit.String()
	}
	m.releaseRuntime(ctx, id)
	if err := m.record(ctx, &vm, to); err != nil {
		m.ports.Log.Error("record vmm exit", "vm", vm.Name, "err", err)
	}
	m.ports.Log.Warn("vmm exited", "vm", vm.Name, "exit", exit.String(), "state", to)
}

// Autostart boots VMs, one after another (reconcile says which).
func (m *Manager) Autostart(ctx context.Context, names []string) {
	for _, name := range names {
		if _, err := m.Start(ctx, name, func(Report) {}); err != nil {
			m.ports.Log.Error("autostart failed", "vm", name, "err", err)
		}
	}
}

// plural is "1 snapshot", "2 snapshots".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// snapshotNames lists snapshots by name, the first few.
func snapshotNames(snaps []Snapshot) string {
	const shown = 5
	var names []string
	for i, s := range snaps {
		if i == shown {
			names = append(names, fmt.Sprintf("and %d more", len(snaps)-shown))
			break
		}
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}
