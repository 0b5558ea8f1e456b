package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// restoreCalls is what starting a VMM from a snapshot does after its disk
// is there (no guest setup: the guest is the snapshot's).
var restoreCalls = []string{
	"store.save:starting", "files.lock", "files.mkrundir", "overlays.attach", "network.attach",
	"store.save:starting", "driver.restore", "store.save:starting", "agent.wait",
}

func TestRollbackOfARunningVM(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	s := snap(t, m, "web", "s1")
	old := instOf(t, m, vm.ID)
	before := len(w.log())
	w.crashes = nil
	got, err := m.Rollback(context.Background(), "web", "s1", noProgress)
	if err != nil {
		t.Fatal(err)
	}
	calls := since(w, before)
	want := []string{"snapfiles.verify", "store.save:stopping", "inst.kill", "forwards.stop", "overlays.detach",
		"network.detach", "files.rmrundir", "store.save:stopped", "snapfiles.restoredisk"}
	want = append(append(want, restoreCalls...), "store.save:running", "forwards.start")
	if !slices.Equal(calls, want) {
		t.Errorf("calls:\n got %v\nwant %v", calls, want)
	}
	select {
	case <-old.Done():
	default:
		t.Error("the old VMM still runs")
	}
	if got.State != Running || w.vm(vm.ID).State != Running || m.Instance(vm.ID) == nil || m.Instance(vm.ID) == vm2inst(old) {
		t.Errorf("after the rollback: %+v", got)
	}
	if w.disks[vm.ID] != s.ID || !slices.Equal(w.restores, []string{vm.ID + " /snap/" + s.ID + "/state"}) {
		t.Errorf("disk from %q, restores %v", w.disks[vm.ID], w.restores)
	}
	for _, c := range []string{CrashRollbackStopped, CrashRollbackDiskRestored, CrashBootSpawned, CrashBootRunning} {
		if !slices.Contains(w.crashes, c) {
			t.Errorf("crash point %s not passed: %v", c, w.crashes)
		}
	}
}

// vm2inst turns a fake instance into what Manager.Instance returns.
func vm2inst(i *fakeInst) any { return i }

func TestRollbackOfAStoppedOrPausedVMLeavesItRunning(t *testing.T) {
	for _, how := range []string{"stopped", "paused"} {
		t.Run(how, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			snap(t, m, "web", "s1")
			ctx := context.Background()
			var err error
			if how == "stopped" {
				_, err = m.Stop(ctx, "web", false, 0, noProgress)
			} else {
				_, err = m.Pause(ctx, "web")
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := m.Rollback(ctx, "web", "s1", noProgress)
			if err != nil || got.State != Running || w.vm(vm.ID).State != Running || instOf(t, m, vm.ID).isPaused() {
				t.Fatalf("rollback: %v, %+v", err, got)
			}
		})
	}
}

func TestRollbackRefusalsLeaveTheVMUntouched(t *testing.T) {
	cases := []struct {
		name string
		// edit changes snapshot s1 (of web) or the world before the rollback.
		edit func(w *world, s *Snapshot)
		vm   string
		kind ErrorKind
		what string
	}{
		{"snapshot of another VM", nil, "db", Precondition, `snapshot "s1" is of vm "web", not of vm "db"`},
		{"golden snapshot", func(_ *world, s *Snapshot) { s.Golden = true }, "web", Precondition, "golden snapshot"},
		{"other image", func(_ *world, s *Snapshot) { s.ImageID, s.ImageName = "img2", "other" }, "web", Precondition, `is of image "other"`},
		{"other VMM", func(_ *world, s *Snapshot) { s.VMM = "qemu" }, "web", Precondition, "saved by qemu"},
		{"other vcpus", func(_ *world, s *Snapshot) { s.VCPUs = 4 }, "web", Precondition, "4 vCPUs"},
		{"other memory", func(_ *world, s *Snapshot) { s.MemoryMiB = 1024 }, "web", Precondition, "1024 MiB"},
		{"still saving", func(_ *world, s *Snapshot) { s.State = SnapshotSaving }, "web", Precondition, "still being saved"},
		{"files missing", func(w *world, s *Snapshot) { delete(w.snapDirs, s.ID) }, "web", Precondition, "files are missing"},
		{"no such snapshot", nil, "web", NotFound, "no snapshot named"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			create(t, w, m, "db", false)
			s := snap(t, m, "web", "s1")
			if c.edit != nil {
				c.edit(w, &s)
				w.snaps[s.ID] = s
			}
			ref := "s1"
			if c.name == "no such snapshot" {
				ref = "nope"
			}
			target, _ := fakeStore{w}.GetVM(context.Background(), c.vm)
			before, beforeVM, inst := len(w.log()), w.vm(target.ID), m.Instance(target.ID)
			_, err := m.Rollback(context.Background(), c.vm, ref, noProgress)
			wantKind(t, err, c.kind, c.what)
			for _, call := range since(w, before) {
				if call != "snapfiles.verify" {
					t.Errorf("a refused rollback called %s", call)
				}
			}
			if after := w.vm(target.ID); after.State != beforeVM.State || after.PID != beforeVM.PID || m.Instance(target.ID) != inst {
				t.Errorf("a refused rollback changed the VM: %+v", after)
			}
			if w.disks[vm.ID] != "" || w.disks[target.ID] != "" {
				t.Error("a refused rollback replaced a disk")
			}
		})
	}
}

