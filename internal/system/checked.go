package system

import (
	"context"
	"fmt"
	"strings"
)

// ExitError is a command that ran and exited with a non-zero status, as
// RunChecked reports it.
type ExitError struct {
	// Command is the full command line, for logs.
	Command string
	// Program is the program the message names: Command.Path.
	Program  string
	ExitCode int
	// Output is the few lines of the command's output that say why, joined
	// with " | " (see errorLines).
	Output string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s exited with status %d", e.Program, e.ExitCode)
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

// RunChecked runs c with r for callers that need it to succeed (mkfs.ext4,
// dmsetup, debootstrap): a non-zero exit becomes an *ExitError quoting the
// lines of its output that say why. Output is returned in every case.
func RunChecked(ctx context.Context, r Runner, c Command) (Output, error) {
	out, err := r.Run(ctx, c)
	if err != nil || out.ExitCode == 0 {
		return out, err
	}
	// stderr last: errorLines keeps the last lines, and that is where a
	// tool says why it failed.
	text := string(out.Stdout) + "\n" + string(out.Stderr)
	return out, &ExitError{Command: c.String(), Program: c.Path, ExitCode: out.ExitCode, Output: errorLines(text, 3)}
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
