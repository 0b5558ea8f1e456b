package vmmproc

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// fakeVMM is a shell script standing in for a VMM: what a guest does on
// power-off is up to each test's PowerOff.
type fakeVMM struct {
	dir, out, sock string
}

func newFakeVMM(t *testing.T) fakeVMM {
	t.Helper()
	dir := t.TempDir()
	f := fakeVMM{dir: dir, out: filepath.Join(dir, "out.log"), sock: filepath.Join(dir, "api.sock")}
	if err := CreateLog(f.out); err != nil {
		t.Fatal(err)
	}
	return f
}

// spawn starts script under sh as a supervised VMM and kills it when the
// test ends.
func (f fakeVMM) spawn(t *testing.T, script string, cfg Config, held ...*os.File) *Supervisor {
	t.Helper()
	cfg.Name, cfg.VM, cfg.ConsoleLog = "fakevmm", "dev", f.out
	cfg.Sockets = append(cfg.Sockets, f.sock)
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	s, err := Spawn(Command("sh", []string{"-c", script}, held), f.out, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Kill() })
	return s
}

// signal returns a PowerOff that sends sig to the supervised process, as a
// guest that obeys (SIGTERM) or a VMM that ignores it would see it.
func signal(s **Supervisor, sig syscall.Signal) func(context.Context) error {
	return func(context.Context) error { return syscall.Kill((*s).PID(), sig) }
}

func TestStopPowersOffAndCleansUp(t *testing.T) {
	f := newFakeVMM(t)
	var s *Supervisor
	var socketAtExit bool
	s = f.spawn(t, "touch "+f.sock+"; exec sleep 60", Config{
		PowerOff: signal(&s, syscall.SIGTERM),
		OnExit: func() {
			_, err := os.Lstat(f.sock)
			socketAtExit = err == nil
		},
	})
	if got, want := s.Exit().Err, "fakevmm is still running"; got != want {
		t.Fatalf("Exit before the end = %q, want %q", got, want)
	}
	waitFor(t, func() bool { _, err := os.Lstat(f.sock); return err == nil })
	if err := s.Stop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Exit(); st.Signal != "SIGTERM" || st.Clean() {
		t.Fatalf("exit %+v, want the SIGTERM the power-off sent", st)
	}
	if !socketAtExit {
		t.Error("OnExit ran after the sockets were removed")
	}
	if _, err := os.Lstat(f.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after Done: %v", err)
	}
	if err := s.Stop(context.Background(), 0); err != nil {
		t.Errorf("Stop of a stopped VMM: %v", err)
	}
}

