package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/vmm"
)

// reconcile makes the database agree with the world after a daemon start:
// VMs whose VMM survived are adopted, VMs whose VMM died are recorded
// stopped, VMMs caught mid-boot are stopped, half-done creates and deletes
// are resolved, files of deleted VMs are removed, and VMM processes nobody
// supervises are reported. It returns the VMs to autostart.
func (m *vmManager) reconcile(ctx context.Context) ([]string, error) {
	vms, err := m.d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	live := vmmProcesses(m.d.opts.Layout.VMsRunDir())
	known := map[string]bool{}
	var autostart []string
	for _, vm := range vms {
		known[vm.ID] = true
		switch vm.State {
		case store.VMRunning, store.VMStarting, store.VMStopping:
			adopted, stray := m.settleVMM(ctx, vm, live[vm.ID])
			if adopted {
				continue
			}
			if err := m.recordNoVMM(ctx, vm, stray); err != nil {
				return nil, err
			}
			if vm.Autostart && vm.State == store.VMRunning && !stray {
				autostart = append(autostart, vm.Name)
			}
		case store.VMCreating:
			// Create records the VM, clones its disk and only then boots
			// (as starting): the disk of a VM still creating may be half
			// written, so the create is undone, as a failed one would be.
			m.undoCreate(vm)
			m.log.Warn("removed a vm whose create was interrupted", "vm", vm.Name)
			delete(known, vm.ID)
		case store.VMDeleting:
			m.killRecorded(vm, live[vm.ID])
			if err := m.removeFiles(vm.ID); err != nil {
				return nil, err
			}
			if err := m.deleteRow(ctx, vm); err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			m.log.Info("finished interrupted delete", "vm", vm.Name)
		case store.VMStopped, store.VMFailed:
			if vm.Autostart {
				autostart = append(autostart, vm.Name)
			}
		}
	}
	m.cleanLeftovers(known)
	m.findOrphans()
	running := map[string]bool{}
	m.mu.Lock()
	for id := range m.instances {
		running[id] = true
	}
	m.mu.Unlock()
	if m.d.net != nil {
		m.d.net.removeStaleTaps(ctx, running)
	}
	if m.d.overlays != nil {
		m.d.overlays.cleanOrphans(ctx, running)
	}
	return autostart, nil
}

// recordNoVMM records the truth about a VM that was running, starting or
// stopping and has no VMM under this daemon now. Its run dir (sockets) goes
// unless stray: a VMM this daemon could not verify still uses it.
func (m *vmManager) recordNoVMM(ctx context.Context, vm store.VM, stray bool) error {
	upd := vm.Observed()
	clearProcess(&upd)
	upd.StoppedAt = m.d.now()
	switch {
	case stray:
		upd.State = store.VMFailed
		upd.LastError = "a VMM process this daemon cannot verify still uses this VM's files; `banger daemon status` lists it"
	case vm.State == store.VMStarting:
		upd.State = store.VMFailed
		upd.LastError = "the daemon stopped while this VM was booting; `banger vm start " + vm.Name + "` retries"
	default:
		upd.State = store.VMStopped
		if vm.State == store.VMRunning {
			upd.LastError = "the VMM was gone when the daemon restarted"
		}
	}
	if !stray {
		_ = os.RemoveAll(m.d.opts.Layout.VMRunDir(vm.ID)) // taps: removeStaleTaps in reconcile
	}
	if err := m.update(ctx, vm, upd); err != nil {
		return err
	}
	m.log.Warn("reconciled vm without a VMM", "vm", vm.Name, "was", vm.State, "now", upd.State)
	return nil
}

// settleVMM finds the VMM an earlier daemon left for vm and either adopts
// it (a running VM whose agent answers) or stops it: a VM caught mid-boot
// cannot be adopted, since nobody knows how far its boot got, and it must
// not get a second VMM. adopted says the VM now runs under this daemon;
// stray that a process still uses its run dir that could not be verified
// as its VMM, and so was left alone.
func (m *vmManager) settleVMM(ctx context.Context, vm store.VM, seen api.OrphanVMM) (adopted, stray bool) {
	inst := m.attachLeft(ctx, vm, seen)
	if inst == nil {
		return false, seen.PID > 0 && processAlive(seen.PID)
	}
	if vm.State == store.VMStarting {
		m.stopUnadoptable(ctx, vm, inst, "it was caught booting")
		return false, false
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := waitForAgent(actx, inst); err != nil {
		m.log.Warn("adopted vmm has no answering agent; killing it", "vm", vm.Name, "pid", inst.PID(), "err", err)
		m.kill(vm, inst)
		return false, false
	}
	upd := vm.Observed()
	upd.State = store.VMRunning
	if err := m.update(ctx, vm, upd); err != nil {
		m.kill(vm, inst)
		return false, false
	}
	m.setInstance(vm.ID, inst)
	m.watch(vm.ID, vm.Name, inst)
	m.startForwards(ctx, vm)
	m.log.Info("adopted running vm", "vm", vm.Name, "pid", inst.PID())
	return true, false
}

// attachLeft attaches the VMM of vm that an earlier daemon left: the
// recorded process (its pid and start time must match), else seen, the
// process whose command line names this VM's run dir and ID (a VMM spawned
// just before the daemon died, before its pid was recorded; the driver
// verifies that command line through a pidfd). nil when there is none.
func (m *vmManager) attachLeft(ctx context.Context, vm store.VM, seen api.OrphanVMM) vmm.Instance {
	if m.driver == nil {
		return nil
	}
	img, _ := m.d.store.GetImage(ctx, vm.ImageID)
	spec := m.launchSpec(vm, img)
	if vm.PID > 0 {
		inst, err := m.driver.Attach(ctx, spec, vmm.Process{PID: vm.PID, StartTime: vm.PIDStart})
		if err == nil {
			return inst
		}
		m.log.Info("recorded vmm not adoptable", "vm", vm.Name, "pid", vm.PID, "err", err)
	}
	if seen.PID <= 0 || seen.PID == vm.PID {
		return nil
	}
	inst, err := m.driver.Attach(ctx, spec, vmm.Process{PID: seen.PID})
	if err != nil {
		m.log.Warn("a process uses this vm's run dir but is not its VMM; leaving it alone", "vm", vm.Name, "pid", seen.PID, "err", err)
		return nil
	}
	m.log.Warn("found the unrecorded VMM of a vm", "vm", vm.Name, "pid", seen.PID)
	return inst
}

// stopUnadoptable ends a VMM that cannot be adopted. A guest whose agent
// answers is up and is asked to power off, with the stop timeout before the
// driver kills it; one that does not answer is killed at once. It returns
// once the process is gone.
func (m *vmManager) stopUnadoptable(ctx context.Context, vm store.VM, inst vmm.Instance, why string) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := waitForAgent(actx, inst)
	cancel()
	if err != nil {
		m.log.Warn("killing a vmm that cannot be adopted", "vm", vm.Name, "pid", inst.PID(), "why", why)
		m.kill(vm, inst)
		return
	}
	m.log.Warn("powering off a vm that cannot be adopted", "vm", vm.Name, "pid", inst.PID(), "why", why)
	if err := inst.Stop(context.WithoutCancel(ctx), m.d.opts.Config.VM.StopTimeout.Std()); err != nil {
		m.log.Error("power off unadoptable vm", "vm", vm.Name, "err", err)
		m.kill(vm, inst)
	}
}

