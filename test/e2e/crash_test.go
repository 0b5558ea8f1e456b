package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/store"
)

// crashCase kills the daemon at step (a lifecycle.Crash* name) during one
// lifecycle command: flow is create, start, stop, delete, pause, snapshot,
// rollback or fork.
type crashCase struct {
	flow, step string
}

// crashCases are the crash points reachable without root: the disk-attach
// and network-attach steps need overlays and taps.
var crashCases = []crashCase{
	{"create", lifecycle.CrashCreateRecorded},
	{"create", lifecycle.CrashCreateDiskReady},
	{"create", lifecycle.CrashBootStarting},
	{"create", lifecycle.CrashBootDiskLocked},
	{"create", lifecycle.CrashBootSpawned},
	{"create", lifecycle.CrashBootPIDRecorded},
	{"create", lifecycle.CrashBootLaunched},
	{"create", lifecycle.CrashBootAgentReady},
	{"create", lifecycle.CrashBootRunning},
	{"start", lifecycle.CrashBootStarting},
	{"start", lifecycle.CrashBootDiskLocked},
	{"start", lifecycle.CrashBootSpawned},
	{"start", lifecycle.CrashBootPIDRecorded},
	{"start", lifecycle.CrashBootLaunched},
	{"start", lifecycle.CrashBootAgentReady},
	{"start", lifecycle.CrashBootRunning},
	{"stop", lifecycle.CrashStopStopping},
	{"stop", lifecycle.CrashStopVMMGone},
	{"stop", lifecycle.CrashStopReleased},
	{"delete", lifecycle.CrashDeleteDeleting},
	{"delete", lifecycle.CrashDeleteFilesRemoved},
}

// TestDaemonCrashAtEveryStepIsReconciled kills the daemon (SIGKILL) at each
// named step of create, start, stop and delete, lets the next command start
// a fresh daemon, and checks what it finds: no VMM without a live VM row,
// never two VMMs for one VM, no run dir or state dir without its VM, every
// VM's recorded state true to its process, and a start and delete that
// work afterwards.
func TestDaemonCrashAtEveryStepIsReconciled(t *testing.T) {
	for _, c := range crashCases {
		t.Run(c.flow+"/"+c.step, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "crashed")
			h := newHost(t, "BANGER_DAEMON="+bins.CrashDaemon, "BANGER_TEST_CRASH_AT="+c.step, "BANGER_TEST_CRASH_MARK="+mark)
			crashAndCheck(t, h, c, mark, "")
		})
	}
}

// snapshotCrashCases are the crash points of pause, snapshot, rollback
// and fork. Their VMs are created --cold, so no golden snapshot passes the
// snapshot crash points before the command under test.
var snapshotCrashCases = []crashCase{
	{"pause", lifecycle.CrashPausePaused},
	{"snapshot", lifecycle.CrashSnapshotSaving},
	{"snapshot", lifecycle.CrashSnapshotStateWritten},
	{"snapshot", lifecycle.CrashSnapshotFilesWritten},
	{"rollback", lifecycle.CrashRollbackStopped},
	{"rollback", lifecycle.CrashRollbackDiskRestored},
	{"fork", lifecycle.CrashForkRecorded},
	{"fork", lifecycle.CrashForkDiskReady},
}

// TestDaemonCrashMidSnapshotIsReconciled is the crash test for snapshots:
// besides the checks of every crash case, no snapshot is left half-saved
// (a record still saving, files without a record, a record without
// files), no VM is left paused by a save that never finished, and no
// half-made fork survives.
func TestDaemonCrashMidSnapshotIsReconciled(t *testing.T) {
	for _, c := range snapshotCrashCases {
		t.Run(c.flow+"/"+c.step, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "crashed")
			h := newHost(t, "BANGER_DAEMON="+bins.CrashDaemon, "BANGER_TEST_CRASH_AT="+c.step, "BANGER_TEST_CRASH_MARK="+mark)
			crashAndCheck(t, h, c, mark, "")
		})
	}
}

