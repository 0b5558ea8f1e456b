package lifecycle

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantKind fails t unless err is an Error of kind saying what.
func wantKind(t *testing.T, err error, kind ErrorKind, what string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Kind != kind || !strings.Contains(err.Error(), what) {
		t.Fatalf("error %v, want kind %d saying %q", err, kind, what)
	}
}

func instOf(t *testing.T, m *Manager, id string) *fakeInst {
	t.Helper()
	inst, ok := m.Instance(id).(*fakeInst)
	if !ok {
		t.Fatalf("vm %s has no fake instance (%T)", id, m.Instance(id))
	}
	return inst
}

func TestPauseAndResume(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	inst := instOf(t, m, vm.ID)
	ctx := context.Background()
	got, err := m.Pause(ctx, "web")
	if err != nil || got.State != Paused || w.vm(vm.ID).State != Paused || !inst.isPaused() {
		t.Fatalf("pause: %v, %+v, vmm paused %v", err, got, inst.isPaused())
	}
	if !slices.Contains(w.crashes, CrashPausePaused) {
		t.Errorf("crash point %s not passed", CrashPausePaused)
	}
	if _, err := m.Pause(ctx, "web"); err != nil || w.count("inst.pause") != 1 {
		t.Errorf("a second pause: %v, %d pauses (want it left alone)", err, w.count("inst.pause"))
	}
	got, err = m.Resume(ctx, "web")
	if err != nil || got.State != Running || w.vm(vm.ID).State != Running || inst.isPaused() {
		t.Fatalf("resume: %v, %+v, vmm paused %v", err, got, inst.isPaused())
	}
	if _, err := m.Resume(ctx, "web"); err != nil || w.count("inst.resume") != 1 {
		t.Errorf("a second resume: %v, %d resumes (want it left alone)", err, w.count("inst.resume"))
	}
}

func TestPauseAndResumeRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("stopped VM", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", true)
		_, err := m.Pause(ctx, "web")
		wantKind(t, err, Precondition, "only a running VM can be paused")
		_, err = m.Resume(ctx, "web")
		wantKind(t, err, Precondition, "only a paused VM can be resumed")
		if w.vm(vm.ID).State != Stopped {
			t.Errorf("the VM is now %s", w.vm(vm.ID).State)
		}
	})
	t.Run("driver cannot pause", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		m.ports.Driver = bootOnlyDriver{fakeDriver{w}}
		vm := create(t, w, m, "web", false)
		_, err := m.Pause(ctx, "web")
		wantKind(t, err, Precondition, "cannot pause")
		if w.vm(vm.ID).State != Running {
			t.Errorf("the VM is now %s", w.vm(vm.ID).State)
		}
	})
	t.Run("pause not recorded is undone", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		vm := create(t, w, m, "web", false)
		w.failOn["store.save:paused"] = 1
		if _, err := m.Pause(ctx, "web"); !errors.Is(err, errInjected) {
			t.Fatalf("pause: %v", err)
		}
		if w.vm(vm.ID).State != Running || instOf(t, m, vm.ID).isPaused() {
			t.Errorf("the VM is %s, its VMM paused %v: want it running", w.vm(vm.ID).State, instOf(t, m, vm.ID).isPaused())
		}
	})
	t.Run("start of a paused VM", func(t *testing.T) {
		w := newWorld(t)
		m := w.manager()
		create(t, w, m, "web", false)
		if _, err := m.Pause(ctx, "web"); err != nil {
			t.Fatal(err)
		}
		_, err := m.Start(ctx, "web", noProgress)
		wantKind(t, err, Precondition, "paused")
		if e := (*Error)(nil); errors.As(err, &e) && !strings.Contains(e.Hint, "vm resume") {
			t.Errorf("hint %q does not say how to resume", e.Hint)
		}
	})
}

func TestStopOfAPausedVM(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name       string
		force      bool
		failResume bool
		want       []string // the VMM calls, in order
	}{
		// A paused guest cannot shut down: it runs first.
		{"graceful", false, false, []string{"inst.resume", "inst.stop"}},
		{"resume fails", false, true, []string{"inst.resume", "inst.kill"}},
		{"forced", true, false, []string{"inst.kill"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			m := w.manager()
			vm := create(t, w, m, "web", false)
			if _, err := m.Pause(ctx, "web"); err != nil {
				t.Fatal(err)
			}
			if c.failResume {
				w.failOn["inst.resume"] = 1
			}
			before := len(w.log())
			got, err := m.Stop(ctx, "web", c.force, time.Second, noProgress)
			if err != nil || got.State != Stopped || w.vm(vm.ID).State != Stopped {
				t.Fatalf("stop: %v, %+v", err, got)
			}
			var vmmCalls []string
			for _, call := range w.log()[before:] {
				if strings.HasPrefix(call, "inst.") {
					vmmCalls = append(vmmCalls, call)
				}
			}
			if !slices.Equal(vmmCalls, c.want) {
				t.Errorf("VMM calls %v, want %v", vmmCalls, c.want)
			}
		})
	}
}

func TestStopOfAPausedVMMThatSurvivesKeepsItPaused(t *testing.T) {
	w := newWorld(t)
	m := w.manager()
	vm := create(t, w, m, "web", false)
	if _, err := m.Pause(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	instOf(t, m, vm.ID).stubborn = true
	if _, err := m.Stop(context.Background(), "web", true, time.Second, noProgress); err == nil {
		t.Fatal("a stop whose VMM survived succeeded")
	}
	if got := w.vm(vm.ID).State; got != Paused {
		t.Errorf("the VM is recorded %s; its VMM is still there, paused", got)
	}
}
