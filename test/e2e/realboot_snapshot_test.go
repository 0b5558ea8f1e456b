package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/ssh"
)

// TestRealBootSnapshots runs snapshots against a real VMM and guest (QEMU
// under TCG here, Firecracker with BANGER_E2E_VMM=firecracker): rollback
// brings back a file and a running process; forks are machines of their
// own (hostname, address, MAC, machine-id, host keys), reachable by exec
// and by DNS name, the original unaffected; a paused VM refuses exec until
// resumed; a create that finds the image's golden snapshot starts from it.
func TestRealBootSnapshots(t *testing.T) {
	vmm := needRealBoot(t)
	before := snapshotHost()
	h := newBusyboxHost(t, vmm)

	// The first create boots cold and makes the image's golden snapshot.
	start := time.Now()
	h.must("vm", "create", "--name", "orig")
	t.Logf("cold create (with the golden snapshot) in %s", time.Since(start).Round(100*time.Millisecond))
	orig := h.vm("orig")
	own, golden := h.realSnapshots()
	if len(golden) != 1 || len(own) != 0 {
		t.Fatalf("after the first create: snapshots %+v, golden %+v; want one golden", own, golden)
	}

	t.Run("rollback", func(t *testing.T) { rollbackFlow(t, h.on(t), orig.Name) })
	t.Run("fork", func(t *testing.T) { forkFlow(t, h.on(t), orig) })
	t.Run("pause", func(t *testing.T) { pauseFlow(t, h.on(t), "f-1") })
	t.Run("warm-create", func(t *testing.T) { warmCreateFlow(t, h.on(t), orig, golden[0]) })
	t.Run("nothing-left", func(t *testing.T) {
		hh := h.on(t)
		own, golden := hh.realSnapshots()
		for _, s := range append(own, golden...) {
			hh.must("snapshot", "delete", "--force", s.Name)
		}
		if left := entries(filepath.Join(hh.stateDir(), "snapshots")); len(left) > 0 {
			t.Errorf("snapshot dirs left after deleting every snapshot: %v", left)
		}
		nothingLeft(t, hh, before)
	})
}

// realSnapshots lists the snapshots, the golden ones apart.
func (h *realHost) realSnapshots() (own, golden []api.Snapshot) {
	h.tb.Helper()
	var list api.SnapshotList
	if err := json.Unmarshal([]byte(h.must("snapshot", "list", "--json")), &list); err != nil {
		h.tb.Fatal(err)
	}
	for _, s := range list.Snapshots {
		if s.Golden {
			golden = append(golden, s)
		} else {
			own = append(own, s)
		}
	}
	return own, golden
}

// bgProcess is the background process the rollback flow starts: a sleep
// with an argument nothing else in the guest uses.
const bgProcess = "sleep 4242"

// startBackground starts bgProcess detached from the exec and returns its
// pid.
func startBackground(t *testing.T, h *realHost, vm string) string {
	out := h.mustExec(vm, "sh", "-c", "setsid "+bgProcess+" </dev/null >/dev/null 2>&1 & echo $!")
	pid := strings.TrimSpace(out)
	waitFor(t, 10*time.Second, "the background process to run", func() bool { return bgRuns(h, vm, pid) })
	return pid
}

// bgRuns says whether pid in vm is bgProcess.
func bgRuns(h *realHost, vm, pid string) bool {
	r := h.exec(vm, "cat", "/proc/"+pid+"/cmdline")
	return r.code == 0 && strings.ReplaceAll(r.stdout, "\x00", " ") == bgProcess+" "
}

