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

// fakeDaemon serves the daemon API, with daemon.info and the methods
// register adds, on a socket the returned App talks to. The App has no
// terminal and cannot start a daemon of its own.
func fakeDaemon(t *testing.T, register func(*api.Server)) (*App, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgh") // short: socket paths are limited to 108 bytes
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
	register(srv)
	ln, err := net.Listen("unix", layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	var stdout, stderr bytes.Buffer
	app := &App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Build: build,
		Layout:       func(bool) (paths.Layout, error) { return layout, nil },
		DaemonBinary: func() (string, error) { return "", errors.New("no daemon binary in this test") },
		IsTerminal:   func() bool { return false }, StartTimeout: time.Second}
	return app, &stdout, &stderr
}
