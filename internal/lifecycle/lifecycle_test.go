package lifecycle

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestStateMachine(t *testing.T) {
	for _, s := range States() {
		if !s.Valid() || !s.CanBecome(s) {
			t.Errorf("%s: valid %v, can stay %v", s, s.Valid(), s.CanBecome(s))
		}
		for _, to := range transitions[s] {
			if !to.Valid() {
				t.Errorf("%s → unknown state %q", s, to)
			}
		}
	}
	if State("hibernated").Valid() {
		t.Error("hibernated is not a state")
	}
	for _, bad := range [][2]State{{Stopped, Running}, {Failed, Running}, {Deleting, Starting}, {Creating, Running}, {Stopped, Stopping}} {
		if bad[0].CanBecome(bad[1]) {
			t.Errorf("%s → %s must be refused", bad[0], bad[1])
		}
	}
	for _, s := range States() {
		if !s.CanBecome(Deleting) {
			t.Errorf("%s → deleting must be allowed (delete works from any state)", s)
		}
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"web": true, "a": true, "web-1": true, strings.Repeat("a", 63): true,
		"": false, "-web": false, "Web": false, "web_1": false, strings.Repeat("a", 64): false,
		"0123456789abcdef": false, // shaped like an ID
	} {
		err := ValidateName(name)
		if (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
		var e *Error
		if err != nil && (!errors.As(err, &e) || e.Kind != Invalid) {
			t.Errorf("ValidateName(%q): %v is not an Invalid Error", name, err)
		}
	}
}

// bootCalls is what a boot does, in order, when nothing fails.
var bootCalls = []string{
	"store.save:starting", "files.lock", "files.mkrundir", "overlays.attach", "network.attach",
	"store.save:starting", "driver.launch", "store.save:starting", "agent.wait", "guest.setup",
	"store.save:running", "forwards.start",
}

func create(t *testing.T, w *world, m *Manager, name string, noStart bool) VM {
	t.Helper()
	vm, err := m.Create(context.Background(), CreateRequest{Name: name, NoStart: noStart}, noProgress)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return vm
}

func TestCreateBootsThroughEveryStep(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	want := append([]string{"files.fits", "store.insert", "files.prepare"}, bootCalls...)
	if got := w.log(); !slices.Equal(got, want) {
		t.Errorf("calls:\n got %v\nwant %v", got, want)
	}
	if vm.State != Running || vm.PID != 1001 || vm.PIDStart != 7 || vm.StartedAt.IsZero() || vm.VMM != "fake" {
		t.Errorf("returned vm %+v", vm)
	}
	if stored := w.vm(vm.ID); stored.State != Running || stored.PID != vm.PID {
		t.Errorf("stored vm %+v", stored)
	}
	if m.Instance(vm.ID) == nil {
		t.Error("the running VM is not supervised")
	}
	wantCrash := []string{CrashCreateRecorded, CrashCreateDiskReady, CrashBootStarting, CrashBootDiskLocked,
		CrashBootDiskAttached, CrashBootNetworkAttached, CrashBootSpawned, CrashBootPIDRecorded,
		CrashBootLaunched, CrashBootAgentReady, CrashBootRunning}
	if !slices.Equal(w.crashes, wantCrash) {
		t.Errorf("crash points:\n got %v\nwant %v", w.crashes, wantCrash)
	}
	if want := []string{"web creating", "web starting", "web starting", "web starting", "web running"}; !slices.Equal(w.events, want) {
		t.Errorf("events %v, want %v", w.events, want)
	}
	if _, err := w.locks[0].Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the daemon's copy of the disk lock is still open (%v)", err)
	}
}

func TestCreateFailuresUndoTheCreate(t *testing.T) {
	for _, fail := range []string{"files.prepare", "store.save:stopped"} {
		t.Run(fail, func(t *testing.T) {
			w := newWorld(t)
			w.failOn[fail] = 1
			m := w.manager()
			if _, err := m.Create(context.Background(), CreateRequest{Name: "web", NoStart: true}, noProgress); !errors.Is(err, errInjected) {
				t.Fatalf("create: %v", err)
			}
			if len(w.vms) != 0 || !slices.Contains(w.log(), "files.rmall") {
				t.Errorf("create not undone: vms %v, calls %v", w.vms, w.log())
			}
		})
	}
}

