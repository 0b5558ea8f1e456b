package lifecycle

import (
	"context"
	"fmt"

	"github.com/banger-dev/banger/internal/vmm"
)

// Pause stops a running VM's vCPUs; its VMM, memory and devices stay, and
// Resume carries on where it stopped. A paused VM stays paused.
func (m *Manager) Pause(ctx context.Context, ref string) (VM, error) {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	switch vm.State {
	case Paused:
		return vm, nil
	case Running:
	default:
		return VM{}, Errorf(Precondition, "vm %q is %s; only a running VM can be paused", vm.Name, vm.State).
			WithHint("`banger vm start " + vm.Name + "` starts it")
	}
	pauser, err := m.pauserOf(vm)
	if err != nil {
		return VM{}, err
	}
	if err := pauser.Pause(ctx); err != nil {
		return VM{}, fmt.Errorf("pause vm %q: %w", vm.Name, err)
	}
	m.crash(CrashPausePaused)
	if err := m.record(ctx, &vm, Paused); err != nil {
		// Unrecorded, the pause would look like a hung VM: undo it.
		m.resumeAfterFailure(vm, pauser)
		return VM{}, err
	}
	m.ports.Log.Info("vm paused", "vm", vm.Name)
	return vm, nil
}

// Resume runs a paused VM's vCPUs again; a running VM is left as it is.
func (m *Manager) Resume(ctx context.Context, ref string) (VM, error) {
	vm, unlock, err := m.locked(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	defer unlock()
	switch vm.State {
	case Running:
		return vm, nil
	case Paused:
	default:
		return VM{}, Errorf(Precondition, "vm %q is %s; only a paused VM can be resumed", vm.Name, vm.State).
			WithHint("`banger vm start " + vm.Name + "` starts it")
	}
	pauser, err := m.pauserOf(vm)
	if err != nil {
		return VM{}, err
	}
	if err := pauser.Resume(ctx); err != nil {
		return VM{}, fmt.Errorf("resume vm %q: %w", vm.Name, err)
	}
	if err := m.record(ctx, &vm, Running); err != nil {
		return VM{}, err
	}
	m.ports.Log.Info("vm resumed", "vm", vm.Name)
	return vm, nil
}

// pauserOf is the VMM of vm, which must be one this daemon supervises and
// can pause.
func (m *Manager) pauserOf(vm VM) (vmm.Pauser, error) {
	inst := m.Instance(vm.ID)
	if inst == nil {
		return nil, Errorf(Precondition, "vm %q has no VMM this daemon supervises", vm.Name).
			WithHint("`banger vm restart " + vm.Name + "` boots it under this daemon")
	}
	pauser, ok := inst.(vmm.Pauser)
	if !ok {
		return nil, Errorf(Precondition, "the %s driver cannot pause vm %q", vm.VMM, vm.Name).
			WithHint("`banger doctor` shows what the VMM driver supports; `banger vm stop " + vm.Name + "` stops it instead")
	}
	return pauser, nil
}

// resumeAfterFailure resumes a VMM this operation paused and cannot leave
// paused; a failure is logged (the VM is then recorded as it was, and a
// `banger vm resume` may still help).
func (m *Manager) resumeAfterFailure(vm VM, pauser vmm.Pauser) {
	ctx, cancel := cleanupContext()
	defer cancel()
	if err := pauser.Resume(ctx); err != nil {
		m.ports.Log.Error("resume vm after a failure", "vm", vm.Name, "err", err)
	}
}
