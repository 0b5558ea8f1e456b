package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/paths"
)

// TestDaemonStartFailureQuotesTheReason: a daemon that refuses to start
// (here, another banger's bridge) used to leave the user with "the daemon
// exited during start-up (exit status 1); see …/bangerd.log" while the
// reason sat in the log.
func TestDaemonStartFailureQuotesTheReason(t *testing.T) {
	dir := t.TempDir()
	layout := paths.System(dir)
	if err := layout.Ensure(); err != nil {
		t.Fatal(err)
	}
	// An earlier run's failure stays in the log and must not be quoted.
	if err := os.WriteFile(layout.DaemonLogPath(), []byte("bangerd: an old failure\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reason := "bridge banger0 belongs to another banger (state dir /x, uid 5); set network.bridge and network.subnet in your config to use another"
	fake := filepath.Join(dir, "bangerd")
	script := "#!/bin/sh\necho 'level=INFO msg=starting'\necho 'bangerd: " + reason + "\033]52;c;aGk=\007' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	app := &App{DaemonBinary: func() (string, error) { return fake, nil }, StartTimeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := app.startDaemon(ctx, layout)
	if err == nil {
		t.Fatal("a daemon that exits at once must fail the start")
	}
	msg := err.Error()
	if !strings.Contains(msg, "the daemon could not start: "+reason) || !strings.Contains(msg, layout.DaemonLogPath()) {
		t.Errorf("error = %q, want the daemon's own reason and the log path", msg)
	}
	if strings.Contains(msg, "old failure") || strings.ContainsRune(msg, 0x1b) || strings.ContainsRune(msg, 0x07) {
		t.Errorf("error = %q: quotes an earlier run or raw control characters", msg)
	}
}
