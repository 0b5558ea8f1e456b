package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
)

func TestTwentyVMsConcurrently(t *testing.T) {
	h := newHost(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("vm%02d", i)
			if out, errOut, code := h.run("vm", "create", "--name", name, "--memory", "128", "--disk", "64M", "--vcpus", "1"); code != 0 {
				errs <- fmt.Sprintf("%s: exit %d: %s %s", name, code, out, errOut)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	var list api.VMList
	if err := json.Unmarshal([]byte(h.must("vm", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.VMs) != n {
		t.Fatalf("%d VMs listed, want %d", len(list.VMs), n)
	}
	pids := map[int]bool{}
	for _, vm := range list.VMs {
		if vm.State != api.VMRunning || vm.PID == 0 || pids[vm.PID] {
			t.Errorf("vm %s: state %s pid %d", vm.Name, vm.State, vm.PID)
		}
		pids[vm.PID] = true
	}
	args := []string{"vm", "delete", "--force"}
	for _, vm := range list.VMs {
		args = append(args, vm.Name)
	}
	h.must(args...)
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Fatalf("VMM processes left after delete: %v", left)
	}
	if left := entries(h.runDir() + "/vms"); len(left) != 0 {
		t.Fatalf("run dirs left after delete: %v", left)
	}
	if left := entries(h.stateDir() + "/vms"); len(left) != 0 {
		t.Fatalf("state dirs left after delete: %v", left)
	}
}

func TestVMMDyingMidBootFailsCleanly(t *testing.T) {
	h := newHost(t, "BANGER_FAKE_BOOT_FAIL=1")
	_, errOut, code := h.run("vm", "create", "--name", "doomed", "--memory", "128", "--disk", "64M")
	if code == 0 {
		t.Fatal("create succeeded although the VMM died during boot")
	}
	if !strings.Contains(errOut, `vm "doomed" failed to boot`) || !strings.Contains(errOut, "exited") {
		t.Fatalf("error does not say what happened: %s", errOut)
	}
	vm := h.vm("doomed")
	if vm.State != api.VMFailed || vm.LastError == "" || vm.PID != 0 {
		t.Fatalf("vm after failed boot: %+v", vm)
	}
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Fatalf("processes leaked: %v", left)
	}
	if left := entries(h.runDir() + "/vms"); len(left) != 0 {
		t.Fatalf("run dir leaked: %v", left)
	}
	h.must("vm", "delete", "--force", "doomed")
	if left := entries(h.stateDir() + "/vms"); len(left) != 0 {
		t.Fatalf("state dir left after delete: %v", left)
	}
}

func TestDaemonKilledWhileVMsRunIsReconciled(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "keep", "--memory", "128", "--disk", "64M")
	h.must("vm", "create", "--name", "lose", "--memory", "128", "--disk", "64M")
	h.must("vm", "create", "--name", "off", "--memory", "128", "--disk", "64M", "--no-start")
	keep, lose := h.vm("keep"), h.vm("lose")

	daemon := h.daemonPID()
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "daemon to die", func() bool { return syscall.Kill(daemon, 0) != nil })
	// While no daemon runs, one VMM dies too.
	if err := syscall.Kill(lose.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "vmm to die", func() bool { return isZombie(lose.PID) })

	// The next command starts a new daemon, which adopts the survivor and
	// records the truth about the rest.
	h.must("vm", "list")
	if pid := h.daemonPID(); pid == daemon {
		t.Fatal("daemon was not restarted")
	}
	got := h.vm("keep")
	if got.State != api.VMRunning || got.PID != keep.PID {
		t.Fatalf("surviving VM not adopted: %+v (was pid %d)", got, keep.PID)
	}
	got = h.vm("lose")
	if got.State != api.VMStopped || got.PID != 0 || got.LastError == "" {
		t.Fatalf("dead VM not reconciled: %+v", got)
	}
	if got := h.vm("off"); got.State != api.VMStopped {
		t.Fatalf("stopped VM changed: %+v", got)
	}
	// The adopted VM is fully manageable by the new daemon.
	h.must("vm", "stop", "keep")
	if got := h.vm("keep"); got.State != api.VMStopped {
		t.Fatalf("stop after adoption: %+v", got)
	}
	h.must("vm", "start", "lose")
	h.must("vm", "delete", "--force", "keep", "lose", "off")
	if left := h.vmmPIDs(); len(left) != 0 {
		t.Fatalf("processes left: %v", left)
	}
}

func TestVMMKilledBehindOurBackIsRecordedFailed(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "victim", "--memory", "128", "--disk", "64M")
	vm := h.vm("victim")
	if err := syscall.Kill(vm.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the daemon to notice", func() bool { return h.vm("victim").State == api.VMFailed })
	got := h.vm("victim")
	if !strings.Contains(got.LastError, "signal") || got.PID != 0 {
		t.Fatalf("failed VM: %+v", got)
	}
	h.must("vm", "start", "victim")
	if got := h.vm("victim"); got.State != api.VMRunning {
		t.Fatalf("restart after kill: %+v", got)
	}
}

func TestReconcileAutostartsLeftoversAndOrphans(t *testing.T) {
	h := newHost(t)
	h.must("vm", "create", "--name", "auto", "--autostart", "--memory", "128", "--disk", "64M")
	h.must("vm", "create", "--name", "ghost", "--memory", "128", "--disk", "64M")
	auto, ghost := h.vm("auto"), h.vm("ghost")

	daemon := h.daemonPID()
	if err := syscall.Kill(daemon, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "daemon to die", func() bool { return syscall.Kill(daemon, 0) != nil })
	// The autostart VM's VMM dies while the daemon is down.
	if err := syscall.Kill(auto.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "vmm to die", func() bool { return isZombie(auto.PID) })
	// "ghost" vanishes from the database while its VMM keeps running, and a
	// deleted VM's files are left behind.
	st, err := store.Open(context.Background(), filepath.Join(h.stateDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteVM(context.Background(), ghost.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(h.stateDir(), "vms", "00000000deadbeef")
	if err := os.MkdirAll(leftover, 0o700); err != nil {
		t.Fatal(err)
	}

	h.must("vm", "list")
	eventually(t, 20*time.Second, "autostart VM to run again", func() bool { return h.vm("auto").State == api.VMRunning })
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("leftover dir of a deleted VM not cleaned: %v", err)
	}
	var status struct {
		Info api.DaemonInfo `json:"info"`
	}
	if err := json.Unmarshal([]byte(h.must("daemon", "status", "--json")), &status); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range status.Info.Orphans {
		if o.PID == ghost.PID && o.VMID == ghost.ID {
			found = true
		}
	}
	if !found {
		t.Fatalf("orphan VMM pid %d not reported: %+v", ghost.PID, status.Info.Orphans)
	}
	if syscall.Kill(ghost.PID, 0) != nil || isZombie(ghost.PID) {
		t.Fatal("the orphan VMM was killed; it must only be reported")
	}
	_ = syscall.Kill(ghost.PID, syscall.SIGTERM)
	h.must("vm", "delete", "--force", "auto")
}