func TestRollbackFailures(t *testing.T) {
	t.Run("disk not restored: the VM stays stopped with its disk", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", false)
		snap(t, m, "web", "s1")
		w.failOn["snapfiles.restoredisk"] = 1
		_, err := m.Rollback(context.Background(), "web", "s1", noProgress)
		wantKind(t, err, Precondition, "the VM is stopped, its disk as it was")
		if got := w.vm(vm.ID); got.State != Stopped || m.Instance(vm.ID) != nil || w.count("driver.restore") != 0 {
			t.Errorf("after the failure: %+v", got)
		}
	})
	t.Run("restore fails: the VM is failed with nothing left running", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", false)
		snap(t, m, "web", "s1")
		w.failOn["agent.wait"] = w.count("agent.wait") + 1
		_, err := m.Rollback(context.Background(), "web", "s1", noProgress)
		wantKind(t, err, Precondition, `failed to start from snapshot "s1"`)
		got := w.vm(vm.ID)
		if got.State != Failed || got.PID != 0 || m.Instance(vm.ID) != nil {
			t.Errorf("after the failure: %+v", got)
		}
		if w.count("inst.kill") != 2 { // the old VMM (forced stop) and the restored one (undo)
			t.Errorf("%d kills, want 2", w.count("inst.kill"))
		}
	})
}

func TestForkMakesDistinctRunningVMs(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	src := create(t, w, m, "web", false)
	s := snap(t, m, "web", "s1")
	before := len(w.log())
	w.crashes = nil
	vms, err := m.Fork(context.Background(), ForkRequest{Source: "s1", Name: "try", Count: 3, Network: []byte(`{"isolated":true}`)}, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	ids := map[string]bool{src.ID: true}
	for _, vm := range vms {
		names = append(names, vm.Name)
		ids[vm.ID] = true
		stored := w.vm(vm.ID)
		if stored.State != Running || m.Instance(vm.ID) == nil || stored.ImageID != "img1" || stored.VCPUs != s.VCPUs ||
			stored.MemoryMiB != s.MemoryMiB || string(stored.Network) != `{"isolated":true}` || stored.StartedAt.IsZero() {
			t.Errorf("fork %+v", stored)
		}
		if w.disks[vm.ID] != s.ID {
			t.Errorf("fork %s has disk %q", vm.Name, w.disks[vm.ID])
		}
	}
	if !slices.Equal(names, []string{"try-1", "try-2", "try-3"}) || len(ids) != 4 {
		t.Errorf("forks %v, ids %v", names, ids)
	}
	one := append([]string{"files.fits", "store.insert", "snapfiles.restoredisk"}, restoreCalls...)
	one = append(one, "identity.reidentify", "store.save:running", "forwards.start")
	// The forks run concurrently, so their calls interleave: the same calls,
	// three times over, in any order.
	var want []string
	for range 3 {
		want = append(want, one...)
	}
	got := since(w, before)
	if len(got) == 0 || got[0] != "snapfiles.verify" || !slices.Equal(slices.Sorted(slices.Values(got[1:])), slices.Sorted(slices.Values(want))) {
		t.Errorf("calls:\n got %v\nwant snapfiles.verify, then %v three times over", got, one)
	}
	if w.count("guest.setup") != 1 {
		t.Errorf("guest setup ran %d times; forks are reidentified instead", w.count("guest.setup"))
	}
	for _, c := range []string{CrashForkRecorded, CrashForkDiskReady} {
		if n := strings.Count(strings.Join(w.crashes, " "), c); n != 3 {
			t.Errorf("crash point %s passed %d times, want 3", c, n)
		}
	}
	if w.vm(src.ID).State != Running {
		t.Error("the source VM is no longer running")
	}
	// One fork alone makes them in order.
	before = len(w.log())
	if _, err := m.Fork(context.Background(), ForkRequest{Source: "s1", Name: "alone"}, noProgress); err != nil {
		t.Fatal(err)
	}
	if got := since(w, before); !slices.Equal(got, append([]string{"snapfiles.verify"}, one...)) {
		t.Errorf("calls of one fork:\n got %v\nwant snapfiles.verify %v", got, one)
	}
}

func TestForkOfAVMSnapshotsItFirst(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "web", false)
	vms, err := m.Fork(context.Background(), ForkRequest{Source: "web", Name: "copy"}, noProgress)
	if err != nil || len(vms) != 1 || vms[0].Name != "copy" {
		t.Fatalf("fork: %v %+v", err, vms)
	}
	if len(w.snaps) != 1 {
		t.Fatalf("snapshots %v", w.snaps)
	}
	for _, s := range w.snaps {
		if s.Name != "web-20261207-120000" || w.disks[vms[0].ID] != s.ID {
			t.Errorf("snapshot %+v, fork disk %q", s, w.disks[vms[0].ID])
		}
	}
}

