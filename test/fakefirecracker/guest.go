package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guest is the stand-in for the guest kernel: an ordinary process (normally
// the real banger-vsock-agent) in its own process group, so that pausing,
// Ctrl-Alt-Del and teardown reach everything it started, and so that a
// terminal's Ctrl-C aimed at the fake does not reach it directly.
type guest struct {
	cmd  *exec.Cmd
	done chan struct{}
	// status describes how the process ended; valid once done is closed.
	status string
}

// startGuest runs bin with the agent flags. Its stdout and stderr are the
// serial console. Pdeathsig kills it if the fake dies without cleaning up
// (SIGKILL), as a guest cannot outlive its VMM.
func startGuest(bin string, args, env []string, console io.Writer) (*guest, error) {
	// Descriptors the fake inherited beyond stdio (a lock on the VM's disk
	// that banger hands its VMM) are the VMM's, not the guest's: a real
	// guest cannot hold host files, and a stand-in that did would keep the
	// lock past the VMM's exit.
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	g := &guest{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		g.status = "exited with code 0"
		if err != nil {
			g.status = err.Error()
		}
		close(g.done)
	}()
	return g, nil
}

// signal sends sig to the guest's whole process group.
func (g *guest) signal(sig syscall.Signal) error {
	select {
	case <-g.done:
		return nil
	default:
	}
	// ESRCH: the group is gone and the exit is about to be reported.
	if err := syscall.Kill(-g.cmd.Process.Pid, sig); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("signal guest: %w", err)
	}
	return nil
}

// kill ends the guest at once (SIGKILL works on a stopped process too) and
// waits for it to be reaped.
func (g *guest) kill() {
	_ = g.signal(syscall.SIGKILL)
	<-g.done
}

// waitStopped returns once the guest's main process is stopped (or gone), up
// to timeout. Firecracker answers a pause only after its vCPUs have paused,
// so the fake does not answer before SIGSTOP has taken effect.
func (g *guest) waitStopped(timeout time.Duration) error {
	stat := fmt.Sprintf("/proc/%d/stat", g.cmd.Process.Pid)
	deadline := time.Now().Add(timeout)
	for {
		data, err := os.ReadFile(stat)
		if err != nil {
			return nil // already gone
		}
		// The state letter follows the parenthesised command name.
		if i := strings.LastIndexByte(string(data), ')'); i >= 0 && i+2 < len(data) {
			switch data[i+2] {
			case 'T', 'Z', 'X':
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest process %d did not stop within %s", g.cmd.Process.Pid, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}
