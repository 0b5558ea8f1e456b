package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The process an earlier daemon left for a VM, as reconcile may find it.
const (
	procAlive        = "alive"        // the recorded VMM runs and its agent answers
	procSilent       = "silent"       // the recorded VMM runs, its agent does not answer
	procDead         = "dead"         // nothing runs
	procUnverifiable = "unverifiable" // a process uses the VM's run dir but is not its VMM
)

func leftBehind(t *testing.T, state State, proc string) (*world, VM) {
	w := newWorld(t)
	vm := VM{ID: "00000000000000aa", Name: "web", ImageID: "img1", State: state, PID: 500, PIDStart: 1, Autostart: true,
		VCPUs: 1, MemoryMiB: 256, DiskSizeBytes: 1 << 30}
	w.vms[vm.ID] = vm
	switch proc {
	case procAlive, procSilent:
		w.live[500] = newFakeInst(w, 500)
		w.procAlive[500] = true
		w.procs[vm.ID] = Process{PID: 500, VMID: vm.ID}
		w.silent = proc == procSilent
	case procUnverifiable:
		w.procAlive[600] = true
		w.procs[vm.ID] = Process{PID: 600, VMID: vm.ID}
	}
	return w, vm
}

func TestReconcileEveryRecordedStateAndProcess(t *testing.T) {
	type outcome struct {
		state     State  // "" : the record is gone
		adopted   bool   // supervised by the new daemon
		why       string // in LastError
		autostart bool
		orphan    bool // reported as a VMM nobody supervises
		keepsRun  bool // the run dir is left to the process using it
	}
	want := map[State]map[string]outcome{
		Running: {
			procAlive:        {state: Running, adopted: true},
			procSilent:       {state: Stopped, why: "gone", autostart: true},
			procDead:         {state: Stopped, why: "gone", autostart: true},
			procUnverifiable: {state: Failed, why: "cannot verify", orphan: true, keepsRun: true},
		},
		// A paused guest's agent cannot answer: the verified VMM is adopted paused.
		Paused: {
			procAlive:        {state: Paused, adopted: true},
			procSilent:       {state: Paused, adopted: true},
			procDead:         {state: Stopped, why: "gone", autostart: true},
			procUnverifiable: {state: Failed, why: "cannot verify", orphan: true, keepsRun: true},
		},
		Stopping: {
			procAlive:        {state: Running, adopted: true},
			procSilent:       {state: Stopped},
			procDead:         {state: Stopped},
			procUnverifiable: {state: Failed, why: "cannot verify", orphan: true, keepsRun: true},
		},
		Starting: {
			procAlive:        {state: Failed, why: "booting"},
			procSilent:       {state: Failed, why: "booting"},
			procDead:         {state: Failed, why: "booting"},
			procUnverifiable: {state: Failed, why: "cannot verify", orphan: true, keepsRun: true},
		},
		// A VM creating never had a VMM: it boots as starting.
		Creating: {procDead: {}, procUnverifiable: {orphan: true}},
		Deleting: {procAlive: {}, procSilent: {}, procDead: {}, procUnverifiable: {orphan: true}},
		Stopped: {
			procDead: {state: Stopped, autostart: true}, procUnverifiable: {state: Stopped, autostart: true, orphan: true},
		},
		Failed: {
			procDead: {state: Failed, autostart: true}, procUnverifiable: {state: Failed, autostart: true, orphan: true},
		},
	}
	for _, state := range States() {
		for _, proc := range []string{procAlive, procSilent, procDead, procUnverifiable} {
			o, ok := want[state][proc]
			if !ok {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", state, proc), func(t *testing.T) {
				w, vm := leftBehind(t, state, proc)
				m := w.manager()
				autostart, err := m.Reconcile(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				got, exists := w.vms[vm.ID]
				switch {
				case o.state == "" && exists:
					t.Errorf("the %s VM is still recorded: %+v", state, got)
				case o.state != "" && got.State != o.state:
					t.Errorf("state %s, want %s (%q)", got.State, o.state, got.LastError)
				case o.state != "" && !strings.Contains(got.LastError, o.why):
					t.Errorf("last error %q does not say %q", got.LastError, o.why)
				}
				if adopted := m.Instance(vm.ID) != nil; adopted != o.adopted {
					t.Errorf("adopted %v, want %v", adopted, o.adopted)
				}
				if !o.adopted && o.state != "" && o.state != state && got.PID != 0 {
					t.Errorf("a VM without a VMM records pid %d", got.PID)
				}
				if inst := w.live[500]; inst != nil && !o.adopted {
					select {
					case <-inst.Done():
					default:
						t.Error("a VMM that was not adopted still runs: it must be stopped, never doubled")
					}
				}
				if slices.Contains(autostart, vm.Name) != o.autostart {
					t.Errorf("autostart %v, want %v", autostart, o.autostart)
				}
				orphans := m.Orphans()
				if (len(orphans) > 0) != o.orphan {
					t.Errorf("orphans %v, want some: %v", orphans, o.orphan)
				}
				if o.keepsRun && slices.Contains(w.log(), "files.rmrundir") {
					t.Error("the run dir of an unverifiable process was removed")
				}
				for _, call := range []string{"files.leftovers", "network.staletaps", "overlays.clean"} {
					if !slices.Contains(w.log(), call) {
						t.Errorf("reconcile did not call %s", call)
					}
				}
			})
		}
	}
}

