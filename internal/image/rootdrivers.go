package image

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
)

// RootDrivers are the drivers a kernel needs to mount banger's root disk
// (virtio block device, ext4). A kernel without them built in must load
// them as modules from an initrd, or it panics with "VFS: Unable to mount
// root fs".
var RootDrivers = []string{"virtio_blk", "ext4"}

// KernelRoot is what a kernel file says about mounting a virtio ext4 root.
type KernelRoot struct {
	// Release is the release in the kernel's version banner
	// ("6.1.0-28-amd64"); "" when the file carries no Linux banner, and
	// then nothing is known about its drivers.
	Release string
	// Modular are the RootDrivers the kernel does not have built in.
	Modular []string
}

// NeedsInitrd reports whether the kernel cannot mount the root disk alone.
func (k KernelRoot) NeedsInitrd() bool { return len(k.Modular) > 0 }

var linuxBanner = regexp.MustCompile(`Linux version ([0-9][^ \x00]*) \(`)

// InspectKernelRoot reads a kernel (ELF vmlinux or bzImage) and tells which
// root drivers it lacks. A driver built into the kernel registers under its
// name (the virtio driver "virtio_blk", the file system "ext4"), so the
// name is in the image; a kernel that loads it as a module does not carry
// it (Debian's linux-image-amd64 has neither). Only a file with a Linux
// version banner is judged, so a stand-in "kernel" is never refused.
func InspectKernelRoot(path string) (KernelRoot, error) {
	vmlinux, _, err := readVmlinux(path)
	if err != nil {
		return KernelRoot{}, err
	}
	m := linuxBanner.FindSubmatch(vmlinux)
	if m == nil {
		return KernelRoot{}, nil
	}
	kr := KernelRoot{Release: string(m[1])}
	for _, name := range RootDrivers {
		if !bytes.Contains(vmlinux, []byte(name)) {
			kr.Modular = append(kr.Modular, name)
		}
	}
	return kr, nil
}

// FindModulesDir looks for the modules of kernel release beside the kernel
// file: an unpacked kernel package keeps DIR/boot/vmlinuz-RELEASE and
// DIR/lib/modules/RELEASE, and the host's own kernels live in /boot and
// /lib/modules. Only a directory with depmod's modules.dep counts. "" when
// none is found.
func FindModulesDir(kernelPath, release string) string {
	if release == "" {
		return ""
	}
	root := filepath.Dir(filepath.Dir(kernelPath))
	for _, dir := range []string{
		filepath.Join(root, "lib", "modules", release),
		filepath.Join(root, "usr", "lib", "modules", release),
	} {
		if _, err := os.Stat(filepath.Join(dir, "modules.dep")); err == nil {
			return dir
		}
	}
	return ""
}
