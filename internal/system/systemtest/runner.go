package systemtest

import (
	"context"
	"io"
	"slices"
	"sync"

	"github.com/banger-dev/banger/internal/system"
)

// Runner is the fake system.Runner: it records each command (and what it
// was given on stdin) and answers with Reply, or with success and no
// output when Reply is nil. It is safe for concurrent use.
type Runner struct {
	Reply func(c system.Command) (system.Output, error)

	mu    sync.Mutex
	cmds  []system.Command
	stdin []string
}

// Run implements system.Runner.
func (r *Runner) Run(_ context.Context, c system.Command) (system.Output, error) {
	in := ""
	if c.Stdin != nil {
		b, _ := io.ReadAll(c.Stdin)
		in = string(b)
	}
	r.mu.Lock()
	r.cmds = append(r.cmds, c)
	r.stdin = append(r.stdin, in)
	r.mu.Unlock()
	if r.Reply == nil {
		return system.Output{}, nil
	}
	return r.Reply(c)
}

// Commands returns the commands run so far.
func (r *Runner) Commands() []system.Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cmds)
}

// Lines returns the commands run so far as command lines (Command.String).
func (r *Runner) Lines() []string {
	var out []string
	for _, c := range r.Commands() {
		out = append(out, c.String())
	}
	return out
}

// Stdin returns what each command was given on stdin, in order ("" for
// none).
func (r *Runner) Stdin() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.stdin)
}

// Exit is a Reply answer: the command ran and exited with code, printing
// stderr.
func Exit(code int, stderr string) (system.Output, error) {
	return system.Output{ExitCode: code, Stderr: []byte(stderr)}, nil
}

// Print is a Reply answer: the command succeeded, printing stdout.
func Print(stdout string) (system.Output, error) {
	return system.Output{Stdout: []byte(stdout)}, nil
}
