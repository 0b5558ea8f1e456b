package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Command is one external program run: the few tools disk and image work
// needs (mkfs.ext4, resize2fs, dmsetup, debootstrap, ...). Name is looked up
// in PATH; arguments are passed as they are, never through a shell.
type Command struct {
	Name string
	Args []string
	// Dir is the working directory; the caller's when empty.
	Dir string
	// Env is added to the caller's environment.
	Env []string
	// Stdin feeds the program; nothing when nil.
	Stdin io.Reader
}

// String renders the command for error messages and logs.
func (c Command) String() string {
	return strings.Join(append([]string{c.Name}, c.Args...), " ")
}

// Runner runs external commands. ExecRunner is the real one; tests use a
// fake that records commands and returns canned output.
type Runner interface {
	// Run runs c to completion and returns its combined output. A non-zero
	// exit is an error that carries the output's last lines.
	Run(ctx context.Context, c Command) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct {
	// Environ is the base environment; the process environment when nil.
	Environ []string
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, c Command) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	cmd.Dir = c.Dir
	if r.Environ != nil || len(c.Env) > 0 {
		base := r.Environ
		if base == nil {
			base = cmd.Environ()
		}
		cmd.Env = append(append([]string{}, base...), c.Env...)
	}
	cmd.Stdin = c.Stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return out.Bytes(), nil
	}
	if ctx.Err() != nil {
		return out.Bytes(), fmt.Errorf("%s: %w", c.Name, ctx.Err())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return out.Bytes(), &CommandError{Name: c.Name, Command: c.String(), ExitCode: exitErr.ExitCode(), Output: errorLines(out.String(), 3)}
	}
	return out.Bytes(), fmt.Errorf("run %s: %w", c.Name, err)
}

// CommandError is a command that ran and failed.
type CommandError struct {
	// Name is the program; Command the full command line (for logs).
	Name     string
	Command  string
	ExitCode int
	// Output is the last lines the command printed.
	Output string
}

func (e *CommandError) Error() string {
	name := e.Name
	if name == "" {
		name = e.Command
	}
	msg := fmt.Sprintf("%s exited with status %d", name, e.ExitCode)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// errorLines keeps the last n lines of a failed command's output that look
// like errors (or the last n lines when none do), joined with " | " so the
// error stays on one line: progress chatter ("I: Retrieving ...") would
// only bury the cause.
func errorLines(s string, n int) string {
	var all, errs []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		all = append(all, l)
		low := strings.ToLower(l)
		if strings.HasPrefix(l, "E:") || strings.Contains(low, "error") || strings.Contains(low, "fail") ||
			strings.Contains(low, "cannot") || strings.Contains(low, "could not") || strings.Contains(low, "not found") {
			errs = append(errs, l)
		}
	}
	lines := all
	if len(errs) > 0 {
		lines = errs
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
