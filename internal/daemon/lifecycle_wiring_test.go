package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/store"
)

// Every lifecycle state has its API counterpart: a state added to the
// lifecycle fails here until the wire enum has it.
func TestEveryLifecycleStateMapsToAnAPIState(t *testing.T) {
	wire := []api.VMState{api.VMCreating, api.VMStarting, api.VMRunning, api.VMPaused, api.VMStopping, api.VMStopped, api.VMFailed, api.VMDeleting}
	for _, s := range lifecycle.States() {
		if !slices.Contains(wire, apiState(s)) {
			t.Errorf("lifecycle state %q has no API state", s)
		}
	}
	if len(wire) != len(lifecycle.States()) {
		t.Errorf("the API has %d states, the lifecycle %d", len(wire), len(lifecycle.States()))
	}
}

// fillAll sets every field of the struct v points to a non-zero value.
func fillAll(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		f := rv.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(fmt.Sprintf("v%d", i))
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Uint64:
			f.SetUint(uint64(i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.SetBytes([]byte(fmt.Sprintf(`{"f":%d}`, i)))
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Unix(int64(i), 0).UTC()))
		case reflect.Map: // labels
			f.Set(reflect.ValueOf(map[string]string{"k": fmt.Sprint(i)}))
		default:
			t.Fatalf("field %s: kind %s not handled", rv.Type().Field(i).Name, f.Kind())
		}
	}
}

// The store's VM and the lifecycle's map to each other without losing a
// field (UpdatedAt is the store's own).
func TestVMMapsBetweenStoreAndLifecycle(t *testing.T) {
	var vm lifecycle.VM
	fillAll(t, &vm)
	vm.State = lifecycle.Running
	if back := fromStoreVM(toStoreVM(vm)); !reflect.DeepEqual(back, vm) {
		t.Errorf("lifecycle → store → lifecycle:\n got %+v\nwant %+v", back, vm)
	}
	var sv store.VM
	fillAll(t, &sv)
	sv.State, sv.UpdatedAt = lifecycle.Stopped, time.Time{}
	if back := toStoreVM(fromStoreVM(sv)); !reflect.DeepEqual(back, sv) {
		t.Errorf("store → lifecycle → store:\n got %+v\nwant %+v", back, sv)
	}
}

func TestLifecycleErrorsMapToAPICodes(t *testing.T) {
	for kind, code := range map[lifecycle.ErrorKind]api.Code{
		lifecycle.Invalid: api.CodeInvalidArgument, lifecycle.NotFound: api.CodeNotFound,
		lifecycle.Exists: api.CodeAlreadyExists, lifecycle.Precondition: api.CodeFailedPrecondition,
		lifecycle.Unavailable: api.CodeUnavailable,
	} {
		err := fmt.Errorf("create vm %q: %w", "web", lifecycle.Errorf(kind, "no").WithHint("do this"))
		got := apiError(err)
		var e *api.Error
		if !errors.As(got, &e) || e.Code != code || e.Message != `create vm "web": no` || e.Hint != "do this" {
			t.Errorf("kind %d → %#v, want code %s with the context and hint", kind, got, code)
		}
	}
	plain := errors.New("disk on fire")
	if got := apiError(plain); got != plain {
		t.Errorf("a plain error changed: %v", got)
	}
}

// A deleted VM's jail goes with it in system mode too, where the jail base
// is not under the state dir.
func TestRemoveAllRemovesTheJailInSystemMode(t *testing.T) {
	dir := t.TempDir()
	layout := testLayoutAt(dir)
	layout.Mode = paths.ModeSystem
	f := lcFiles{layout: layout}
	const id, other = "00000000000000aa", "00000000000000bb"
	for _, p := range []string{
		filepath.Join(layout.JailDir(), "firecracker", id, "root", "rootfs.ext4"),
		filepath.Join(layout.JailDir(), "firecracker", other, "root", "rootfs.ext4"),
		filepath.Join(layout.VMStateDir(id), "disk.cow"),
		filepath.Join(layout.VMRunDir(id), "vsock.sock"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.RemoveAll(id); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{filepath.Join(layout.JailDir(), "firecracker", id), layout.VMStateDir(id), layout.VMRunDir(id)} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", gone, err)
		}
	}
	if _, err := os.Stat(filepath.Join(layout.JailDir(), "firecracker", other)); err != nil {
		t.Errorf("another VM's jail went too: %v", err)
	}
}
