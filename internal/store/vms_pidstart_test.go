package store

import (
	"context"
	"testing"

	"github.com/banger-dev/banger/internal/lifecycle"
)

// TestVMProcessStartTimeRoundTrips: the VMM's start time (migration 4) is
// stored with its pid, kept by Observed, and cleared with it.
func TestVMProcessStartTimeRoundTrips(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	upd := got.Observed()
	// Ticks since boot; larger than 32 bits to catch a narrowing.
	upd.State, upd.PID, upd.PIDStart = lifecycle.Starting, 4242, 1<<40+7
	if err := s.UpdateVMState(ctx, vm.ID, upd); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetVM(ctx, vm.ID); err != nil || got.PID != 4242 || got.PIDStart != 1<<40+7 {
		t.Fatalf("after recording the process: %+v, %v", got, err)
	}
	if o := got.Observed(); o.PIDStart != got.PIDStart {
		t.Fatalf("Observed dropped the start time: %+v", o)
	}
	upd = got.Observed()
	upd.State, upd.PID, upd.PIDStart = lifecycle.Stopped, 0, 0
	if err := s.UpdateVMState(ctx, vm.ID, upd); err != nil {
		t.Fatal(err)
	}
	if got, err = s.GetVM(ctx, vm.ID); err != nil || got.PIDStart != 0 {
		t.Fatalf("after clearing the process: %+v, %v", got, err)
	}
}
