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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// systemInstall is a system layout under a temporary root, installed for
// ownerUID with its home in the tree, and a daemon that behaves as
// bangerd.service does: it reports the configuration it loaded and, on
// daemon.reload of a changed one, "restarts" (a new pid, the new values).
type systemInstall struct {
	layout  paths.Layout
	home    string
	app     *App
	stdout  *bytes.Buffer
	mu      sync.Mutex
	pid     int
	fp      string
	reloads int
}

func newSystemInstall(t *testing.T, ownerUID int, daemonBuild buildinfo.Info) *systemInstall {
	t.Helper()
	root, err := os.MkdirTemp("", "bgq") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	s := &systemInstall{layout: paths.System(root), home: filepath.Join(root, "home", "o"), pid: 100}
	for _, d := range []string{s.layout.ConfigDir, s.layout.RuntimeDir, s.home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(s.layout.ConfigFile(), []byte("vmm = \"qemu\"\n[vm]\nvcpus = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	meta := installmeta.Meta{Version: "v1", OwnerUser: "o", OwnerUID: ownerUID, OwnerGID: ownerUID, Home: s.home}
	if err := installmeta.Write(s.layout.InstallMetaPath(), meta); err != nil {
		t.Fatal(err)
	}
	src := config.SourcesFor(s.layout)
	cfg, err := config.LoadSources(src)
	if err != nil {
		t.Fatal(err)
	}
	s.fp = cfg.Fingerprint()

	srv := api.NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	api.Handle(srv, api.MethodDaemonInfo, func(context.Context, struct{}, api.Progress) (api.DaemonInfo, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return api.DaemonInfo{Build: daemonBuild, PID: s.pid, Mode: "system", ConfigFile: src.Root, OwnerConfigFile: src.Owner, ConfigFingerprint: s.fp}, nil
	})
	api.Handle(srv, api.MethodDaemonReload, func(context.Context, struct{}, api.Progress) (api.ReloadResponse, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.reloads++
		cfg, err := config.LoadSources(src)
		if err != nil {
			return api.ReloadResponse{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
		}
		resp := api.ReloadResponse{PID: s.pid, Fingerprint: cfg.Fingerprint(), Restarting: cfg.Fingerprint() != s.fp}
		if resp.Restarting {
			s.pid++
			s.fp = cfg.Fingerprint()
		}
		return resp, nil
	})
	ln, err := net.Listen("unix", s.layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	s.stdout = &bytes.Buffer{}
	s.app = &App{Stdin: strings.NewReader(""), Stdout: s.stdout, Stderr: io.Discard, Build: daemonBuild,
		Layout:       func(bool) (paths.Layout, error) { return s.layout, nil },
		DaemonBinary: func() (string, error) { return "", errors.New("no daemon binary in this test") },
		IsTerminal:   func() bool { return false }, StartTimeout: time.Second}
	return s
}

func (s *systemInstall) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	s.stdout.Reset()
	var stderr bytes.Buffer
	s.app.Stderr = &stderr
	code := Run(context.Background(), s.app, args)
	if code != 0 {
		return s.stdout.String(), errors.New(strings.TrimSpace(stderr.String()))
	}
	return s.stdout.String(), nil
}

func (s *systemInstall) ownerFile() string {
	return filepath.Join(s.home, ".config", "banger", "config.toml")
}

var testBuild = buildinfo.Info{Version: "v0.1.0", Commit: "0123456789abcdef", BuiltAt: "2026-04-28T20:45:50Z"}

func TestConfigSetWritesTheOwnersLayerAndRestartsTheDaemon(t *testing.T) {
	s := newSystemInstall(t, os.Getuid(), testBuild)
	rootBefore, _ := os.ReadFile(s.layout.ConfigFile())

	out, err := s.run(t, "config", "set", "vm.vcpus", "3")
	if err != nil {
		t.Fatalf("config set: %v\n%s", err, out)
	}
	owner, err := os.ReadFile(s.ownerFile())
	if err != nil || string(owner) != "[vm]\nvcpus = 3\n" {
		t.Fatalf("owner's layer: %q %v", owner, err)
	}
	if fi, _ := os.Stat(s.ownerFile()); fi.Mode().Perm() != 0o600 {
		t.Errorf("owner's layer mode %v", fi.Mode())
	}
	if rootNow, _ := os.ReadFile(s.layout.ConfigFile()); !bytes.Equal(rootNow, rootBefore) {
		t.Errorf("root's file changed: %q", rootNow)
	}
	if s.reloads != 1 || !strings.Contains(out, "runs with the new configuration (pid 101)") {
		t.Fatalf("reloads %d, output:\n%s", s.reloads, out)
	}
	if out, err := s.run(t, "config", "get", "vm.vcpus"); err != nil || out != "3\n" {
		t.Fatalf("config get after set: %q %v", out, err)
	}
	if out, err := s.run(t, "config", "get", "vmm"); err != nil || out != "qemu\n" {
		t.Fatalf("root's value under the owner's layer: %q %v", out, err)
	}
	// Setting the same value again changes nothing, and says so.
	if out, err := s.run(t, "config", "set", "vm.vcpus", "3"); err != nil || !strings.Contains(out, "already runs with this configuration") || s.reloads != 2 {
		t.Fatalf("same value: %q %v", out, err)
	}
	if out, err := s.run(t, "config", "check"); err != nil || !strings.Contains(out, "daemon: runs with this configuration") {
		t.Fatalf("check: %q %v", out, err)
	}
	if out, err := s.run(t, "config", "unset", "vm.vcpus"); err != nil || !strings.Contains(out, "pid 102") {
		t.Fatalf("unset: %q %v", out, err)
	}
	if out, _ := s.run(t, "config", "get", "vm.vcpus"); out != "2\n" {
		t.Fatalf("after unset, root's value: %q", out)
	}
}

func TestConfigSetRefusesWhatTheOwnerMayNotSet(t *testing.T) {
	s := newSystemInstall(t, os.Getuid(), testBuild)
	for _, args := range [][]string{
		{"network.bridge", "bangerx"},
		{"firecracker.jailer", "/tmp/jailer"},
		{"vmm", "firecracker"},
	} {
		_, err := s.run(t, append([]string{"config", "set"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "is root's to set") || !strings.Contains(err.Error(), "sudo") {
			t.Errorf("set %v: %v", args, err)
		}
	}
	_, err := s.run(t, "config", "set", "vm.vcpus", "0")
	if err == nil || !strings.Contains(err.Error(), `"vm.vcpus": must be between 1 and 32`) {
		t.Errorf("bad value: %v", err)
	}
	if _, err := os.Stat(s.ownerFile()); !errors.Is(err, os.ErrNotExist) || s.reloads != 0 {
		t.Fatalf("a refused set wrote the file (%v) or reloaded (%d)", err, s.reloads)
	}

	other := newSystemInstall(t, os.Getuid()+1, testBuild)
	if _, err := other.run(t, "config", "set", "vm.vcpus", "3"); err == nil || !strings.Contains(err.Error(), "only its owner, o,") {
		t.Errorf("not the owner: %v", err)
	}
}

func TestConfigShowAndPathNameBothLayers(t *testing.T) {
	s := newSystemInstall(t, os.Getuid(), testBuild)
	out, err := s.run(t, "config", "path")
	if err != nil || out != s.layout.ConfigFile()+"\n"+s.ownerFile()+"\n" {
		t.Fatalf("path: %q %v", out, err)
	}
	out, err = s.run(t, "config", "show")
	if err != nil || !strings.Contains(out, "owner's layer "+s.ownerFile()+" (absent)") || !strings.Contains(out, "vmm = 'qemu'") {
		t.Fatalf("show: %q %v", out, err)
	}
}

// TestDaemonStatusAdviceFollowsTheMode: the system daemon is systemd's; the
// CLI never restarts it, so status must not say it will.
func TestDaemonStatusAdviceFollowsTheMode(t *testing.T) {
	old := buildinfo.Info{Version: "v0.0.9", Commit: "feedface"}
	s := newSystemInstall(t, os.Getuid(), old)
	s.app.Build = testBuild
	out, err := s.run(t, "daemon", "status")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "next banger command") || !strings.Contains(out, "sudo banger update") {
		t.Fatalf("system-mode status:\n%s", out)
	}
}
