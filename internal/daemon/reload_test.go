package daemon

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/config"
)

// startWithFiles runs a daemon whose config comes from a root file and an
// owner's layer, as a system daemon's does.
func startWithFiles(t *testing.T, restart func()) (*runningDaemon, string) {
	t.Helper()
	layout := testLayout(t)
	root := filepath.Join(layout.ConfigDir, "config.toml")
	owner := filepath.Join(layout.StateDir, "home", ".config", "banger", "config.toml")
	writeTestFile(t, root, []byte("[network]\nenabled = \"off\"\n"))
	writeTestFile(t, owner, []byte("[vm]\nvcpus = 1\n"))
	cfg, err := config.LoadSources(config.Sources{Root: root, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	opts := Options{Layout: layout, Config: cfg, ConfigFile: root, OwnerConfigFile: owner, RequestRestart: restart,
		Build: buildinfo.Info{Version: "v0.0.1"}}
	go func() { done <- Run(ctx, opts, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon failed to start: %v", err)
	}
	rd := &runningDaemon{layout: layout, client: api.NewClient(layout.SocketPath()), cancel: cancel, done: done}
	t.Cleanup(func() { rd.client.Close(); cancel(); <-done })
	return rd, owner
}

func TestReloadRestartsOnlyForChangedConfig(t *testing.T) {
	var restarts atomic.Int32
	rd, owner := startWithFiles(t, func() { restarts.Add(1) })
	ctx := context.Background()

	resp, err := rd.client.DaemonReload(ctx)
	if err != nil || resp.Restarting || restarts.Load() != 0 {
		t.Fatalf("unchanged files: %+v %v (restarts %d)", resp, err, restarts.Load())
	}
	info, err := rd.client.DaemonInfo(ctx)
	if err != nil || info.OwnerConfigFile != owner || info.ConfigFingerprint != resp.Fingerprint {
		t.Fatalf("info %+v %v", info, err)
	}

	// A bad owner's layer is refused and the daemon keeps running.
	writeTestFile(t, owner, []byte("[network]\nbridge = \"bangerx\"\n"))
	_, err = rd.client.DaemonReload(ctx)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalidArgument || !strings.Contains(ae.Message, "root's to set") {
		t.Fatalf("root key in the owner's layer: %v", err)
	}
	if _, err := rd.client.DaemonInfo(ctx); err != nil || restarts.Load() != 0 {
		t.Fatalf("after a refused reload: %v, restarts %d", err, restarts.Load())
	}

	writeTestFile(t, owner, []byte("[vm]\nvcpus = 2\nmemory_mib = 256\n"))
	resp, err = rd.client.DaemonReload(ctx)
	if err != nil || !resp.Restarting || resp.Fingerprint == info.ConfigFingerprint || restarts.Load() != 1 {
		t.Fatalf("changed owner's layer: %+v %v (restarts %d)", resp, err, restarts.Load())
	}
	select {
	case err := <-rd.done:
		rd.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("daemon stopped with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop to be restarted")
	}
}

func TestReloadRefusedWithoutSupervisor(t *testing.T) {
	rd, owner := startWithFiles(t, nil)
	writeTestFile(t, owner, []byte("[vm]\nvcpus = 3\n"))
	_, err := rd.client.DaemonReload(context.Background())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeFailedPrecondition || !strings.Contains(ae.Message, "not started by systemd") {
		t.Fatalf("reload without systemd: %v", err)
	}
	if _, err := rd.client.DaemonInfo(context.Background()); err != nil {
		t.Fatalf("the daemon stopped: %v", err)
	}
}

// TestMainNotifiesSystemdAndExitsForRestart runs bangerd's main as
// systemd would (NOTIFY_SOCKET set): READY=1 arrives once the API answers,
// and after a config change daemon.reload makes it exit with ExitRestart,
// the status the unit restarts on.
func TestMainNotifiesSystemdAndExitsForRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "bgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	cfgFile := filepath.Join(dir, "config", "banger", "config.toml")
	writeTestFile(t, cfgFile, []byte("[network]\nenabled = \"off\"\n"))
	notify := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", notify)

	var stderr bytes.Buffer
	exit := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { exit <- Main(ctx, nil, &bytes.Buffer{}, &stderr) }()

	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		cancel()
		<-exit // stderr is the daemon's until it returns
		t.Fatalf("systemd got %q, %v; stderr:\n%s", buf[:n], err, stderr.String())
	}
	c := api.NewClient(filepath.Join(dir, "run", "banger", "bangerd.sock"))
	defer c.Close()
	if _, err := c.DaemonInfo(context.Background()); err != nil {
		t.Fatalf("READY=1 sent before the API answers: %v", err)
	}
	writeTestFile(t, cfgFile, []byte("[network]\nenabled = \"off\"\n[vm]\nvcpus = 1\n"))
	if resp, err := c.DaemonReload(context.Background()); err != nil || !resp.Restarting {
		t.Fatalf("reload: %+v %v", resp, err)
	}
	select {
	case code := <-exit:
		if code != ExitRestart {
			t.Fatalf("exit %d, want %d; stderr:\n%s", code, ExitRestart, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bangerd did not exit for the restart")
	}
}
