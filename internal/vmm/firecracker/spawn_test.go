package firecracker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// TestOnSpawnComesBeforeConfiguration: the caller learns the VMM's process
// (pid and start time) before the driver configures anything, so a daemon
// that dies mid-launch has recorded what to stop; the VMM inherits
// HeldFiles; and a failing OnSpawn leaves no process behind.
func TestOnSpawnComesBeforeConfiguration(t *testing.T) {
	d, record := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	held, err := os.Create(filepath.Join(shortTempDir(t), "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	spec.HeldFiles = []*os.File{held}
	var got vmm.Process
	var putsBefore int
	spec.OnSpawn = func(p vmm.Process) error {
		got = p
		data, _ := os.ReadFile(record)
		putsBefore = strings.Count(string(data), "PUT ")
		return nil
	}
	inst := launch(t, d, spec)
	if got.PID != inst.PID() || got.StartTime == 0 {
		t.Fatalf("OnSpawn saw %+v, the instance is pid %d", got, inst.PID())
	}
	if st, err := vmmproc.StartTime(inst.PID()); err != nil || st != got.StartTime {
		t.Fatalf("start time %d, /proc says %d (%v)", got.StartTime, st, err)
	}
	if putsBefore != 0 {
		t.Fatalf("the VMM was configured (%d PUTs) before OnSpawn", putsBefore)
	}
	if inst.Process() != got {
		t.Fatalf("Process() = %+v, want %+v", inst.Process(), got)
	}
	if target, _ := os.Readlink("/proc/" + strconv.Itoa(inst.PID()) + "/fd/3"); target != held.Name() {
		t.Fatalf("the VMM's fd 3 is %q, want the held file %s", target, held.Name())
	}

	// Attach checks the start time: a recorded one that differs is a
	// reused pid and refused; the right one is accepted.
	if _, err := New(Config{}).Attach(context.Background(), spec, vmm.Process{PID: got.PID, StartTime: got.StartTime + 1}); !errors.Is(err, ErrNotThisVMM) || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("attach with another start time: %v", err)
	}
	if _, err := New(Config{}).Attach(context.Background(), spec, got); err != nil {
		t.Fatalf("attach with the recorded process: %v", err)
	}
}

func TestOnSpawnErrorKillsTheVMM(t *testing.T) {
	d, _ := newFakeDriver(t, fakeEnv{}, Config{})
	spec := testSpec(t)
	var pid int
	spec.OnSpawn = func(p vmm.Process) error {
		pid = p.PID
		return errors.New("database is locked")
	}
	_, err := d.Launch(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "record the firecracker process: database is locked") {
		t.Fatalf("launch with a failing OnSpawn: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d survived a failed OnSpawn", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