func TestAFailingForkIsUndoneAndTheOthersStay(t *testing.T) {
	for _, fail := range []string{"files.fits", "store.insert", "snapfiles.restoredisk", "network.attach", "driver.restore",
		"agent.wait", "identity.reidentify", "store.save:running"} {
		t.Run(fail, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			create(t, w, m, "web", false)
			snap(t, m, "web", "s1")
			// Forks run concurrently: whichever reaches the call second
			// fails, and the property must hold whichever that is.
			w.failOn[fail] = w.count(fail) + 2
			vms, err := m.Fork(context.Background(), ForkRequest{Source: "s1", Name: "try", Count: 3}, noProgress)
			if !errors.Is(err, errInjected) && !strings.Contains(err.Error(), errInjected.Error()) {
				t.Fatalf("fork: %v", err)
			}
			if len(vms) != 2 || vms[0].Name >= vms[1].Name {
				t.Fatalf("made %+v, want two of try-1..3 in name order", vms)
			}
			var failed []string
			for _, name := range []string{"try-1", "try-2", "try-3"} {
				if name != vms[0].Name && name != vms[1].Name {
					failed = append(failed, name)
				}
			}
			if len(failed) != 1 || !strings.Contains(err.Error(), `"`+failed[0]+`"`) {
				t.Fatalf("failed forks %v, error %v", failed, err)
			}
			for _, vm := range vms {
				if got := w.vm(vm.ID); got.State != Running || m.Instance(vm.ID) == nil {
					t.Errorf("fork %s is %s", vm.Name, got.State)
				}
			}
			if _, err := (fakeStore{w}).GetVM(context.Background(), failed[0]); err == nil {
				t.Errorf("%s is recorded", failed[0])
			}
			if len(w.vms) != 3 {
				t.Errorf("vms %v", w.vms)
			}
			// Nothing of the failed fork runs: one VMM per VM left.
			if live := len(m.instances); live != 3 {
				t.Errorf("%d supervised VMMs, want 3", live)
			}
			restored := slices.Contains([]string{"agent.wait", "identity.reidentify", "store.save:running"}, fail)
			if kills := w.count("inst.kill"); kills != map[bool]int{true: 1}[restored] {
				t.Errorf("the failed fork's VMM was killed %d times (restored: %v)", kills, restored)
			}
			if fail != "files.fits" && fail != "store.insert" && !slices.Contains(w.log(), "files.rmall") {
				t.Error("the failed fork's files were not removed")
			}
			attached := !slices.Contains([]string{"files.fits", "store.insert", "snapfiles.restoredisk"}, fail)
			if attached && (!slices.Contains(w.log(), "network.forget") || !slices.Contains(w.log(), "guest.forget")) {
				t.Error("the failed fork's address, name and host keys were not forgotten")
			}
		})
	}
}

