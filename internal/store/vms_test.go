package store

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/lifecycle"
)

func testVM(name string) VM {
	return VM{
		ID:            NewID(),
		Name:          name,
		VCPUs:         2,
		MemoryMiB:     1024,
		DiskSizeBytes: 8 << 30,
		Network:       json.RawMessage(`{"tap":"tap-` + name + `"}`),
		VMM:           "firecracker",
	}
}

func TestVMCRUD(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	im := testImage("debian")
	if err := s.CreateImage(ctx, im); err != nil {
		t.Fatal(err)
	}

	vm := testVM("dev")
	vm.ImageID, vm.ImageName = im.ID, im.Name
	vm.Autostart = true
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != lifecycle.Creating {
		t.Errorf("State = %q, want the default %q", got.State, lifecycle.Creating)
	}
	if got.CreatedAt.IsZero() || got.UpdatedAt.IsZero() || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt %v / UpdatedAt %v, want UTC times from the clock", got.CreatedAt, got.UpdatedAt)
	}
	if !got.StartedAt.IsZero() || !got.StoppedAt.IsZero() {
		t.Errorf("StartedAt %v / StoppedAt %v, want zero", got.StartedAt, got.StoppedAt)
	}
	want := vm
	want.State, want.CreatedAt, want.UpdatedAt = lifecycle.Creating, got.CreatedAt, got.UpdatedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GetVM = %+v\nwant     %+v", got, want)
	}
	if byID, err := s.GetVM(ctx, vm.ID); err != nil || byID.Name != "dev" {
		t.Errorf("GetVM(id) = %+v, %v", byID, err)
	}

	// A VM without an image is allowed (ImageID stored as NULL).
	bare := testVM("alpha")
	bare.Network = nil
	if err := s.CreateVM(ctx, bare); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names := vmNames(list); !slices.Equal(names, []string{"alpha", "dev"}) {
		t.Errorf("ListVMs = %v, want sorted by name", names)
	}
	if list[0].ImageID != "" || string(list[0].Network) != "{}" {
		t.Errorf("bare vm: ImageID %q Network %s, want empty and {}", list[0].ImageID, list[0].Network)
	}

	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVM(ctx, "dev"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM after delete: %v, want ErrNotFound", err)
	}
	err = s.DeleteVM(ctx, vm.ID)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteVM: %v, want ErrNotFound", err)
	}
	if want := `store: delete vm "` + vm.ID + `": not found`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestGetVMPrefersIDOverName(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	a := testVM("a")
	if err := s.CreateVM(ctx, a); err != nil {
		t.Fatal(err)
	}
	impostor := testVM(a.ID) // named like a's ID
	if err := s.CreateVM(ctx, impostor); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, a.ID)
	if err != nil || got.ID != a.ID {
		t.Errorf("GetVM(%q) = %q, %v; want the VM with that ID", a.ID, got.Name, err)
	}
}

func TestGetVMNotFound(t *testing.T) {
	s, _ := openTestStore(t)
	_, err := s.GetVM(context.Background(), "ghost")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetVM: %v, want ErrNotFound", err)
	}
	if want := `store: get vm "ghost": not found`; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func TestCreateVMAlreadyExists(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	err := s.CreateVM(ctx, testVM("dev"))
	if !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("duplicate name: %v, want ErrAlreadyExists", err)
	}
	if want := `store: create vm "dev": already exists: another vm has the same name`; err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	dupID := testVM("other")
	dupID.ID = vm.ID
	if err := s.CreateVM(ctx, dupID); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate id: %v, want ErrAlreadyExists", err)
	}
}

func TestCreateVMWithUnknownImage(t *testing.T) {
	s, _ := openTestStore(t)
	vm := testVM("dev")
	vm.ImageID = "feedfacefeedface"
	err := s.CreateVM(context.Background(), vm)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `image "feedfacefeedface"`) {
		t.Errorf("CreateVM: %v, want ErrNotFound naming the image", err)
	}
}