// netCrashCases run with VM networking (bridge, taps, leases, NAT) in a
// network namespace: the steps that hold a tap, and the network step.
var netCrashCases = []crashCase{
	{"create", lifecycle.CrashBootNetworkAttached},
	{"create", lifecycle.CrashBootSpawned},
	{"create", lifecycle.CrashBootAgentReady},
	{"start", lifecycle.CrashBootNetworkAttached},
	{"stop", lifecycle.CrashStopVMMGone},
	{"stop", lifecycle.CrashStopReleased},
	{"delete", lifecycle.CrashDeleteDeleting},
	{"delete", lifecycle.CrashDeleteFilesRemoved},
}

// TestDaemonCrashWithNetworkingIsReconciled is the root tier of the crash
// test: besides the checks without networking, no tap outlives its VMM.
func TestDaemonCrashWithNetworkingIsReconciled(t *testing.T) {
	for _, c := range netCrashCases {
		t.Run(c.flow+"/"+c.step, func(t *testing.T) {
			mark := filepath.Join(t.TempDir(), "crashed")
			h, ns := netnsHostWith(t, bins.CrashDaemon, "BANGER_TEST_CRASH_AT="+c.step, "BANGER_TEST_CRASH_MARK="+mark)
			crashAndCheck(t, h, c, mark, ns)
		})
	}
}

// crashAndCheck runs c's flow on h until the daemon kills itself at c's
// step, then checks what the next daemon makes of it, and that the VM can
// still be started and deleted. ns, when set, is the daemon's network
// namespace, whose taps are checked too.
func crashAndCheck(t *testing.T, h *host, c crashCase, mark, ns string) {
	t.Helper()
	const name = "crashy"
	create := []string{"vm", "create", "--name", name, "--memory", "128", "--disk", "64M"}
	cold := append(slices.Clone(create), "--cold")
	var action []string
	shownVM := name // the VM the CLI's hint names
	switch c.flow {
	case "create":
		action = create
	case "start":
		h.must(append(create, "--no-start")...)
		action = []string{"vm", "start", name}
	case "stop":
		h.must(create...)
		action = []string{"vm", "stop", name}
	case "delete":
		h.must(create...)
		action = []string{"vm", "delete", "--force", name}
	case "pause":
		h.must(cold...)
		action = []string{"vm", "pause", name}
	case "snapshot":
		h.must(cold...)
		action = []string{"vm", "snapshot", name, "--name", "snap"}
	case "rollback":
		h.must(cold...)
		h.must("vm", "snapshot", name, "--name", "snap")
		action = []string{"vm", "rollback", name, "snap", "--yes"}
	case "fork":
		h.must(cold...)
		h.must("vm", "snapshot", name, "--name", "snap")
		action = []string{"vm", "fork", "snap", "--name", "forky"}
		shownVM = "forky"
	}
	h.must("vm", "list") // `daemon status` alone does not start a daemon
	daemonPID := h.daemonPID()
	_, errOut, code := h.run(action...)
	if _, err := os.Stat(mark); err != nil {
		t.Fatalf("the daemon never reached %s (exit %d): %s", c.step, code, errOut)
	}
	if code == 0 {
		t.Fatalf("banger %s succeeded although its daemon was killed", strings.Join(action, " "))
	}
	// The CLI says what happened and where to look (item 10).
	for _, want := range []string{"the daemon stopped", filepath.Join(h.stateDir(), "bangerd.log"), "`banger vm show " + shownVM + "`"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the error does not say %q:\n%s", want, errOut)
		}
	}
	eventually(t, 10*time.Second, "the killed daemon to be gone", func() bool { return syscall.Kill(daemonPID, 0) != nil })

	h.must("vm", "list") // a new daemon, which reconciles
	h.checkConsistent(t, ns)
	vm, exists := h.findVM(name)
	if c.step == lifecycle.CrashBootAgentReady {
		// Its agent had answered: it is powered off, not killed (item 11).
		serial, _ := os.ReadFile(filepath.Join(h.stateDir(), "vms", vm.ID, "serial.log"))
		if !bytes.Contains(serial, []byte("exiting with code 0")) {
			t.Errorf("the booted VMM was not powered off cleanly; serial log:\n%s", serial)
		}
	}

	h.checkSnapshotFlow(t, c, vm, exists)

	// What the crash left is usable: it starts and goes away.
	if exists {
		if vm.State == api.VMPaused {
			h.must("vm", "resume", name)
		}
		if h.vm(name).State != api.VMRunning {
			h.must("vm", "start", name)
		}
		h.checkConsistent(t, ns)
		h.must("vm", "delete", "--force", name)
	}
	h.checkConsistent(t, ns)
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Fatalf("processes left after delete: %v", left)
	}
	for _, dir := range []string{h.runDir() + "/vms", h.stateDir() + "/vms"} {
		if left := entries(dir); len(left) != 0 {
			t.Fatalf("%s left after delete: %v", dir, left)
		}
	}
}

