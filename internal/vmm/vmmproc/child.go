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

// Supervise reaps a VMM process this daemon started: a goroutine waits for
// it and hands finish how it ended. The returned kill sends SIGKILL and is
// nil-error when the process is already gone. name ("firecracker", "qemu")
// only words the error of a failed wait.
func Supervise(cmd *exec.Cmd, name string, finish func(vmm.ExitStatus)) (kill func() error) {
	go func() {
		err := cmd.Wait()
		finish(ChildExitStatus(name, cmd.ProcessState, err))
	}()
	return func() error {
		err := cmd.Process.Signal(syscall.SIGKILL)
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return err
	}
}

// ChildExitStatus turns what cmd.Wait returned into an ExitStatus.
func ChildExitStatus(name string, ps *os.ProcessState, waitErr error) vmm.ExitStatus {
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
