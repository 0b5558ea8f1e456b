package vmmproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/vmm"
)

// pidfd watches and signals a process that is not our child (a VMM adopted
// from an earlier daemon). Holding the descriptor pins that exact process,
// so a reused PID can never be mistaken for it. The mutex keeps Kill from
// using the descriptor after Close.
type pidfd struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

// openPidfd opens a pidfd for pid; errors wrap unix.ESRCH when it is gone.
func openPidfd(pid int) (*pidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &pidfd{fd: fd}, nil
}

// Wait blocks until the process exits: a pidfd polls readable then. It
// holds one OS thread per adopted VM, fine for a workstation's handful.
func (p *pidfd) Wait() error {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 {
			return nil
		}
	}
}

// Exited reports, without blocking, whether the process has exited.
func (p *pidfd) Exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Kill sends SIGKILL; a process already gone is not an error.
func (p *pidfd) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Close releases the descriptor; safe to call more than once.
func (p *pidfd) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		_ = unix.Close(p.fd)
		p.closed = true
	}
}

// Pinned is a process this daemon did not start, held through a pidfd so
// that it cannot be confused with a later process reusing its PID, ready
// to be supervised.
type Pinned struct {
	pf   *pidfd
	proc vmm.Process
}

// Pin holds pid through a pidfd and reads its start time: for a process
// just started by someone else (a jailer launched by the root helper).
func Pin(pid int) (*Pinned, error) {
	pf, err := openPidfd(pid)
	if err != nil {
		return nil, err
	}
	proc, err := identify(pid)
	if err != nil {
		pf.Close()
		return nil, err
	}
	return &Pinned{pf: pf, proc: proc}, nil
}

// Recognize pins proc, a VMM left running by an earlier daemon, for Attach
// and checks it is the VM's: its command line (returned) passes isThis, it
// started at proc.StartTime when that is known, and it still runs. A
// process that is gone or another one is refused with an error wrapping
// notThis, so a recycled PID is never mistaken for a VM.
func Recognize(ctx context.Context, proc vmm.Process, notThis error, isThis func(args []string) error) (*Pinned, []string, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if proc.PID <= 0 {
		return nil, nil, fmt.Errorf("invalid pid: %w", notThis)
	}
	// Open the pidfd first: it pins this exact process, so the command
	// line read next cannot belong to a successor that reused the pid.
	pf, err := openPidfd(proc.PID)
	if errors.Is(err, unix.ESRCH) {
		return nil, nil, fmt.Errorf("process is gone: %w", notThis)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd_open: %w", err)
	}
	p, args, err := recognize(pf, proc, notThis, isThis)
	if err != nil {
		pf.Close()
		return nil, nil, err
	}
	return p, args, nil
}

func recognize(pf *pidfd, proc vmm.Process, notThis error, isThis func(args []string) error) (*Pinned, []string, error) {
	args, err := Cmdline(proc.PID)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("process is gone: %w", notThis)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read command line: %w", err)
	}
	if err := isThis(args); err != nil {
		return nil, nil, err
	}
	started, err := checkStarted(proc, notThis)
	if err != nil {
		return nil, nil, err
	}
	if pf.Exited() {
		return nil, nil, fmt.Errorf("process exited while attaching: %w", notThis)
	}
	return &Pinned{pf: pf, proc: vmm.Process{PID: proc.PID, StartTime: started}}, args, nil
}

// Cmdline reads the arguments of process pid from /proc.
func Cmdline(pid int) ([]string, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	return strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00"), nil
}

// Kill sends SIGKILL to the pinned process; one already gone is not an error.
func (p *Pinned) Kill() error { return p.pf.Kill() }

// Supervise watches the pinned process until it exits. It is not our
// child, so how it ended is unknown: the exit is NotChild.
func (p *Pinned) Supervise(cfg Config) *Supervisor {
	s := newSupervisor(p.proc, cfg, p.pf.Kill)
	go func() {
		err := p.pf.Wait()
		p.pf.Close()
		st := vmm.ExitStatus{Code: -1, NotChild: true}
		if err != nil {
			st.Err = fmt.Sprintf("watch %s pid %d: %v", cfg.Name, p.proc.PID, err)
		}
		s.finish(st)
	}()
	return s
}
