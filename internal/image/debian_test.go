package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

const (
	metaShow = `Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)

`
	imageShow = `Package: linux-image-6.1.0-56-amd64
Version: 6.1.192-2
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Description: Linux 6.1 for 64-bit PCs (signed)
 The Linux kernel 6.1 and modules for use on PCs.
`
)

// fakeAptReply plays apt-cache, apt-get download, dpkg-deb and depmod.
func fakeAptReply(t *testing.T) func(c system.Command) (system.Output, error) {
	return func(c system.Command) (system.Output, error) {
		switch c.Path {
		case "apt-cache":
			switch c.Args[len(c.Args)-1] {
			case "linux-image-amd64":
				return systemtest.Print(metaShow)
			case "linux-image-6.1.0-56-amd64":
				return systemtest.Print(imageShow)
			}
			return systemtest.Exit(100, "E: No packages found")
		case "apt-get":
			return system.Output{}, os.WriteFile(filepath.Join(c.Dir, "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb"), []byte("deb"), 0o644)
		case "dpkg-deb":
			root := c.Args[2]
			writeFile(t, filepath.Join(root, "boot", "vmlinuz-6.1.0-56-amd64"), []byte("kernel"))
			writeFile(t, filepath.Join(root, "lib", "modules", "6.1.0-56-amd64", "modules.order"), nil)
			return system.Output{}, nil
		case "depmod":
			writeFile(t, filepath.Join(c.Args[1], "lib", "modules", c.Args[2], "modules.dep"), nil)
			return system.Output{}, nil
		}
		return system.Output{}, errors.New("unexpected command " + c.String())
	}
}

func TestFetchDebianKernelFollowsMetapackageAndCaches(t *testing.T) {
	cache := t.TempDir()
	r := &systemtest.Runner{Reply: fakeAptReply(t)}
	k := DebianKernels{Runner: r, CacheDir: cache}
	got, err := k.Fetch(context.Background(), "linux-image-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if got.Package != "linux-image-6.1.0-56-amd64" || got.Version != "6.1.192-2" || got.Release != "6.1.0-56-amd64" {
		t.Fatalf("got %+v", got)
	}
	if got.Dir != filepath.Join(cache, "linux-image-6.1.0-56-amd64_6.1.192-2") {
		t.Fatalf("cache dir %s is not keyed by package and version", got.Dir)
	}
	cmds := strings.Join(r.Lines(), "\n")
	for _, want := range []string{"apt-get -q -o APT::Sandbox::User=root download linux-image-6.1.0-56-amd64=6.1.192-2", "depmod -b "} {
		if !strings.Contains(cmds, want) {
			t.Errorf("commands lack %q:\n%s", want, cmds)
		}
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Errorf("cache holds %d entries, want only the unpacked kernel", len(entries))
	}

	// A second fetch of the same version downloads nothing.
	r2 := &systemtest.Runner{Reply: fakeAptReply(t)}
	if _, err := (DebianKernels{Runner: r2, CacheDir: cache}).Fetch(context.Background(), "linux-image-amd64"); err != nil {
		t.Fatal(err)
	}
	for _, c := range r2.Lines() {
		if !strings.HasPrefix(c, "apt-cache ") {
			t.Errorf("cached fetch ran %s", c)
		}
	}
}

func TestFetchDebianKernelErrors(t *testing.T) {
	k := DebianKernels{Runner: &systemtest.Runner{Reply: fakeAptReply(t)}, CacheDir: t.TempDir()}
	if _, err := k.Fetch(context.Background(), "linux-image-nope"); err == nil || !strings.Contains(err.Error(), "look up package linux-image-nope") {
		t.Fatalf("unknown package: %v", err)
	}
	if _, err := k.Fetch(context.Background(), "bad name;rm"); err == nil || !strings.Contains(err.Error(), "not a Debian package name") {
		t.Fatalf("bad name: %v", err)
	}
	// No apt on the host: the error points at --kernel.
	noApt := DebianKernels{CacheDir: t.TempDir(), Runner: &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		return system.Output{}, fmt.Errorf("run %s: %w", c.Path, &exec.Error{Name: c.Path, Err: exec.ErrNotFound})
	}}}
	if _, err := noApt.Fetch(context.Background(), "linux-image-amd64"); err == nil || !strings.Contains(err.Error(), "--kernel") {
		t.Fatalf("no apt: %v", err)
	}
}

func TestKernelDependency(t *testing.T) {
	for deps, want := range map[string]string{
		"linux-image-6.1.0-56-amd64 (= 6.1.192-2)":                      "linux-image-6.1.0-56-amd64",
		"kmod, linux-base (>= 4.3~), initramfs-tools | linux-initramfs": "",
		"foo | linux-image-6.12.0-1-cloud-amd64:amd64, bar":             "linux-image-6.12.0-1-cloud-amd64",
	} {
		if got := kernelDependency(deps); got != want {
			t.Errorf("kernelDependency(%q) = %q, want %q", deps, got, want)
		}
	}
}