func (m *vmManager) kill(vm store.VM, inst vmm.Instance) {
	if err := inst.Kill(); err != nil {
		m.log.Error("kill vmm", "vm", vm.Name, "pid", inst.PID(), "err", err)
	}
}

// killRecorded kills the VMM of a VM being deleted, if one verifiably is
// (see attachLeft).
func (m *vmManager) killRecorded(vm store.VM, seen api.OrphanVMM) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if inst := m.attachLeft(ctx, vm, seen); inst != nil {
		m.kill(vm, inst)
	}
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// cleanLeftovers removes run and state dirs of VMs the database does not
// know (a delete interrupted before its row went, or a create undone while
// the daemon died), unless a live process still uses them.
func (m *vmManager) cleanLeftovers(known map[string]bool) {
	live := vmmProcesses(m.d.opts.Layout.VMsRunDir())
	for _, parent := range []string{m.d.opts.Layout.VMsRunDir(), m.d.opts.Layout.VMsStateDir()} {
		entries, err := os.ReadDir(parent)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if known[e.Name()] || !e.IsDir() {
				continue
			}
			if _, busy := live[e.Name()]; busy {
				continue
			}
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err == nil {
				m.log.Info("removed leftover files of a deleted vm", "dir", filepath.Join(parent, e.Name()))
			}
		}
	}
}

// findOrphans records the VMM processes this daemon does not supervise: of
// VMs it does not know, or stray ones it could not verify as a VM's VMM.
func (m *vmManager) findOrphans() {
	var orphans []api.OrphanVMM
	for id, p := range vmmProcesses(m.d.opts.Layout.VMsRunDir()) {
		if m.instance(id) == nil {
			orphans = append(orphans, p)
			m.log.Warn("found a VMM process this daemon does not supervise; leaving it running", "pid", p.PID, "vm_id", id)
		}
	}
	m.mu.Lock()
	m.orphans = orphans
	m.mu.Unlock()
}

// vmmProcesses maps VM IDs to live processes whose command line points into
// runDir/<id>/ — the VMMs this layout launched. A VMM's own children (a
// jailer's firecracker, the fake's stand-in guest) also match; the process
// reported for an ID is the one whose parent is not itself a match.
func vmmProcesses(runDir string) map[string]api.OrphanVMM {
	type proc struct {
		api.OrphanVMM
		ppid int
	}
	matches := map[int]proc{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	prefix := []byte(runDir + "/")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		i := bytes.Index(cmd, prefix)
		if i < 0 {
			continue
		}
		id, _, _ := strings.Cut(string(cmd[i+len(prefix):]), "/")
		matches[pid] = proc{
			OrphanVMM: api.OrphanVMM{PID: pid, VMID: id, Cmdline: strings.ReplaceAll(string(bytes.TrimRight(cmd, "\x00")), "\x00", " ")},
			ppid:      parentPID(pid),
		}
	}
	out := map[string]api.OrphanVMM{}
	for _, p := range matches {
		if _, childOfMatch := matches[p.ppid]; !childOfMatch {
			out[p.VMID] = p.OrphanVMM
		}
	}
	return out
}

// parentPID reads the PPid line of /proc/<pid>/status (0 if unreadable).
func parentPID(pid int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// autostartVMs boots VMs marked autostart, one after another, in the
// background after the daemon serves.
func (m *vmManager) autostartVMs(ctx context.Context, names []string) {
	for _, name := range names {
		if _, err := m.Start(ctx, name, func(api.Event) {}); err != nil {
			m.log.Error("autostart failed", "vm", name, "err", err)
		}
	}
}

func (m *vmManager) orphanList() []api.OrphanVMM {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]api.OrphanVMM(nil), m.orphans...)
}
