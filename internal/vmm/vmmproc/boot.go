package vmmproc

import (
	"context"
	"fmt"
	"time"

	"github.com/banger-dev/banger/internal/vmm"
)

// Step is one named part of bringing a started VMM up; a failure is
// reported with the name.
type Step struct {
	Name string
	Do   func(ctx context.Context) error
}

// Boot brings up a VMM that Spawn (or a launcher) just started: onSpawn
// first, so the caller records the process before anything else can go
// wrong, then the driver's steps in order. On a failure it kills the
// process, waits until it is gone (its sockets removed), and returns the
// error naming the failed step.
func Boot(ctx context.Context, s *Supervisor, onSpawn func(vmm.Process) error, steps ...Step) error {
	if onSpawn != nil {
		steps = append([]Step{{"record the " + s.cfg.Name + " process", func(context.Context) error {
			return onSpawn(s.Process())
		}}}, steps...)
	}
	for _, st := range steps {
		if err := st.Do(ctx); err != nil {
			if kerr := s.Kill(); kerr != nil {
				s.log.Warn("kill "+s.cfg.Name+" after failed launch", "err", kerr)
			}
			return fmt.Errorf("%s: %w", st.Name, err)
		}
	}
	return nil
}

// Readiness is how to tell that a started VMM listens for its
// configuration.
type Readiness struct {
	// What answers, for errors: "its API", "QMP".
	What string
	// Socket is where Probe connects, named when it never answers.
	Socket string
	// Probe returns nil once the VMM is ready.
	Probe   func(ctx context.Context) error
	Timeout time.Duration
	// LogPath is where the VMM writes its own errors; its end explains an
	// early exit or a timeout.
	LogPath string
}

// WaitReady polls r.Probe with backoff until it succeeds, the process
// exits, r.Timeout passes or ctx ends.
func WaitReady(ctx context.Context, s *Supervisor, r Readiness) error {
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, r.Timeout)
	defer cancel()
	// Poll tightly at first: a refused connect costs microseconds, and every
	// millisecond here is on the create-to-running path. Back off only once
	// the VMM is clearly slow.
	delay, start := 2*time.Millisecond, time.Now()
	var lastErr error
	for {
		lastErr = r.Probe(ctx)
		if lastErr == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s %s before %s answered%s", s.cfg.Name, s.Exit(), r.What, LogTail(r.LogPath))
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("%s did not answer within %v (last error: %v)%s", r.Socket, r.Timeout, lastErr, LogTail(r.LogPath))
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 200*time.Millisecond)
		}
	}
}
