package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/image"
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

// seedMicroVMKernel puts a kernel in the cache as `banger kernel build`
// leaves it (the current microvm configuration) and returns its vmlinux.
func seedMicroVMKernel(t *testing.T, d *Daemon) string {
	t.Helper()
	cfg, err := image.LoadKernelConfig(image.MicroVMConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.imageCacheDir(), "built-kernels", "microvm_6.1.192-3-0123456789abcdef")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	meta, err := json.Marshal(image.BuiltKernel{Key: "0123456789abcdef", Config: cfg.Name, ConfigHash: cfg.Hash(),
		SourceVersion: "6.1.192-3", Release: "6.1.192-banger-microvm", BuiltAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), meta, 0o644); err != nil {
		t.Fatal(err)
	}
	// Any ELF stands in for the vmlinux.
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	vmlinux := filepath.Join(dir, image.KernelFile)
	if err := os.WriteFile(vmlinux, self, 0o644); err != nil {
		t.Fatal(err)
	}
	return vmlinux
}

// TestImageKernelChoice: --kernel debian is Debian's package, microvm the
// built kernel (refused with the way to build it when there is none), and
// no choice means the built kernel once there is one.
func TestImageKernelChoice(t *testing.T) {
	d := imageTestDaemon(t)
	for _, choice := range []string{"", "debian"} {
		if got, err := d.imageKernel(choice); err != nil || got != "" {
			t.Errorf("no built kernel, --kernel %q = %q, %v; want Debian's", choice, got, err)
		}
	}
	_, err := d.imageKernel("microvm")
	var ae *api.Error
	if !api.IsCode(err, api.CodeFailedPrecondition) || !errors.As(err, &ae) || !strings.Contains(ae.Hint, "banger kernel build") {
		t.Errorf("--kernel microvm with none built = %v, want a precondition error whose hint says how to build it", err)
	}

	vmlinux := seedMicroVMKernel(t, d)
	for choice, want := range map[string]string{"": vmlinux, "microvm": vmlinux, "debian": ""} {
		if got, err := d.imageKernel(choice); err != nil || got != want {
			t.Errorf("with a built kernel, --kernel %q = %q, %v; want %q", choice, got, err, want)
		}
	}
}

// TestImageBuildBusyboxDefaultsToTheBuiltKernel: a busybox build without
// --kernel takes the built microVM kernel (and so makes no initrd).
func TestImageBuildBusyboxDefaultsToTheBuiltKernel(t *testing.T) {
	if p, err := exec.LookPath("busybox"); err != nil || exec.Command("busybox", "--list").Run() != nil {
		t.Skipf("needs busybox-static (%s, %v)", p, err)
	}
	d := imageTestDaemon(t)
	d.opts.Runner = &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(1, "stop here")
	}}
	agent := filepath.Join(d.opts.Layout.SystemRoot, "usr", "local", "lib", "banger", agentBinaryName)
	if err := os.MkdirAll(filepath.Dir(agent), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(agent, []byte("agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	vmlinux := seedMicroVMKernel(t, d)
	var msgs []string
	_, err := d.imageBuild(context.Background(), api.ImageBuildRequest{Name: "tiny", From: "busybox"},
		func(ev api.Event) { msgs = append(msgs, ev.Stage+": "+ev.Message) })
	if err == nil {
		t.Fatal("the build did not stop at the fake runner")
	}
	if !slices.Contains(msgs, "kernel: extracting the ELF vmlinux from "+vmlinux) {
		t.Errorf("progress %q: the build did not take the built kernel %s", msgs, vmlinux)
	}
	assertNoImageLeftovers(t, d, 0)
}

// TestBootArgsNameTheRoot: a kernel booted without an initrd (the microVM
// kernel) mounts the root itself, from the command line.
func TestBootArgsNameTheRoot(t *testing.T) {
	args := strings.Fields(bootArgs(store.VM{Name: "dev"}))
	for _, want := range []string{"root=/dev/vda", "rootfstype=ext4", "rw"} {
		if !slices.Contains(args, want) {
			t.Errorf("boot args %q lack %s", args, want)
		}
	}
}
