package vmmproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
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
	if err := cmd.Start(); err != nil {
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
