package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command is one external program to run.
type Command struct {
	// Path is the program: an absolute path, or a name looked up in PATH.
	Path string
	Args []string
	// Env, when non-empty, is added to the caller's environment (later
	// entries win), so a command keeps PATH and friends.
	Env []string
	// Dir is the working directory; the caller's when empty.
	Dir string
	// Stdin feeds the program; it reads nothing when nil.
	Stdin io.Reader
	// Stream, when set, also receives everything the command prints on
	// stdout and stderr as it prints it, uncapped: the live progress of a
	// long command (debootstrap). Output still keeps the capped copy. A
	// Stream that fails is dropped; it never fails the command.
	Stream io.Writer
	// Timeout, when positive, bounds this command alone: past it the
	// command and everything it started are killed and Run fails with an
	// error naming the bound and wrapping context.DeadlineExceeded.
	Timeout time.Duration
}

// String renders the command for messages: program and arguments,
// space-separated.
func (c Command) String() string {
	return strings.Join(append([]string{c.Path}, c.Args...), " ")
}

// Output is what a finished command produced. A non-zero exit is data, not
// an error: callers such as `bangerd --check-migrations` give exit codes a
// meaning.
type Output struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	// Dropped counts the bytes of stdout and stderr beyond the runner's
	// cap: printed, but not kept in Stdout and Stderr.
	Dropped int64
}

// Runner runs external commands. It is the one door banger's root-side code
// uses to reach other programs, so tests can replace it with a fake.
type Runner interface {
	// Run runs c to completion. err is non-nil only when the command could
	// not run or finish: not found, killed by a signal, ctx cancelled.
	Run(ctx context.Context, c Command) (Output, error)
}

// Defaults for ExecRunner fields left zero.
const (
	// DefaultMaxOutput is how much of each of stdout and stderr is kept:
	// far more than any command banger runs prints, far less than memory.
	DefaultMaxOutput = 1 << 20
	// DefaultWaitDelay is how long Run waits for a command's output to
	// close after the command exited or was stopped.
	DefaultWaitDelay = 5 * time.Second
)

// ErrOutputHeld: the command exited, but a process it started kept its
// stdout or stderr open past the wait delay. Run kills that process (and
// everything else left in the command's process group) and fails.
var ErrOutputHeld = errors.New("it exited but left a process holding its output open; that process was killed")

// ExecRunner runs commands with os/exec. Each command runs in its own
// process group, and whatever is still in that group when Run returns
// (a child left behind, or the whole tree when ctx ends) is killed: Run is
// for commands that run to completion, not for starting daemons. A process
// that leaves the group on purpose (setsid, as daemons do) is out of its
// reach.
type ExecRunner struct {
	// MaxOutput caps what is kept of stdout and of stderr, each
	// (DefaultMaxOutput); the rest is read, counted in Output.Dropped and
	// thrown away, so a flood of output costs no memory.
	MaxOutput int
	// WaitDelay bounds the wait for the output pipes to close once the
	// command exited or ctx ended (DefaultWaitDelay); past it the pipes are
	// closed and Run fails with ErrOutputHeld.
	WaitDelay time.Duration
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, c Command) (Output, error) {
	maxOut, waitDelay := r.MaxOutput, r.WaitDelay
	if maxOut <= 0 {
		maxOut = DefaultMaxOutput
	}
	if waitDelay <= 0 {
		waitDelay = DefaultWaitDelay
	}
	runCtx := ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(runCtx, c.Path, c.Args...)
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.Dir, cmd.Stdin = c.Dir, c.Stdin
	stdout, stderr := &cappedBuffer{max: maxOut}, &cappedBuffer{max: maxOut}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if c.Stream != nil {
		// os/exec copies stdout and stderr in two goroutines: the stream
		// is shared, so it is written under a lock.
		s := &streamWriter{w: c.Stream}
		cmd.Stdout, cmd.Stderr = io.MultiWriter(stdout, s), io.MultiWriter(stderr, s)
	}
	// Killing only the command would leave its children running, holding
	// the output pipes and so Run itself: the group goes as a whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	if cmd.Process != nil {
		// The leader is reaped by now, but its id names the group for as
		// long as anyone is left in it, so this reaches only leftovers.
		_ = killGroup(cmd.Process.Pid)
	}
	out := Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Dropped: stdout.dropped + stderr.dropped}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, nil
	case ctx.Err() != nil:
		return out, fmt.Errorf("run %s: %w", c, ctx.Err())
	case runCtx.Err() != nil:
		return out, fmt.Errorf("`%s` did not finish within %s, so it and everything it started were killed: %w",
			c, c.Timeout, runCtx.Err())
	case errors.Is(err, exec.ErrWaitDelay):
		return out, fmt.Errorf("run %s: %w", c, ErrOutputHeld)
	case errors.As(err, &ee) && ee.Exited():
		out.ExitCode = ee.ExitCode()
		return out, nil
	default:
		return out, fmt.Errorf("run %s: %w", c, err)
	}
}

// killGroup sends SIGKILL to every process in the group pgid.
func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// cappedBuffer keeps the first max bytes written to it and counts the
// rest. It never fails a write: a command blocked on a full pipe would
// only run into the caller's timeout instead of finishing.
type cappedBuffer struct {
	buf     bytes.Buffer
	max     int
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	keep := min(max(b.max-b.buf.Len(), 0), len(p))
	b.buf.Write(p[:keep])
	b.dropped += int64(len(p) - keep)
	return len(p), nil
}

// Bytes returns what was kept.
func (b *cappedBuffer) Bytes() []byte { return b.buf.Bytes() }

// streamWriter passes a command's output on to Command.Stream, one write
// at a time. Like cappedBuffer it never fails a write: after the stream's
// first error it stops passing output on.
type streamWriter struct {
	mu     sync.Mutex
	w      io.Writer
	failed bool
}

func (s *streamWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failed {
		if _, err := s.w.Write(p); err != nil {
			s.failed = true
		}
	}
	return len(p), nil
}
