package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Command is one external program to run.
type Command struct {
	// Path is the program: an absolute path, or a name looked up in PATH.
	Path string
	Args []string
	// Env, when non-empty, is added to the caller's environment (later
	// entries win), so a command keeps PATH and friends.
	Env []string
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
}

// Runner runs external commands. It is the one door banger's root-side code
// uses to reach other programs, so tests can replace it with a fake.
type Runner interface {
	// Run runs c to completion. err is non-nil only when the command could
	// not run or finish: not found, killed by a signal, ctx cancelled.
	Run(ctx context.Context, c Command) (Output, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, c Command) (Output, error) {
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out, nil
	case ctx.Err() != nil:
		return out, fmt.Errorf("run %s: %w", c, ctx.Err())
	case errors.As(err, &ee) && ee.Exited():
		out.ExitCode = ee.ExitCode()
		return out, nil
	default:
		return out, fmt.Errorf("run %s: %w", c, err)
	}
}