// rollbackFlow: a file and a process at snapshot time are back after the
// rollback, though both were changed in between.
func rollbackFlow(t *testing.T, h *realHost, name string) {
	h.mustExec(name, "sh", "-c", "echo before > /root/mark")
	pid := startBackground(t, h, name)
	var snap api.Snapshot
	start := time.Now()
	if err := json.Unmarshal([]byte(h.must("vm", "snapshot", name, "--name", "s1", "--json")), &snap); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of a %d MiB guest in %s: %d MiB on disk", snap.MemoryMiB, time.Since(start).Round(10*time.Millisecond), snap.SizeBytes>>20)
	if snap.State != api.SnapshotReady || snap.SizeBytes <= 0 || h.vm(name).State != api.VMRunning {
		t.Fatalf("snapshot %+v; vm %s", snap, h.vm(name).State)
	}

	h.mustExec(name, "sh", "-c", "echo after > /root/mark; kill "+pid)
	waitFor(t, 10*time.Second, "the background process to end", func() bool { return !bgRuns(h, name, pid) })

	start = time.Now()
	h.must("vm", "rollback", name, "s1", "--yes")
	t.Logf("rollback in %s", time.Since(start).Round(10*time.Millisecond))
	if got := strings.TrimSpace(h.mustExec(name, "cat", "/root/mark")); got != "before" {
		t.Errorf("after the rollback /root/mark reads %q, want %q", got, "before")
	}
	if !bgRuns(h, name, pid) {
		t.Errorf("after the rollback the background process %s (%s) is not running", pid, bgProcess)
	}
	if vm := h.vm(name); vm.State != api.VMRunning {
		t.Errorf("after the rollback vm %s is %s", name, vm.State)
	}
}

// forkFlow: three forks of s1 are machines of their own and the original
// runs on unaffected.
func forkFlow(t *testing.T, h *realHost, orig api.VM) {
	start := time.Now()
	var forks api.VMList
	if err := json.Unmarshal([]byte(h.must("vm", "fork", "s1", "--name", "f", "--count", "3", "--json")), &forks); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 forks in %s", time.Since(start).Round(10*time.Millisecond))
	if len(forks.VMs) != 3 {
		t.Fatalf("fork --count 3 made %d VMs", len(forks.VMs))
	}
	kh := ssh.KnownHosts{Path: filepath.Join(h.dir, "config", "banger", "known_hosts")}
	origKeys, _ := kh.Pinned(orig.ID)
	if len(origKeys) == 0 {
		t.Log("the image's guests have no SSH host keys (no sshd): host keys are not compared")
	}
	seen := map[string]string{} // identity value → the VM that has it
	claim := func(vm, what, value string) {
		if value == "" {
			t.Errorf("vm %s has no %s", vm, what)
			return
		}
		if other, taken := seen[what+" "+value]; taken {
			t.Errorf("vm %s has the same %s as %s: %s", vm, what, other, value)
		}
		seen[what+" "+value] = vm
	}
	identity := func(name string, vm api.VM) {
		claim(name, "hostname", strings.TrimSpace(h.mustExec(name, "hostname")))
		claim(name, "address", vm.IP)
		claim(name, "MAC", vm.MAC)
		// A cold-booted busybox guest may have no machine-id; a fork has
		// the one its identity gave it.
		if id := machineID(h, name); id != "" || name != "orig" {
			claim(name, "machine-id", id)
		}
		// The busybox image has no sshd; an image with one has host keys
		// pinned, and each fork must have its own.
		if keys, _ := kh.Pinned(vm.ID); len(keys) > 0 || len(origKeys) > 0 {
			claim(name, "host keys", strings.Join(keys, ","))
		}
		if got := strings.TrimSpace(h.mustExec(name, "cat", "/sys/class/net/eth0/address")); got != vm.MAC {
			t.Errorf("vm %s: the guest's eth0 has MAC %s, the host gave it %s", name, got, vm.MAC)
		}
		if out := h.mustExec(name, "ip", "-4", "addr", "show"); !strings.Contains(out, vm.IP+"/24") {
			t.Errorf("vm %s: the guest has not got %s/24:\n%s", name, vm.IP, out)
		}
	}
	identity("orig", h.vm("orig"))
	for _, f := range forks.VMs {
		vm := h.vm(f.Name)
		if vm.State != api.VMRunning || !slices.Contains(h.taps(), network.TapName(vm.ID)) {
			t.Errorf("fork %s: state %s, tap present %t", f.Name, vm.State, slices.Contains(h.taps(), network.TapName(vm.ID)))
		}
		identity(f.Name, vm)
		// The fork is at the snapshot's state: the file and the process.
		if got := strings.TrimSpace(h.mustExec(f.Name, "cat", "/root/mark")); got != "before" {
			t.Errorf("fork %s: /root/mark reads %q, want the snapshot's %q", f.Name, got, "before")
		}
	}
	// By DNS name, VM to VM: the original reaches every fork.
	for _, f := range forks.VMs {
		if r := h.exec("orig", "ping", "-c", "1", "-W", "10", f.Name+".banger"); r.code != 0 {
			t.Errorf("orig → %s.banger: exit %d\n%s%s", f.Name, r.code, r.stdout, r.stderr)
		}
	}
	if vm := h.vm("orig"); vm.State != api.VMRunning || vm.IP != orig.IP || vm.MAC != orig.MAC {
		t.Errorf("the original after the forks: %+v", vm)
	}
	if got := strings.TrimSpace(h.mustExec("orig", "hostname")); got != "orig" {
		t.Errorf("the original calls itself %q after the forks", got)
	}
}

