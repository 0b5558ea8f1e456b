package image

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/banger-dev/banger/internal/system"
)

// initScript is the initrd's /init, run by busybox's shell.
//
//go:embed initrd/init.sh
var initScript []byte

// InitrdSpec describes an initrd for a modular kernel.
type InitrdSpec struct {
	// ModulesDir is the kernel's lib/modules/<version>, with depmod output.
	ModulesDir string
	// Modules are the module names to load (with their dependencies);
	// GuestModules when nil.
	Modules []string
	// Required are names that must resolve (as a module or built in);
	// virtio_blk and ext4 when nil, since without them no root is found.
	Required []string
	// Busybox is a statically linked busybox: the init's shell and tools.
	Busybox string
}

// InitrdResult says what went into an initrd.
type InitrdResult struct {
	// Modules are the modules in load order.
	Modules []Module
	// Missing are requested names the kernel has neither as a module nor
	// built in (not fatal unless Required).
	Missing []string
}

// modulesListPath is where the init reads its load order ("name path"
// lines).
const modulesListPath = "etc/banger/modules"

// NeedsInitrd reports whether the kernel's root-disk drivers are modules,
// so it cannot mount a virtio ext4 root without an initrd.
func NeedsInitrd(ix *ModuleIndex) bool {
	for _, n := range []string{"virtio_blk", "ext4", "virtio_mmio"} {
		if paths, builtin := ix.lookup(n); !builtin && len(paths) > 0 {
			return true
		}
	}
	return false
}

// BuildInitrd writes a gzip-compressed initrd to dst (replaced atomically).
func BuildInitrd(spec InitrdSpec, dst string) (InitrdResult, error) {
	var buf bytes.Buffer
	res, err := WriteInitrd(&buf, spec)
	if err != nil {
		return res, err
	}
	if err := system.WriteFileAtomic(dst, buf.Bytes(), 0o644); err != nil {
		return res, fmt.Errorf("initrd: %w", err)
	}
	return res, nil
}

// WriteInitrd writes a gzip-compressed newc cpio archive to w holding
// busybox, the init script, the resolved modules (decompressed, since
// busybox's insmod may not read compressed ones) and their load order.
func WriteInitrd(w io.Writer, spec InitrdSpec) (InitrdResult, error) {
	if spec.Modules == nil {
		spec.Modules = GuestModules
	}
	if spec.Required == nil {
		spec.Required = []string{"virtio_blk", "ext4"}
	}
	bb, err := readStaticBusybox(spec.Busybox)
	if err != nil {
		return InitrdResult{}, err
	}
	ix, err := LoadModuleIndex(spec.ModulesDir)
	if err != nil {
		return InitrdResult{}, err
	}
	order, missing := ix.Resolve(append(append([]string{}, spec.Modules...), spec.Required...))
	res := InitrdResult{Modules: order, Missing: missing}
	var lacking []string
	for _, r := range spec.Required {
		if contains(missing, r) {
			lacking = append(lacking, r)
		}
	}
	if len(lacking) > 0 {
		return res, fmt.Errorf("the kernel modules in %s lack %s, which the initrd needs to mount the root disk", spec.ModulesDir, strings.Join(lacking, ", "))
	}

	version := filepath.Base(spec.ModulesDir)
	zw := gzip.NewWriter(w)
	cw := newCPIOWriter(zw)
	dirs := map[string]bool{}
	mkdirAll := func(dir string) error {
		var parts []string
		for d := dir; d != "." && d != "/" && !dirs[d]; d = path.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			dirs[parts[i]] = true
			if err := cw.Dir(parts[i], 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range []string{"bin", "sbin", "dev", "proc", "sys", "run", "tmp", "newroot", "etc/banger", "usr/bin", "usr/sbin"} {
		if err := mkdirAll(d); err != nil {
			return res, err
		}
	}
	// The kernel opens /dev/console for init's stdio before any devtmpfs
	// is mounted; without the node, init runs with no output at all.
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return res, err
	}
	if err := cw.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return res, err
	}
	if err := cw.File("bin/busybox", 0o755, bb); err != nil {
		return res, err
	}
	if err := cw.Symlink("bin/sh", "busybox"); err != nil {
		return res, err
	}
	if err := cw.File("init", 0o755, initScript); err != nil {
		return res, err
	}

	var list strings.Builder
	for _, m := range order {
		data, err := readModule(filepath.Join(spec.ModulesDir, filepath.FromSlash(m.Path)))
		if err != nil {
			return res, err
		}
		name := path.Join("lib/modules", version, stripModuleCompression(m.Path))
		if err := mkdirAll(path.Dir(name)); err != nil {
			return res, err
		}
		if err := cw.File(name, 0o644, data); err != nil {
			return res, err
		}
		fmt.Fprintf(&list, "%s /%s\n", m.Name, name)
	}
	if err := cw.File(modulesListPath, 0o644, []byte(list.String())); err != nil {
		return res, err
	}
	if err := cw.Close(); err != nil {
		return res, err
	}
	return res, zw.Close()
}

func readStaticBusybox(p string) ([]byte, error) {
	if p == "" {
		return nil, errors.New("no busybox binary given for the initrd (install busybox-static)")
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("busybox %s is not an ELF executable", p)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("busybox %s is dynamically linked; the initrd needs a static one (install busybox-static)", p)
		}
	}
	return data, nil
}

func stripModuleCompression(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+ext) {
			return strings.TrimSuffix(p, ext)
		}
	}
	return p
}

// readModule returns a module's ELF, decompressing .ko.xz, .ko.zst and
// .ko.gz (Debian compresses modules with xz since trixie).
func readModule(p string) ([]byte, error) {
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		r, err = xz.NewReader(bytes.NewReader(raw))
	case strings.HasSuffix(p, ".ko.zst"):
		var d *zstd.Decoder
		if d, err = zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1)); err == nil {
			defer d.Close()
			r = d
		}
	case strings.HasSuffix(p, ".ko.gz"):
		r, err = gzip.NewReader(bytes.NewReader(raw))
	default:
		return raw, nil
	}
	if err == nil {
		raw, err = io.ReadAll(r)
	}
	if err != nil {
		return nil, fmt.Errorf("decompress module %s: %w", p, err)
	}
	return raw, nil
}
