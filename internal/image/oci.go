package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/banger-dev/banger/internal/oci"
)

// FromOCI names images made from container images in recipes.
const FromOCI = "oci"

// OCIInitPath is banger's init in an image made from a container image;
// its VMs boot with init= pointing here (container images have no init
// of their own worth running, and their entrypoint is not one).
const OCIInitPath = "/.banger/init"

// ociBinDir holds the static busybox and the applets banger's init uses,
// apart from the image's own /bin so they never shadow or clash with it.
const ociBinDir = "/.banger/bin"

// ociApplets are the commands busybox/init.sh runs.
var ociApplets = []string{"sh", "mount", "umount", "grep", "mkdir", "ln", "hostname", "ip", "cat", "cut",
	"head", "usleep", "sleep", "kill", "sync", "poweroff", "reboot"}

// OCISpec describes an image made from a fetched container image. The
// embedded BusyboxSpec gives the boot files as for the busybox image
// (OutDir, WorkDir, Busybox, AgentBinary, Kernel, KernelPackage); its
// SizeBytes is the room added beyond the unpacked content.
type OCISpec struct {
	BusyboxSpec
	Image  oci.Image
	Limits oci.Limits
	// Initrd, with Kernel, is the initrd to boot that kernel with (copied);
	// without it a custom kernel boots with none.
	Initrd string
	// Getegid is the extracting process's group (os.Getegid when nil).
	Getegid func() int
}

// ociInit is busybox/init.sh run from /.banger/bin: the same init, with
// its shell and PATH pointing at banger's busybox instead of the image's.
func ociInit() ([]byte, error) {
	s := string(busyboxInit)
	const shebang, path = "#!/bin/sh\n", "export PATH=/usr/local/sbin"
	if !strings.HasPrefix(s, shebang) || !strings.Contains(s, path) {
		return nil, fmt.Errorf("busybox/init.sh no longer starts with %q and sets %q; update ociInit", shebang, path)
	}
	s = "#!" + ociBinDir + "/sh\n" + strings.TrimPrefix(s, shebang)
	s = strings.Replace(s, path, "export PATH="+ociBinDir+":/usr/local/sbin", 1)
	return []byte(s), nil
}

// BuildOCI makes an image from a container image: banger's kernel and
// initrd as for the busybox image, and a rootfs holding the container
// image's layers flattened, plus banger's busybox, init and agent. It
// needs no root (see oci.Tree.WriteExt4).
func (b *Builder) BuildOCI(ctx context.Context, spec OCISpec, progress Progress) (BuildResult, error) {
	bb, err := spec.prepare()
	if err != nil {
		return BuildResult{}, err
	}
	initScript, err := ociInit()
	if err != nil {
		return BuildResult{}, err
	}
	geteuid, getegid := b.Geteuid, spec.Getegid
	if geteuid == nil {
		geteuid = os.Geteuid
	}
	if getegid == nil {
		getegid = os.Getegid
	}
	recipe := Recipe{From: FromOCI, User: "root", Busybox: busyboxVersionPattern.FindString(string(bb))}
	return b.runPipeline(spec.OutDir, spec.WorkDir, recipe, progress, func(p *pipeline) error {
		if err := p.busyboxKernel(ctx, spec.BusyboxSpec, bb); err != nil {
			return err
		}
		if spec.Kernel != "" && spec.Initrd != "" {
			p.res.Initrd = filepath.Join(spec.OutDir, InitrdFile)
			if err := copyFile(spec.Initrd, p.res.Initrd, 0o644); err != nil {
				return fmt.Errorf("copy the initrd: %w", err)
			}
		}
		var tree *oci.Tree
		err := p.stage(ctx, "rootfs", func() error {
			p.progress("rootfs", fmt.Sprintf("unpacking %d layers", len(spec.Image.Layers)))
			var err error
			tree, err = oci.Flatten(ctx, spec.Image.Layers, filepath.Join(spec.WorkDir, "rootfs"), geteuid(), getegid(), spec.Limits)
			if err != nil {
				return err
			}
			p.progress("rootfs", "adding banger's init, busybox and agent")
			return injectBoot(tree, bb, initScript, spec.AgentBinary)
		})
		if tree != nil {
			defer func() { _ = tree.Close() }()
		}
		if err != nil {
			return err
		}
		return p.stage(ctx, "ext4", func() error {
			size := tree.SizeFor(spec.SizeBytes)
			p.progress("ext4", fmt.Sprintf("making a %d MiB ext4 image (%d MiB of files)", size>>20, tree.Bytes>>20))
			return tree.WriteExt4(ctx, b.Runner, p.res.Rootfs, size)
		})
	})
}

// injectBoot adds what banger boots the image with: the mount points its
// init needs, busybox with the applets the init uses, the init and the
// agent where every banger image has it.
func injectBoot(tree *oci.Tree, busybox, initScript []byte, agentPath string) error {
	for _, d := range []struct {
		path string
		perm int64
	}{{"/proc", 0o555}, {"/sys", 0o555}, {"/dev", 0o755}, {"/run", 0o755}, {"/tmp", 0o1777}} {
		if tree.Lookup(d.path) != 0 {
			continue
		}
		if err := tree.Apply(1<<30, &tar.Header{Name: d.path, Typeflag: tar.TypeDir, Mode: d.perm}, nil); err != nil {
			return err
		}
	}
	if err := tree.AddFile(ociBinDir+"/busybox", bytes.NewReader(busybox), int64(len(busybox)), 0o755); err != nil {
		return err
	}
	for _, a := range ociApplets {
		if err := tree.AddSymlink(ociBinDir+"/"+a, "busybox"); err != nil {
			return err
		}
	}
	if err := tree.AddFile(OCIInitPath, bytes.NewReader(initScript), int64(len(initScript)), 0o755); err != nil {
		return err
	}
	agent, err := os.Open(agentPath)
	if err != nil {
		return err
	}
	defer agent.Close()
	st, err := agent.Stat()
	if err != nil {
		return err
	}
	return tree.AddFile("/usr/local/bin/"+agentBinaryBase, agent, st.Size(), 0o755)
}

// agentBinaryBase is the guest agent's file name in every image.
const agentBinaryBase = "banger-vsock-agent"
