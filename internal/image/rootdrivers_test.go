package image

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestInspectKernelRootOfDebiansModularKernel(t *testing.T) {
	k := realKernel(t)
	kr, err := InspectKernelRoot(k.Vmlinuz) // the xz bzImage itself
	if err != nil {
		t.Fatal(err)
	}
	if kr.Release != k.Release || !slices.Equal(kr.Modular, []string{"virtio_blk", "ext4"}) || !kr.NeedsInitrd() {
		t.Errorf("Debian %s inspected as %+v, want release %s with virtio_blk and ext4 modular", k.Version, kr, k.Release)
	}
	if got := FindModulesDir(k.Vmlinuz, kr.Release); got != k.ModulesDir {
		t.Errorf("FindModulesDir beside the unpacked package = %q, want %q", got, k.ModulesDir)
	}
}

func TestInspectKernelRoot(t *testing.T) {
	banner := "Linux version 6.12.7-fc (builder@ci) (gcc 13.2.0) #1 SMP\x00"
	tests := []struct {
		name        string
		extra       string
		wantRelease string
		wantModular []string
	}{
		{name: "both built in", extra: banner + "virtio_blk\x00ext4\x00", wantRelease: "6.12.7-fc"},
		{name: "ext4 a module", extra: banner + "virtio_blk\x00", wantRelease: "6.12.7-fc", wantModular: []string{"ext4"}},
		{name: "both modules", extra: banner, wantRelease: "6.12.7-fc", wantModular: []string{"virtio_blk", "ext4"}},
		// Not recognisably Linux (a test's stand-in guest): nothing is judged.
		{name: "no banner", extra: "some program\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "vmlinux")
			if err := os.WriteFile(p, append(testELF(true, 4096), tc.extra...), 0o644); err != nil {
				t.Fatal(err)
			}
			kr, err := InspectKernelRoot(p)
			if err != nil {
				t.Fatal(err)
			}
			if kr.Release != tc.wantRelease || !slices.Equal(kr.Modular, tc.wantModular) {
				t.Errorf("got %+v, want release %q, modular %v", kr, tc.wantRelease, tc.wantModular)
			}
		})
	}
	if _, err := InspectKernelRoot(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing kernel inspected without error")
	}
}

func TestFindModulesDir(t *testing.T) {
	pkg := t.TempDir()
	kernel := filepath.Join(pkg, "boot", "vmlinuz-6.1.0-57-amd64")
	mods := filepath.Join(pkg, "lib", "modules", "6.1.0-57-amd64")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	// Without depmod's output the tree is no use to an initrd.
	if got := FindModulesDir(kernel, "6.1.0-57-amd64"); got != "" {
		t.Errorf("found %q, which has no modules.dep", got)
	}
	if err := os.WriteFile(filepath.Join(mods, "modules.dep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := FindModulesDir(kernel, "6.1.0-57-amd64"); got != mods {
		t.Errorf("FindModulesDir = %q, want %q", got, mods)
	}
	for _, release := range []string{"6.1.0-58-amd64", ""} {
		if got := FindModulesDir(kernel, release); got != "" {
			t.Errorf("release %q: found %q", release, got)
		}
	}
}