// checkSnapshotFlow checks what a crash in a snapshot flow left of the
// VM, which exists after every such flow.
func (h *host) checkSnapshotFlow(t *testing.T, c crashCase, vm api.VM, exists bool) {
	t.Helper()
	switch c.flow {
	case "pause", "snapshot", "rollback", "fork":
	default:
		return
	}
	if !exists {
		t.Fatalf("vm %s is gone after a crash in %s", vm.Name, c.flow)
	}
	switch {
	case c.flow == "fork":
		// A fork recorded creating is undone, not adopted.
		if f, ok := h.findVM("forky"); ok {
			t.Errorf("the half-made fork survived: %+v", f)
		}
	case vm.State == api.VMRunning:
		// Running means running: a VMM left paused by the crash was
		// resumed, or this exec hangs until the agent timeout.
		if out, errOut, code := h.run("vm", "exec", vm.Name, "--", "echo", "alive"); code != 0 || strings.TrimSpace(out) != "alive" {
			t.Errorf("exec in %s after the crash: exit %d, %q %s", vm.Name, code, out, errOut)
		}
	case vm.State == api.VMPaused && c.flow == "pause":
		// The pause took: recorded so, and resumable.
	case c.flow == "rollback" && vm.State == api.VMStopped:
		// Stopped for its rollback: its disk is the old one or the
		// snapshot's, whole either way, and it starts below.
	default:
		t.Errorf("vm %s is %s after a crash in %s", vm.Name, vm.State, c.flow)
	}
	if c.flow == "snapshot" {
		if own, _ := h.snapshots(); len(own) != 0 {
			t.Errorf("a snapshot whose save was cut short survived: %+v", own)
		}
	}
}

// findVM returns the VM called name, if the daemon has one.
func (h *host) findVM(name string) (api.VM, bool) {
	for _, vm := range h.vms() {
		if vm.Name == name {
			return vm, true
		}
	}
	return api.VM{}, false
}

func (h *host) vms() []api.VM {
	h.t.Helper()
	var list api.VMList
	if err := json.Unmarshal([]byte(h.must("vm", "list", "--json")), &list); err != nil {
		h.t.Fatal(err)
	}
	return list.VMs
}

// checkConsistent asserts that the daemon's records and the host agree.
// ns, when set, is the daemon's network namespace: every tap there must
// belong to a running VM.
func (h *host) checkConsistent(t *testing.T, ns string) {
	t.Helper()
	vms := map[string]api.VM{}
	for _, vm := range h.vms() {
		vms[vm.ID] = vm
	}
	vmms := h.vmmsByVM()
	for id, pids := range vmms {
		vm, ok := vms[id]
		switch {
		case len(pids) > 1:
			t.Errorf("vm %s has %d VMMs: %v", id, len(pids), pids)
		case !ok:
			t.Errorf("VMM pid %v runs for vm %s, which the daemon does not know", pids, id)
		case !hasVMM(vm.State) || vm.PID != pids[0]:
			t.Errorf("VMM pid %d runs for vm %s, recorded %s with pid %d", pids[0], vm.Name, vm.State, vm.PID)
		}
	}
	for id, vm := range vms {
		if hasVMM(vm.State) && len(vmms[id]) == 0 {
			t.Errorf("vm %s is recorded %s (pid %d) but has no VMM", vm.Name, vm.State, vm.PID)
		}
		if !hasVMM(vm.State) && vm.PID != 0 {
			t.Errorf("vm %s is %s but records pid %d", vm.Name, vm.State, vm.PID)
		}
		if !hasVMM(vm.State) && vm.State != api.VMStopped && vm.State != api.VMFailed {
			t.Errorf("vm %s was left %s", vm.Name, vm.State)
		}
	}
	for _, id := range entries(h.runDir() + "/vms") {
		if vm, ok := vms[id]; !ok || !hasVMM(vm.State) {
			t.Errorf("run dir of vm %s without a running VM (%+v)", id, vm)
		}
	}
	for _, id := range entries(h.stateDir() + "/vms") {
		if _, ok := vms[id]; !ok {
			t.Errorf("state dir of vm %s without its VM", id)
		}
	}
	if ns != "" {
		running := map[string]bool{}
		for id, vm := range vms {
			if hasVMM(vm.State) {
				running[network.TapName(id)] = true
			}
		}
		for _, tap := range tapsIn(t, ns) {
			if !running[tap] {
				t.Errorf("tap %s without a running VM", tap)
			}
		}
	}
	h.checkSnapshotsConsistent(t)
	var status struct {
		Info api.DaemonInfo `json:"info"`
	}
	if err := json.Unmarshal([]byte(h.must("daemon", "status", "--json")), &status); err != nil {
		t.Fatal(err)
	}
	if len(status.Info.Orphans) != 0 {
		t.Errorf("the daemon reports unsupervised VMMs: %+v", status.Info.Orphans)
	}
}

