package qemu

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
	"github.com/banger-dev/banger/internal/vmm/vmmproc"
)

// fakeSpec is a launch spec whose files live under a short temp dir.
func fakeSpec(t *testing.T) vmm.LaunchSpec {
	t.Helper()
	dir := shortTempDir(t)
	return vmm.LaunchSpec{
		VMID:          "f00d",
		Name:          "fake",
		KernelPath:    filepath.Join(dir, "vmlinux"),
		BootArgs:      "console=ttyS0",
		RootDrive:     vmm.Drive{ID: "rootfs", Path: filepath.Join(dir, "root.img")},
		VCPUs:         1,
		MemoryMiB:     128,
		Agent:         vmm.AgentChannel{GuestCID: 3, Port: 1024},
		RunDir:        filepath.Join(dir, "run"),
		SerialLogPath: filepath.Join(dir, "serial.log"),
		VMMLogPath:    filepath.Join(dir, "vmm.log"),
	}
}

// fakeDriver runs the fake QEMU in mode with detection pinned to TCG and
// virtio-serial, as on this machine kind.
func fakeDriver(t *testing.T, mode string, cfg Config) *Driver {
	t.Helper()
	cfg.BinaryPath = fakeQEMUBinary(t, mode)
	cfg.Host = fakeHost(t, nil)
	if cfg.TSCKHz == 0 {
		cfg.TSCKHz = 2596148
	}
	return New(cfg)
}

// launch starts the fake and makes sure it is gone when the test ends.
func launch(t *testing.T, d *Driver, spec vmm.LaunchSpec) *Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst, err := d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Kill() })
	return inst.(*Instance)
}

func waitDone(t *testing.T, inst vmm.Instance) {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("qemu did not exit")
	}
}

