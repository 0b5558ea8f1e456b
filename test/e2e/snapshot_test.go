package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/ssh"
)

// These tests run snapshots end to end on the fake Firecracker: real CLI,
// daemon, store and files; the fake writes its own state file and a sparse
// memory file and restores by starting the stand-in guest afresh.

// snapshots lists the host's snapshots, the images' golden ones (which a
// first create makes) apart.
func (h *host) snapshots() (own, golden []api.Snapshot) {
	h.t.Helper()
	var list api.SnapshotList
	if err := json.Unmarshal([]byte(h.must("snapshot", "list", "--json")), &list); err != nil {
		h.t.Fatal(err)
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

func (h *host) snapshotDir(id string) string { return filepath.Join(h.stateDir(), "snapshots", id) }

func (h *host) client() *api.Client {
	c := api.NewClient(filepath.Join(h.runDir(), "bangerd.sock"))
	h.t.Cleanup(c.Close)
	return c
}

// exec, cp and ssh refuse a paused VM with the way out; resume brings it
// back.
func TestPausedVMRefusesAccessUntilResumed(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "p", "--memory", "128", "--disk", "64M")
	running := h.vm("p")
	h.must("vm", "pause", "p")
	if vm := h.vm("p"); vm.State != api.VMPaused || vm.PID != running.PID {
		t.Fatalf("after pause: state %s pid %d (was %d); want paused, same VMM", vm.State, vm.PID, running.PID)
	}
	want := "vm p is paused; `banger vm resume p` resumes it"
	for _, args := range [][]string{
		{"vm", "exec", "p", "--", "true"},
		{"vm", "cp", filepath.Join(h.dir, "rootfs.ext4"), "p:/tmp/x"},
		{"vm", "ssh", "p"},
	} {
		_, errOut, code := h.run(args...)
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("banger %s on a paused VM: exit %d, stderr %q; want it refused with %q", strings.Join(args, " "), code, errOut, want)
		}
	}
	h.must("vm", "resume", "p")
	if vm := h.vm("p"); vm.State != api.VMRunning || vm.PID != running.PID {
		t.Fatalf("after resume: state %s pid %d", vm.State, vm.PID)
	}
	if out := h.must("vm", "exec", "p", "--", "echo", "awake"); strings.TrimSpace(out) != "awake" {
		t.Fatalf("exec after resume: %q", out)
	}
	h.must("vm", "delete", "--force", "p")
}

// A snapshot is listed with its size and files; a rollback restarts the
// VM from it; deleting the VM is refused while it has snapshots unless
// forced, which deletes them with it.
func TestSnapshotRollbackAndDeleteWithSnapshots(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "src", "--memory", "128", "--disk", "64M")
	var snap api.Snapshot
	if err := json.Unmarshal([]byte(h.must("vm", "snapshot", "src", "--name", "s1", "--json")), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Name != "s1" || snap.VM != "src" || snap.State != api.SnapshotReady || snap.SizeBytes <= 0 || snap.VMM != "firecracker" {
		t.Fatalf("vm snapshot: %+v", snap)
	}
	if vm := h.vm("src"); vm.State != api.VMRunning {
		t.Fatalf("the VM is %s after its snapshot, want running again", vm.State)
	}
	list, golden := h.snapshots()
	if len(list) != 1 || list[0].ID != snap.ID || list[0].SizeBytes != snap.SizeBytes {
		t.Fatalf("snapshot list: %+v", list)
	}
	dir := h.snapshotDir(snap.ID)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("snapshot dir %s: %v, %v; want mode 0700", dir, st, err)
	}
	for _, f := range []string{"state", "memory", "disk"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("snapshot file %s: %v, %v; want mode 0600", f, st, err)
		}
	}
	// A default name is <vm>-<UTC time>.
	var auto api.Snapshot
	if err := json.Unmarshal([]byte(h.must("vm", "snapshot", "src", "--json")), &auto); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(auto.Name, "src-") || len(auto.Name) != len("src-20261207-213000") {
		t.Errorf("default snapshot name %q, want src-YYYYMMDD-HHMMSS", auto.Name)
	}

	before := h.vm("src")
	var back api.VM
	if err := json.Unmarshal([]byte(h.must("vm", "rollback", "src", "s1", "--yes", "--json")), &back); err != nil {
		t.Fatal(err)
	}
	if back.State != api.VMRunning || back.PID == before.PID || pidAlive(before.PID) {
		t.Fatalf("after rollback: %+v (VMM before: pid %d, alive %t)", back, before.PID, pidAlive(before.PID))
	}
	if serial, _ := os.ReadFile(back.SerialLog); !strings.Contains(string(serial), "restored from "+filepath.Join(dir, "state")) {
		t.Errorf("the rolled-back VMM did not restore s1:\n%s", serial)
	}
	if out := h.must("vm", "exec", "src", "--", "echo", "back"); strings.TrimSpace(out) != "back" {
		t.Fatalf("exec after rollback: %q", out)
	}

	h.must("snapshot", "delete", "--force", auto.Name)
	if _, err := os.Stat(h.snapshotDir(auto.ID)); !os.IsNotExist(err) {
		t.Errorf("snapshot delete left the snapshot's files: %v", err)
	}

	// Without VM networking a fork still gets its own identity (no address
	// to give it) and runs.
	h.must("vm", "fork", "s1", "--name", "nonet")
	if vm := h.vm("nonet"); vm.State != api.VMRunning || vm.IP != "" {
		t.Errorf("fork without networking: %+v", vm)
	}
	if out := h.must("vm", "exec", "nonet", "--", "echo", "fork"); strings.TrimSpace(out) != "fork" {
		t.Errorf("exec in the fork: %q", out)
	}
	h.must("vm", "delete", "--force", "nonet")

	// The daemon refuses to delete a VM with snapshots unless forced (the
	// CLI asks first, so this is the API).
	err := h.client().VMDelete(context.Background(), api.VMDeleteRequest{Name: "src"}, nil)
	if !api.IsCode(err, api.CodeFailedPrecondition) || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("delete of a VM with snapshots: %v; want refused, naming its snapshots", err)
	}
	if vm := h.vm("src"); vm.State != api.VMRunning {
		t.Fatalf("the refused delete left the VM %s", vm.State)
	}
	h.must("vm", "delete", "--force", "src")
	if left, _ := h.snapshots(); len(left) != 0 {
		t.Errorf("snapshots left after vm delete --force: %+v", left)
	}
	// The image's golden snapshot stays: it is the image's, not the VM's.
	var keep []string
	for _, g := range golden {
		keep = append(keep, g.ID)
	}
	slices.Sort(keep)
	if left := entries(filepath.Join(h.stateDir(), "snapshots")); !slices.Equal(left, keep) {
		t.Errorf("snapshot dirs left: %v, want only the golden ones %v", left, keep)
	}
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Errorf("VMM processes left: %v", left)
	}
}

