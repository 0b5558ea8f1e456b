package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/banger-dev/banger/internal/vmm"
)

// stageIntoJail makes every file a jailed Firecracker opens visible inside
// its chroot and returns the spec with host paths pointing there. Files are
// hard-linked, not copied: the VM's disk stays one inode, so what the guest
// writes is what banger keeps, and staging costs nothing. Hard links need
// the jail on the same file system as banger's state dir, which is why the
// daemon puts the chroot base under it. Sockets Firecracker creates (the
// vsock UDS) and its log are simply placed inside the jail.
func stageIntoJail(spec vmm.LaunchSpec, l layout) (vmm.LaunchSpec, error) {
	if l.jailRoot == "" {
		return spec, nil
	}
	if err := os.MkdirAll(l.jailRoot, 0o750); err != nil {
		return spec, fmt.Errorf("create jail %s: %w", l.jailRoot, err)
	}
	link := func(hostPath, name string) (string, error) {
		if hostPath == "" {
			return "", nil
		}
		dst := filepath.Join(l.jailRoot, name)
		if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		if err := os.Link(hostPath, dst); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return "", fmt.Errorf("stage %s into the jail: the jail %s is on another file system; put the jailer's chroot base on the file system of banger's state dir", hostPath, l.jailRoot)
			}
			return "", fmt.Errorf("stage %s into the jail: %w", hostPath, err)
		}
		return dst, nil
	}
	var err error
	out := spec
	if out.KernelPath, err = link(spec.KernelPath, "kernel"); err != nil {
		return spec, err
	}
	if out.InitrdPath, err = link(spec.InitrdPath, "initrd"); err != nil {
		return spec, err
	}
	if out.RootDrive.Path, err = link(spec.RootDrive.Path, "drive-"+spec.RootDrive.ID); err != nil {
		return spec, err
	}
	out.ExtraDrives = make([]vmm.Drive, len(spec.ExtraDrives))
	for i, d := range spec.ExtraDrives {
		out.ExtraDrives[i] = d
		if out.ExtraDrives[i].Path, err = link(d.Path, "drive-"+d.ID); err != nil {
			return spec, err
		}
	}
	if spec.Agent.UDSPath != "" {
		out.Agent.UDSPath = filepath.Join(l.jailRoot, "vsock.sock")
	}
	if spec.VMMLogPath != "" {
		out.VMMLogPath = filepath.Join(l.jailRoot, "firecracker.log")
	}
	return out, nil
}
