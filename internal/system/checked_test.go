package system_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestRunCheckedQuotesTheCause(t *testing.T) {
	ctx := context.Background()
	c := system.Command{Path: "/bin/sh", Args: []string{"-c", "echo I: step one; echo I: step two; echo 'E: the real cause' >&2; exit 3"}}
	out, err := system.RunChecked(ctx, system.ExecRunner{}, c)
	var ee *system.ExitError
	if !errors.As(err, &ee) || ee.ExitCode != 3 || out.ExitCode != 3 {
		t.Fatalf("err = %v, want an ExitError with status 3", err)
	}
	if err.Error() != "/bin/sh exited with status 3: E: the real cause" {
		t.Fatalf("error %q should name the program and the cause only", err)
	}
	if !strings.Contains(string(out.Stdout), "step two") {
		t.Fatalf("output not returned with the error: %q", out.Stdout)
	}
	// Without error-like lines, the last lines are the cause.
	r := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return system.Output{ExitCode: 1, Stdout: []byte("a\nb\nc\nd\n")}, nil
	}}
	if _, err := system.RunChecked(ctx, r, system.Command{Path: "tool"}); err == nil || err.Error() != "tool exited with status 1: b | c | d" {
		t.Fatalf("err = %v", err)
	}
	if _, err := system.RunChecked(ctx, system.ExecRunner{}, system.Command{Path: "banger-no-such-tool"}); err == nil ||
		!strings.Contains(err.Error(), "banger-no-such-tool") {
		t.Fatalf("missing tool: %v", err)
	}
	if _, err := system.RunChecked(ctx, system.ExecRunner{}, system.Command{Path: "true"}); err != nil {
		t.Fatal(err)
	}
}
