package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/vmm"
)

// A boot is a list of named steps, each with its undo. A failure at step k
// undoes steps k-1..1 in that order (a step cleans up its own partial work
// before it returns an error) and records the VM failed. A daemon that dies
// between steps leaves the VM recorded starting, with the VMM's pid once it
// exists: reconcile stops that VMM and records the VM failed.
type bootStep struct {
	name string
	// crash is the crash point passed once the step is done ("" none).
	crash string
	do    func(ctx context.Context, b *booting) error
	undo  func(ctx context.Context, b *booting) // nil: nothing to undo
}

// booting is what one boot carries from step to step.
type booting struct {
	vm       *VM
	img      Image
	mode     bootMode
	driver   Driver
	spec     vmm.LaunchSpec
	diskLock *os.File
	inst     vmm.Instance
	agent    string // the agent's version once it answered
	p        Progress
}

// bootMode says how a boot starts the guest. The zero mode boots the
// kernel, sets the guest up and records a failure as Failed.
type bootMode struct {
	// from, when set, starts the VMM from this snapshot instead of booting
	// the kernel: the restore step replaces the launch step.
	from *Snapshot
	// reidentify gives a restored guest its own identity (fork, warm
	// create) in place of the guest setup. Without it a restored guest is
	// the snapshot's own VM, set up already, and is left as it was
	// (rollback).
	reidentify bool
	// golden, on a kernel boot, makes the image's golden snapshot once the
	// agent answers, before the guest setup makes the guest this VM's.
	golden *goldenPlan
	// failTo is the state a failed boot is recorded in ("" is Failed).
	// Creating: a new VM whose restore failed, about to be undone or booted
	// cold from a fresh disk; a daemon that dies meanwhile undoes it.
	failTo State
}

// The boot's step names; tests refer to them.
const (
	stepRecordStarting = "record-starting"
	stepLockDisk       = "lock-disk"
	stepRunDir         = "run-dir"
	stepAttachDisk     = "attach-disk"
	stepAttachNetwork  = "attach-network"
	stepLaunch         = "launch"
	stepRestore        = "restore"
	stepRecordLaunched = "record-launched"
	stepWaitAgent      = "wait-agent"
	stepGolden         = "golden"
	stepGuestSetup     = "guest-setup"
	stepReidentify     = "reidentify"
	stepRecordRunning  = "record-running"
)

// bootSteps lists this manager's boot in mode. The disk and network steps
// are there only when the daemon has overlays and networking.
func (m *Manager) bootSteps(mode bootMode) []bootStep {
	steps := []bootStep{
		{name: stepRecordStarting, crash: CrashBootStarting, do: m.recordStarting},
		// First, before anything else is attached: a disk another VMM still
		// has open must not get a second one.
		{name: stepLockDisk, crash: CrashBootDiskLocked, do: m.lockDisk},
		{name: stepRunDir, do: m.makeRunDir, undo: func(_ context.Context, b *booting) { m.ports.Files.RemoveRunDir(b.vm.ID) }},
	}
	if m.ports.Overlays != nil {
		steps = append(steps, bootStep{name: stepAttachDisk, crash: CrashBootDiskAttached, do: m.attachDisk,
			undo: func(ctx context.Context, b *booting) { m.ports.Overlays.Detach(ctx, b.vm.ID) }})
	}
	if m.ports.Network != nil {
		steps = append(steps, bootStep{name: stepAttachNetwork, crash: CrashBootNetworkAttached, do: m.attachNetwork,
			undo: func(ctx context.Context, b *booting) { m.ports.Network.Detach(ctx, b.vm.ID) }})
	}
	start := bootStep{name: stepLaunch, do: m.launch, undo: m.killLaunched}
	if mode.from != nil {
		start = bootStep{name: stepRestore, do: m.restoreVMM, undo: m.killLaunched}
	}
	steps = append(steps, start,
		bootStep{name: stepRecordLaunched, crash: CrashBootLaunched, do: m.recordLaunched},
		bootStep{name: stepWaitAgent, crash: CrashBootAgentReady, do: m.waitAgent})
	switch {
	case mode.from == nil:
		if mode.golden != nil {
			steps = append(steps, bootStep{name: stepGolden, do: m.makeGolden})
		}
		steps = append(steps, bootStep{name: stepGuestSetup, do: func(ctx context.Context, b *booting) error { return m.ports.Guest.Setup(ctx, *b.vm, b.inst, b.p) }})
	case mode.reidentify:
		steps = append(steps, bootStep{name: stepReidentify, do: func(ctx context.Context, b *booting) error {
			return m.ports.Identity.Reidentify(ctx, *b.vm, b.inst, b.p)
		}})
	}
	return append(steps, bootStep{name: stepRecordRunning, crash: CrashBootRunning, do: m.recordRunning})
}

