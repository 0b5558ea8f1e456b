package lifecycle

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// snap snapshots VM vmName as name ("" the default), failing t on error.
func snap(t *testing.T, m *Manager, vmName, name string) Snapshot {
	t.Helper()
	s, err := m.Snapshot(context.Background(), vmName, name, noProgress)
	if err != nil {
		t.Fatalf("snapshot %s: %v", vmName, err)
	}
	return s
}

// since is the journal from before on.
func since(w *world, before int) []string { return w.log()[before:] }

func TestSnapshotOfARunningVM(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	before := len(w.log())
	w.crashes = nil
	var stages []string
	s, err := m.Snapshot(context.Background(), "web", "", func(r Report) { stages = append(stages, r.Stage+": "+r.Message) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"snapfiles.fits", "snapstore.insert", "snapfiles.make", "inst.pause", "inst.snapshot",
		"snapfiles.savedisk", "inst.resume", "snapstore.save:ready"}
	if got := since(w, before); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}
	if s.Name != "web-20261207-120000" || s.State != SnapshotReady || s.SizeBytes != 4096 || s.VMID != vm.ID ||
		s.VMName != "web" || s.ImageID != "img1" || s.VMM != "fake" || s.VCPUs != 1 || s.MemoryMiB != 256 || s.Golden {
		t.Errorf("snapshot %+v", s)
	}
	if stored := w.snaps[s.ID]; stored.State != SnapshotReady || !w.snapDirs[s.ID] {
		t.Errorf("stored %+v, files %v", stored, w.snapDirs[s.ID])
	}
	if got := w.vm(vm.ID); got.State != Running || instOf(t, m, vm.ID).isPaused() {
		t.Errorf("after the snapshot the VM is %s, paused %v", got.State, instOf(t, m, vm.ID).isPaused())
	}
	if want := []string{CrashSnapshotSaving, CrashSnapshotStateWritten, CrashSnapshotFilesWritten}; !slices.Equal(w.crashes, want) {
		t.Errorf("crash points %v, want %v", w.crashes, want)
	}
	var names []string
	for _, st := range stages {
		names = append(names, st[:strings.Index(st, ":")])
		if !strings.HasSuffix(st, "(0s)") {
			t.Errorf("stage %q does not say the time since the start", st)
		}
	}
	if want := []string{"pause", "save-state", "save-disk", "resume", "saved"}; !slices.Equal(names, want) {
		t.Errorf("stages %v, want %v", names, want)
	}
}

func TestSnapshotOfAPausedVMLeavesItPaused(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	if _, err := m.Pause(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	before := len(w.log())
	snap(t, m, "web", "s1")
	calls := since(w, before)
	if slices.Contains(calls, "inst.pause") || slices.Contains(calls, "inst.resume") {
		t.Errorf("calls %v: a paused VM is neither paused again nor resumed", calls)
	}
	if w.vm(vm.ID).State != Paused || !instOf(t, m, vm.ID).isPaused() {
		t.Error("the VM is no longer paused")
	}
}

func TestSnapshotFailuresLeaveNothingAndTheVMRunning(t *testing.T) {
	for _, fail := range []string{"snapfiles.make", "inst.pause", "inst.snapshot", "snapfiles.savedisk", "snapstore.save:ready"} {
		t.Run(fail, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			w.failOn[fail] = 1
			if _, err := m.Snapshot(context.Background(), "web", "s1", noProgress); !errors.Is(err, errInjected) {
				t.Fatalf("snapshot: %v", err)
			}
			if len(w.snaps) != 0 || len(w.snapDirs) != 0 {
				t.Errorf("left snapshots %v, files %v", w.snaps, w.snapDirs)
			}
			if got := w.vm(vm.ID); got.State != Running || instOf(t, m, vm.ID).isPaused() {
				t.Errorf("the VM is %s, paused %v: want it running", got.State, instOf(t, m, vm.ID).isPaused())
			}
			// Resumed only when paused: the make and the pause fail before.
			if paused := fail != "snapfiles.make" && fail != "inst.pause"; w.count("inst.resume") != map[bool]int{true: 1}[paused] {
				t.Errorf("resumed %d times (paused: %v)", w.count("inst.resume"), paused)
			}
			// The name is free again.
			snap(t, m, "web", "s1")
		})
	}
}

func TestSnapshotWhoseResumeFailsIsKeptAndTheVMRecordedPaused(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	w.failOn["inst.resume"] = 1
	s, err := m.Snapshot(context.Background(), "web", "s1", noProgress)
	wantKind(t, err, Precondition, "stays paused")
	if s.State != SnapshotReady || w.snaps[s.ID].State != SnapshotReady {
		t.Errorf("the whole snapshot was not kept: %+v", s)
	}
	if got := w.vm(vm.ID).State; got != Paused {
		t.Errorf("the VM, paused, is recorded %s", got)
	}
	if _, err := m.Resume(context.Background(), "web"); err != nil {
		t.Errorf("resume retry: %v", err)
	}
}