func TestCreateRefusesBadRequests(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "taken", true)
	for _, c := range []struct {
		req  CreateRequest
		kind ErrorKind
	}{
		{CreateRequest{Name: "Bad"}, Invalid},
		{CreateRequest{Name: "x", VCPUs: 99}, Invalid},
		{CreateRequest{Name: "x", MemoryMiB: 1}, Invalid},
		{CreateRequest{Name: "x", DiskSizeBytes: 1}, Invalid},
		{CreateRequest{Name: "x", Image: "nope"}, NotFound},
		{CreateRequest{Name: "taken"}, Exists},
	} {
		_, err := m.Create(context.Background(), c.req, noProgress)
		var e *Error
		if !errors.As(err, &e) || e.Kind != c.kind {
			t.Errorf("%+v: %v, want kind %d", c.req, err, c.kind)
		}
	}
	m.ports.Driver = nil
	if _, err := m.Create(context.Background(), CreateRequest{Name: "novmm"}, noProgress); err == nil || !strings.Contains(err.Error(), "no VMM") {
		t.Errorf("create without a VMM: %v", err)
	}
	if vm, err := m.Create(context.Background(), CreateRequest{Name: "novmm", NoStart: true}, noProgress); err != nil || vm.State != Stopped {
		t.Errorf("create --no-start without a VMM: %+v, %v", vm, err)
	}
}

// undoOf names each boot step's undo call.
var undoOf = map[string]string{
	stepRunDir: "files.rmrundir", stepAttachDisk: "overlays.detach", stepAttachNetwork: "network.detach", stepLaunch: "inst.kill",
}

func TestBootFailureAtEveryStepUndoesExactlyTheEarlierSteps(t *testing.T) {
	// Each case fails one step: the call that fails it, and its occurrence.
	cases := []struct {
		step, call string
		n          int
	}{
		{stepRecordStarting, "store.save:starting", 1},
		{stepLockDisk, "files.lock", 1},
		{stepRunDir, "files.mkrundir", 1},
		{stepAttachDisk, "overlays.attach", 1},
		{stepAttachNetwork, "network.attach", 1},
		{stepLaunch, "store.save:starting", 2}, // recording the spawned pid
		{stepLaunch, "driver.launch", 1},
		{stepRecordLaunched, "store.save:starting", 3},
		{stepWaitAgent, "agent.wait", 1},
		{stepGuestSetup, "guest.setup", 1},
		{stepRecordRunning, "store.save:running", 1},
	}
	var names []string
	for _, s := range (&Manager{ports: Ports{Overlays: fakeOverlays{}, Network: fakeNetwork{}}}).bootSteps(bootMode{}) {
		names = append(names, s.name)
	}
	for _, c := range cases {
		t.Run(c.step+"/"+c.call, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", true)
			before := len(w.log())
			w.failOn[c.call] = w.count(c.call) + c.n
			_, err := m.Start(context.Background(), "web", noProgress)
			if !errors.Is(err, errInjected) && !strings.Contains(err.Error(), errInjected.Error()) {
				t.Fatalf("start: %v", err)
			}
			calls := w.log()[before:]
			failedAt := 0
			for i, call := range calls {
				if call == c.call {
					failedAt = i // the last occurrence is the failing one
				}
			}
			var undone, want []string
			for _, call := range calls[failedAt+1:] {
				if slices.Contains([]string{"files.rmrundir", "overlays.detach", "network.detach", "inst.kill"}, call) {
					undone = append(undone, call)
				}
			}
			k := slices.Index(names, c.step)
			for i := k - 1; i >= 0; i-- {
				if u := undoOf[names[i]]; u != "" {
					want = append(want, u)
				}
			}
			if !slices.Equal(undone, want) {
				t.Errorf("undone %v, want %v (calls %v)", undone, want, calls)
			}
			got := w.vm(vm.ID)
			switch {
			case k == 0:
				if got.State != Stopped {
					t.Errorf("a boot that could not even be recorded left the VM %s", got.State)
				}
			case got.State != Failed || got.PID != 0 || got.LastError == "":
				t.Errorf("after the failure the VM is %+v, want failed with a reason and no pid", got)
			}
			if m.Instance(vm.ID) != nil {
				t.Error("a failed boot left a supervised instance")
			}
			for _, l := range w.locks {
				if _, err := l.Stat(); !errors.Is(err, os.ErrClosed) {
					t.Error("the disk lock was left open")
				}
			}
			var e *Error
			if k > 0 && (!errors.As(err, &e) || e.Kind != Precondition) {
				t.Errorf("error %v is not a precondition refusal", err)
			}
			if c.step == stepLockDisk && !strings.Contains(err.Error(), "two VMMs on one disk") {
				t.Errorf("a locked disk should say why it refuses: %v", err)
			}
		})
	}
}

