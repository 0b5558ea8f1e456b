package updater

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
	u "github.com/banger-dev/banger/internal/updater/updatertest"
)

// publishScripts republishes newVersion with some of its binaries replaced
// by scripts that really run.
func (f *fixture) publishScripts(t *testing.T, scripts map[string]string) {
	t.Helper()
	entries := u.Binaries(newVersion)
	for i, e := range entries {
		if body, ok := scripts[e.Name]; ok {
			entries[i].Body = u.Script(body)
		}
	}
	f.srv.Publish(t, u.Release{Version: newVersion, Arch: testArch, Channel: "stable", Key: f.key, Tarball: u.Tarball(t, entries)})
}

// updateBounded runs the update and fails the test if it has not returned
// after a minute: a staged binary that stalls it would otherwise hold the
// update lock for as long as the binary (here, an hour) lives.
func (f *fixture) updateBounded(t *testing.T, opts Options) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := f.update(t, opts)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("update still running after a minute: a staged binary stalled it")
		return nil
	}
}

// requireRefusedCleanly checks what every refusal of a misbehaving staged
// binary must leave: no rollback needed, the install root byte-identical
// and the update lock free.
func (f *fixture) requireRefusedCleanly(t *testing.T, err error, before map[string]string) {
	t.Helper()
	if err == nil {
		t.Fatal("update succeeded, want a refusal")
	}
	var rb *RolledBackError
	if errors.As(err, &rb) {
		t.Errorf("a refusal before the swap must not need a rollback: %v", err)
	}
	if d := u.DiffSnapshots(before, u.Snapshot(t, f.root)); len(d) > 0 {
		t.Errorf("refusal changed the install root:\n%s", strings.Join(d, "\n"))
	}
	lock, lerr := system.TryLock(DefaultStagingDir(f.root))
	if lerr != nil {
		t.Fatalf("the update lock is still held after the refusal: %v", lerr)
	}
	_ = lock.Unlock()
}

func TestStagedBinaryThatDoesNotFinishIsKilled(t *testing.T) {
	const versionJSON = `{"version":"v0.2.0","commit":"c","built_at":"2026-05-01T12:00:00Z"}`
	for _, tc := range []struct {
		name   string
		binary string
		// script records the pids that must be gone afterwards in $1.
		script  string
		timeout time.Duration
		want    []string
		is      error
	}{
		{
			name:   "version check hangs",
			binary: BangerBinary,
			// The shell waits on a child: both must die.
			script:  `sleep 3701 & echo $$ $! > %s; wait`,
			timeout: time.Second,
			want:    []string{"ask the new banger for its version", "version --json` did not finish within 1s, so it and everything it started were killed"},
			is:      context.DeadlineExceeded,
		},
		{
			name:    "schema check hangs",
			binary:  BangerdBinary,
			script:  `sleep 3702 & echo $$ $! > %s; wait`,
			timeout: time.Second,
			want:    []string{"check the state database with the new bangerd", "--check-migrations --system` did not finish within 1s"},
			is:      context.DeadlineExceeded,
		},
		{
			name:   "child holds the output after the answer",
			binary: BangerBinary,
			// A correct answer, but a child left behind with stdout open.
			script:  `sleep 3703 & echo $! > %s; echo '` + versionJSON + `'`,
			timeout: 30 * time.Second,
			want:    []string{"ask the new banger for its version", "it exited but left a process holding its output open; that process was killed"},
			is:      system.ErrOutputHeld,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.runner.Exec = system.ExecRunner{WaitDelay: 200 * time.Millisecond}
			pids := filepath.Join(t.TempDir(), "pids")
			f.publishScripts(t, map[string]string{tc.binary: fmt.Sprintf(tc.script, pids)})
			opts := f.opts()
			opts.CommandTimeout = tc.timeout
			before := u.Snapshot(t, f.root)
			err := f.updateBounded(t, opts)
			f.requireRefusedCleanly(t, err, before)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			systemtest.RequireGone(t, pids)
		})
	}
}

func TestStagedBinaryOutputFloodIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name, binary, script string
		want                 []string
	}{
		{
			name:   "version answer of 50 MiB",
			binary: BangerBinary,
			script: `head -c 52428800 /dev/zero`,
			want:   []string{"ask the new banger for its version", "printed more output than is kept (51380224 bytes dropped)", "is not trusted"},
		},
		{
			name:   "schema check fails with a long line of escapes",
			binary: BangerdBinary,
			// Below the runner's cap, so it is the quoting that must bound it.
			script: `{ printf '\033[2J\033]0;pwned\007'; head -c 500000 /dev/zero | tr '\0' x; } >&2; exit 3`,
			want:   []string{"--check-migrations --system` exited 3: \\x1b[2J\\x1b]0;pwned\\x07xxx", "xxx…"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.publishScripts(t, map[string]string{tc.binary: tc.script})
			before := u.Snapshot(t, f.root)
			err := f.updateBounded(t, f.opts())
			f.requireRefusedCleanly(t, err, before)
			msg := err.Error()
			// The staged binary's path is the longest part of a good message.
			if len(msg) > 600 {
				t.Errorf("error is %d bytes long, want a short sentence: %.300s…", len(msg), msg)
			}
			if i := strings.IndexFunc(msg, func(r rune) bool { return r < ' ' || r == 0x7f }); i >= 0 {
				t.Errorf("error holds control character %q at %d: %.300s", msg[i], i, msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("err = %.600s\nwant it to contain %q", msg, w)
				}
			}
		})
	}
}

func TestQuoteOutput(t *testing.T) {
	long := strings.Repeat("é", maxQuoted+5)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"first non-empty line", "\n  compatible: 3 migrations applied \nmore\n", "compatible: 3 migrations applied"},
		{"empty", " \n", ""},
		{"control characters", "\x1b[31mred\x07\tend\r", `\x1b[31mred\x07\tend`},
		{"bidi override", "a\u202eb", `a\u202eb`},
		{"invalid UTF-8", "a\xffb", `a\xffb`},
		{"quotes stay as they are", `{"version":"v1"}`, `{"version":"v1"}`},
		{"long line cut at maxQuoted characters", long + "\nnext", strings.Repeat("é", maxQuoted) + "…"},
		{"huge line cut without reading it all", strings.Repeat("x", 10<<20), strings.Repeat("x", maxQuoted) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quoteOutput([]byte(tc.in)); got != tc.want {
				t.Errorf("quoteOutput(%.40q) = %.300q, want %.300q", tc.in, got, tc.want)
			}
		})
	}
}