func TestCreateVMValidates(t *testing.T) {
	s, _ := openTestStore(t)
	for name, mutate := range map[string]func(*VM){
		"no id":       func(vm *VM) { vm.ID = "" },
		"no name":     func(vm *VM) { vm.Name = "" },
		"zero vcpus":  func(vm *VM) { vm.VCPUs = 0 },
		"zero memory": func(vm *VM) { vm.MemoryMiB = 0 },
		"negative":    func(vm *VM) { vm.DiskSizeBytes = -1 },
		"bad state":   func(vm *VM) { vm.State = "hibernating" },
		"bad network": func(vm *VM) { vm.Network = json.RawMessage(`[`) },
	} {
		vm := testVM("x")
		mutate(&vm)
		if err := s.CreateVM(context.Background(), vm); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestUpdateVMState(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	created, err := s.GetVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}

	started := time.Date(2026, 5, 1, 12, 0, 0, 987654321, time.UTC)
	upd := created.Observed()
	upd.State, upd.PID, upd.APISocket, upd.RunDir, upd.StartedAt =
		lifecycle.Running, 4242, "/run/banger/vms/dev/api.sock", "/run/banger/vms/dev", started
	if err := s.UpdateVMState(ctx, vm.ID, upd); err != nil {
		t.Fatal(err)
	}
	running, err := s.GetVM(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if running.State != lifecycle.Running || running.PID != 4242 || running.APISocket != upd.APISocket ||
		running.RunDir != upd.RunDir || !running.StartedAt.Equal(started) || running.VMM != "firecracker" {
		t.Errorf("after update: %+v", running)
	}
	if !running.UpdatedAt.After(created.UpdatedAt) {
		t.Errorf("UpdatedAt %v not after %v", running.UpdatedAt, created.UpdatedAt)
	}
	// The spec is untouched.
	if running.VCPUs != vm.VCPUs || string(running.Network) != string(vm.Network) || !running.CreatedAt.Equal(created.CreatedAt) {
		t.Errorf("spec changed by a state update: %+v", running)
	}

	stopped := started.Add(time.Hour)
	upd = running.Observed()
	upd.State, upd.PID, upd.StoppedAt, upd.ExitStatus, upd.LastError = lifecycle.Failed, 0, stopped, "signal: killed", "guest agent never became ready"
	upd.APISocket = ""
	if err := s.UpdateVMState(ctx, vm.ID, upd); err != nil {
		t.Fatal(err)
	}
	failed, _ := s.GetVM(ctx, vm.ID)
	if failed.State != lifecycle.Failed || failed.PID != 0 || failed.APISocket != "" || !failed.StoppedAt.Equal(stopped) ||
		!failed.StartedAt.Equal(started) || failed.ExitStatus != "signal: killed" || failed.LastError != upd.LastError {
		t.Errorf("after failure: %+v", failed)
	}

	if err := s.UpdateVMState(ctx, "0000000000000000", upd); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown VM: %v, want ErrNotFound", err)
	}
	upd.State = "sleeping"
	if err := s.UpdateVMState(ctx, vm.ID, upd); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown state: %v, want ErrInvalid", err)
	}
}

func TestUpdateVMStateConditional(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	vm.State = lifecycle.Stopped
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}

	err := s.UpdateVMState(ctx, vm.ID, VMStateUpdate{State: lifecycle.Stopping, IfStateIn: []lifecycle.State{lifecycle.Running, lifecycle.Starting}})
	if !errors.Is(err, ErrStateConflict) {
		t.Fatalf("conditional update from the wrong state: %v, want ErrStateConflict", err)
	}
	if got, _ := s.GetVM(ctx, vm.ID); got.State != lifecycle.Stopped {
		t.Errorf("state changed to %q by a refused update", got.State)
	}
	if err := s.UpdateVMState(ctx, vm.ID, VMStateUpdate{State: lifecycle.Starting, IfStateIn: []lifecycle.State{lifecycle.Stopped}}); err != nil {
		t.Errorf("conditional update from the right state: %v", err)
	}
}

// Exactly one of many racing transitions out of the same state wins.
func TestUpdateVMStateConditionalRace(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vm := testVM("dev")
	vm.State = lifecycle.Running
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- s.UpdateVMState(ctx, vm.ID, VMStateUpdate{State: lifecycle.Stopping, IfStateIn: []lifecycle.State{lifecycle.Running}})
		}()
	}
	wins := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrStateConflict):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d updates won, want exactly 1", wins)
	}
}

func TestValidStates(t *testing.T) {
	for _, st := range []lifecycle.State{lifecycle.Creating, lifecycle.Starting, lifecycle.Running, lifecycle.Stopping, lifecycle.Stopped, lifecycle.Failed, lifecycle.Deleting} {
		if !st.Valid() {
			t.Errorf("%q not valid", st)
		}
	}
	if lifecycle.State("").Valid() || lifecycle.State("Running").Valid() {
		t.Error("invalid states accepted")
	}
}

func vmNames(vms []VM) []string {
	var out []string
	for _, vm := range vms {
		out = append(out, vm.Name)
	}
	return out
}
