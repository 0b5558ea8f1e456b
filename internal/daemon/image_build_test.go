package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// imageTestDaemon is a Daemon with a store and layout but no socket, for
// calling image handlers directly.
func imageTestDaemon(t *testing.T) *Daemon {
	t.Helper()
	layout := testLayout(t)
	if err := layout.Ensure(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), layout.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &Daemon{opts: Options{Layout: layout, Config: testConfig(), Runner: system.ExecRunner{}}, log: slog.New(slog.DiscardHandler),
		now: time.Now, store: st, events: newHub()}
}

func noProgress(api.Event) {}

func TestImageBuildRejectsBadRequests(t *testing.T) {
	d := imageTestDaemon(t)
	ctx := context.Background()
	if err := d.store.CreateImage(ctx, store.Image{ID: store.NewID(), Name: "taken", KernelPath: "/k", RootfsPath: "/r", Source: store.ImageSourceImport}); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(t.TempDir(), "notakernel")
	if err := os.WriteFile(text, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		req  api.ImageBuildRequest
		code api.Code
		want string
	}{
		{api.ImageBuildRequest{Name: "Bad_Name"}, api.CodeInvalidArgument, "invalid image name"},
		{api.ImageBuildRequest{Name: "x", From: "ubuntu:noble"}, api.CodeInvalidArgument, "debian:SUITE"},
		{api.ImageBuildRequest{Name: "x", SizeBytes: 1 << 20}, api.CodeInvalidArgument, "too small"},
		{api.ImageBuildRequest{Name: "x", Scripts: []string{"setup.sh"}}, api.CodeInvalidArgument, "must be absolute"},
		{api.ImageBuildRequest{Name: "x", Kernel: text}, api.CodeInvalidArgument, "neither an ELF vmlinux nor a bzImage"},
		{api.ImageBuildRequest{Name: "x", Kernel: "/nonexistent/vmlinuz"}, api.CodeInvalidArgument, "does not exist"},
		{api.ImageBuildRequest{Name: "taken"}, api.CodeAlreadyExists, "already exists"},
	}
	for _, tc := range cases {
		_, err := d.imageBuild(ctx, tc.req, noProgress)
		if !api.IsCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v (%s), want %s containing %q", tc.req, err, api.CodeOf(err), tc.code, tc.want)
		}
	}
	assertNoImageLeftovers(t, d, 1)
}

// TestImageBuildFailureLeavesNothing runs a build that fails in
// debootstrap (the mirror is a closed local port): no row, no image dir,
// no work dir. Without root the daemon must refuse with a clear
// precondition error instead.
func TestImageBuildFailureLeavesNothing(t *testing.T) {
	d := imageTestDaemon(t)
	d.opts.Config.Image.DebianMirror = "http://127.0.0.1:9/debian"
	// The agent is found at its canonical path under the layout's root.
	agent := filepath.Join(d.opts.Layout.SystemRoot, "usr", "local", "lib", "banger", agentBinaryName)
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Any ELF will do as a kernel for a build that fails before booting.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var events []api.Event
	_, err = d.imageBuild(context.Background(), api.ImageBuildRequest{Name: "doomed", Kernel: self, User: "dev"},
		func(ev api.Event) { events = append(events, ev) })
	if os.Geteuid() != 0 {
		if !api.IsCode(err, api.CodeFailedPrecondition) || !strings.Contains(err.Error(), "needs root") {
			t.Fatalf("non-root build: %v", err)
		}
	} else {
		if _, lookErr := os.Stat("/usr/sbin/debootstrap"); lookErr != nil {
			t.Skip("needs debootstrap")
		}
		if err == nil || !strings.Contains(err.Error(), `build image "doomed"`) || !strings.Contains(err.Error(), "debootstrap") {
			t.Fatalf("err = %v, want a debootstrap failure", err)
		}
		t.Logf("build failed as intended: %v", err)
		if len(events) < 2 || events[0].Stage != "kernel" {
			t.Errorf("progress events %+v", events)
		}
	}
	assertNoImageLeftovers(t, d, 0)
}

// TestImageBuildRunsCommandsThroughTheDaemonsRunner: the build's external
// commands go through Options.Runner, and its failure comes back quoting the
// tool's cause, with nothing left behind.
func TestImageBuildRunsCommandsThroughTheDaemonsRunner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a Debian build is refused before any command runs without root")
	}
	d := imageTestDaemon(t)
	run := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(1, "E: the fake mirror is down")
	}}
	d.opts.Runner = run
	agent := filepath.Join(d.opts.Layout.SystemRoot, "usr", "local", "lib", "banger", agentBinaryName)
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.imageBuild(context.Background(), api.ImageBuildRequest{Name: "faked", Kernel: self, User: "dev"}, noProgress)
	if err == nil || !strings.Contains(err.Error(), "debootstrap exited with status 1: E: the fake mirror is down") {
		t.Fatalf("err = %v, want the fake debootstrap's failure", err)
	}
	if got := programs(run); len(got) != 1 || got[0] != "debootstrap" {
		t.Fatalf("ran %v through the daemon's runner, want debootstrap", got)
	}
	assertNoImageLeftovers(t, d, 0)
}

func assertNoImageLeftovers(t *testing.T, d *Daemon, rows int) {
	t.Helper()
	imgs, err := d.store.ListImages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != rows {
		t.Errorf("%d image rows, want %d", len(imgs), rows)
	}
	entries, _ := os.ReadDir(d.opts.Layout.ImagesDir())
	for _, e := range entries {
		t.Errorf("left %s in the images dir", e.Name())
	}
}

func TestImageShow(t *testing.T) {
	d := imageTestDaemon(t)
	ctx := context.Background()
	if _, err := d.imageShow(ctx, api.ImageRef{Name: "nope"}, noProgress); !api.IsCode(err, api.CodeNotFound) {
		t.Fatalf("missing image: %v", err)
	}
	if err := d.store.CreateImage(ctx, store.Image{ID: store.NewID(), Name: "one", KernelPath: "/k", RootfsPath: "/r", Source: store.ImageSourceBuild}); err != nil {
		t.Fatal(err)
	}
	im, err := d.imageShow(ctx, api.ImageRef{Name: "one"}, noProgress)
	if err != nil || im.Name != "one" || im.Source != store.ImageSourceBuild {
		t.Fatalf("show: %+v, %v", im, err)
	}
}

func TestCleanupImageWork(t *testing.T) {
	d := imageTestDaemon(t)
	stale := filepath.Join(d.opts.Layout.ImagesDir(), ".0123abcd.work", "rootfs", "etc")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(d.opts.Layout.ImagesDir(), "0123abcd")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	d.cleanupImageWork()
	if _, err := os.Stat(filepath.Dir(filepath.Dir(stale))); !os.IsNotExist(err) {
		t.Error("stale work dir kept")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Error("image dir removed")
	}
}
