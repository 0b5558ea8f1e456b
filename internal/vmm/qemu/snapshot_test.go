package qemu

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// ask sends line to the fake guest's agent and returns its answer.
func ask(t *testing.T, inst *Instance, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("agent did not answer %q: %v", line, err)
	}
	return strings.TrimSuffix(got, "\n")
}

func status(t *testing.T, inst *Instance) string {
	t.Helper()
	st, err := inst.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// savedSnapshot launches a fake guest for spec that remembers memory,
// pauses it, writes its snapshot, kills it and returns the state file.
func savedSnapshot(t *testing.T, d *Driver, spec vmm.LaunchSpec, memory string) string {
	t.Helper()
	inst := launch(t, d, spec)
	ask(t, inst, "set:"+memory)
	ctx := context.Background()
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(shortTempDir(t), "state")
	if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: state}); err != nil {
		t.Fatal(err)
	}
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	return state
}

// TestSnapshotAndRestore: a paused guest's state goes to the state file
// (0600, with a header describing the machine) and stays paused; a second
// snapshot of the still-paused guest works although QEMU refuses to
// migrate twice; a restore under another run dir and agent socket brings
// the state back, supervised like a launch; and a guest paused by a
// snapshot still stops cleanly.
func TestSnapshotAndRestore(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	inst := launch(t, d, spec)
	ctx := context.Background()
	ask(t, inst, "set:alpha")
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	first := filepath.Join(dir, "first")
	if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: first}); err != nil {
		t.Fatal(err)
	}
	if st := status(t, inst); st != "postmigrate" {
		t.Fatalf("status after a snapshot = %s, want postmigrate (paused)", st)
	}
	second := filepath.Join(dir, "second")
	if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: second}); err != nil {
		t.Fatalf("second snapshot of a paused guest: %v", err)
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	f, hdr, err := openState(second)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := stateHeader{
		machine:     machine{Accel: AccelTCG, Transport: TransportSerial, VCPUs: 1, MemoryMiB: 128, Drives: 1, NICs: 0},
		QEMUVersion: "7.2.22", StreamBytes: fi.Size() - stateHeaderSize,
	}
	if hdr != want {
		t.Errorf("header %+v, want %+v", hdr, want)
	}

	// The power button reaches a guest paused by a snapshot.
	start := time.Now()
	if err := inst.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if ex := inst.Exit(); ex.Code != 0 || time.Since(start) > 3*time.Second {
		t.Errorf("stop of a guest paused by a snapshot: %s after %v, want a clean exit at once", ex, time.Since(start))
	}

	// Restore into another run dir with another agent socket.
	spec2 := fakeSpec(t)
	spec2.Agent.UDSPath = filepath.Join(spec2.RunDir, "other-agent.sock")
	held, err := os.Create(filepath.Join(t.TempDir(), "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	spec2.HeldFiles = []*os.File{held}
	var spawned vmm.Process
	spec2.OnSpawn = func(p vmm.Process) error { spawned = p; return nil }
	vi, err := d.Restore(ctx, spec2, vmm.SnapshotFiles{State: second})
	if err != nil {
		t.Fatal(err)
	}
	restored := vi.(*Instance)
	t.Cleanup(func() { _ = restored.Kill() })
	if spawned != restored.Process() {
		t.Errorf("OnSpawn saw %+v, the instance is %+v", spawned, restored.Process())
	}
	if target, _ := os.Readlink("/proc/" + strconv.Itoa(restored.PID()) + "/fd/3"); target != held.Name() {
		t.Errorf("qemu's fd 3 is %q, want the held file", target)
	}
	args, err := vmmproc.Cmdline(restored.PID())
	if err != nil {
		t.Fatal(err)
	}
	if argAfter(args, "-incoming") != "defer" || chardevPath(args, "agent") != spec2.Agent.UDSPath {
		t.Errorf("restore command line %q", args)
	}
	if st := status(t, restored); st != "running" {
		t.Errorf("status after restore = %s", st)
	}
	if got := ask(t, restored, "get"); got != "fake-agent get:alpha" {
		t.Errorf("restored guest remembers %q", got)
	}
	// A restored VM is adopted by a restarted daemon like a launched one.
	if _, err := New(Config{Host: d.cfg.Host}).Attach(ctx, spec2, restored.Process()); err != nil {
		t.Errorf("attach to a restored qemu: %v", err)
	}
}

func TestCreateSnapshotRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("running guest", func(t *testing.T) {
		inst := launch(t, fakeDriver(t, "", Config{}), fakeSpec(t))
		state := filepath.Join(t.TempDir(), "state")
		err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: state})
		if !errors.Is(err, ErrNotPaused) || err.Error() != `snapshot vm "fake": the guest is not paused; pause it before taking a snapshot (qemu reports "running")` {
			t.Fatalf("CreateSnapshot of a running guest = %v", err)
		}
		if _, err := os.Lstat(state); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state file created for a refused snapshot (%v)", err)
		}
	})
	t.Run("qemu fails to write", func(t *testing.T) {
		inst := launch(t, fakeDriver(t, "migratefail", Config{}), fakeSpec(t))
		if err := inst.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(t.TempDir(), "state")
		err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: state})
		if err == nil || err.Error() != `snapshot vm "fake": qemu failed to write the state: Unable to write to file: No space left on device` {
			t.Fatalf("CreateSnapshot = %v", err)
		}
		assertNoFile(t, state)
		if st := status(t, inst); st != "paused" {
			t.Errorf("status after a failed snapshot = %s, want paused", st)
		}
	})
	t.Run("migration never finishes", func(t *testing.T) {
		inst := launch(t, fakeDriver(t, "migratestuck", Config{SnapshotTimeout: 200 * time.Millisecond}), fakeSpec(t))
		if err := inst.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		state := filepath.Join(t.TempDir(), "state")
		err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: state})
		if err == nil || !strings.Contains(err.Error(), "qemu did not finish writing the state within 200ms (migration active") {
			t.Fatalf("CreateSnapshot = %v", err)
		}
		assertNoFile(t, state)
		var m Migration
		err = inst.qmp(ctx, func(c *QMPClient) error {
			var err error
			m, err = c.QueryMigrate(ctx)
			return err
		})
		if err != nil || m.Status != "cancelled" {
			t.Errorf("migration after the timeout: %+v, %v; want cancelled", m, err)
		}
	})
	t.Run("no path", func(t *testing.T) {
		inst := launch(t, fakeDriver(t, "", Config{}), fakeSpec(t))
		if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{}); err == nil || !strings.Contains(err.Error(), "no state file path given") {
			t.Fatalf("CreateSnapshot = %v", err)
		}
	})
}

func assertNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind after a failed snapshot (%v)", path, err)
	}
}

func TestSnapshotHandsStateFileToOwner(t *testing.T) {
	d := fakeDriver(t, "", Config{Owner: &Owner{UID: 1234, GID: 5678}})
	var mu sync.Mutex
	var got []string
	d.files.Chown = func(p string, uid, gid int) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, filepath.Base(p))
		return nil
	}
	state := savedSnapshot(t, d, fakeSpec(t), "x")
	mu.Lock()
	defer mu.Unlock()
	if len(got) == 0 || got[len(got)-1] != filepath.Base(state) {
		t.Errorf("handed over %v, want the state file last", got)
	}
}

// TestRestoreRefusesBadState: every bad state file fails with one sentence
// naming it, matched by ErrBadSnapshot; what the header shows is refused
// before QEMU starts, what only QEMU sees leaves no process behind.
func TestRestoreRefusesBadState(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	good := savedSnapshot(t, d, fakeSpec(t), "alpha")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func([]byte) []byte) string {
		p := filepath.Join(t.TempDir(), "state")
		if err := os.WriteFile(p, f(append([]byte(nil), data...)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	kvmHeader := func(b []byte) []byte {
		return []byte(strings.Replace(string(b), `"accel":"tcg"`, `"accel":"kvm"`, 1))
	}
	for _, tt := range []struct {
		name  string
		state string
		spec  func(*vmm.LaunchSpec)
		want  string
		// spawns: the fault shows only once QEMU reads the stream.
		spawns bool
	}{
		{name: "missing", state: "/nonexistent/state", want: "does not exist; the snapshot is incomplete or was deleted"},
		{name: "fifo", state: fifo, want: "is not a regular file"},
		{name: "never finished", state: edit(func(b []byte) []byte { clear(b[:stateHeaderSize]); return b }), want: "was never finished (its header is empty)"},
		{name: "empty", state: edit(func([]byte) []byte { return nil }), want: "was never finished"},
		{name: "not a snapshot", state: edit(func([]byte) []byte { return []byte("#!/bin/sh\nrm -rf /\n") }), want: "is not a banger QEMU snapshot"},
		{name: "truncated", state: edit(func(b []byte) []byte { return b[:len(b)-3] }), want: "is truncated or corrupt: it holds"},
		{name: "no stream magic", state: edit(func(b []byte) []byte { copy(b[stateHeaderSize:], "QEVX"); return b }), want: "does not start with QEMU's stream magic"},
		{name: "other shape", state: good, spec: func(s *vmm.LaunchSpec) { s.VCPUs = 2 },
			want: "is of a VM with 1 vCPUs, 128 MiB of memory, 1 drives and 0 network interfaces, but this VM has 2 vCPUs"},
		{name: "taken under kvm", state: edit(kvmHeader), want: "was taken under kvm, which this driver cannot use"},
		{name: "corrupt stream", state: edit(func(b []byte) []byte { b[len(b)-1] = '!'; return b }), spawns: true,
			want: `could not be loaded: qemu exited with code 1; end of vmm.log: "qemu-system-x86_64: load of migration failed: Invalid argument"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			spec := fakeSpec(t)
			if tt.spec != nil {
				tt.spec(&spec)
			}
			pid := 0
			spec.OnSpawn = func(p vmm.Process) error { pid = p.PID; return nil }
			_, err := d.Restore(context.Background(), spec, vmm.SnapshotFiles{State: tt.state})
			if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), `restore qemu for vm "fake": `) ||
				!strings.Contains(err.Error(), "snapshot state file "+tt.state+" ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Restore = %v, want ErrBadSnapshot and %q", err, tt.want)
			}
			if spawned := pid != 0; spawned != tt.spawns {
				t.Fatalf("qemu started: %v, want %v", spawned, tt.spawns)
			}
			if pid != 0 {
				assertGone(t, pid, filepath.Join(spec.RunDir, "qmp.sock"), filepath.Join(spec.RunDir, "agent.sock"))
			}
		})
	}
}
