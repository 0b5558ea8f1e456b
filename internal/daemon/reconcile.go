package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
)

// hostProcesses is the lifecycle's Processes: the VMMs of this layout,
// found through /proc.
type hostProcesses struct{ runDir string }

func (h hostProcesses) Scan() map[string]lifecycle.Process { return vmmProcesses(h.runDir) }

func (hostProcesses) Alive(pid int) bool { return processAlive(pid) }

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// CleanLeftovers removes run and state dirs of VMs the database does not
// know (a delete interrupted before its row went, or a create undone while
// the daemon died), unless a live process still uses them.
func (f lcFiles) CleanLeftovers(known map[string]bool) {
	live := vmmProcesses(f.layout.VMsRunDir())
	for _, parent := range []string{f.layout.VMsRunDir(), f.layout.VMsStateDir()} {
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
				f.log.Info("removed leftover files of a deleted vm", "dir", filepath.Join(parent, e.Name()))
			}
		}
	}
}

// vmmProcesses maps VM IDs to live processes whose command line points into
// runDir/<id>/ — the VMMs this layout launched. A VMM's own children (a
// jailer's firecracker, the fake's stand-in guest) also match; the process
// reported for an ID is the one whose parent is not itself a match.
func vmmProcesses(runDir string) map[string]lifecycle.Process {
	type proc struct {
		lifecycle.Process
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
			Process: lifecycle.Process{PID: pid, VMID: id, Cmdline: strings.ReplaceAll(string(bytes.TrimRight(cmd, "\x00")), "\x00", " ")},
			ppid:    parentPID(pid),
		}
	}
	out := map[string]lifecycle.Process{}
	for _, p := range matches {
		if _, childOfMatch := matches[p.ppid]; !childOfMatch {
			out[p.VMID] = p.Process
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

// orphanList lists the VMM processes nobody supervises, for daemon.info.
func (m *vmManager) orphanList() []api.OrphanVMM {
	var out []api.OrphanVMM
	for _, p := range m.lc.Orphans() {
		out = append(out, api.OrphanVMM{PID: p.PID, VMID: p.VMID, Cmdline: p.Cmdline})
	}
	return out
}
