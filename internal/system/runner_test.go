package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system/systemtest"
)

// runBounded runs c and fails the test if Run has not returned after a
// minute: the bugs these tests guard against make Run wait for as long as
// a leftover child lives (here, an hour).
func runBounded(t *testing.T, ctx context.Context, r ExecRunner, c Command) (Output, error) {
	t.Helper()
	type result struct {
		out Output
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
		return Output{}, nil
	}
}

// shell runs script with sh -c; "$PIDS" in it is a file for pids to check.
func shell(t *testing.T, script string) (Command, string) {
	pids := filepath.Join(t.TempDir(), "pids")
	return Command{Path: "/bin/sh", Args: []string{"-c", script}, Env: []string{"PIDS=" + pids}}, pids
}

func TestExecRunnerTimeoutKillsTheWholeGroup(t *testing.T) {
	// The shell waits on a child; killing only the shell would leave the
	// child holding stdout for an hour.
	c, pids := shell(t, `sleep 3601 & echo $$ $! > "$PIDS"; wait`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := runBounded(t, ctx, ExecRunner{}, c)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
	systemtest.RequireGone(t, pids)
}

func TestExecRunnerChildHoldingOutput(t *testing.T) {
	// The command answers and exits, but leaves a child that keeps its
	// stdout open.
	c, pids := shell(t, `sleep 3602 & echo $! > "$PIDS"; echo answer`)
	out, err := runBounded(t, context.Background(), ExecRunner{WaitDelay: 200 * time.Millisecond}, c)
	if !errors.Is(err, ErrOutputHeld) {
		t.Fatalf("err = %v, want ErrOutputHeld", err)
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
	out, err := runBounded(t, context.Background(), ExecRunner{}, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Stdout) != DefaultMaxOutput || len(out.Stderr) != DefaultMaxOutput {
		t.Errorf("kept %d bytes of stdout and %d of stderr, want %d each", len(out.Stdout), len(out.Stderr), DefaultMaxOutput)
	}
	if want := int64(2 * (flood - DefaultMaxOutput)); out.Dropped != want {
		t.Errorf("Dropped = %d, want %d", out.Dropped, want)
	}
	if out.ExitCode != 3 {
		t.Errorf("exit code = %d, want 3", out.ExitCode)
	}
}

func TestExecRunnerKeepsSmallOutputWhole(t *testing.T) {
	c, _ := shell(t, `echo out; echo err >&2`)
	out, err := ExecRunner{}.Run(context.Background(), c)
	if err != nil || string(out.Stdout) != "out\n" || string(out.Stderr) != "err\n" || out.Dropped != 0 || out.ExitCode != 0 {
		t.Fatalf("out = %+v, err = %v", out, err)
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{max: 10}
	for _, chunk := range []string{"0123", "456789ab", "cdef", ""} {
		if n, err := b.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; a capped write must still report it all taken", chunk, n, err)
		}
	}
	if !bytes.Equal(b.Bytes(), []byte("0123456789")) || b.dropped != 6 {
		t.Fatalf("kept %q, dropped %d; want the first 10 bytes and 6 dropped", b.Bytes(), b.dropped)
	}
}
