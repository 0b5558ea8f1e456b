package vmmproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// Command is how every VMM is started: in its own process group, which
// keeps terminal signals aimed at the daemon (Ctrl-C in user mode) away
// from the VMs, since they must outlive it; holding held as descriptors 3,
// 4, ... for its whole life (vmm.LaunchSpec.HeldFiles).
func Command(path string, args []string, held []*os.File) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = held
	return cmd
}

// Spawn starts cmd (made by Command) with its stdout and stderr appended
// to the existing file outPath, and supervises it as our child: a
// goroutine reaps it and records how it ended.
func Spawn(cmd *exec.Cmd, outPath string, cfg Config) (*Supervisor, error) {
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s output: %w", cfg.Name, err)
	}
	defer out.Close() // the child keeps its own copy
	cmd.Stdout, cmd.Stderr = out, out
	if err := startWithoutAmbientCaps(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	// Read before the reaper starts: until then even a dead child's /proc
	// entry stays.
	proc, err := identify(cmd.Process.Pid)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	s := newSupervisor(proc, cfg, func() error {
		err := cmd.Process.Signal(syscall.SIGKILL)
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return err
	})
	go func() {
		err := cmd.Wait()
		s.finish(childExitStatus(cfg.Name, cmd.ProcessState, err))
	}()
	return s, nil
}

// startWithoutAmbientCaps starts cmd from an OS thread whose ambient
// capability set is empty. bangerd.service grants the daemon
// CAP_NET_BIND_SERVICE as an ambient capability (the resolver binds port
// 53), and ambient capabilities pass through execve to every child: the VMM
// — the process a guest escape lands in — held it too. Capabilities are per
// thread and a child copies the creating thread's, so the set is cleared on
// a thread locked to this goroutine and never unlocked: Go ends the thread
// with the goroutine, so no other code ever runs with the changed set, and
// the daemon's other threads keep the capability for later binds.
// (The process-wide alternative, AllThreadsSyscall, refuses cgo builds.)
// The VMM is started without Pdeathsig, which would fire when that thread
// ends.
func startWithoutAmbientCaps(cmd *exec.Cmd) error {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Pdeathsig != 0 {
		return errors.New("a VMM must not have a parent-death signal: it would die with the starting thread")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// EINVAL: a kernel without ambient capabilities (< 4.3), where
		// there is nothing to clear.
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			errc <- fmt.Errorf("clear ambient capabilities: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// childExitStatus turns what cmd.Wait returned into an ExitStatus.
func childExitStatus(name string, ps *os.ProcessState, waitErr error) vmm.ExitStatus {
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) {
		return vmm.ExitStatus{Code: -1, Err: fmt.Sprintf("wait for %s: %v", name, waitErr)}
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return vmm.ExitStatus{Code: -1, Signal: unix.SignalName(ws.Signal())}
	}
	return vmm.ExitStatus{Code: ps.ExitCode()}
}