// Forks are VMs of their own: names, addresses, MACs and pinned host keys
// differ from each other and from the source, which runs on unaffected.
// Forks need networking (the identity a fork gets includes its address),
// so the daemon runs in a network namespace.
func TestForkGivesEachVMItsOwnIdentity(t *testing.T) {
	h, _ := netnsHost(t)
	h.must("vm", "create", "--name", "orig", "--memory", "128", "--disk", "64M")
	orig := h.vm("orig")
	h.must("vm", "snapshot", "orig", "--name", "base")
	var forks api.VMList
	if err := json.Unmarshal([]byte(h.must("vm", "fork", "base", "--name", "f", "--count", "2", "--json")), &forks); err != nil {
		t.Fatal(err)
	}
	if len(forks.VMs) != 2 || forks.VMs[0].Name != "f-1" || forks.VMs[1].Name != "f-2" {
		t.Fatalf("fork --count 2 made %+v", forks.VMs)
	}
	ips, macs := map[string]string{orig.IP: "orig"}, map[string]string{orig.MAC: "orig"}
	kh := ssh.KnownHosts{Path: filepath.Join(h.dir, "config", "banger", "known_hosts")}
	origKeys, err := kh.Pinned(orig.ID)
	if err != nil || len(origKeys) == 0 {
		t.Fatalf("the original's pinned host keys: %v, %v; the stand-in guest reports some", origKeys, err)
	}
	for _, f := range forks.VMs {
		vm := h.vm(f.Name)
		if vm.State != api.VMRunning || vm.PID == 0 || vm.PID == orig.PID {
			t.Errorf("fork %s: state %s pid %d", vm.Name, vm.State, vm.PID)
		}
		if vm.IP == "" || ips[vm.IP] != "" || macs[vm.MAC] != "" {
			t.Errorf("fork %s has address %s / MAC %s, already %s's / %s's", vm.Name, vm.IP, vm.MAC, ips[vm.IP], macs[vm.MAC])
		}
		ips[vm.IP], macs[vm.MAC] = vm.Name, vm.Name
		if keys, _ := kh.Pinned(vm.ID); len(keys) == 0 || slices.Equal(keys, origKeys) {
			t.Errorf("fork %s: pinned host keys %v, want its own (the original's are %v)", vm.Name, keys, origKeys)
		}
		if out := h.must("vm", "exec", vm.Name, "--", "echo", "fork"); strings.TrimSpace(out) != "fork" {
			t.Errorf("exec in %s: %q", vm.Name, out)
		}
		if serial, _ := os.ReadFile(vm.SerialLog); !strings.Contains(string(serial), "restored from") {
			t.Errorf("fork %s did not start from the snapshot:\n%s", vm.Name, serial)
		}
	}
	if vm := h.vm("orig"); vm.State != api.VMRunning || vm.PID != orig.PID || vm.IP != orig.IP {
		t.Errorf("the original after the forks: %+v", vm)
	}
	// A paused VM takes no new forward either (networking is on here).
	h.must("vm", "pause", "f-2")
	if _, errOut, code := h.run("vm", "port-forward", "f-2", "18080:80"); code == 0 || !strings.Contains(errOut, "vm f-2 is paused; `banger vm resume f-2` resumes it") {
		t.Errorf("port-forward on a paused VM: exit %d, %s", code, errOut)
	}
	h.must("vm", "resume", "f-2")
	// Forks outlive the source's snapshots.
	h.must("vm", "delete", "--force", "orig")
	if vm := h.vm("f-1"); vm.State != api.VMRunning {
		t.Errorf("fork f-1 is %s after its source went", vm.State)
	}
	h.must("vm", "delete", "--force", "f-1", "f-2")
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Errorf("VMM processes left: %v", left)
	}
}

