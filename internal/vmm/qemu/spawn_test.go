package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// TestOnSpawnComesBeforeQMP: the caller learns QEMU's process (pid and
// start time) before the driver talks QMP to it; QEMU inherits HeldFiles;
// Attach refuses a recorded start time that differs; and a failing OnSpawn
// leaves no process behind.
func TestOnSpawnComesBeforeQMP(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	held, err := os.Create(filepath.Join(t.TempDir(), "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	spec.HeldFiles = []*os.File{held}
	var got vmm.Process
	spec.OnSpawn = func(p vmm.Process) error {
		got = p
		return nil
	}
	inst := launch(t, d, spec)
	if got.PID != inst.PID() || got.StartTime == 0 || inst.Process() != got {
		t.Fatalf("OnSpawn saw %+v, the instance is %+v", got, inst.Process())
	}
	if st, err := vmmproc.StartTime(inst.PID()); err != nil || st != got.StartTime {
		t.Fatalf("start time %d, /proc says %d (%v)", got.StartTime, st, err)
	}
	if target, _ := os.Readlink("/proc/" + strconv.Itoa(inst.PID()) + "/fd/3"); target != held.Name() {
		t.Fatalf("qemu's fd 3 is %q, want the held file %s", target, held.Name())
	}
	d2 := New(Config{Host: d.cfg.Host})
	if _, err := d2.Attach(context.Background(), spec, vmm.Process{PID: got.PID, StartTime: got.StartTime + 1}); !errors.Is(err, ErrNotThisVMM) || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("attach with another start time: %v", err)
	}
	if _, err := d2.Attach(context.Background(), spec, got); err != nil {
		t.Fatalf("attach with the recorded process: %v", err)
	}

	spec2 := fakeSpec(t)
	var pid int
	spec2.OnSpawn = func(p vmm.Process) error {
		pid = p.PID
		return errors.New("database is locked")
	}
	if _, err := d.Launch(context.Background(), spec2); err == nil || !strings.Contains(err.Error(), "record the qemu process: database is locked") {
		t.Fatalf("launch with a failing OnSpawn: %v", err)
	}
	assertGone(t, pid)
}
