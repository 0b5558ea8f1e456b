package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/paths"
)

// TestDaemonDyingMidCommandIsExplained: when the daemon goes away in the
// middle of a VM command, the CLI says so, where the daemon's log is, and
// how to see the state the VM was left in, instead of "stream broken:
// unexpected EOF" (issue 14, item 10).
func TestDaemonDyingMidCommandIsExplained(t *testing.T) {
	for _, args := range [][]string{
		{"vm", "start", "dev"},
		{"vm", "create", "--name", "dev"},
		// --name names the snapshot here, not the VM.
		{"vm", "snapshot", "dev", "--name", "snap"},
	} {
		t.Run(args[1], func(t *testing.T) {
			dir, err := os.MkdirTemp("", "bgd") // short: socket paths are limited to 108 bytes
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			layout := paths.Layout{Mode: paths.ModeUser, ConfigDir: dir, StateDir: dir, RuntimeDir: dir}
			build := buildinfo.Info{Version: "v0.1.0", Commit: "0123456789abcdef", BuiltAt: "2026-04-28T20:45:50Z"}

			srv := api.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
			api.Handle(srv, api.MethodDaemonInfo, func(context.Context, struct{}, api.Progress) (api.DaemonInfo, error) {
				return api.DaemonInfo{Build: build, PID: os.Getpid()}, nil
			})
			dying := make(chan struct{})
			hang := func(ctx context.Context, p api.Progress) (api.VM, error) {
				p(api.Event{VM: "dev", Stage: "boot", Message: "starting firecracker"})
				close(dying)
				<-ctx.Done()
				return api.VM{}, ctx.Err()
			}
			api.Handle(srv, api.MethodVMStart, func(ctx context.Context, _ api.VMRef, p api.Progress) (api.VM, error) { return hang(ctx, p) })
			api.Handle(srv, api.MethodVMCreate, func(ctx context.Context, _ api.VMCreateRequest, p api.Progress) (api.VM, error) {
				return hang(ctx, p)
			})
			api.Handle(srv, api.MethodVMSnapshot, func(ctx context.Context, _ api.VMSnapshotRequest, p api.Progress) (api.Snapshot, error) {
				_, err := hang(ctx, p)
				return api.Snapshot{}, err
			})
			ln, err := net.Listen("unix", layout.SocketPath())
			if err != nil {
				t.Fatal(err)
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = hs.Serve(ln) }()
			go func() { <-dying; _ = hs.Close() }() // the daemon dies mid-command

			var stdout, stderr bytes.Buffer
			app := &App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Build: build,
				Layout:       func(bool) (paths.Layout, error) { return layout, nil },
				DaemonBinary: func() (string, error) { return "", errors.New("no daemon binary in this test") },
				IsTerminal:   func() bool { return false }, StartTimeout: time.Second}
			if code := Run(context.Background(), app, args); code == 0 {
				t.Fatal("the command succeeded although its daemon died")
			}
			out := stderr.String()
			for _, want := range []string{"the daemon stopped", "the daemon's log is " + layout.DaemonLogPath(), "`banger vm show dev` tells the VM's state"} {
				if !strings.Contains(out, want) {
					t.Errorf("stderr does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "stream broken") {
				t.Errorf("stderr still shows the raw stream error:\n%s", out)
			}
		})
	}
}