func TestBootWithoutOverlaysOrNetworkSkipsTheirSteps(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	m.ports.Overlays, m.ports.Network = nil, nil
	create(t, w, m, "web", false)
	for _, call := range w.log() {
		if strings.HasPrefix(call, "overlays.") || strings.HasPrefix(call, "network.") {
			t.Errorf("called %s", call)
		}
	}
	if slices.Contains(w.crashes, CrashBootDiskAttached) || slices.Contains(w.crashes, CrashBootNetworkAttached) {
		t.Errorf("crash points of absent steps passed: %v", w.crashes)
	}
}

func TestStopReleasesTheRuntimeAndRecordsStopped(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	before := len(w.log())
	w.crashes = nil
	got, err := m.Stop(context.Background(), "web", false, 0, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"store.save:stopping", "inst.stop", "forwards.stop", "overlays.detach", "network.detach", "files.rmrundir", "store.save:stopped"}
	if calls := w.log()[before:]; !slices.Equal(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	if got.State != Stopped || got.PID != 0 || got.ExitStatus != "exited with code 0" || m.Instance(vm.ID) != nil {
		t.Errorf("after stop: %+v", got)
	}
	if want := []string{CrashStopStopping, CrashStopVMMGone, CrashStopReleased}; !slices.Equal(w.crashes, want) {
		t.Errorf("crash points %v", w.crashes)
	}
	// Stopping a stopped VM does nothing.
	before = len(w.log())
	if _, err := m.Stop(context.Background(), "web", true, 0, noProgress); err != nil || len(w.log()) != before {
		t.Errorf("second stop: %v, calls %v", err, w.log()[before:])
	}
}

func TestStopOfAVMMThatSurvivesKeepsItRunning(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	m.Instance(vm.ID).(*fakeInst).stubborn = true
	if _, err := m.Stop(context.Background(), "web", true, 0, noProgress); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("stop: %v", err)
	}
	if got := w.vm(vm.ID); got.State != Running || got.PID == 0 || m.Instance(vm.ID) == nil {
		t.Errorf("after a failed stop: %+v", got)
	}
}

func TestStopWithoutAVMMRecordsTheTruth(t *testing.T) {
	for _, s := range []State{Running, Starting, Stopping} {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", true)
		vm.State, vm.PID = s, 42
		w.vms[vm.ID] = vm
		got, err := m.Stop(context.Background(), "web", false, 0, noProgress)
		if err != nil || got.State != Stopped || got.PID != 0 {
			t.Errorf("%s without a VMM: %+v, %v", s, got, err)
		}
	}
}

func TestStartRefusesAVMInTheMiddleOfSomething(t *testing.T) {
	for _, s := range []State{Creating, Starting, Stopping, Deleting} {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", true)
		vm.State = s
		w.vms[vm.ID] = vm
		_, err := m.Start(context.Background(), "web", noProgress)
		var e *Error
		if !errors.As(err, &e) || e.Kind != Precondition {
			t.Errorf("start of a %s VM: %v", s, err)
		}
	}
	w := newWorld(t)
	m := w.manager()
	if _, err := m.Start(context.Background(), "ghost", noProgress); err == nil || !strings.Contains(err.Error(), "no VM named") {
		t.Errorf("start of a missing VM: %v", err)
	}
}