// checkSnapshotsConsistent asserts that every snapshot is ready with its
// files there, and every snapshot dir belongs to a snapshot.
func (h *host) checkSnapshotsConsistent(t *testing.T) {
	t.Helper()
	own, golden := h.snapshots()
	ids := map[string]bool{}
	for _, s := range append(own, golden...) {
		ids[s.ID] = true
		if s.State != api.SnapshotReady {
			t.Errorf("snapshot %s was left %s", s.Name, s.State)
		}
		if _, err := os.Stat(filepath.Join(h.snapshotDir(s.ID), "state")); err != nil {
			t.Errorf("snapshot %s has no state file: %v", s.Name, err)
		}
	}
	for _, id := range entries(filepath.Join(h.stateDir(), "snapshots")) {
		if !ids[id] {
			t.Errorf("snapshot dir %s without its snapshot", id)
		}
	}
}

// tapsIn lists banger's taps in namespace ns.
func tapsIn(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v %s", err, out)
	}
	var taps []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if strings.HasPrefix(name, network.TapPrefix) {
			taps = append(taps, name)
		}
	}
	return taps
}

// hasVMM says a VM recorded in state s has a VMM: running, or paused.
func hasVMM(s api.VMState) bool { return s == api.VMRunning || s == api.VMPaused }

// vmmsByVM maps VM IDs to the live VMM processes started for them: those
// whose command line points into the VM's run dir, less their own children
// (the fake's stand-in guest).
func (h *host) vmmsByVM() map[string][]int {
	ids := map[int]string{}
	prefix := h.runDir() + "/vms/"
	for _, pid := range h.vmmPIDs() {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		i := bytes.Index(cmd, []byte(prefix))
		if i < 0 {
			continue
		}
		id, _, _ := strings.Cut(string(cmd[i+len(prefix):]), "/")
		ids[pid] = id
	}
	out := map[string][]int{}
	for pid, id := range ids {
		if _, childOfVMM := ids[ppid(pid)]; !childOfVMM {
			out[id] = append(out[id], pid)
		}
	}
	for _, pids := range out {
		slices.Sort(pids)
	}
	return out
}