// A create with a golden snapshot of its image and shape restores it
// instead of booting; --cold boots.
func TestWarmCreateRestoresTheGoldenSnapshot(t *testing.T) {
	h, _ := netnsHost(t)
	var golden api.Snapshot
	if err := json.Unmarshal([]byte(h.must("image", "warm", "default", "--memory", "128", "--disk", "64M", "--vcpus", "1", "--json")), &golden); err != nil {
		t.Fatal(err)
	}
	if !golden.Golden || golden.State != api.SnapshotReady || !strings.HasPrefix(golden.Name, "golden-default-") {
		t.Fatalf("image warm: %+v", golden)
	}
	h.must("vm", "create", "--name", "warm", "--memory", "128", "--disk", "64M", "--vcpus", "1")
	h.must("vm", "create", "--name", "cold", "--memory", "128", "--disk", "64M", "--vcpus", "1", "--cold")
	for name, wantRestored := range map[string]bool{"warm": true, "cold": false} {
		vm := h.vm(name)
		serial, _ := os.ReadFile(vm.SerialLog)
		if restored := strings.Contains(string(serial), "restored from "+filepath.Join(h.snapshotDir(golden.ID), "state")); restored != wantRestored || vm.State != api.VMRunning {
			t.Errorf("vm %s: state %s, restored from the golden snapshot %t, want %t:\n%s", name, vm.State, restored, wantRestored, serial)
		}
		if out := h.must("vm", "exec", name, "--", "echo", "up"); strings.TrimSpace(out) != "up" {
			t.Errorf("exec in %s: %q", name, out)
		}
	}
	if a, b := h.vm("warm"), h.vm("cold"); a.IP == b.IP || a.MAC == b.MAC {
		t.Errorf("warm and cold VMs share an address or MAC: %s/%s", a.IP, a.MAC)
	}
	if golden.LastUsedAt != nil {
		t.Errorf("a fresh golden snapshot has last use %v", golden.LastUsedAt)
	}
	var used api.Snapshot
	if err := json.Unmarshal([]byte(h.must("snapshot", "show", golden.Name, "--json")), &used); err != nil || used.LastUsedAt == nil || used.LastUsedAt.Before(golden.CreatedAt) {
		t.Errorf("after a warm create the golden snapshot's last use is %v (%v)", used.LastUsedAt, err)
	}

	// image.golden_snapshots caps them per image: with 1, warming another
	// shape deletes this one; the daemon restarts to take the setting.
	h.must("config", "set", "image.golden_snapshots", "1")
	var other api.Snapshot
	if err := json.Unmarshal([]byte(h.must("image", "warm", "default", "--memory", "160", "--disk", "64M", "--vcpus", "1", "--json")), &other); err != nil {
		t.Fatal(err)
	}
	if _, goldens := h.snapshots(); len(goldens) != 1 || goldens[0].ID != other.ID {
		t.Errorf("golden snapshots after warming a second shape with a cap of 1: %+v, want only %s", goldens, other.Name)
	}
	h.must("vm", "delete", "--force", "warm", "cold")
	// The image's golden snapshots go with it.
	h.must("image", "delete", "--force", "default")
	if own, golden := h.snapshots(); len(own)+len(golden) != 0 {
		t.Errorf("snapshots left after the image's delete: %+v %+v", own, golden)
	}
	if left := entries(filepath.Join(h.stateDir(), "snapshots")); len(left) != 0 {
		t.Errorf("snapshot dirs left: %v", left)
	}
}
