package api

import "context"

// MethodImageBuild builds an image with debootstrap. Part of the wire contract.
const MethodImageBuild = "image.build"

// MethodImageShow returns one image. Part of the wire contract.
const MethodImageShow = "image.show"

// ImageBuildRequest asks the daemon to build an image: a Debian root file
// system (debootstrap + banger's customization + the user's scripts), a
// kernel (Debian's package, or Kernel) and, for a modular kernel, an
// initrd. Zero values take the configured defaults. Paths are read by the
// daemon, so they must be absolute.
type ImageBuildRequest struct {
	Name string `json:"name"`
	// From is "debian:SUITE", "debian" (the configured suite, also when
	// empty) or "busybox" (the small busybox image).
	From string `json:"from,omitempty"`
	// Packages are installed on top of banger's base set.
	Packages []string `json:"packages,omitempty"`
	// SizeBytes is the root file system size; 2 GiB when zero.
	SizeBytes int64 `json:"size_bytes,omitempty"`
	// Scripts run inside the new root file system (chroot), in order.
	Scripts []string `json:"scripts,omitempty"`
	// Kernel is "microvm" (the kernel `banger kernel build` cached),
	// "debian" (linux-image-amd64 with banger's initrd), or a kernel file
	// (ELF vmlinux or bzImage). No initrd is built but for Debian's. Empty
	// means microvm when one is built, else debian.
	Kernel string `json:"kernel,omitempty"`
	// User names the default user; the daemon owner's name when empty.
	User string `json:"user,omitempty"`
	// Timezone is a zoneinfo name; Etc/UTC when empty.
	Timezone string `json:"timezone,omitempty"`
}

// ImageBuild builds an image, reporting each stage to onEvent.
func (c *Client) ImageBuild(ctx context.Context, req ImageBuildRequest, onEvent func(Event)) (Image, error) {
	var out Image
	err := c.Call(ctx, MethodImageBuild, req, &out, onEvent)
	return out, err
}

// ImageShow returns one image by name.
func (c *Client) ImageShow(ctx context.Context, name string) (Image, error) {
	var out Image
	err := c.Call(ctx, MethodImageShow, ImageRef{Name: name}, &out, nil)
	return out, err
}