func ppid(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// TestSecondVMMOnOneDiskIsRefused: a VMM the daemon lost track of (its row
// says stopped and its run dir is gone, as after the pre-fix leak) still
// holds its disk's lock, so `vm start` refuses to boot a second VMM on that
// disk and names the holder.
func TestSecondVMMOnOneDiskIsRefused(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "held", "--memory", "128", "--disk", "64M")
	vm := h.vm("held")
	daemonPID := h.daemonPID()
	if err := syscall.Kill(daemonPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "daemon to die", func() bool { return syscall.Kill(daemonPID, 0) != nil })
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(h.stateDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	row, err := st.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	upd := row.Observed()
	upd.State, upd.PID, upd.PIDStart, upd.APISocket = lifecycle.Stopped, 0, 0, ""
	if err := st.UpdateVMState(ctx, vm.ID, upd); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.runDir(), "vms", vm.ID)); err != nil {
		t.Fatal(err)
	}

	_, errOut, code := h.run("vm", "start", "held")
	if code == 0 {
		t.Fatal("a second VMM was started on a disk whose VMM still runs")
	}
	want := fmt.Sprintf("locked by pid %d", vm.PID)
	if !strings.Contains(errOut, want) || !strings.Contains(errOut, "two VMMs on one disk") {
		t.Fatalf("the refusal does not name the holder (%q): %s", want, errOut)
	}
	if got := h.vmmsByVM()[vm.ID]; len(got) != 1 || got[0] != vm.PID {
		t.Fatalf("VMMs of the VM after the refused start: %v, want only %d", got, vm.PID)
	}
	if got := h.vm("held"); got.State != api.VMFailed || !strings.Contains(got.LastError, want) {
		t.Fatalf("the refused VM's record: %+v", got)
	}
	// Once that VMM is gone the disk is free again.
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the old VMM to die", func() bool { return !processRuns(vm.PID) })
	h.must("vm", "start", "held")
	h.must("vm", "delete", "--force", "held")
}

// processRuns reports whether pid runs (a zombie does not).
func processRuns(pid int) bool {
	return syscall.Kill(pid, 0) == nil && !isZombie(pid)
}

// TestAdoptedVMMKilledIsNotACleanExit: a VMM adopted after a daemon restart
// is not the daemon's child, so its exit status cannot be read. When it is
// SIGKILLed the VM is recorded failed with that said plainly, not as
// "exited with code -1" (issue 14, item 9).
func TestAdoptedVMMKilledIsNotACleanExit(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "adoptee", "--memory", "128", "--disk", "64M")
	vm := h.vm("adoptee")
	daemonPID := h.daemonPID()
	if err := syscall.Kill(daemonPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "daemon to die", func() bool { return syscall.Kill(daemonPID, 0) != nil })
	if got := h.vm("adoptee"); got.State != api.VMRunning || got.PID != vm.PID {
		t.Fatalf("not adopted: %+v", got)
	}
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the daemon to notice", func() bool { return h.vm("adoptee").State != api.VMRunning })
	got := h.vm("adoptee")
	if got.State != api.VMFailed || got.ExitStatus != "exit status unknown (not our child)" ||
		!strings.Contains(got.LastError, "not the daemon's child") || strings.Contains(got.LastError, "code -1") {
		t.Fatalf("adopted VMM killed: state %s, exit status %q, last error %q", got.State, got.ExitStatus, got.LastError)
	}
	h.must("vm", "delete", "--force", "adoptee")
}

// uncoveredCrashPoints are the crash points no case here reaches, and why.
var uncoveredCrashPoints = map[string]string{
	lifecycle.CrashBootDiskAttached: "dm-snapshot overlays need device-mapper, which these hosts lack",
}

// TestEveryCrashPointHasACase reads the Crash* constants from the
// lifecycle's source, so a crash point added there without a crash case
// here (or an exemption saying why) fails.
func TestEveryCrashPointHasACase(t *testing.T) {
	names := crashPointsDeclared(t)
	if len(names) < 20 {
		t.Fatalf("found only %d crash points in crashpoints.go: %v", len(names), names)
	}
	covered := map[string]bool{}
	for _, set := range [][]crashCase{crashCases, snapshotCrashCases, netCrashCases} {
		for _, c := range set {
			covered[c.step] = true
		}
	}
	for _, name := range names {
		if !covered[name] && uncoveredCrashPoints[name] == "" {
			t.Errorf("crash point %q has no crash case (add one, or an entry in uncoveredCrashPoints saying why)", name)
		}
	}
}

// crashPointsDeclared returns the values of the string constants named
// Crash* in internal/lifecycle/crashpoints.go.
func crashPointsDeclared(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join("..", "..", "internal", "lifecycle", "crashpoints.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, decl := range f.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, id := range vs.Names {
				if !strings.HasPrefix(id.Name, "Crash") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("crash point %s is not a string literal", id.Name)
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, v)
			}
		}
	}
	return names
}
