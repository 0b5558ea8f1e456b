package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// snapshotPayload is the snapshot test guest's responder: "set X" keeps X
// in /tmp (guest RAM: the initramfs is the root), "get" answers it, any
// other line is echoed. It reopens the port whenever a read ends, as the
// agent must: a restored guest's open port belongs to a host end that
// died with the old QEMU, and only a fresh open sees the new one.
const snapshotPayload = `while :; do
	exec 3<>/dev/virtio-ports/banger
	while read -r line <&3; do
		case "$line" in
		set\ *) echo "${line#set }" >/tmp/state; echo "banger-marker ok" >&3 ;;
		get) echo "banger-marker state=$(cat /tmp/state 2>/dev/null)" >&3 ;;
		*) echo "banger-marker $line" >&3 ;;
		esac
	done
	exec 3<&-
	usleep 20000
done
`

// snapshotGuest talks to the responder over one DialAgent stream.
type snapshotGuest struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialSnapshotGuest(ctx context.Context, inst *Instance) (*snapshotGuest, error) {
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		return nil, err
	}
	return &snapshotGuest{conn: conn, r: bufio.NewReader(conn)}, nil
}

func (g *snapshotGuest) ask(ctx context.Context, line string) (string, error) {
	stop := context.AfterFunc(ctx, func() { _ = g.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := g.conn.Write([]byte(line + "\n")); err != nil {
		return "", ctxErr(ctx, err)
	}
	got, err := g.r.ReadString('\n')
	if err != nil {
		return "", ctxErr(ctx, err)
	}
	return strings.TrimSuffix(got, "\n"), nil
}

func (g *snapshotGuest) Close() error { return g.conn.Close() }

// mustAsk asks within timeout and fails the test on a wrong answer.
func mustAsk(t *testing.T, g *snapshotGuest, timeout time.Duration, line, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	got, err := g.ask(ctx, line)
	if err != nil || got != want {
		t.Fatalf("guest answered %q to %q (%v), want %q", got, line, err, want)
	}
}

// TestSnapshotRestoreUnderTCG boots the busybox guest, has it keep a
// marker in RAM, pauses it, writes its snapshot, kills it, and restores it
// with another run dir, agent socket, tap and console: the guest answers
// and still holds the marker. A restored guest snapshots twice while
// paused and resumes; a state file whose QEMU stream is corrupt fails to
// restore and leaves no process. It logs the numbers docs/performance.md
// records (BANGER_QEMU_SNAPSHOT_MIB sets the guest memory, default 256).
func TestSnapshotRestoreUnderTCG(t *testing.T) {
	qemuPath, busybox := bootHost(t)
	kern, vmlinux := testKernel(t)
	memMiB := 256
	if v := os.Getenv("BANGER_QEMU_SNAPSHOT_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 64 {
			t.Fatalf("BANGER_QEMU_SNAPSHOT_MIB=%q is not a size in MiB of at least 64", v)
		}
		memMiB = n
	}

	dir := shortTempDir(t)
	initrd := filepath.Join(dir, "initrd.gz")
	buildInitramfs(t, kern, busybox, payload{name: "snapshot responder", script: snapshotPayload}, initrd)
	sparseFile(t, filepath.Join(dir, "root.img"), 64<<20)
	sparseFile(t, filepath.Join(dir, "data.img"), 8<<20)

	enterPrivateNetns(t)
	for _, tap := range []string{"bqtap0", "bqtap1", "bqtap2"} {
		if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
			t.Skipf("cannot create a tap device: %v: %s", err, out)
		}
	}
	spec := vmm.LaunchSpec{
		VMID:          "5nap",
		Name:          "snapshot-test",
		KernelPath:    vmlinux,
		InitrdPath:    initrd,
		BootArgs:      "console=ttyS0 panic=1 quiet",
		RootDrive:     vmm.Drive{ID: "rootfs", Path: filepath.Join(dir, "root.img")},
		ExtraDrives:   []vmm.Drive{{ID: "data", Path: filepath.Join(dir, "data.img"), ReadOnly: true}},
		Network:       []vmm.NetInterface{{ID: "eth0", TapName: "bqtap0", MAC: "02:42:de:ad:be:ef"}},
		VCPUs:         1,
		MemoryMiB:     memMiB,
		Agent:         vmm.AgentChannel{GuestCID: 3, Port: 1024},
		RunDir:        filepath.Join(dir, "run"),
		SerialLogPath: filepath.Join(dir, "serial.log"),
		VMMLogPath:    filepath.Join(dir, "vmm.log"),
	}
	// The restored VM: everything host-side is another VM's.
	spec2 := spec
	spec2.RunDir = filepath.Join(dir, "run2")
	spec2.Agent.UDSPath = filepath.Join(dir, "run2", "other-agent.sock")
	spec2.Network = []vmm.NetInterface{{ID: "eth0", TapName: "bqtap1", MAC: "02:42:de:ad:be:ef"}}
	spec2.SerialLogPath = filepath.Join(dir, "serial2.log")
	spec2.VMMLogPath = filepath.Join(dir, "vmm2.log")
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []string{spec.SerialLogPath, spec.VMMLogPath, spec2.SerialLogPath, spec2.VMMLogPath} {
				b, _ := os.ReadFile(p)
				t.Logf("%s:\n%s", filepath.Base(p), b)
			}
		}
	})

	d := New(Config{BinaryPath: qemuPath, Accel: AccelTCG})
	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()
	bootStart := time.Now()
	vi, err := d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	inst := vi.(*Instance)
	t.Cleanup(func() { _ = inst.Kill() })
	if inst.Transport() != TransportSerial {
		t.Skip("this host has vhost-vsock; the test guest only serves virtio-serial")
	}
	g, err := dialSnapshotGuest(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	mustAsk(t, g, bootTimeout, "ping", "banger-marker ping")
	t.Logf("cold boot to an answering responder: %v", time.Since(bootStart).Round(time.Millisecond))
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	mustAsk(t, g, 30*time.Second, "set "+marker, "banger-marker ok")

	var pauses, resumes []time.Duration
	for range 5 {
		start := time.Now()
		if err := inst.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		pauses = append(pauses, time.Since(start))
		start = time.Now()
		if err := inst.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		resumes = append(resumes, time.Since(start))
	}
	t.Logf("pause: median %v (min %v, max %v); resume: median %v (min %v, max %v)",
		median(pauses), slices.Min(pauses), slices.Max(pauses), median(resumes), slices.Min(resumes), slices.Max(resumes))
	mustAsk(t, g, 30*time.Second, "ping", "banger-marker ping")

	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	saveStart := time.Now()
	if err := inst.CreateSnapshot(ctx, vmm.SnapshotFiles{State: state}); err != nil {
		t.Fatal(err)
	}
	saveTook := time.Since(saveStart)
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of a %d MiB guest: saved in %v, %.1f MB", memMiB, saveTook.Round(time.Millisecond), float64(fi.Size())/1e6)
	if st, err := inst.Status(ctx); err != nil || st.Running {
		t.Fatalf("status after the snapshot = %+v, %v; want still paused", st, err)
	}
	_ = g.Close()
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}

	var restored *Instance
	var answers []time.Duration
	for round := range 3 {
		start := time.Now()
		vi, err := d.Restore(ctx, spec2, vmm.SnapshotFiles{State: state})
		if err != nil {
			t.Fatal(err)
		}
		r := vi.(*Instance)
		t.Cleanup(func() { _ = r.Kill() })
		restored = r
		returned := time.Since(start)
		g, err = dialSnapshotGuest(ctx, restored)
		if err != nil {
			t.Fatal(err)
		}
		mustAsk(t, g, 30*time.Second, "get", "banger-marker state="+marker)
		answers = append(answers, time.Since(start))
		t.Logf("restore %d: Restore returned after %v, the guest answered with its marker after %v",
			round+1, returned.Round(time.Millisecond), answers[round].Round(time.Millisecond))
		if round < 2 {
			_ = g.Close()
			if err := restored.Kill(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("restore to an answering guest: median %v of %d", median(answers).Round(time.Millisecond), len(answers))

	// Two snapshots of one pause: QEMU 7.2 refuses the second migration
	// unless the driver clears the first one's state.
	if err := restored.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"again1", "again2"} {
		if err := restored.CreateSnapshot(ctx, vmm.SnapshotFiles{State: filepath.Join(dir, name)}); err != nil {
			t.Fatalf("snapshot %s of a paused restored guest: %v", name, err)
		}
	}
	if err := restored.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	mustAsk(t, g, 30*time.Second, "get", "banger-marker state="+marker)
	_ = g.Close()

	// A stream QEMU cannot load: its version word is wrong.
	corrupt := filepath.Join(dir, "corrupt")
	data, err := os.ReadFile(filepath.Join(dir, "again2"))
	if err != nil {
		t.Fatal(err)
	}
	data[stateHeaderSize+7] = 9
	if err := os.WriteFile(corrupt, data, 0o600); err != nil {
		t.Fatal(err)
	}
	spec3 := spec2
	spec3.RunDir = filepath.Join(dir, "run3")
	spec3.Agent.UDSPath = ""
	spec3.Network = []vmm.NetInterface{{ID: "eth0", TapName: "bqtap2"}}
	spec3.VMMLogPath = filepath.Join(dir, "vmm3.log")
	var pid int
	spec3.OnSpawn = func(p vmm.Process) error { pid = p.PID; return nil }
	_, err = d.Restore(ctx, spec3, vmm.SnapshotFiles{State: corrupt})
	if !errors.Is(err, ErrBadSnapshot) || !strings.Contains(err.Error(), "could not be loaded: qemu exited with code 1") {
		t.Fatalf("restore of a corrupt stream = %v", err)
	}
	t.Logf("corrupt stream refused: %v", err)
	assertGone(t, pid, filepath.Join(spec3.RunDir, qmpSocketName), filepath.Join(spec3.RunDir, agentSocketName))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
