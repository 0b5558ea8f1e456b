package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/store"
)

// imageImport validates the files, copies them into the image store and
// records the image. A failed import leaves neither files nor a row.
func (d *Daemon) imageImport(ctx context.Context, req api.ImageImportRequest, p api.Progress) (api.Image, error) {
	if !vmNamePattern.MatchString(req.Name) {
		return api.Image{}, api.Errorf(api.CodeInvalidArgument, "invalid image name %q: use 1-63 lowercase letters, digits and dashes", req.Name)
	}
	if err := checkKernel(req.Kernel); err != nil {
		return api.Image{}, err
	}
	rootfsSize, err := checkExt4(req.Rootfs)
	if err != nil {
		return api.Image{}, err
	}
	if req.Initrd != "" {
		if err := checkReadable("initrd", req.Initrd); err != nil {
			return api.Image{}, err
		}
	}
	initrd, err := planImportInitrd(req)
	if err != nil {
		return api.Image{}, err
	}
	if _, err := d.store.GetImage(ctx, req.Name); err == nil {
		return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
	}

	id := store.NewID()
	dir := filepath.Join(d.opts.Layout.ImagesDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return api.Image{}, err
	}
	im := store.Image{ID: id, Name: req.Name, Source: "import", RootfsSizeBytes: rootfsSize,
		KernelPath: filepath.Join(dir, "kernel"), RootfsPath: filepath.Join(dir, "rootfs.ext4")}
	copies := [][2]string{{req.Kernel, im.KernelPath}, {req.Rootfs, im.RootfsPath}}
	if req.Initrd != "" {
		im.InitrdPath = filepath.Join(dir, "initrd")
		copies = append(copies, [2]string{req.Initrd, im.InitrdPath})
	}
	fail := func(err error) (api.Image, error) {
		_ = os.RemoveAll(dir)
		return api.Image{}, fmt.Errorf("import image %q: %w", req.Name, err)
	}
	for _, c := range copies {
		p(api.Event{Stage: "copy", Message: "copying " + c[0]})
		if _, err := disk.Clone(c[0], c[1], 0); err != nil {
			return fail(err)
		}
	}
	if initrd.modulesDir != "" {
		im.InitrdPath = filepath.Join(dir, "initrd")
		p(api.Event{Stage: "initrd", Message: "building an initrd for Linux " + initrd.release + " from " + initrd.modulesDir})
		if _, err := image.BuildInitrd(image.InitrdSpec{ModulesDir: initrd.modulesDir, Busybox: initrd.busybox}, im.InitrdPath); err != nil {
			return fail(fmt.Errorf("build the initrd: %w", err))
		}
	}
	if err := d.store.CreateImage(ctx, im); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			_ = os.RemoveAll(dir)
			return api.Image{}, api.Errorf(api.CodeAlreadyExists, "an image named %q already exists", req.Name)
		}
		return fail(err)
	}
	saved, err := d.store.GetImage(ctx, id)
	if err != nil {
		return api.Image{}, err
	}
	d.events.publish(api.Event{Time: d.now(), Kind: "image.changed", Stage: "imported", Message: "image " + saved.Name + " imported"})
	return imageToAPI(saved), nil
}

func (d *Daemon) imageDelete(ctx context.Context, req api.ImageRef, _ api.Progress) (struct{}, error) {
	im, err := d.store.GetImage(ctx, req.Name)
	if errors.Is(err, store.ErrNotFound) {
		return struct{}{}, api.Errorf(api.CodeNotFound, "no image named %q", req.Name)
	}
	if err != nil {
		return struct{}{}, err
	}
	if err := d.store.DeleteImage(ctx, im.ID); err != nil {
		var inUse *store.InUseError
		if errors.As(err, &inUse) {
			return struct{}{}, api.Errorf(api.CodeInUse, "%s", inUse.Error()).WithHint("delete those VMs first")
		}
		return struct{}{}, err
	}
	d.events.publish(api.Event{Time: d.now(), Kind: "image.changed", Stage: "deleted", Message: "image " + im.Name + " deleted"})
	d.deleteGoldenSnapshots(ctx, im)
	// The files go after the row: a crash in between leaves files the next
	// start can ignore, never a row pointing at nothing.
	if err := os.RemoveAll(filepath.Dir(im.RootfsPath)); err != nil {
		d.log.Warn("remove image files", "image", im.Name, "err", err)
	}
	return struct{}{}, nil
}

