package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/test/fcspec"
	"github.com/banger-dev/banger/test/fcspec/oas"
	"github.com/banger-dev/banger/test/testbin"
)

// The restore tests run the honest fake Firecracker (test/fakefirecracker)
// with the real agent as its stand-in guest: the fake refuses what
// Firecracker refuses, re-opens the drive paths a snapshot recorded, and
// hosts the agent behind the vsock it is given. Both are built once, on
// first use, and removed by TestMain.
var honestBins struct {
	once        sync.Once
	dir         string
	fake, agent string
	err         error
}

func buildHonestFake() {
	dir, err := os.MkdirTemp("", "bfc-bin")
	if err != nil {
		honestBins.err = err
		return
	}
	honestBins.dir = dir
	honestBins.fake = filepath.Join(dir, "fake-firecracker")
	honestBins.agent = filepath.Join(dir, "banger-vsock-agent")
	if err := testbin.GoBuild(honestBins.fake, "./test/fakefirecracker", ""); err != nil {
		honestBins.err = err
		return
	}
	honestBins.err = testbin.GoBuild(honestBins.agent, "./cmd/banger-vsock-agent", "")
}

// honestDriver is a driver whose firecracker is the honest fake.
func honestDriver(t *testing.T) *Driver {
	t.Helper()
	spec := oas.SpecPathForTest(t)
	honestBins.once.Do(buildHonestFake)
	if honestBins.err != nil {
		t.Fatalf("build the fake firecracker: %v", honestBins.err)
	}
	return New(Config{BinaryPath: honestBins.fake, ExtraEnv: []string{
		fcspec.EnvSpecPath + "=" + spec,
		"BANGER_FAKE_GUEST=" + honestBins.agent,
	}})
}

