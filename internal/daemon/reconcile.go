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
)

// reconcile makes the database agree with the world after a daemon start:
// VMs whose VMM survived are adopted, VMs whose VMM died are recorded
// stopped, half-done creates and deletes are resolved, files of deleted VMs
// are removed, and unknown VMM processes are reported. It returns the VMs to
// autostart.
func (m *vmManager) reconcile(ctx context.Context) ([]string, error) {
	vms, err := m.d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	var autostart []string
	for _, vm := range vms {
		known[vm.ID] = true
		switch vm.State {
		case store.VMRunning, store.VMStarting, store.VMStopping, store.VMCreating:
			if m.adopt(ctx, vm) {
				continue
			}
			upd := vm.Observed()
			upd.PID, upd.APISocket, upd.StoppedAt = 0, "", m.d.now()
			if vm.State == store.VMCreating || vm.State == store.VMStarting {
				upd.State = store.VMFailed
				upd.LastError = "the daemon stopped while this VM was booting; `banger vm start " + vm.Name + "` retries"
			} else {
				upd.State = store.VMStopped
				if vm.State == store.VMRunning {
					upd.LastError = "the VMM was gone when the daemon restarted"
				}
			}
			_ = os.RemoveAll(m.d.opts.Layout.VMRunDir(vm.ID)) // taps: removeStaleTaps below
			if err := m.update(ctx, vm, upd); err != nil {
				return nil, err
			}
			m.log.Warn("reconciled vm without a VMM", "vm", vm.Name, "was", vm.State, "now", upd.State)
			if vm.Autostart && vm.State == store.VMRunning {
				autostart = append(autostart, vm.Name)
			}
		case store.VMDeleting:
			m.killRecorded(vm)
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
	m.findOrphans(known)
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

// adopt re-attaches a VM whose VMM outlived the previous daemon. Only a
// fully running VM is adopted; one caught mid-boot or mid-create is killed,
// since nobody can tell how far its boot got.
func (m *vmManager) adopt(ctx context.Context, vm store.VM) bool {
	if vm.PID <= 0 || m.driver == nil {
		return false
	}
	img, _ := m.d.store.GetImage(ctx, vm.ImageID)
	inst, err := m.driver.Attach(ctx, m.launchSpec(vm, img), vm.PID)
	if err != nil {
		m.log.Info("vmm not adoptable", "vm", vm.Name, "pid", vm.PID, "err", err)
		return false
	}
	if vm.State != store.VMRunning && vm.State != store.VMStopping {
		_ = inst.Kill()
		return false
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := waitForAgent(actx, inst); err != nil {
		m.log.Warn("adopted vmm has no answering agent; killing it", "vm", vm.Name, "pid", vm.PID, "err", err)
		_ = inst.Kill()
		return false
	}
	upd := vm.Observed()
	upd.State = store.VMRunning
	if err := m.update(ctx, vm, upd); err != nil {
		_ = inst.Kill()
		return false
	}
	m.setInstance(vm.ID, inst)
	m.watch(vm.ID, vm.Name, inst)
	m.startForwards(ctx, vm)
	m.log.Info("adopted running vm", "vm", vm.Name, "pid", vm.PID)
	return true
}

// killRecorded kills a recorded VMM of a VM being deleted, if it is really
// that VM's VMM (Attach checks the command line).
func (m *vmManager) killRecorded(vm store.VM) {
	if vm.PID <= 0 || m.driver == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	img, _ := m.d.store.GetImage(ctx, vm.ImageID)
	if inst, err := m.driver.Attach(ctx, m.launchSpec(vm, img), vm.PID); err == nil {
		_ = inst.Kill()
	}
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

func (m *vmManager) findOrphans(known map[string]bool) {
	var orphans []api.OrphanVMM
	for id, p := range vmmProcesses(m.d.opts.Layout.VMsRunDir()) {
		if !known[id] {
			orphans = append(orphans, p)
			m.log.Warn("found a VMM process that belongs to no VM; leaving it running", "pid", p.PID, "vm_id", id)
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