// TestStopKills: Stop kills at once when the power-off request cannot be
// delivered (the hour-long wait is never started: the test's deadline
// would end it with an error), after the timeout when the guest ignores
// the request, and when the caller's context ends.
func TestStopKills(t *testing.T) {
	for _, tc := range []struct {
		name     string
		powerOff func(**Supervisor) func(context.Context) error
		timeout  time.Duration
		cancel   bool
	}{
		{name: "request not delivered", timeout: time.Hour, powerOff: func(**Supervisor) func(context.Context) error {
			return func(context.Context) error { return errors.New("connection refused") }
		}},
		{name: "guest ignores the request", timeout: 50 * time.Millisecond, powerOff: func(s **Supervisor) func(context.Context) error {
			return signal(s, syscall.SIGCONT)
		}},
		{name: "caller gives up", timeout: time.Hour, cancel: true, powerOff: func(s **Supervisor) func(context.Context) error {
			return signal(s, syscall.SIGCONT)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s *Supervisor
			s = newFakeVMM(t).spawn(t, "exec sleep 60", Config{PowerOff: tc.powerOff(&s)})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tc.cancel {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			err := s.Stop(ctx, tc.timeout)
			if tc.cancel != errors.Is(err, context.Canceled) || (!tc.cancel && err != nil) {
				t.Fatalf("Stop = %v", err)
			}
			if st := s.Exit(); st.Signal != "SIGKILL" {
				t.Fatalf("exit %s, want killed", st)
			}
		})
	}
}

// TestSpawnHoldsFilesInItsOwnGroup: a spawned VMM has its own process
// group (terminal signals to the daemon miss it) and the held files as
// descriptors 3, 4, ...
func TestSpawnHoldsFilesInItsOwnGroup(t *testing.T) {
	f := newFakeVMM(t)
	held, err := os.Create(filepath.Join(f.dir, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	s := f.spawn(t, "exec sleep 60", Config{}, held)
	if pgid, err := syscall.Getpgid(s.PID()); err != nil || pgid != s.PID() {
		t.Errorf("process group %d (%v), want its own (%d)", pgid, err, s.PID())
	}
	if target, _ := os.Readlink("/proc/" + strconv.Itoa(s.PID()) + "/fd/3"); target != held.Name() {
		t.Errorf("fd 3 is %q, want %s", target, held.Name())
	}
	if st, err := StartTime(s.PID()); err != nil || s.Process() != (vmm.Process{PID: s.PID(), StartTime: st}) {
		t.Errorf("Process() = %+v, /proc says start time %d (%v)", s.Process(), st, err)
	}
}

func TestBootRecordsFirstAndKillsOnFailure(t *testing.T) {
	s := newFakeVMM(t).spawn(t, "exec sleep 60", Config{})
	var order []string
	err := Boot(context.Background(), s,
		func(p vmm.Process) error {
			order = append(order, "spawned "+strconv.Itoa(p.PID))
			return nil
		},
		Step{Name: "configure", Do: func(context.Context) error { order = append(order, "configure"); return nil }},
		Step{Name: "start guest", Do: func(context.Context) error { return errors.New("bad kernel") }},
		Step{Name: "never", Do: func(context.Context) error { order = append(order, "never"); return nil }},
	)
	if err == nil || err.Error() != "start guest: bad kernel" {
		t.Fatalf("Boot = %v, want the failed step named", err)
	}
	if want := "spawned " + strconv.Itoa(s.PID()) + ",configure"; strings.Join(order, ",") != want {
		t.Fatalf("ran %q, want %q", order, want)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Boot returned with the VMM of a failed launch still running")
	}

	s2 := newFakeVMM(t).spawn(t, "exec sleep 60", Config{})
	err = Boot(context.Background(), s2, func(vmm.Process) error { return errors.New("database is locked") })
	if err == nil || err.Error() != "record the fakevmm process: database is locked" {
		t.Fatalf("Boot with a failing onSpawn = %v", err)
	}
	if st := s2.Exit(); st.Signal != "SIGKILL" {
		t.Fatalf("exit %s, want killed", st)
	}
}

func TestWaitReady(t *testing.T) {
	notYet := func(context.Context) error { return errors.New("connection refused") }
	f := newFakeVMM(t)
	s := f.spawn(t, "echo 'bad option -x' >&2; exit 3", Config{})
	err := WaitReady(context.Background(), s, Readiness{What: "its API", Socket: f.sock, Probe: notYet, Timeout: time.Minute, LogPath: f.out})
	if err == nil || err.Error() != `fakevmm exited with code 3 before its API answered; end of out.log: "bad option -x"` {
		t.Fatalf("early exit: %v", err)
	}

	f = newFakeVMM(t)
	s = f.spawn(t, "exec sleep 60", Config{})
	err = WaitReady(context.Background(), s, Readiness{What: "its API", Socket: f.sock, Probe: notYet, Timeout: 100 * time.Millisecond, LogPath: f.out})
	if err == nil || err.Error() != f.sock+" did not answer within 100ms (last error: connection refused)" {
		t.Fatalf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitReady(ctx, s, Readiness{Probe: notYet, Timeout: time.Minute}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	tries := 0
	ready := func(context.Context) error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	}
	if err := WaitReady(context.Background(), s, Readiness{Probe: ready, Timeout: time.Minute}); err != nil || tries != 3 {
		t.Fatalf("ready on the third probe: %v after %d", err, tries)
	}
}

// TestRecognizeAndSuperviseAnAdoptedVMM: Recognize pins a process that is
// not our child only when it is the one (command line, start time, still
// running), and its Supervisor sees the exit through the pidfd, as unknown.
func TestRecognizeAndSuperviseAnAdoptedVMM(t *testing.T) {
	notThis := errors.New("not this VM's vmm")
	f := newFakeVMM(t)
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { _ = cmd.Wait(); close(reaped) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-reaped })
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	proc := vmm.Process{PID: cmd.Process.Pid, StartTime: st}
	isSleep := func(args []string) error {
		if len(args) != 2 || args[0] != "sleep" {
			return notThis
		}
		return nil
	}
	ctx := context.Background()

	if _, _, err := Recognize(ctx, proc, notThis, func([]string) error { return notThis }); !errors.Is(err, notThis) {
		t.Errorf("another command line: %v", err)
	}
	reused := proc
	reused.StartTime++
	if _, _, err := Recognize(ctx, reused, notThis, isSleep); !errors.Is(err, notThis) || !strings.Contains(err.Error(), "reused") {
		t.Errorf("another start time: %v", err)
	}
	if _, _, err := Recognize(ctx, vmm.Process{PID: -1}, notThis, isSleep); !errors.Is(err, notThis) {
		t.Errorf("pid -1: %v", err)
	}

	p, args, err := Recognize(ctx, vmm.Process{PID: proc.PID}, notThis, isSleep)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(args, " ") != "sleep 60" {
		t.Errorf("args %q", args)
	}
	s := p.Supervise(Config{Name: "fakevmm", Sockets: []string{f.sock}})
	if s.Process() != proc {
		t.Errorf("Process() = %+v, want %+v", s.Process(), proc)
	}
	if err := os.WriteFile(f.sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if st := s.Exit(); !st.NotChild || st.Clean() || st.Err != "" {
		t.Fatalf("adopted exit %+v, want unknown (not our child)", st)
	}
	if _, err := os.Lstat(f.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	<-reaped
	if _, _, err := Recognize(ctx, proc, notThis, isSleep); !errors.Is(err, notThis) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("a reaped pid: %v", err)
	}
}

func TestPrepareFreesSocketsAndHandsFilesOver(t *testing.T) {
	dir := newFakeVMM(t).dir
	spec := vmm.LaunchSpec{RunDir: filepath.Join(dir, "run"), SerialLogPath: filepath.Join(dir, "serial.log")}
	var chowned []string
	h := HandOver{Owner: &Owner{UID: 7, GID: 8}, Chown: func(p string, uid, gid int) error {
		if uid != 7 || gid != 8 {
			t.Errorf("chown %s to %d:%d", p, uid, gid)
		}
		chowned = append(chowned, filepath.Base(p))
		return nil
	}}
	if err := os.MkdirAll(spec.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(spec.RunDir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if err := h.Prepare("fakevmm", spec, stale, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale socket kept: %v", err)
	}
	if strings.Join(chowned, " ") != "run serial.log" {
		t.Errorf("handed over %q", chowned)
	}

	live := filepath.Join(spec.RunDir, "live.sock")
	l2, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := h.Prepare("fakevmm", spec, live); !errors.Is(err, ErrSocketInUse) || !strings.Contains(err.Error(), "another fakevmm is using "+live) {
		t.Errorf("live socket: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