// honestSpec is testSpec with its kernel and disks created, as the fake
// opens them.
func honestSpec(t *testing.T, vmID, tap string) vmm.LaunchSpec {
	t.Helper()
	spec := testSpec(t)
	spec.VMID, spec.Name = vmID, vmID
	spec.Network[0].TapName = tap
	for _, p := range []string{spec.KernelPath, spec.InitrdPath, spec.RootDrive.Path, spec.ExtraDrives[0].Path} {
		if err := os.WriteFile(p, []byte(filepath.Base(p)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return spec
}

// agentHealth waits until the guest agent answers a health check through
// inst's vsock, retrying while it does not listen yet (as at boot).
func agentHealth(t *testing.T, inst *Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		conn, err := inst.DialAgent(ctx)
		if err == nil {
			if _, err = agent.Health(ctx, conn); err == nil {
				return
			}
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("agent of %s never answered on %s: %v", inst.spec.Name, inst.spec.Agent.UDSPath, lastErr)
}

// snapshotOf launches spec, pauses it, snapshots it into a fresh dir and
// kills it: the state a fork or a rollback starts from.
func snapshotOf(t *testing.T, d *Driver, spec vmm.LaunchSpec) vmm.SnapshotFiles {
	t.Helper()
	ctx := context.Background()
	inst := launch(t, d, spec)
	agentHealth(t, inst)
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	files := vmm.SnapshotFiles{State: filepath.Join(dir, "state"), Memory: filepath.Join(dir, "memory")}
	if err := inst.CreateSnapshot(ctx, files); err != nil {
		t.Fatal(err)
	}
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestRestoreIntoANewVM: a snapshot restored for another VM — its own run
// dir, disk, tap and agent socket — runs on those, and its agent answers on
// the new socket.
func TestRestoreIntoANewVM(t *testing.T) {
	d := honestDriver(t)
	if !d.Capabilities().Snapshots {
		t.Fatal("the firecracker driver must report snapshot support")
	}
	a := honestSpec(t, "vm-a", "tap-a")
	files := snapshotOf(t, d, a)
	if st, err := os.Stat(files.Memory); err != nil || st.Size() != int64(a.MemoryMiB)<<20 {
		t.Fatalf("memory file %v; want %d MiB", err, a.MemoryMiB)
	}

	b := honestSpec(t, "vm-b", "tap-b")
	// The old VM's disk is gone: the restore must open b's, not the path
	// the snapshot's VM had.
	if err := os.Remove(a.RootDrive.Path); err != nil {
		t.Fatal(err)
	}
	var spawned vmm.Process
	b.OnSpawn = func(p vmm.Process) error { spawned = p; return nil }
	inst, err := d.Restore(context.Background(), b, files)
	if err != nil {
		t.Fatal(err)
	}
	fc := inst.(*Instance)
	t.Cleanup(func() { _ = fc.Kill() })
	if spawned.PID != fc.PID() {
		t.Fatalf("OnSpawn saw pid %d, the instance is %d", spawned.PID, fc.PID())
	}
	agentHealth(t, fc)

	info, err := fc.Client().InstanceInfo(context.Background())
	if err != nil || info.State != "Running" {
		t.Fatalf("restored VM state %q (%v), want Running", info.State, err)
	}
	if target, err := os.Readlink(filepath.Join(b.RunDir, driveLink("rootfs"))); err != nil || target != b.RootDrive.Path {
		t.Fatalf("b's root drive link points at %q (%v), want %s", target, err, b.RootDrive.Path)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", fc.PID())); err != nil || cwd != b.RunDir {
		t.Fatalf("firecracker runs in %q (%v), want b's run dir %s, against which its drive links resolve", cwd, err, b.RunDir)
	}
	cfg := vmConfig(t, fc)
	if !strings.Contains(cfg, `"host_dev_name":"tap-b"`) || strings.Contains(cfg, "tap-a") {
		t.Errorf("restored interfaces are not on b's tap: %s", cfg)
	}
	if !strings.Contains(cfg, `"uds_path":"`+b.Agent.UDSPath+`"`) {
		t.Errorf("restored vsock is not on b's socket: %s", cfg)
	}
	// Restored, it is a running VM like any other: pause and snapshot again.
	if err := fc.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := vmm.SnapshotFiles{State: filepath.Join(shortTempDir(t), "s"), Memory: filepath.Join(shortTempDir(t), "m")}
	if err := fc.CreateSnapshot(context.Background(), again); err != nil {
		t.Fatal(err)
	}
}

// vmConfig is GET /vm/config of inst, as raw JSON.
func vmConfig(t *testing.T, inst *Instance) string {
	t.Helper()
	var raw json.RawMessage
	if err := inst.Client().do(context.Background(), "GET", "/vm/config", nil, &raw); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// TestRestoreBadSnapshot: a missing or corrupt snapshot fails with one
// sentence naming the file, and nothing is left running.
func TestRestoreBadSnapshot(t *testing.T) {
	d := honestDriver(t)
	good := snapshotOf(t, d, honestSpec(t, "vm-a", "tap-a"))
	dir := shortTempDir(t)
	corrupt := filepath.Join(dir, "corrupt")
	if err := os.WriteFile(corrupt, []byte("{not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		files vmm.SnapshotFiles
		want  string
	}{
		{"missing state", vmm.SnapshotFiles{State: filepath.Join(dir, "gone"), Memory: good.Memory}, "the snapshot's state file " + filepath.Join(dir, "gone") + " is unusable (no such file or directory)"},
		{"missing memory", vmm.SnapshotFiles{State: good.State, Memory: filepath.Join(dir, "gone")}, "the snapshot's memory file " + filepath.Join(dir, "gone") + " is unusable (no such file or directory)"},
		{"no memory", vmm.SnapshotFiles{State: good.State}, "the snapshot names no memory file"},
		{"corrupt state", vmm.SnapshotFiles{State: corrupt, Memory: good.Memory}, "load snapshot: firecracker: PUT /snapshot/load: 400: Load snapshot error: Failed to restore from snapshot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := honestSpec(t, "vm-b", "tap-b")
			var pid int
			spec.OnSpawn = func(p vmm.Process) error { pid = p.PID; return nil }
			_, err := d.Restore(context.Background(), spec, c.files)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("restore: %v\nwant one line containing %q", err, c.want)
			}
			if pid != 0 && !processGone(pid) {
				t.Fatalf("firecracker pid %d left running after a failed restore", pid)
			}
			if _, err := os.Lstat(spec.Agent.UDSPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("vsock socket left behind: %v", err)
			}
		})
	}
}

// TestRestoreRefusesAnotherMachine: a snapshot of a VM with other vCPUs or
// memory is refused before its guest runs.
func TestRestoreRefusesAnotherMachine(t *testing.T) {
	d := honestDriver(t)
	files := snapshotOf(t, d, honestSpec(t, "vm-a", "tap-a"))
	spec := honestSpec(t, "vm-b", "tap-b")
	spec.MemoryMiB = 512
	_, err := d.Restore(context.Background(), spec, files)
	if err == nil || !strings.Contains(err.Error(), `the snapshot is of a machine with 2 vCPUs and 256 MiB, but vm "vm-b" has 2 vCPUs and 512 MiB`) {
		t.Fatalf("restore into a bigger VM: %v", err)
	}
}

// spawningLauncher is a JailLauncher that "jails" the stand-in firecracker
// of newFakeDriver by pointing it at a jail root (FAKEFC_ROOT) instead of a
// chroot, and stages drives as empty files, as the root helper would.
func spawningLauncher(t *testing.T, base string) (*launcherFunc, string) {
	t.Helper()
	fake, record := newFakeDriver(t, fakeEnv{}, Config{})
	return &launcherFunc{
		launch: func(req JailLaunch) (Jail, error) {
			root := filepath.Join(base, "firecracker", req.VMID, "root")
			jail := Jail{Root: root, Kernel: root + "/kernel", Drives: map[string]string{}}
			if err := os.MkdirAll(filepath.Join(root, "drives"), 0o700); err != nil {
				return jail, err
			}
			for _, dr := range req.Drives {
				jail.Drives[dr.ID] = filepath.Join(root, "drives", driveLink(dr.ID))
				if err := os.WriteFile(jail.Drives[dr.ID], nil, 0o600); err != nil {
					return jail, err
				}
			}
			if req.VMMLog {
				jail.VMMLog = filepath.Join(root, "firecracker.log")
				if err := os.WriteFile(jail.VMMLog, nil, 0o600); err != nil {
					return jail, err
				}
			}
			cmd := exec.Command(fake.cfg.BinaryPath, "--api-sock", "/api.socket", "--id="+req.VMID)
			cmd.Env = append(append(os.Environ(), fake.cfg.ExtraEnv...), envRoot+"="+root)
			cmd.Stdout, cmd.Stderr = req.Console, req.Console
			if err := cmd.Start(); err != nil {
				return jail, err
			}
			go func() { _ = cmd.Wait() }()
			jail.PID = cmd.Process.Pid
			return jail, nil
		},
		remove: func(id string) error { return os.RemoveAll(filepath.Join(base, "firecracker", id)) },
	}, record
}

// TestJailedSnapshotAndRestore: a jailed Firecracker writes its snapshot in
// its jail and the driver moves it to the caller's paths; a jailed restore
// stages the files into the new jail and loads them by their jail paths,
// with the new VM's vsock.
func TestJailedSnapshotAndRestore(t *testing.T) {
	base := shortTempDir(t)
	jl, record := spawningLauncher(t, base)
	d := New(Config{BinaryPath: fakeFirecrackerBinary(t), Jailer: &JailerConfig{Launcher: jl, ChrootBaseDir: base, APISocket: "/api.socket"}})
	ctx := context.Background()

	a := honestSpec(t, "vm-a", "tap-a")
	inst := launch(t, d, a)
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	files := vmm.SnapshotFiles{State: filepath.Join(dir, "state"), Memory: filepath.Join(dir, "memory")}
	if err := inst.CreateSnapshot(ctx, files); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{files.State, files.Memory} {
		if st, err := os.Lstat(p); err != nil || !st.Mode().IsRegular() {
			t.Fatalf("snapshot file %s not moved out of the jail: %v", p, err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(inst.layout.jailRoot, "snapshot*")); len(left) != 0 {
		t.Fatalf("snapshot files left in the jail: %v", left)
	}
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}

	b := honestSpec(t, "vm-b", "tap-b")
	restored, err := d.Restore(ctx, b, files)
	if err != nil {
		serial, _ := os.ReadFile(b.SerialLogPath)
		t.Fatalf("%v\nserial log:\n%s", err, serial)
	}
	fc := restored.(*Instance)
	t.Cleanup(func() { _ = fc.Kill() })
	staged, err := os.Stat(filepath.Join(fc.layout.jailRoot, jailStateIn))
	if orig, _ := os.Stat(files.State); err != nil || !os.SameFile(staged, orig) {
		t.Fatalf("the state file was not linked into the jail: %v", err)
	}
	conn, err := fc.DialAgent(ctx)
	if err != nil {
		t.Fatalf("dial the restored VM's vsock in its jail: %v", err)
	}
	conn.Close()
	reqs, _ := recorded(t, record)
	if i := slices.Index(reqs, "PUT /snapshot/load"); i < 0 || !slices.Equal(reqs[i-1:], []string{"PUT /logger", "PUT /snapshot/load", "GET /machine-config", "PATCH /vm"}) {
		t.Fatalf("restore requests %q: want only the logger before the load, then the machine check and the resume", reqs)
	}
}

// TestRejectsBadDriveID: a drive id names a link in the run dir, so only
// Firecracker's own id characters are accepted.
func TestRejectsBadDriveID(t *testing.T) {
	d := New(Config{})
	for _, id := range []string{"../escape", "a/b", "root-fs", ""} {
		spec := testSpec(t)
		spec.ExtraDrives[0].ID = id
		if err := d.validate(spec); err == nil || !strings.Contains(err.Error(), "cannot be a firecracker drive id") {
			t.Errorf("drive id %q: %v", id, err)
		}
	}
	if err := d.validate(testSpec(t)); err != nil {
		t.Fatalf("valid spec refused: %v", err)
	}
}