// boot launches the VMM for vm and waits for the guest agent. The caller
// holds vm's lock. On failure the VMM is gone and the VM is recorded failed.
func (m *Manager) boot(ctx context.Context, vm *VM, img Image, p Progress) error {
	return m.bootIn(ctx, vm, img, bootMode{}, p)
}

// bootIn is boot in mode: on failure the VMM is gone and the VM is
// recorded in mode.failTo.
func (m *Manager) bootIn(ctx context.Context, vm *VM, img Image, mode bootMode, p Progress) error {
	driver, err := m.driver()
	if err != nil {
		return err
	}
	// The boot continues even if the client hangs up: a half-started VM is
	// worse than a started one nobody watched.
	timeout := m.cfg.BootTimeout
	if mode.golden != nil {
		// The golden snapshot is saved within the boot: it gets as long
		// again, so that a slow save does not fail the VM's boot.
		timeout *= 2
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	b := &booting{vm: vm, img: img, mode: mode, driver: driver, spec: m.ports.Specs.LaunchSpec(*vm, img), p: p}
	defer func() {
		// The VMM inherited the disk lock; our copy goes once the launch is over.
		if b.diskLock != nil {
			_ = b.diskLock.Close()
		}
	}()
	steps := m.bootSteps(mode)
	for k, step := range steps {
		if err := step.do(bctx, b); err != nil {
			if k == 0 {
				return err // nothing happened, nothing to record
			}
			return m.bootFailed(b, steps[:k], err)
		}
		if step.crash != "" {
			m.crash(step.crash)
		}
	}
	m.setInstance(vm.ID, b.inst)
	m.watch(*vm, b.inst)
	m.ports.Forwards.Start(bctx, *vm)
	m.ports.Log.Info("vm running", "vm", vm.Name, "pid", b.inst.PID(), "agent", b.agent)
	p(Report{VM: vm.Name, Stage: "ready", Message: "guest agent answered"})
	return nil
}

func (m *Manager) recordStarting(ctx context.Context, b *booting) error {
	vm := b.vm
	vm.VMM, vm.RunDir, vm.LastError, vm.ExitStatus = b.driver.Name(), b.spec.RunDir, "", ""
	vm.clearProcess()
	if b.mode.from != nil && vm.StartedAt.IsZero() {
		// A disk restored from a snapshot is a started guest's: it must not
		// be taken for a first boot's (the overlay grows the file system of
		// a VM never started, under the restored guest's feet).
		vm.StartedAt = m.ports.Now().UTC()
	}
	return m.record(ctx, vm, Starting)
}

// lockDisk takes the disk lock. It has no undo: boot closes its copy of
// the lock however the boot ends. A refusal releases nothing, since no
// earlier step acquired anything: the run dir, disk device and tap may
// belong to the VMM that holds the disk.
func (m *Manager) lockDisk(_ context.Context, b *booting) error {
	b.p(Report{VM: b.vm.Name, Stage: "boot", Message: "starting " + b.driver.Name()})
	f, err := m.ports.Files.LockDisk(b.vm.ID)
	if err != nil {
		return diskInUse{err}
	}
	b.diskLock = f
	b.spec.HeldFiles = []*os.File{f}
	return nil
}

// diskInUse is a boot refused because another process holds the VM's disk.
type diskInUse struct{ error }

func (e diskInUse) Unwrap() error { return e.error }

func (m *Manager) makeRunDir(_ context.Context, b *booting) error {
	if err := m.ports.Files.MakeRunDir(b.vm.ID); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	return nil
}

func (m *Manager) attachDisk(ctx context.Context, b *booting) error {
	dev, err := m.ports.Overlays.Attach(ctx, *b.vm, b.img)
	if err != nil {
		return err
	}
	b.spec.RootDrive.Path = dev
	return nil
}

func (m *Manager) attachNetwork(ctx context.Context, b *booting) error {
	b.p(Report{VM: b.vm.Name, Stage: "network", Message: "attaching to " + m.ports.Network.Bridge()})
	iface, args, err := m.ports.Network.Attach(ctx, *b.vm)
	if err != nil {
		return err
	}
	b.spec.Network = []vmm.NetInterface{iface}
	b.spec.BootArgs += " " + strings.Join(args, " ")
	return nil
}

// launch starts the VMM. Its process is recorded before the driver
// configures it, so a daemon that dies from then on leaves a VMM the next
// one can find and stop.
func (m *Manager) launch(ctx context.Context, b *booting) error {
	b.spec.OnSpawn = m.recordSpawn(ctx, b)
	inst, err := b.driver.Launch(ctx, b.spec)
	if err != nil {
		return err
	}
	b.inst = inst
	return nil
}

// restoreVMM starts the VMM from the snapshot of b.mode, recording its
// process as launch does.
func (m *Manager) restoreVMM(ctx context.Context, b *booting) error {
	restorer, ok := b.driver.(vmm.Restorer)
	if !ok {
		return fmt.Errorf("the %s driver cannot restore snapshots", b.driver.Name())
	}
	s := b.mode.from
	b.p(Report{VM: b.vm.Name, Stage: "restore", Message: "restoring snapshot " + s.Name})
	b.spec.OnSpawn = m.recordSpawn(ctx, b)
	inst, err := restorer.Restore(ctx, b.spec, m.ports.SnapshotFiles.Paths(s.ID))
	if err != nil {
		return err
	}
	b.inst = inst
	return nil
}

// recordSpawn is the OnSpawn of a launch or restore: it records the VMM's
// process as soon as it exists.
func (m *Manager) recordSpawn(ctx context.Context, b *booting) func(vmm.Process) error {
	return func(proc vmm.Process) error {
		m.crash(CrashBootSpawned)
		b.vm.PID, b.vm.PIDStart = proc.PID, proc.StartTime
		if err := m.record(ctx, b.vm, Starting); err != nil {
			return err
		}
		m.crash(CrashBootPIDRecorded)
		return nil
	}
}

func (m *Manager) killLaunched(_ context.Context, b *booting) {
	if err := b.inst.Kill(); err != nil {
		m.ports.Log.Error("kill vmm after failed boot", "vm", b.vm.Name, "err", err)
	}
	b.vm.ExitStatus = b.inst.Exit().String()
}

func (m *Manager) recordLaunched(ctx context.Context, b *booting) error {
	b.vm.APISocket = apiSocketOf(b.inst)
	return m.record(ctx, b.vm, Starting)
}

// apiSocketOf asks the instance for its control socket, when it has one.
func apiSocketOf(inst vmm.Instance) string {
	if s, ok := inst.(interface{ APISocket() string }); ok {
		return s.APISocket()
	}
	return ""
}

func (m *Manager) waitAgent(ctx context.Context, b *booting) error {
	b.p(Report{VM: b.vm.Name, Stage: "agent", Message: fmt.Sprintf("waiting for the guest agent (pid %d)", b.inst.PID())})
	version, err := m.ports.Agent.Wait(ctx, b.inst)
	if err != nil {
		return err
	}
	b.agent = version
	// Its time splits a boot into the VMM and guest's part and banger's.
	b.p(Report{VM: b.vm.Name, Stage: "agent-ready", Message: "guest agent " + version + " is up; setting up the guest"})
	return nil
}

func (m *Manager) recordRunning(ctx context.Context, b *booting) error {
	b.vm.StartedAt = m.ports.Now().UTC()
	return m.record(ctx, b.vm, Running)
}

// bootFailed undoes done (the steps that completed), in reverse, records
// the VM failed with the reason, and returns the error to show.
func (m *Manager) bootFailed(b *booting, done []bootStep, cause error) error {
	ctx, cancel := cleanupContext()
	defer cancel()
	for i := len(done) - 1; i >= 0; i-- {
		if done[i].undo != nil {
			done[i].undo(ctx, b)
		}
	}
	vm := b.vm
	vm.LastError, vm.StoppedAt = cause.Error(), m.ports.Now().UTC()
	vm.clearProcess()
	to := b.mode.failTo
	if to == "" {
		to = Failed
	}
	if err := m.record(ctx, vm, to); err != nil {
		m.ports.Log.Error("record failed boot", "vm", vm.Name, "err", err)
	}
	var refused diskInUse
	if errors.As(cause, &refused) {
		m.ports.Log.Warn("vm boot refused", "vm", vm.Name, "err", cause)
		return Errorf(Precondition, "vm %q cannot start: %v; two VMMs on one disk would corrupt it", vm.Name, refused.error).
			WithHint("stop that process first (`banger daemon status` lists VMM processes the daemon does not supervise), then `banger vm start " + vm.Name + "`")
	}
	m.ports.Log.Warn("vm boot failed", "vm", vm.Name, "err", cause)
	msg := cause.Error()
	// Add the console tail unless the driver's error already quotes it.
	if tail := m.ports.Specs.ConsoleExcerpt(vm.ID); tail != "" && !strings.Contains(msg, lastLine(tail)) {
		msg += "; serial console ends with:\n" + tail
	}
	if b.mode.from != nil {
		err := Errorf(Precondition, "vm %q failed to start from snapshot %q: %s", vm.Name, b.mode.from.Name, msg)
		if to == Creating {
			return err // the caller undoes the VM, or boots it cold
		}
		return err.WithHint(fmt.Sprintf("`banger vm logs %s` shows the console; `banger vm start %s` boots its disk (now the snapshot's) cold", vm.Name, vm.Name))
	}
	return Errorf(Precondition, "vm %q failed to boot: %s", vm.Name, msg).
		WithHint(fmt.Sprintf("`banger vm logs %s` shows the console; `banger vm start %s` retries, `banger vm delete %s` removes it", vm.Name, vm.Name, vm.Name))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