func TestReconcilePowersOffAVMCaughtBootingWhenItsAgentAnswers(t *testing.T) {
	w, _ := leftBehind(t, Starting, procAlive)
	if _, err := w.manager().Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls := w.log(); !slices.Contains(calls, "inst.stop") || slices.Contains(calls, "inst.kill") {
		t.Errorf("want a graceful power-off, got %v", calls)
	}
}

func TestReconcileFindsAVMMSpawnedBeforeItsPIDWasRecorded(t *testing.T) {
	w, vm := leftBehind(t, Running, procAlive)
	vm.PID = 0
	w.vms[vm.ID] = vm
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m.Instance(vm.ID) == nil || !slices.Contains(w.log(), "driver.attach:500") {
		t.Errorf("the unrecorded VMM was not found: %v", w.log())
	}
}

func TestAdoptedVMIsWatched(t *testing.T) {
	w, vm := leftBehind(t, Running, procAlive)
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.live[500].exit(vmmExit(-1, "", true))
	eventually(t, "the adopted VMM's exit is recorded", func() bool { return w.vm(vm.ID).State == Failed })
}

func TestReconcileResumesARunningVMASnapshotLeftPaused(t *testing.T) {
	w, vm := leftBehind(t, Running, procAlive)
	w.live[500].paused = true // the daemon died mid-snapshot
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.vm(vm.ID); got.State != Running || m.Instance(vm.ID) == nil || w.live[500].isPaused() {
		t.Errorf("the VM is %s, its VMM paused %v", got.State, w.live[500].isPaused())
	}
}

func TestReconcileKeepsAPausedVMPaused(t *testing.T) {
	w, vm := leftBehind(t, Paused, procAlive)
	w.live[500].paused = true
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.vm(vm.ID); got.State != Paused || !w.live[500].isPaused() || w.count("inst.resume") != 0 || w.count("agent.wait") != 0 {
		t.Errorf("the VM is %s, its VMM paused %v, calls %v", got.State, w.live[500].isPaused(), w.log())
	}
	if _, err := m.Resume(context.Background(), "web"); err != nil {
		t.Errorf("the adopted VM does not resume: %v", err)
	}
}

func TestReconcileRemovesHalfSavedSnapshotsAndUnownedFiles(t *testing.T) {
	w, vm := leftBehind(t, Running, procAlive)
	w.snaps["s-saving"] = Snapshot{ID: "s-saving", Name: "half", VMID: vm.ID, State: SnapshotSaving}
	w.snaps["s-ready"] = Snapshot{ID: "s-ready", Name: "whole", VMID: vm.ID, State: SnapshotReady}
	w.snapDirs["s-saving"], w.snapDirs["s-ready"], w.snapDirs["s-nobody"] = true, true, true
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.snaps["s-saving"]; ok || len(w.snaps) != 1 {
		t.Errorf("snapshots %v: the half-saved one must go, the whole one stay", w.snaps)
	}
	if w.snapDirs["s-saving"] || w.snapDirs["s-nobody"] || !w.snapDirs["s-ready"] {
		t.Errorf("snapshot files %v, want only s-ready's", w.snapDirs)
	}
}

func TestReconcileFinishesTheDeleteOfAVMWithItsSnapshots(t *testing.T) {
	w, vm := leftBehind(t, Deleting, procDead)
	w.snaps["s1"] = Snapshot{ID: "s1", Name: "own", VMID: vm.ID, State: SnapshotReady}
	w.snaps["g1"] = Snapshot{ID: "g1", Name: "golden-base-k", VMID: vm.ID, State: SnapshotReady, Golden: true}
	w.snapDirs["s1"], w.snapDirs["g1"] = true, true
	m := w.manager()
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.vms[vm.ID]; ok {
		t.Error("the VM is still recorded")
	}
	if _, ok := w.snaps["s1"]; ok || w.snapDirs["s1"] {
		t.Error("the deleted VM's snapshot is still there")
	}
	if _, ok := w.snaps["g1"]; !ok || !w.snapDirs["g1"] {
		t.Error("the golden snapshot went with the VM")
	}
}