func TestSnapshotRefusals(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name  string
		setup func(w *world, m *Manager)
		vm    string
		snap  string
		kind  ErrorKind
		what  string
	}{
		{"bad name", nil, "web", "Bad_Name", Invalid, "invalid snapshot name"},
		{"ID-like name", nil, "web", "0123456789abcdef", Invalid, "snapshot ID"},
		{"no such VM", nil, "nope", "", NotFound, "no VM named"},
		{"name taken", func(w *world, m *Manager) { snap(w.t, m, "web", "s1") }, "web", "s1", Exists, "already exists"},
		{"stopped VM", func(w *world, m *Manager) {
			if _, err := m.Stop(ctx, "web", false, 0, noProgress); err != nil {
				w.t.Fatal(err)
			}
		}, "web", "", Precondition, "only a running or paused VM"},
		{"no snapshot support", func(_ *world, m *Manager) { m.ports.Snapshots = nil }, "web", "", Unavailable, "no snapshot support"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			if c.setup != nil {
				c.setup(w, m)
			}
			state, snaps, pauses := w.vm(vm.ID).State, len(w.snaps), w.count("inst.pause")
			_, err := m.Snapshot(ctx, c.vm, c.snap, noProgress)
			wantKind(t, err, c.kind, c.what)
			if w.vm(vm.ID).State != state || len(w.snaps) != snaps || w.count("inst.pause") != pauses {
				t.Errorf("a refused snapshot changed something: vm %s, %d snapshots, %d pauses", w.vm(vm.ID).State, len(w.snaps), w.count("inst.pause")-pauses)
			}
		})
	}
	t.Run("driver cannot snapshot", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		m.ports.Driver = bootOnlyDriver{fakeDriver{w}}
		create(t, w, m, "web", false)
		_, err := m.Snapshot(ctx, "web", "", noProgress)
		wantKind(t, err, Unavailable, "cannot snapshot")
		if len(w.snaps) != 0 {
			t.Error("a snapshot was recorded")
		}
	})
	t.Run("no room", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		create(t, w, m, "web", false)
		w.failOn["snapfiles.fits"] = 1
		if _, err := m.Snapshot(ctx, "web", "", noProgress); !errors.Is(err, errInjected) {
			t.Fatalf("snapshot: %v", err)
		}
		if len(w.snaps) != 0 || w.count("inst.pause") != 0 {
			t.Error("a snapshot that does not fit was started")
		}
	})
}

func TestDefaultSnapshotNameFollowsTheNameRule(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	for _, vm := range []string{"web", strings.Repeat("a", 63), strings.Repeat("a", 46) + "-b"} {
		name := defaultSnapshotName(vm, now)
		if err := ValidateSnapshotName(name); err != nil || !strings.HasSuffix(name, "-20260102-020405") {
			t.Errorf("default name for %q: %q (%v)", vm, name, err)
		}
	}
}

func TestGetListAndDeleteSnapshots(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "web", false)
	s1, s2 := snap(t, m, "web", "s1"), snap(t, m, "web", "s2")
	ctx := context.Background()
	list, err := m.ListSnapshots(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if got, err := m.GetSnapshot(ctx, s2.ID); err != nil || got.Name != "s2" {
		t.Errorf("get by id: %+v %v", got, err)
	}
	_, err = m.GetSnapshot(ctx, "nope")
	wantKind(t, err, NotFound, `no snapshot named "nope"`)
	if err := m.DeleteSnapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.snaps[s1.ID]; ok || w.snapDirs[s1.ID] || !w.snapDirs[s2.ID] {
		t.Errorf("after deleting s1: snapshots %v, files %v", w.snaps, w.snapDirs)
	}
	wantKind(t, m.DeleteSnapshot(ctx, "s1"), NotFound, "no snapshot")
}

func TestDeleteOfAVMWithSnapshots(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	s1, s2 := snap(t, m, "web", "s1"), snap(t, m, "web", "s2")
	err := m.Delete(ctx, "web", false, noProgress)
	wantKind(t, err, Precondition, "has 2 snapshots: s1, s2")
	var e *Error
	if errors.As(err, &e) && !strings.Contains(e.Hint, "--force") {
		t.Errorf("hint %q does not mention --force", e.Hint)
	}
	if got := w.vm(vm.ID); got.State != Running || m.Instance(vm.ID) == nil || len(w.snaps) != 2 {
		t.Fatalf("a refused delete changed something: %s, %d snapshots", got.State, len(w.snaps))
	}
	if err := m.Delete(ctx, "web", true, noProgress); err != nil {
		t.Fatal(err)
	}
	if _, ok := w.vms[vm.ID]; ok || len(w.snaps) != 0 || w.snapDirs[s1.ID] || w.snapDirs[s2.ID] {
		t.Errorf("after a forced delete: vms %v, snapshots %v, files %v", w.vms, w.snaps, w.snapDirs)
	}
}

func TestGoldenSnapshotsDoNotBlockDeletingTheirVM(t *testing.T) {
	w := newWorld(t)
	w.goldenKey = "k1"
	m := w.manager()
	vm := create(t, w, m, "web", false)
	if len(w.snaps) != 1 {
		t.Fatalf("no golden snapshot made: %v", w.snaps)
	}
	if err := m.Delete(context.Background(), "web", false, noProgress); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, ok := w.vms[vm.ID]; ok || len(w.snaps) != 1 {
		t.Errorf("after the delete: vms %v, snapshots %v (the golden one stays)", w.vms, w.snaps)
	}
}