func TestRestartStopsAndBootsAgain(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	first := m.Instance(vm.ID)
	got, err := m.Restart(context.Background(), "web", noProgress)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != Running || m.Instance(vm.ID) == first || got.PID == vm.PID {
		t.Errorf("after restart: %+v", got)
	}
	select {
	case <-first.Done():
	default:
		t.Error("the first VMM still runs")
	}
}

func TestDeleteRemovesEverything(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	before := len(w.log())
	w.crashes = nil
	if err := m.Delete(context.Background(), "web", false, noProgress); err != nil {
		t.Fatal(err)
	}
	calls := w.log()[before:]
	want := []string{"store.save:stopping", "inst.stop", "forwards.stop", "overlays.detach", "network.detach", "files.rmrundir",
		"store.save:stopped", "store.save:deleting", "files.rmall", "store.delete", "network.forget", "guest.forget"}
	if !slices.Equal(calls, want) {
		t.Errorf("calls %v, want %v", calls, want)
	}
	if _, ok := w.vms[vm.ID]; ok || m.Instance(vm.ID) != nil {
		t.Error("the VM is still there")
	}
	if !slices.Contains(w.crashes, CrashDeleteDeleting) || !slices.Contains(w.crashes, CrashDeleteFilesRemoved) {
		t.Errorf("crash points %v", w.crashes)
	}
	if w.events[len(w.events)-1] != "web deleted" {
		t.Errorf("last event %q", w.events[len(w.events)-1])
	}
}

func TestDeleteThatFailsHalfWayCanBeRetried(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", true)
	w.failOn["files.rmall"] = w.count("files.rmall") + 1
	if err := m.Delete(context.Background(), "web", false, noProgress); !errors.Is(err, errInjected) {
		t.Fatalf("delete: %v", err)
	}
	if got := w.vm(vm.ID); got.State != Deleting {
		t.Fatalf("after a failed delete: %s", got.State)
	}
	if err := m.Delete(context.Background(), "web", false, noProgress); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

func TestWatchRecordsAVMMThatExitsByItself(t *testing.T) {
	for _, c := range []struct {
		name  string
		exit  func(*fakeInst)
		state State
		why   string
	}{
		{"powered off", func(i *fakeInst) { i.exit(vmmExit(0, "", false)) }, Stopped, ""},
		{"killed", func(i *fakeInst) { i.exit(vmmExit(-1, "KILL", false)) }, Failed, "exited unexpectedly"},
		{"not our child", func(i *fakeInst) { i.exit(vmmExit(-1, "", true)) }, Failed, "not the daemon's child"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			c.exit(m.Instance(vm.ID).(*fakeInst))
			eventually(t, "the exit is recorded", func() bool { return w.vm(vm.ID).State != Running })
			got := w.vm(vm.ID)
			if got.State != c.state || got.PID != 0 || !strings.Contains(got.LastError, c.why) || m.Instance(vm.ID) != nil {
				t.Errorf("after the exit: %+v", got)
			}
			if !slices.Contains(w.log(), "network.detach") {
				t.Error("the runtime was not released")
			}
		})
	}
}

func TestOperationsOnOneVMAreSerialized(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", true)
	gate := make(chan struct{})
	w.agentGate = gate
	var wg sync.WaitGroup
	var startErr, stopErr error
	wg.Add(1)
	go func() { defer wg.Done(); _, startErr = m.Start(context.Background(), "web", noProgress) }()
	eventually(t, "the boot waits for the agent", func() bool { return slices.Contains(w.log(), "driver.launch") })
	wg.Add(1)
	go func() { defer wg.Done(); _, stopErr = m.Stop(context.Background(), "web", false, 0, noProgress) }()
	close(gate)
	wg.Wait()
	if startErr != nil || stopErr != nil {
		t.Fatalf("start %v, stop %v", startErr, stopErr)
	}
	calls := w.log()
	if slices.Index(calls, "store.save:stopping") < slices.Index(calls, "store.save:running") {
		t.Errorf("the stop ran inside the boot: %v", calls)
	}
	if got := w.vm(vm.ID); got.State != Stopped {
		t.Errorf("final state %s", got.State)
	}
}