// machineID is the guest's /etc/machine-id, "" when it has none.
func machineID(h *realHost, vm string) string {
	r := h.exec(vm, "cat", "/etc/machine-id")
	if r.code != 0 {
		return ""
	}
	return strings.TrimSpace(r.stdout)
}

// pauseFlow: a paused VM refuses exec with the way out, and works again
// once resumed.
func pauseFlow(t *testing.T, h *realHost, name string) {
	start := time.Now()
	h.must("vm", "pause", name)
	paused := time.Since(start)
	if vm := h.vm(name); vm.State != api.VMPaused {
		t.Fatalf("after pause: %s", vm.State)
	}
	r := h.exec(name, "true")
	if want := fmt.Sprintf("vm %s is paused; `banger vm resume %s` resumes it", name, name); r.code == 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("exec in a paused VM: exit %d, stderr %q; want %q", r.code, r.stderr, want)
	}
	start = time.Now()
	h.must("vm", "resume", name)
	t.Logf("pause %s, resume %s (CLI round trips included)", paused.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if out := strings.TrimSpace(h.mustExec(name, "echo", "awake")); out != "awake" {
		t.Errorf("exec after resume: %q", out)
	}
}

// warmCreateFlow: a create of the image's default shape restores the
// golden snapshot (its progress says so, and the new VM's console shows no
// kernel boot) and is a machine of its own.
func warmCreateFlow(t *testing.T, h *realHost, orig api.VM, golden api.Snapshot) {
	start := time.Now()
	r := h.run("vm", "create", "--name", "warm")
	if r.code != 0 {
		t.Fatalf("vm create warm: exit %d\n%s%s", r.code, r.stderr, h.diagnostics())
	}
	t.Logf("warm create → running in %s", time.Since(start).Round(10*time.Millisecond))
	vm := h.vm("warm")
	if !strings.Contains(r.stderr, "restoring snapshot "+golden.Name) {
		t.Errorf("the create did not restore golden snapshot %s:\n%s", golden.Name, r.stderr)
	}
	if serial := h.serialTail(vm); strings.Contains(serial, "Linux version") {
		t.Errorf("the warm VM's console shows a kernel boot:\n%s", serial)
	}
	if got := strings.TrimSpace(h.mustExec("warm", "hostname")); got != "warm" {
		t.Errorf("warm VM calls itself %q", got)
	}
	if vm.IP == orig.IP || vm.MAC == orig.MAC {
		t.Errorf("warm VM shares the original's address or MAC: %s %s", vm.IP, vm.MAC)
	}
	if id := machineID(h, "warm"); id == "" || id == machineID(h, "orig") {
		t.Errorf("warm VM's machine-id %q: want its own", id)
	}
	if r := h.exec("warm", "ping", "-c", "1", "-W", "10", "orig.banger"); r.code != 0 {
		t.Errorf("warm → orig.banger: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, name := range []string{"warm", "f-1", "f-2", "f-3", "orig"} {
		h.must("vm", "delete", "--force", name)
	}
	if _, err := os.Stat(filepath.Join(h.stateDir(), "vms", vm.ID)); !os.IsNotExist(err) {
		t.Errorf("warm VM's state dir survived its delete: %v", err)
	}
}
