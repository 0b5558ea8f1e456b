package system_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// runBounded runs c and fails the test if Run has not returned after a
// minute: the bugs these tests guard against make Run wait for as long as
// a leftover child lives (here, an hour).
func runBounded(t *testing.T, ctx context.Context, r system.ExecRunner, c system.Command) (system.Output, error) {
	t.Helper()
	type result struct {
		out system.Output
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := r.Run(ctx, c)
		done <- result{out, err}
	}()
	select {
	case res := <-done:
		return res.out, res.err
	case <-time.After(time.Minute):
		t.Fatalf("`%s` still running after a minute: Run waits on a leftover child", c)
		return system.Output{}, nil
	}
}

// shell runs script with sh -c; "$PIDS" in it is a file for pids to check.
func shell(t *testing.T, script string) (system.Command, string) {
	pids := filepath.Join(t.TempDir(), "pids")
	return system.Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: []string{"PIDS=" + pids}}, pids
}

func TestExecRunnerTimeoutKillsTheWholeGroup(t *testing.T) {
	// The shell waits on a child; killing only the shell would leave the
	// child holding stdout for an hour.
	c, pids := shell(t, `sleep 3601 & echo $$ $! > "$PIDS"; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := runBounded(t, ctx, system.ExecRunner{}, c)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	systemtest.RequireGone(t, pids)
}

func TestExecRunnerChildHoldingOutput(t *testing.T) {
	// The command answers and exits, but leaves a child that keeps its
	// stdout open.
	c, pids := shell(t, `sleep 3602 & echo $! > "$PIDS"; echo answer`)
	out, err := runBounded(t, context.Background(), system.ExecRunner{WaitDelay: 200 * time.Millisecond}, c)
	if !errors.Is(err, system.ErrOutputHeld) {
		t.Fatalf("err = %v, want system.ErrOutputHeld", err)
	}
	if !strings.Contains(err.Error(), "left a process holding its output open") {
		t.Errorf("err = %v", err)
	}
	if string(out.Stdout) != "answer\n" {
		t.Errorf("stdout = %q, want what was printed before the exit", out.Stdout)
	}
	systemtest.RequireGone(t, pids)
}

func TestExecRunnerCapsOutput(t *testing.T) {
	const flood = 50 << 20
	c, _ := shell(t, fmt.Sprintf("head -c %d /dev/zero; head -c %d /dev/zero >&2; exit 3", flood, flood))
	out, err := runBounded(t, context.Background(), system.ExecRunner{}, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Stdout) != system.DefaultMaxOutput || len(out.Stderr) != system.DefaultMaxOutput {
		t.Errorf("kept %d bytes of stdout and %d of stderr, want %d each", len(out.Stdout), len(out.Stderr), system.DefaultMaxOutput)
	}
	if want := int64(2 * (flood - system.DefaultMaxOutput)); out.Dropped != want {
		t.Errorf("Dropped = %d, want %d", out.Dropped, want)
	}
	if out.ExitCode != 3 {
		t.Errorf("exit code = %d, want 3", out.ExitCode)
	}
}

func TestExecRunnerKeepsSmallOutputWhole(t *testing.T) {
	c, _ := shell(t, `echo out; echo err >&2`)
	out, err := system.ExecRunner{}.Run(context.Background(), c)
	if err != nil || string(out.Stdout) != "out\n" || string(out.Stderr) != "err\n" || out.Dropped != 0 || out.ExitCode != 0 {
		t.Fatalf("out = %+v, err = %v", out, err)
	}
}

func TestExecRunnerDirStdinAndEnv(t *testing.T) {
	dir := t.TempDir()
	c := system.Command{Path: "/bin/sh", Args: []string{"-c", `read x; echo "$x $BANGER_X $(pwd)"`},
		Env: []string{"BANGER_X=env"}, Dir: dir, Stdin: strings.NewReader("stdin\n")}
	out, err := system.ExecRunner{}.Run(context.Background(), c)
	if want := "stdin env " + dir + "\n"; err != nil || string(out.Stdout) != want {
		t.Fatalf("stdout %q, err %v; want %q", out.Stdout, err, want)
	}
}

// TestExecRunnerStreamsUncapped: a stream sees both of a command's outputs
// whole while Output keeps only the capped copy.
func TestExecRunnerStreamsUncapped(t *testing.T) {
	c, _ := shell(t, `i=0; while [ $i -lt 200 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`)
	var stream bytes.Buffer
	c.Stream = &stream
	out, err := runBounded(t, context.Background(), system.ExecRunner{MaxOutput: 100}, c)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stream.String()), "\n")
	if len(lines) != 400 || !slices.Contains(lines, "out 199") || !slices.Contains(lines, "err 199") {
		t.Fatalf("stream got %d lines, want 400 whole lines of both outputs:\n%s", len(lines), stream.String())
	}
	if len(out.Stdout) != 100 || len(out.Stderr) != 100 || out.Dropped == 0 {
		t.Fatalf("kept %d+%d bytes, dropped %d; the cap must still apply", len(out.Stdout), len(out.Stderr), out.Dropped)
	}
}

// TestExecRunnerFailingStreamDoesNotFailTheCommand: a stream that breaks
// (a client gone) stops receiving output; the command still completes.
func TestExecRunnerFailingStreamDoesNotFailTheCommand(t *testing.T) {
	c, _ := shell(t, `head -c 200000 /dev/zero; echo done >&2`)
	c.Stream = failingWriter{}
	out, err := runBounded(t, context.Background(), system.ExecRunner{}, c)
	if err != nil || out.ExitCode != 0 || string(out.Stderr) != "done\n" {
		t.Fatalf("out %+v, err %v", out.ExitCode, err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken stream") }

// TestExecRunnerCommandTimeout: a command's own Timeout kills its whole
// group and the error names the bound.
func TestExecRunnerCommandTimeout(t *testing.T) {
	c, pids := shell(t, `sleep 3603 & echo $$ $! > "$PIDS"; wait`)
	c.Timeout = 300 * time.Millisecond
	_, err := runBounded(t, context.Background(), system.ExecRunner{}, c)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "did not finish within 300ms") {
		t.Fatalf("err = %v, want the command's timeout named", err)
	}
	systemtest.RequireGone(t, pids)
}
