package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestKernelBuildRefusesAnUnknownConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	app := &App{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
	code := Run(context.Background(), app, []string{"kernel", "build", "--system=false", "--config", "huge", "--cache-dir", t.TempDir()})
	if code != 1 || !strings.Contains(stderr.String(), `--config: there is no kernel configuration "huge": use one of microvm`) {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestKernelBuildUsesTheGivenSource: --source is described (its content
// names the version outside a package) and unpacked, into the cache given.
func TestKernelBuildUsesTheGivenSource(t *testing.T) {
	dir := t.TempDir()
	tarball := filepath.Join(dir, "linux-source-6.1.tar.xz")
	if err := os.WriteFile(tarball, []byte("not really a tarball"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(2, "tar: this does not look like a tar archive")
	}}
	t.Chdir(dir)
	cache := filepath.Join(dir, "cache")
	var stages []string
	_, err := buildKernel(context.Background(), r, kernelBuildOptions{Config: "microvm", Source: "linux-source-6.1.tar.xz", CacheDir: cache},
		func(stage, _ string) { stages = append(stages, stage) })
	if err == nil || !strings.Contains(err.Error(), "unpack the kernel source") {
		t.Fatalf("buildKernel = %v, want the unpack failure", err)
	}
	var tar []string
	for _, c := range r.Commands() {
		if c.Path == "tar" {
			tar = c.Args
		}
	}
	if !slices.Contains(tar, tarball) {
		t.Errorf("tar ran with %q, want the absolute --source %s", tar, tarball)
	}
	if !slices.Equal(stages, []string{"source", "extract"}) {
		t.Errorf("progress stages %q", stages)
	}
	if entries, _ := os.ReadDir(filepath.Join(cache, "built-kernels")); len(entries) != 0 {
		t.Errorf("the failed build left %v in the cache", entries)
	}
}

func TestRenderBuiltKernel(t *testing.T) {
	var out bytes.Buffer
	k := image.BuiltKernel{Vmlinux: "/c/built-kernels/microvm_6.1.192-3-abc/vmlinux", Release: "6.1.192-banger-microvm",
		Config: "microvm", ConfigHash: "0123456789abcdef0123", SourcePackage: "linux-source-6.1", SourceVersion: "6.1.192-3",
		BuildSeconds: 612.4, Jobs: 2, Cached: true, BuiltAt: time.Unix(0, 0)}
	if err := renderBuiltKernel(&out, k); err != nil {
		t.Fatal(err)
	}
	want := `vmlinux:  /c/built-kernels/microvm_6.1.192-3-abc/vmlinux
release:  6.1.192-banger-microvm
config:   microvm (0123456789ab)
source:   linux-source-6.1 6.1.192-3
built:    612 s with -j2 (from the cache)
`
	if out.String() != want {
		t.Fatalf("rendered:\n%s\nwant:\n%s", out.String(), want)
	}
}
