package daemon

import (
	"context"
	"errors"
	"io"
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
	"github.com/banger-dev/banger/internal/paths"
)

// testLayout is a user-mode layout under a short temp dir (Unix socket paths
// are limited to 108 bytes, and t.TempDir() paths can be long).
func testLayout(t *testing.T) paths.Layout {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return testLayoutAt(dir)
}

// testConfig is the default config with VM networking off: tests that do
// not make their own network namespace must never touch the host's.
func testConfig() config.Config {
	cfg := config.Default()
	cfg.Network.Enabled = "off"
	return cfg
}

func testLayoutAt(dir string) paths.Layout {
	return paths.Layout{
		Mode:       paths.ModeUser,
		ConfigDir:  filepath.Join(dir, "config"),
		StateDir:   filepath.Join(dir, "state"),
		RuntimeDir: filepath.Join(dir, "run"),
		SystemRoot: filepath.Join(dir, "root"),
	}
}

type runningDaemon struct {
	layout paths.Layout
	client *api.Client
	cancel context.CancelFunc
	done   chan error
}

func startDaemon(t *testing.T, layout paths.Layout) *runningDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	opts := Options{Layout: layout, Config: testConfig(), Build: buildinfo.Info{Version: "v0.0.1", Commit: "c0ffee", BuiltAt: "now"}}
	go func() { done <- Run(ctx, opts, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("daemon failed to start: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("daemon did not become ready")
	}
	rd := &runningDaemon{layout: layout, client: api.NewClient(layout.SocketPath()), cancel: cancel, done: done}
	t.Cleanup(func() {
		rd.client.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	return rd
}

func TestDaemonServesInfoAndPrivateSocket(t *testing.T) {
	rd := startDaemon(t, testLayout(t))
	info, err := rd.client.DaemonInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Build.Commit != "c0ffee" || info.PID != os.Getpid() || info.Mode != "user" {
		t.Fatalf("info: %+v", info)
	}
	if !strings.HasPrefix(info.Schema, "compatible") {
		t.Fatalf("schema after first start: %q", info.Schema)
	}
	st, err := os.Stat(rd.layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want 0600", st.Mode().Perm())
	}
}

func TestDaemonServesConcurrentClients(t *testing.T) {
	rd := startDaemon(t, testLayout(t))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api.NewClient(rd.layout.SocketPath())
			defer c.Close()
			for range 10 {
				if _, err := c.DaemonInfo(context.Background()); err != nil {
					errs <- err
					return
				}
				if _, err := c.ImageList(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDaemonSurvivesMalformedRequests(t *testing.T) {
	rd := startDaemon(t, testLayout(t))
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", rd.layout.SocketPath())
	}}}
	defer raw.CloseIdleConnections()
	cases := []struct {
		path, body string
		status     int
		code       string
	}{
		{"/v1/vm.show", `{"name": `, http.StatusBadRequest, "invalid_argument"},
		{"/v1/vm.show", `{"nmae": "x"}`, http.StatusBadRequest, "invalid_argument"},
		{"/v1/no.such.method", `{}`, http.StatusNotFound, "not_found"},
		{"/elsewhere", ``, http.StatusNotFound, "not_found"},
	}
	for _, tc := range cases {
		res, err := raw.Post("http://bangerd"+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(body), `"code":"`+tc.code+`"`) {
			t.Errorf("%s %q: HTTP %d %s", tc.path, tc.body, res.StatusCode, body)
		}
	}
	// Garbage that is not even HTTP.
	conn, err := net.Dial("unix", rd.layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("\x00\x01 not http at all\r\n\r\n"))
	_, _ = io.ReadAll(conn)
	conn.Close()

	if _, err := rd.client.DaemonInfo(context.Background()); err != nil {
		t.Fatalf("daemon stopped serving after malformed requests: %v", err)
	}
}

func TestSecondDaemonRefused(t *testing.T) {
	layout := testLayout(t)
	startDaemon(t, layout)
	err := Run(context.Background(), Options{Layout: layout, Config: testConfig()}, nil)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second daemon: %v, want ErrAlreadyRunning", err)
	}
	if !strings.Contains(err.Error(), "banger daemon stop") {
		t.Fatalf("error gives no way out: %v", err)
	}
}

func TestStaleSocketFromCrashIsRecovered(t *testing.T) {
	layout := testLayout(t)
	if err := layout.Ensure(); err != nil {
		t.Fatal(err)
	}
	// A crashed daemon leaves its socket file behind with nobody listening.
	ln, err := net.Listen("unix", layout.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(layout.SocketPath()); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	c := api.NewClient(layout.SocketPath())
	if _, err := c.DaemonInfo(context.Background()); !errors.Is(err, api.ErrDaemonUnreachable) {
		t.Fatalf("stale socket: %v, want ErrDaemonUnreachable", err)
	}
	rd := startDaemon(t, layout)
	if _, err := rd.client.DaemonInfo(context.Background()); err != nil {
		t.Fatalf("daemon did not recover the stale socket: %v", err)
	}
}

func TestShutdownRequestStopsDaemonAndRemovesSocket(t *testing.T) {
	layout := testLayout(t)
	rd := startDaemon(t, layout)
	if _, err := rd.client.DaemonShutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rd.done:
		if err != nil {
			t.Fatalf("daemon exit: %v", err)
		}
		rd.done <- nil // let the cleanup see it too
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop after daemon.shutdown")
	}
	if _, err := os.Stat(layout.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after shutdown: %v", err)
	}
}
