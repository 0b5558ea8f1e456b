package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	// The files go after the row: a crash in between leaves files the next
	// start can ignore, never a row pointing at nothing.
	if err := os.RemoveAll(filepath.Dir(im.RootfsPath)); err != nil {
		d.log.Warn("remove image files", "image", im.Name, "err", err)
	}
	return struct{}{}, nil
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