func TestOperationsOnDifferentVMsRunConcurrently(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	create(t, w, m, "slow", true)
	create(t, w, m, "fast", false)
	gate := make(chan struct{})
	w.agentGate = gate
	done := make(chan error, 1)
	go func() { _, err := m.Start(context.Background(), "slow", noProgress); done <- err }()
	eventually(t, "the slow boot waits for its agent", func() bool { return w.count("driver.launch") == 2 })
	// The slow VM's boot holds its lock; the other VM is not held up.
	if _, err := m.Stop(context.Background(), "fast", false, 0, noProgress); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(context.Background(), "fast", false, noProgress); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestManyConcurrentCreatesGetDistinctVMs(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Create(context.Background(), CreateRequest{Name: name}, noProgress)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if len(w.vms) != 8 {
		t.Errorf("%d VMs", len(w.vms))
	}
}

func TestRecordRefusesATransitionTheStateMachineForbids(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", true)
	before := len(w.log())
	if err := m.record(context.Background(), &vm, Running); err == nil {
		t.Fatal("stopped → running was recorded")
	}
	if vm.State != Stopped || w.vm(vm.ID).State != Stopped || len(w.log()) != before {
		t.Errorf("a refused transition changed something: %s, calls %v", vm.State, w.log()[before:])
	}
}

func TestRestartOfAVMBeingDeletedIsRefused(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", true)
	vm.State = Deleting
	w.vms[vm.ID] = vm
	_, err := m.Restart(context.Background(), "web", noProgress)
	var e *Error
	if !errors.As(err, &e) || e.Kind != Precondition {
		t.Errorf("restart of a deleting VM: %v", err)
	}
}

func TestConcurrentCreatesOfOneNameMakeOneVM(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Create(context.Background(), CreateRequest{Name: "web"}, noProgress)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok, exists := 0, 0
	for err := range errs {
		var e *Error
		switch {
		case err == nil:
			ok++
		case errors.As(err, &e) && e.Kind == Exists:
			exists++
		default:
			t.Error(err)
		}
	}
	if ok != 1 || exists != 3 || len(w.vms) != 1 {
		t.Errorf("%d created, %d refused, %d recorded", ok, exists, len(w.vms))
	}
}

func TestCreateReportsEachStageOfTheBoot(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	var stages []string
	if _, err := m.Create(context.Background(), CreateRequest{Name: "web"}, func(r Report) {
		if r.VM != "web" || r.Message == "" {
			t.Errorf("report %+v", r)
		}
		stages = append(stages, r.Stage)
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"disk", "boot", "network", "agent", "agent-ready", "ready"}; !slices.Equal(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}
}

// TestDefaultDiskGrowsToTheImage: a VM created without a disk size gets
// the configured default, or the image's size when the image is bigger (a
// pulled container image is often bigger than the 1G default); an explicit
// size smaller than the image is refused, saying what would do.
func TestDefaultDiskGrowsToTheImage(t *testing.T) {
	w := newWorld(t)
	w.images["big"] = Image{ID: "big", Name: "big", Kernel: "/k", Rootfs: "/r", RootfsSizeBytes: 3 << 30}
	m := w.manager()
	vm, err := m.Create(context.Background(), CreateRequest{Name: "small", NoStart: true}, noProgress)
	if err != nil || vm.DiskSizeBytes != 1<<30 {
		t.Fatalf("default disk of a small image: %d, %v; want the configured 1G", vm.DiskSizeBytes, err)
	}
	vm, err = m.Create(context.Background(), CreateRequest{Name: "roomy", Image: "big", NoStart: true}, noProgress)
	if err != nil || vm.DiskSizeBytes != 3<<30 {
		t.Fatalf("default disk of a 3G image: %d, %v; want the image's 3G", vm.DiskSizeBytes, err)
	}
	_, err = m.Create(context.Background(), CreateRequest{Name: "cramped", Image: "big", DiskSizeBytes: 2 << 30, NoStart: true}, noProgress)
	var e *Error
	if !errors.As(err, &e) || e.Kind != Invalid || !strings.Contains(e.Hint, "--disk") {
		t.Fatalf("explicit disk smaller than the image: %v, want Invalid with a --disk hint", err)
	}
	if _, err := m.Get(context.Background(), "cramped"); err == nil {
		t.Error("a refused create left a record")
	}
}
