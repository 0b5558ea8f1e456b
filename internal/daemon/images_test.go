package daemon

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/api"
)

// modularKernel writes a stand-in for Debian's kernel package unpacked at
// pkg: boot/vmlinuz-RELEASE is a real ELF (this test binary) carrying a
// Linux version banner and neither virtio_blk nor ext4 built in.
func modularKernel(t *testing.T, pkg, release string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	elf, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	// The test binary holds these names as string literals; a kernel that
	// loads them as modules does not, so cut them out of the stand-in.
	for _, name := range []string{"virtio_blk", "ext4"} {
		elf = bytes.ReplaceAll(elf, []byte(name), bytes.Repeat([]byte("_"), len(name)))
	}
	elf = append(elf, "\x00Linux version "+release+" (debian-kernel@lists.debian.org) #1 SMP\x00"...)
	p := filepath.Join(pkg, "boot", "vmlinuz-"+release)
	writeTestFile(t, p, elf)
	return p
}

// moduleTree writes pkg/lib/modules/RELEASE with depmod-style metadata and
// the root drivers as (dummy) modules.
func moduleTree(t *testing.T, pkg, release string) string {
	t.Helper()
	dir := filepath.Join(pkg, "lib", "modules", release)
	dep := "kernel/drivers/virtio/virtio.ko:\nkernel/drivers/virtio/virtio_ring.ko:\n" +
		"kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n" +
		"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n" +
		"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n"
	writeTestFile(t, filepath.Join(dir, "modules.dep"), []byte(dep))
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		mod, _, _ := strings.Cut(line, ":")
		writeTestFile(t, filepath.Join(dir, mod), []byte("module "+mod))
	}
	return dir
}

func writeTestFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImageImportOfAModularKernel(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install e2fsprogs busybox-static)", tool)
		}
	}
	layout := testLayout(t)
	rd := startDaemon(t, layout)
	ctx := context.Background()
	rootfs := filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rootfs, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	const release = "6.1.0-57-amd64"
	pkg := t.TempDir()
	kernel := modularKernel(t, pkg, release)
	imported := func() []string {
		t.Helper()
		imgs, err := rd.client.ImageList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, im := range imgs {
			names = append(names, im.Name)
		}
		return names
	}

	// The README's import, with no modules anywhere: refused, saying why
	// and what to pass, and nothing is left behind.
	_, err := rd.client.ImageImport(ctx, api.ImageImportRequest{Name: "base", Kernel: kernel, Rootfs: rootfs}, nil)
	want := "kernel " + kernel + " (Linux " + release + ") loads virtio_blk and ext4 as modules, so the image needs an initrd: pass --initrd FILE, or --modules DIR"
	if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), want) {
		t.Fatalf("import of a modular kernel without an initrd: %v\nwant an invalid_argument containing %q", err, want)
	}
	if names := imported(); len(names) != 0 {
		t.Errorf("images after a refused import: %v", names)
	}
	if left, _ := os.ReadDir(layout.ImagesDir()); len(left) != 0 {
		t.Errorf("the refused import left %d entries in %s", len(left), layout.ImagesDir())
	}

	// Modules of another kernel are refused too.
	other := moduleTree(t, t.TempDir(), "6.1.0-58-amd64")
	_, err = rd.client.ImageImport(ctx, api.ImageImportRequest{Name: "base", Kernel: kernel, Rootfs: rootfs, Modules: other}, nil)
	if !api.IsCode(err, api.CodeInvalidArgument) || !strings.Contains(err.Error(), "holds modules for Linux 6.1.0-58-amd64, but kernel "+kernel+" is Linux "+release) {
		t.Fatalf("import with another kernel's modules: %v", err)
	}

	// With the package's modules beside the kernel, the initrd is built.
	moduleTree(t, pkg, release)
	im, err := rd.client.ImageImport(ctx, api.ImageImportRequest{Name: "base", Kernel: kernel, Rootfs: rootfs}, nil)
	if err != nil {
		t.Fatalf("import with modules beside the kernel: %v", err)
	}
	if im.Initrd == "" {
		t.Fatal("the imported image has no initrd")
	}
	f, err := os.Open(im.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("initrd is not gzip: %v", err)
	}
	cpio, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"virtio_blk.ko", "ext4.ko", "etc/banger/modules"} {
		if !bytes.Contains(cpio, []byte(want)) {
			t.Errorf("the initrd lacks %s", want)
		}
	}

	// An explicit initrd is taken as given.
	initrd := filepath.Join(t.TempDir(), "initrd.img")
	writeTestFile(t, initrd, []byte("an initrd"))
	if _, err := rd.client.ImageImport(ctx, api.ImageImportRequest{Name: "given", Kernel: kernel, Rootfs: rootfs, Initrd: initrd}, nil); err != nil {
		t.Fatalf("import with --initrd: %v", err)
	}
}