func TestForksRestoreConcurrently(t *testing.T) {
	if forkParallelism() < 2 {
		t.Skip("GOMAXPROCS is 1: forks run one at a time")
	}
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "web", false)
	snap(t, m, "web", "s1")
	gate := make(chan struct{})
	w.mu.Lock()
	w.agentGate = gate // every fork's agent wait blocks until released
	w.mu.Unlock()
	restores := w.count("driver.restore")
	type result struct {
		vms []VM
		err error
	}
	done := make(chan result, 1)
	go func() {
		vms, err := m.Fork(context.Background(), ForkRequest{Source: "s1", Name: "try", Count: 3}, noProgress)
		done <- result{vms, err}
	}()
	// Two restores while the first fork still waits for its agent: one
	// after another, the second would never start.
	deadline := time.Now().Add(10 * time.Second)
	for w.count("driver.restore") < restores+2 {
		if time.Now().After(deadline) {
			close(gate)
			<-done
			t.Fatal("the second fork did not start while the first waited for its agent")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	r := <-done
	if r.err != nil || len(r.vms) != 3 {
		t.Fatalf("fork: %v, made %+v", r.err, r.vms)
	}
	for i, vm := range r.vms {
		if want := fmt.Sprintf("try-%d", i+1); vm.Name != want {
			t.Errorf("made[%d] is %s, want %s: not in name order", i, vm.Name, want)
		}
	}
}

func TestForkRefusals(t *testing.T) {
	cases := []struct {
		name string
		req  ForkRequest
		edit func(w *world, m *Manager)
		kind ErrorKind
		what string
	}{
		{"name taken", ForkRequest{Source: "s1", Name: "web"}, nil, Exists, `"web" already exists`},
		{"a numbered name taken", ForkRequest{Source: "s1", Name: "web", Count: 2}, func(w *world, m *Manager) { create(w.t, w, m, "web-2", true) }, Exists, `"web-2"`},
		{"bad name", ForkRequest{Source: "s1", Name: "Bad"}, nil, Invalid, "invalid VM name"},
		{"count", ForkRequest{Source: "s1", Name: "x", Count: 65}, nil, Invalid, "use 1 to 64"},
		{"negative count", ForkRequest{Source: "s1", Name: "x", Count: -1}, nil, Invalid, "invalid count"},
		{"no source", ForkRequest{Source: "nope", Name: "x"}, nil, NotFound, "no snapshot or VM"},
		{"files missing", ForkRequest{Source: "s1", Name: "x"}, func(w *world, _ *Manager) { clear(w.snapDirs) }, Precondition, "cannot be restored"},
		{"image gone", ForkRequest{Source: "s1", Name: "x"}, func(w *world, _ *Manager) { delete(w.images, "img1") }, Precondition, "which is gone"},
		{"no identity", ForkRequest{Source: "s1", Name: "x"}, func(_ *world, m *Manager) { m.ports.Identity = nil }, Unavailable, "identity"},
		{"driver cannot restore", ForkRequest{Source: "s1", Name: "x"}, func(w *world, m *Manager) { m.ports.Driver = bootOnlyDriver{fakeDriver{w}} }, Unavailable, "cannot restore"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			create(t, w, m, "web", false)
			snap(t, m, "web", "s1")
			if c.edit != nil {
				c.edit(w, m)
			}
			vms := len(w.vms)
			_, err := m.Fork(context.Background(), c.req, noProgress)
			wantKind(t, err, c.kind, c.what)
			if len(w.vms) != vms || w.count("snapfiles.restoredisk") != 0 {
				t.Errorf("a refused fork made something: %d vms", len(w.vms))
			}
		})
	}
}

func TestRestoreBootSteps(t *testing.T) {
	m := &Manager{ports: Ports{}}
	s := &Snapshot{}
	for _, c := range []struct {
		name string
		mode bootMode
		want []string
	}{
		{"cold", bootMode{}, []string{stepRecordStarting, stepLockDisk, stepRunDir, stepLaunch, stepRecordLaunched, stepWaitAgent, stepGuestSetup, stepRecordRunning}},
		{"cold making the golden snapshot", bootMode{golden: &goldenPlan{key: "k"}}, []string{stepRecordStarting, stepLockDisk, stepRunDir, stepLaunch, stepRecordLaunched, stepWaitAgent, stepGolden, stepGuestSetup, stepRecordRunning}},
		// Rollback: the guest is the snapshot's own, set up already.
		{"rollback", bootMode{from: s}, []string{stepRecordStarting, stepLockDisk, stepRunDir, stepRestore, stepRecordLaunched, stepWaitAgent, stepRecordRunning}},
		{"fork", bootMode{from: s, reidentify: true}, []string{stepRecordStarting, stepLockDisk, stepRunDir, stepRestore, stepRecordLaunched, stepWaitAgent, stepReidentify, stepRecordRunning}},
	} {
		var got []string
		for _, step := range m.bootSteps(c.mode) {
			got = append(got, step.name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: steps %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDeletingASnapshotWaitsForTheForkReadingIt(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "web", false)
	s := snap(t, m, "web", "s1")
	gate := make(chan struct{})
	w.agentGate = gate // the fork's restored guest answers once the gate opens
	forked := make(chan error, 1)
	go func() {
		_, err := m.Fork(context.Background(), ForkRequest{Source: "s1", Name: "copy"}, noProgress)
		forked <- err
	}()
	eventually(t, "the fork restores", func() bool { return w.count("driver.restore") == 1 })
	deleted := make(chan error, 1)
	go func() { deleted <- m.DeleteSnapshot(context.Background(), "s1") }()
	select {
	case err := <-deleted:
		t.Fatalf("the snapshot was deleted (%v) while a fork read it", err)
	case <-time.After(50 * time.Millisecond):
	}
	if !w.snapDirs[s.ID] {
		t.Fatal("the snapshot's files went while a fork read them")
	}
	close(gate)
	if err := <-forked; err != nil {
		t.Fatalf("fork: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if len(w.snaps) != 0 || w.snapDirs[s.ID] {
		t.Error("the snapshot was not deleted after the fork")
	}
}