func assertGone(t *testing.T, pid int, paths ...string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d still exists after exit (kill -0: %v)", pid, err)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

func TestLaunchPauseResumeStop(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	inst := launch(t, d, spec)
	ctx := context.Background()

	if inst.Transport() != TransportSerial || inst.APISocket() != filepath.Join(spec.RunDir, "qmp.sock") {
		t.Errorf("transport %s, qmp %s", inst.Transport(), inst.APISocket())
	}
	args, err := vmmproc.Cmdline(inst.PID())
	if err != nil {
		t.Fatal(err)
	}
	if got := argAfter(args, "-append"); got != "console=ttyS0 panic=-1 tsc_early_khz=2596148 banger.agent_channel=serial" {
		t.Errorf("-append %q", got)
	}
	if argAfter(args, "-accel") != "tcg" {
		t.Errorf("accel: %q", args)
	}

	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := inst.Status(ctx); err != nil || st.Status != "paused" {
		t.Fatalf("status after pause = %+v, %v", st, err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := inst.Status(ctx); err != nil || !st.Running {
		t.Fatalf("status after resume = %+v, %v", st, err)
	}
	// Stop on a paused guest resumes it first, or the guest could not
	// react to the power button.
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := inst.Stop(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("graceful stop took %v: the power button was not honoured", took)
	}
	if ex := inst.Exit(); ex.Code != 0 || ex.Signal != "" {
		t.Errorf("exit = %s, want code 0", ex)
	}
	assertGone(t, inst.PID(), inst.APISocket(), filepath.Join(spec.RunDir, "agent.sock"))
	if err := inst.Stop(ctx, time.Second); err != nil {
		t.Errorf("second Stop = %v", err)
	}
	if err := inst.Kill(); err != nil {
		t.Errorf("Kill after exit = %v", err)
	}
	if _, err := inst.DialAgent(ctx); err == nil || !strings.Contains(err.Error(), "qemu is not running (exited with code 0)") {
		t.Errorf("DialAgent after exit = %v", err)
	}
}

func TestStopKillsAGuestThatIgnoresThePowerButton(t *testing.T) {
	d := fakeDriver(t, "deaf", Config{})
	inst := launch(t, d, fakeSpec(t))
	if err := inst.Stop(context.Background(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ex := inst.Exit(); ex.Signal != "SIGKILL" {
		t.Errorf("exit = %s, want killed by SIGKILL", ex)
	}
}

func TestStopHonoursContext(t *testing.T) {
	d := fakeDriver(t, "deaf", Config{})
	inst := launch(t, d, fakeSpec(t))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := inst.Stop(ctx, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `stop vm "fake": killed after`) {
		t.Fatalf("Stop = %v", err)
	}
	waitDone(t, inst)
}

func TestKill(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	inst := launch(t, d, spec)
	if err := inst.Kill(); err != nil {
		t.Fatal(err)
	}
	if ex := inst.Exit(); ex.Code != -1 || ex.Signal != "SIGKILL" {
		t.Errorf("exit = %+v", ex)
	}
	// SIGKILL gives QEMU no chance to remove its sockets: the reaper does.
	assertGone(t, inst.PID(), inst.APISocket(), filepath.Join(spec.RunDir, "agent.sock"))
}

func TestLaunchFailures(t *testing.T) {
	t.Run("qemu dies at startup", func(t *testing.T) {
		d := fakeDriver(t, "die", Config{})
		spec := fakeSpec(t)
		_, err := d.Launch(context.Background(), spec)
		if err == nil || !strings.Contains(err.Error(), `launch qemu for vm "fake": wait for QMP: qemu exited with code 1 before QMP answered; end of vmm.log: "qemu-system-x86_64: -netdev tap`) {
			t.Fatalf("Launch = %v", err)
		}
	})
	t.Run("qmp never answers", func(t *testing.T) {
		d := fakeDriver(t, "mute", Config{QMPReadyTimeout: 200 * time.Millisecond})
		spec := fakeSpec(t)
		_, err := d.Launch(context.Background(), spec)
		if err == nil || !strings.Contains(err.Error(), "qmp.sock did not answer within 200ms") {
			t.Fatalf("Launch = %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		d := fakeDriver(t, "mute", Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := d.Launch(ctx, fakeSpec(t)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Launch = %v", err)
		}
	})
	t.Run("no binary", func(t *testing.T) {
		d := New(Config{BinaryPath: "/nonexistent/qemu", Host: fakeHost(t, nil)})
		if _, err := d.Launch(context.Background(), fakeSpec(t)); err == nil || !strings.Contains(err.Error(), "start /nonexistent/qemu") {
			t.Fatalf("Launch = %v", err)
		}
	})
	t.Run("invalid specs", func(t *testing.T) {
		d := fakeDriver(t, "", Config{})
		for _, tt := range []struct {
			mod  func(*vmm.LaunchSpec)
			want string
		}{
			{func(s *vmm.LaunchSpec) { s.KernelPath, s.RunDir = "", "" }, "launch spec is missing run_dir, kernel_path"},
			{func(s *vmm.LaunchSpec) { s.VCPUs = 0 }, "vcpus and memory_mib of at least 1"},
			{func(s *vmm.LaunchSpec) { s.VMID = "a,b" }, `vm id "a,b" must be`},
			{func(s *vmm.LaunchSpec) { s.RunDir = "/" + strings.Repeat("r", 100) }, "longer than the 107 bytes"},
		} {
			spec := fakeSpec(t)
			tt.mod(&spec)
			if _, err := d.Launch(context.Background(), spec); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Launch = %v, want %q", err, tt.want)
			}
		}
	})
}

func TestLaunchReclaimsStaleSocketsAndRefusesLiveOnes(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A socket file nobody listens on, as a SIGKILLed QEMU leaves.
	stale := filepath.Join(spec.RunDir, "qmp.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	first := launch(t, d, spec)

	// The first QEMU is alive: a second launch must not steal its sockets.
	_, err = d.Launch(context.Background(), spec)
	if !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), "another qemu is using") {
		t.Fatalf("second Launch = %v", err)
	}
	if _, err := first.Status(context.Background()); err != nil {
		t.Errorf("first qemu hurt by the refused launch: %v", err)
	}

	notSock := fakeSpec(t)
	if err := os.MkdirAll(notSock.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(notSock.RunDir, "qmp.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Launch(context.Background(), notSock); err == nil || !strings.Contains(err.Error(), "is not a socket; refusing to remove it") {
		t.Errorf("Launch over a regular file = %v", err)
	}
}

func TestLaunchHandsFilesToOwner(t *testing.T) {
	d := fakeDriver(t, "", Config{Owner: &Owner{UID: 1234, GID: 5678}})
	var mu sync.Mutex
	var got []string
	d.files.Chown = func(p string, uid, gid int) error {
		mu.Lock()
		defer mu.Unlock()
		if uid != 1234 || gid != 5678 {
			t.Errorf("chown %s to %d:%d", p, uid, gid)
		}
		got = append(got, filepath.Base(p))
		return nil
	}
	spec := fakeSpec(t)
	spec.Agent.UDSPath = filepath.Join(spec.RunDir, "vsock.sock")
	launch(t, d, spec)
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, " ") != "run serial.log vmm.log qmp.sock vsock.sock" {
		t.Errorf("handed over %v", got)
	}
}

func TestDialAgentHandsOutOneSerialStream(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	inst := launch(t, d, fakeSpec(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	first, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, first, "one")

	busyCtx, busyCancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer busyCancel()
	if _, err := inst.DialAgent(busyCtx); !errors.Is(err, ErrAgentBusy) || !strings.Contains(err.Error(), `dial agent of vm "fake": the virtio-serial agent stream is held`) {
		t.Fatalf("second DialAgent while the first is open = %v", err)
	}

	// A read the holder left blocked must not eat what the next holder
	// is sent, and a deadline it sets late must not cut the next one off.
	blocked := make(chan error, 1)
	go func() {
		_, err := first.Read(make([]byte, 64))
		blocked <- err
	}()
	conn := inst.serial.conn

	// A waiting dialer gets the stream as soon as the holder closes it.
	got := make(chan net.Conn)
	go func() {
		c, err := inst.DialAgent(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	time.Sleep(20 * time.Millisecond)
	first.Close()
	first.Close() // closing twice must not hand the stream back twice
	if err := <-blocked; !errors.Is(err, net.ErrClosed) {
		t.Errorf("read in progress at Close = %v, want net.ErrClosed", err)
	}
	if err := first.SetDeadline(time.Unix(1, 0)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetDeadline after Close = %v, want net.ErrClosed", err)
	}
	if _, err := first.Write([]byte("late\n")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	second := <-got
	if second == nil {
		t.FailNow()
	}
	defer second.Close()
	roundTrip(t, second, "two")
	if inst.serial.conn != conn {
		t.Error("the connection to QEMU was replaced on hand-over; the guest would see the host go away")
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "fake-agent "+msg+"\n" {
		t.Fatalf("agent answered %q, %v", line, err)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestDialAgentWithoutChannel(t *testing.T) {
	// A running process (sleep) supervised as a QEMU with no agent transport.
	out := filepath.Join(t.TempDir(), "out.log")
	if err := vmmproc.CreateLog(out); err != nil {
		t.Fatal(err)
	}
	inst, err := New(Config{}).newInstance(vmm.LaunchSpec{Name: "x"}, layout{}, Options{}, func(cfg vmmproc.Config) (*vmmproc.Supervisor, error) {
		return vmmproc.Spawn(vmmproc.Command("sleep", []string{"60"}, nil), out, cfg)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Kill() })
	if _, err := inst.DialAgent(context.Background()); !errors.Is(err, vmm.ErrNotSupported) {
		t.Errorf("DialAgent = %v", err)
	}
}

func TestAttach(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	spec := fakeSpec(t)
	orig := launch(t, d, spec)
	ctx := context.Background()

	for _, tt := range []struct {
		name string
		pid  int
		mod  func(*vmm.LaunchSpec)
		want string
	}{
		{"other vm", orig.PID(), func(s *vmm.LaunchSpec) { s.VMID = "beef" }, "does not name guest beef"},
		{"other run dir", orig.PID(), func(s *vmm.LaunchSpec) { s.RunDir = "/elsewhere" }, "with QMP socket /elsewhere/qmp.sock"},
		{"not qemu", os.Getpid(), nil, "does not name guest f00d"},
		{"bad pid", -1, nil, "invalid pid"},
	} {
		s := spec
		if tt.mod != nil {
			tt.mod(&s)
		}
		_, err := d.Attach(ctx, s, vmm.Process{PID: tt.pid})
		if !errors.Is(err, ErrNotThisVMM) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Attach = %v, want ErrNotThisVMM and %q", tt.name, err, tt.want)
		}
	}

	// A second driver stands in for the daemon after a restart.
	d2 := New(Config{Host: d.cfg.Host})
	vi, err := d2.Attach(ctx, spec, vmm.Process{PID: orig.PID()})
	if err != nil {
		t.Fatal(err)
	}
	adopted := vi.(*Instance)
	if adopted.Transport() != TransportSerial || adopted.layout.agentSock != filepath.Join(spec.RunDir, "agent.sock") {
		t.Errorf("adopted transport %s, agent socket %s", adopted.Transport(), adopted.layout.agentSock)
	}
	c, err := adopted.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "adopted")
	c.Close()
	if err := adopted.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := adopted.Kill(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, orig)
	if ex := adopted.Exit(); ex.Code != -1 || ex.Signal != "" || ex.Err != "" {
		t.Errorf("adopted exit = %+v, want code -1 and nothing else", ex)
	}
	if _, err := d2.Attach(ctx, spec, vmm.Process{PID: orig.PID()}); !errors.Is(err, ErrNotThisVMM) || !strings.Contains(err.Error(), "process is gone") {
		t.Errorf("Attach to an exited pid = %v", err)
	}
}

func TestCapabilities(t *testing.T) {
	d := fakeDriver(t, "", Config{})
	if c := d.Capabilities(); c.Accel != "tcg" || !c.Pause || !c.Snapshots {
		t.Errorf("Capabilities = %+v", c)
	}
	if c := New(Config{Accel: AccelKVM}).Capabilities(); c.Accel != "kvm" {
		t.Errorf("forced kvm: %+v", c)
	}
	if d.Name() != "qemu" {
		t.Errorf("Name = %q", d.Name())
	}
}

func TestPlanDecidesFromHost(t *testing.T) {
	spec := fakeSpec(t)
	spec.Agent.UDSPath = filepath.Join(spec.RunDir, "vsock.sock")

	tcg := New(Config{Host: fakeHost(t, map[string]string{"proc/cpuinfo": cpuinfo, "dev/kvm": "", "sys/module/kvm_pvm/": ""})})
	p, err := tcg.plan(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Accel: AccelTCG, Transport: TransportSerial, TSCKHz: 2596148,
		QMPSocket: filepath.Join(spec.RunDir, "qmp.sock"), AgentSocket: spec.Agent.UDSPath}
	if p.opts != want {
		t.Errorf("TCG plan = %+v, want %+v", p.opts, want)
	}

	// Without a readable frequency the guest boots without the hint.
	noFreq := New(Config{Host: fakeHost(t, map[string]string{"dev/kvm": "", "sys/module/kvm_pvm/": ""})})
	if p, err := noFreq.plan(spec, Options{}); err != nil || p.opts.TSCKHz != 0 {
		t.Errorf("plan without cpuinfo = %+v, %v", p.opts, err)
	}

	kvm := New(Config{Host: fakeHost(t, map[string]string{"proc/cpuinfo": cpuinfo, "dev/kvm": "", "dev/vhost-vsock": "", "sys/module/kvm_intel/": ""})})
	p, err = kvm.plan(spec, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want = Options{Accel: AccelKVM, Transport: TransportVsock, QMPSocket: filepath.Join(spec.RunDir, "qmp.sock")}
	if p.opts != want {
		t.Errorf("KVM plan = %+v, want %+v", p.opts, want)
	}

	forced := New(Config{Accel: AccelTCG, Transport: TransportSerial, TSCKHz: 1000, Host: fakeHost(t, map[string]string{"dev/kvm": "", "dev/vhost-vsock": ""})})
	p, err = forced.plan(fakeSpec(t), Options{})
	if err != nil || p.opts.Accel != AccelTCG || p.opts.Transport != TransportSerial || p.opts.TSCKHz != 1000 || filepath.Base(p.opts.AgentSocket) != "agent.sock" {
		t.Errorf("forced plan = %+v, %v", p.opts, err)
	}
}
