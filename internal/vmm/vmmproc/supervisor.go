// Package vmmproc supervises VMM processes the same way for every driver
// (Supervisor): starting or adopting one, watching it exit, stopping it,
// and the files around it. Drivers keep only what differs between VMMs.
package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// powerOffCallTimeout bounds the request that asks the guest to power off;
// the shutdown that follows is bounded by Stop's timeout.
const powerOffCallTimeout = 2 * time.Second

// Config is what a driver tells the Supervisor about one VMM process.
type Config struct {
	// Name is the VMM ("firecracker", "qemu"), as logs and errors say it.
	Name string
	// VM is the VM's name, on every log line and in Stop's errors.
	VM string
	// ConsoleLog is the serial console log, held to ConsoleLogMax (CapLog)
	// while the process runs.
	ConsoleLog    string
	ConsoleLogMax int64
	// Sockets are the paths the VMM binds; they are removed once it is gone.
	Sockets []string
	// PowerOff asks the guest to shut down, which makes the VMM exit.
	PowerOff func(ctx context.Context) error
	// PowerOffName names that request in logs ("Ctrl-Alt-Del").
	PowerOffName string
	// StopTimeout is Stop's wait when its caller gives none.
	StopTimeout time.Duration
	// Kill, when set, replaces the plain SIGKILL (a jailed VMM the daemon
	// may not signal yet is killed through its launcher instead).
	Kill func() error
	// OnExit, when set, runs once the process is gone, before its sockets
	// are removed and Done closes.
	OnExit func()
	Logger *slog.Logger
}

// Supervisor is what every VMM instance does the same way, whichever the
// VMM: it names the process (PID and start time), observes its exit (as
// its parent, or through a pidfd for a process adopted from an earlier
// daemon), holds the console log to its cap while it runs, removes its
// sockets once it is gone, and stops it (ask the guest to power off, wait,
// kill). A driver's Instance embeds it and adds what differs. Build one
// with Spawn or Pinned.Supervise.
type Supervisor struct {
	cfg  Config
	proc vmm.Process
	log  *slog.Logger
	// kill sends SIGKILL; it returns nil if the process is already gone.
	kill func() error
	done chan struct{}
	exit vmm.ExitStatus // written once, before done is closed
}

// newSupervisor is called once the process exists; the caller arranges
// for finish to run when it exits.
func newSupervisor(proc vmm.Process, cfg Config, kill func() error) *Supervisor {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Kill != nil {
		kill = cfg.Kill
	}
	s := &Supervisor{
		cfg:  cfg,
		proc: proc,
		log:  cfg.Logger.With("vm", cfg.VM, "pid", proc.PID),
		kill: kill,
		done: make(chan struct{}),
	}
	// The guest writes the console; hold it to the cap while the VMM runs.
	go CapLog(s.done, cfg.ConsoleLog, cfg.ConsoleLogMax, s.log)
	return s
}

// finish records the exit, runs OnExit, removes the sockets the dead
// process left behind, and only then closes done, so a relaunch that waits
// on Done never races the cleanup.
func (s *Supervisor) finish(st vmm.ExitStatus) {
	if s.cfg.OnExit != nil {
		s.cfg.OnExit()
	}
	for _, p := range s.cfg.Sockets {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("remove socket of exited "+s.cfg.Name, "path", p, "err", err)
		}
	}
	s.exit = st
	s.log.Info(s.cfg.Name+" exited", "status", st.String())
	close(s.done)
}

// PID is the VMM's process id.
func (s *Supervisor) PID() int { return s.proc.PID }

// Process is the VMM's PID with its start time.
func (s *Supervisor) Process() vmm.Process { return s.proc }

// Done is closed once the VMM process has exited and its sockets are gone.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Exit reports how the VMM ended; valid after Done is closed. An adopted
// process is not our child, so how it ended is unknown (NotChild).
func (s *Supervisor) Exit() vmm.ExitStatus {
	select {
	case <-s.done:
		return s.exit
	default:
		return vmm.ExitStatus{Code: -1, Err: s.cfg.Name + " is still running"}
	}
}

// Stop asks the guest to power off (Config.PowerOff), waits up to timeout
// (Config.StopTimeout if zero) for the VMM to exit, then kills it. It
// returns only once the process is gone. If the request cannot be
// delivered the process is killed at once: waiting could not help.
func (s *Supervisor) Stop(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = s.cfg.StopTimeout
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	pctx, cancel := context.WithTimeout(ctx, powerOffCallTimeout)
	err := s.cfg.PowerOff(pctx)
	cancel()
	if err != nil {
		s.log.Warn(s.cfg.PowerOffName+" not delivered; killing "+s.cfg.Name, "err", err)
		return s.Kill()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.done:
		return nil
	case <-t.C:
		s.log.Warn("guest ignored "+s.cfg.PowerOffName+"; killing "+s.cfg.Name, "timeout", timeout)
		return s.Kill()
	case <-ctx.Done():
		if err := s.Kill(); err != nil {
			return err
		}
		return fmt.Errorf("stop vm %q: killed after %w", s.cfg.VM, ctx.Err())
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (s *Supervisor) Kill() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.kill(); err != nil {
		return fmt.Errorf("kill %s pid %d: %w", s.cfg.Name, s.proc.PID, err)
	}
	<-s.done
	return nil
}
