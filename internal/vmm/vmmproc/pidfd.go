// Package vmmproc holds process-supervision pieces both VMM drivers share.
package vmmproc

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Pidfd watches and signals a process that is not our child (a VMM adopted
// from an earlier daemon). Holding the descriptor pins that exact process,
// so a reused PID can never be mistaken for it. The mutex keeps Kill from
// using the descriptor after Close.
type Pidfd struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

// OpenPidfd opens a pidfd for pid; errors wrap unix.ESRCH when it is gone.
func OpenPidfd(pid int) (*Pidfd, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &Pidfd{fd: fd}, nil
}

// Wait blocks until the process exits: a pidfd polls readable then. It
// holds one OS thread per adopted VM, fine for a workstation's handful.
func (p *Pidfd) Wait() error {
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
func (p *Pidfd) Exited() bool {
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Kill sends SIGKILL; a process already gone is not an error.
func (p *Pidfd) Kill() error {
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
func (p *Pidfd) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		_ = unix.Close(p.fd)
		p.closed = true
	}
}