// deleteGoldenSnapshots removes the warm-start snapshots of a deleted
// image: no VM can start from them any more, and each holds a disk and a
// guest's memory. Snapshots users took of the image's VMs stay theirs.
func (d *Daemon) deleteGoldenSnapshots(ctx context.Context, im store.Image) {
	all, err := d.vms.lc.ListSnapshots(ctx)
	if err != nil {
		d.log.Warn("list the golden snapshots of a deleted image", "image", im.Name, "err", err)
		return
	}
	for _, s := range all {
		if !s.Golden || s.ImageID != im.ID {
			continue
		}
		if err := d.vms.lc.DeleteSnapshot(ctx, s.ID); err != nil {
			d.log.Warn("delete a golden snapshot of a deleted image", "image", im.Name, "snapshot", s.Name, "err", err)
		}
	}
}

// importInitrd is the initrd an import builds: none when modulesDir is "".
type importInitrd struct {
	release    string
	modulesDir string
	busybox    string
}

// planImportInitrd decides, for an import without --initrd, whether the
// kernel can mount the root disk alone. A Linux kernel that loads
// virtio_blk or ext4 as modules (Debian's does) cannot: without an initrd
// it panics with "VFS: Unable to mount root fs". Its initrd is built the
// way `image build` builds one, from --modules or the modules found beside
// the kernel; with neither, the import is refused with what to pass.
func planImportInitrd(req api.ImageImportRequest) (importInitrd, error) {
	if req.Modules != "" && !filepath.IsAbs(req.Modules) {
		return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "modules path %q must be absolute", req.Modules)
	}
	if req.Initrd != "" {
		if req.Modules != "" {
			return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "--initrd and --modules exclude each other: --modules builds an initrd; pass one of them")
		}
		return importInitrd{}, nil
	}
	kr, err := image.InspectKernelRoot(req.Kernel)
	if err != nil {
		return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	if !kr.NeedsInitrd() {
		if req.Modules != "" {
			return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "kernel %s needs no initrd (it has virtio_blk and ext4 built in, or is not a Linux kernel banger can read); leave out --modules", req.Kernel)
		}
		return importInitrd{}, nil
	}
	modular := strings.Join(kr.Modular, " and ")
	plan := importInitrd{release: kr.Release, modulesDir: req.Modules}
	if plan.modulesDir == "" {
		plan.modulesDir = image.FindModulesDir(req.Kernel, kr.Release)
	}
	if plan.modulesDir == "" {
		return importInitrd{}, api.Errorf(api.CodeInvalidArgument,
			"kernel %s (Linux %s) loads %s as modules, so the image needs an initrd: pass --initrd FILE, or --modules DIR (its lib/modules/%s, with depmod run) to build one",
			req.Kernel, kr.Release, modular, kr.Release)
	}
	if base := filepath.Base(plan.modulesDir); base != kr.Release {
		return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "--modules %s holds modules for Linux %s, but kernel %s is Linux %s; pass its own lib/modules/%s",
			plan.modulesDir, base, req.Kernel, kr.Release, kr.Release)
	}
	if _, err := image.LoadModuleIndex(plan.modulesDir); err != nil {
		return importInitrd{}, api.Errorf(api.CodeInvalidArgument, "%v", err)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return importInitrd{}, api.Errorf(api.CodeFailedPrecondition,
			"kernel %s loads %s as modules, and building its initrd needs a static busybox on the daemon's host, which has none", req.Kernel, modular).
			WithHint("install busybox-static, or pass --initrd FILE")
	}
	plan.busybox = bb
	return plan, nil
}

func checkReadable(what, path string) error {
	if !filepath.IsAbs(path) {
		return api.Errorf(api.CodeInvalidArgument, "%s path %q must be absolute", what, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%s %s: %v", what, path, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return api.Errorf(api.CodeInvalidArgument, "%s %s is not a regular file", what, path)
	}
	return nil
}

// checkKernel accepts an ELF vmlinux or a bzImage, checked by the image
// package (magic, boot protocol, payload).
func checkKernel(path string) error {
	if err := checkReadable("kernel", path); err != nil {
		return err
	}
	if _, err := image.InspectKernel(path); err != nil {
		return api.Errorf(api.CodeInvalidArgument, "%v", err) // already names the file
	}
	return nil
}

// checkExt4 checks the ext4 superblock (and that the file is not truncated)
// and returns the file size.
func checkExt4(path string) (int64, error) {
	if err := checkReadable("rootfs", path); err != nil {
		return 0, err
	}
	if _, err := disk.ReadExt4(path); err != nil {
		return 0, api.Errorf(api.CodeInvalidArgument, "%v", err) // already names the file
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
