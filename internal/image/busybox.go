package image

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/system"
)

// FromBusybox names the busybox flavour in recipes and `image build --from`.
const FromBusybox = "busybox"

// DefaultBusyboxRootfsSize is a busybox image's file system size: the tree
// holds about 15 MiB (busybox and the agent); the rest is room for what a
// VM writes before its disk is grown to the VM's size.
const DefaultBusyboxRootfsSize = 128 << 20

// BusyboxModules are what the busybox image's initrd loads: GuestModules
// plus the ACPI power button and evdev, so the guest's init sees QEMU's
// system_powerdown (a systemd image loads them itself from its rootfs).
var BusyboxModules = append(slices.Clone(GuestModules), "button", "evdev")

// busyboxInit is the busybox image's /sbin/init.
//
//go:embed busybox/init.sh
var busyboxInit []byte

// BusyboxSpec describes a busybox image: a root file system holding a
// static busybox with its applet links, the guest agent and a small init
// script that runs the agent as the guest's one service; Debian's kernel
// and banger's initrd. It boots to agent-ready in seconds even under
// software emulation, which makes it the default and the test image.
type BusyboxSpec struct {
	// OutDir receives vmlinux, initrd.img and rootfs.ext4. It must exist;
	// the caller owns it and removes it on failure.
	OutDir string
	// WorkDir holds the rootfs tree; BuildBusybox removes it in every case.
	WorkDir string
	// Busybox is a statically linked busybox on the host (busybox-static);
	// "busybox" on PATH when empty.
	Busybox string
	// AgentBinary is banger-vsock-agent, installed as
	// /usr/local/bin/banger-vsock-agent.
	AgentBinary string
	// SizeBytes is the rootfs size; DefaultBusyboxRootfsSize when zero.
	SizeBytes int64
	// Kernel and KernelPackage are as in BuildSpec: a custom kernel file
	// (then no initrd is made), or the Debian package to fetch.
	Kernel        string
	KernelPackage string
}

// bootCacheVersion changes whenever what goes into a cached vmlinux and
// initrd changes in a way the key does not capture.
const bootCacheVersion = "banger-busybox-boot-1"

// bootCacheMeta is kept beside a cached vmlinux and initrd; its presence
// marks the entry complete.
type bootCacheMeta struct {
	Key           string     `json:"key"`
	KernelInfo    KernelInfo `json:"kernel_info"`
	InitrdModules []string   `json:"initrd_modules"`
}

var busyboxVersionPattern = regexp.MustCompile(`BusyBox v[0-9][0-9A-Za-z.+~-]*`)

// BuildBusybox builds the busybox image. Building it needs no root: no
// chroot, no mount (mkfs.ext4 -d), and the kernel is only downloaded. Run
// as another user, the image's files belong to that uid; the guest runs
// everything as root either way.
//
// With a CacheDir, the vmlinux and initrd are kept under
// CacheDir/boot/<package>_<version>-<key>, the key hashing every input
// (kernel package and version, busybox binary, the initrd's init, the
// module list), so a rebuild spends its time on the apt lookup and mkfs.
func (b *Builder) BuildBusybox(ctx context.Context, spec BusyboxSpec, progress Progress) (BuildResult, error) {
	if spec.SizeBytes == 0 {
		spec.SizeBytes = DefaultBusyboxRootfsSize
	}
	bb, err := spec.prepare()
	if err != nil {
		return BuildResult{}, err
	}
	recipe := Recipe{From: FromBusybox, User: "root", Busybox: busyboxVersionPattern.FindString(string(bb))}
	return b.runPipeline(spec.OutDir, spec.WorkDir, recipe, progress, func(p *pipeline) error {
		if err := p.busyboxKernel(ctx, spec, bb); err != nil {
			return err
		}
		tree := filepath.Join(spec.WorkDir, "rootfs")
		err = p.stage(ctx, "rootfs", func() error {
			p.progress("rootfs", "assembling busybox, its applet links, the agent and /sbin/init")
			return BusyboxTree(ctx, b.Runner, tree, spec.Busybox, spec.AgentBinary)
		})
		if err != nil {
			return err
		}
		return p.ext4(ctx, tree, spec.SizeBytes, 16<<20)
	})
}

// prepare fills the spec's defaults and checks its files, returning the
// busybox binary's bytes.
func (spec *BusyboxSpec) prepare() ([]byte, error) {
	if spec.KernelPackage == "" {
		spec.KernelPackage = DefaultKernelPackage
	}
	if !debPackagePattern.MatchString(spec.KernelPackage) {
		return nil, fmt.Errorf("%q is not a Debian package name", spec.KernelPackage)
	}
	if spec.Busybox == "" {
		p, err := exec.LookPath("busybox")
		if err != nil {
			return nil, errors.New("no busybox on PATH: install busybox-static")
		}
		spec.Busybox = p
	}
	bb, err := readStaticBusybox(spec.Busybox)
	if err != nil {
		return nil, err
	}
	if err := regularFile("agent binary", spec.AgentBinary); err != nil {
		return nil, err
	}
	if spec.Kernel != "" {
		if err := regularFile("kernel", spec.Kernel); err != nil {
			return nil, err
		}
	}
	return bb, nil
}

// busyboxKernel is the kernel stage of the busybox image (and of images
// made from container images, which boot the same way): the custom kernel
// when one is given, else Debian's with banger's initrd.
func (p *pipeline) busyboxKernel(ctx context.Context, spec BusyboxSpec, bb []byte) error {
	return p.stage(ctx, "kernel", func() error {
		if spec.Kernel != "" {
			return p.customKernel(spec.Kernel)
		}
		deb, err := p.fetchKernel(ctx, spec.KernelPackage)
		if err != nil {
			return err
		}
		p.progress("kernel", "preparing the ELF vmlinux and the initrd")
		meta, err := p.b.busyboxBoot(deb, spec.Busybox, bb, spec.OutDir)
		if err != nil {
			return err
		}
		p.res.KernelInfo, p.recipe.InitrdModules = meta.KernelInfo, meta.InitrdModules
		p.res.Initrd = filepath.Join(spec.OutDir, InitrdFile)
		return nil
	})
}

// busyboxBoot puts the vmlinux and initrd for deb into outDir, from the
// cache when an entry for the same inputs exists, else building them (and
// filling the cache when there is one).
func (b *Builder) busyboxBoot(deb DebianKernel, busyboxPath string, busybox []byte, outDir string) (bootCacheMeta, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00", bootCacheVersion, deb.Package, deb.Version, strings.Join(BusyboxModules, ","))
	h.Write(initScript)
	h.Write([]byte{0})
	h.Write(busybox)
	key := hex.EncodeToString(h.Sum(nil))[:16]
	if b.CacheDir == "" {
		return buildBusyboxBoot(deb, busyboxPath, outDir, key)
	}
	cacheRoot := filepath.Join(b.CacheDir, "boot")
	entry := filepath.Join(cacheRoot, deb.Package+"_"+deb.Version+"-"+key)
	meta, err := readBootCache(entry, key)
	if err != nil {
		// Build beside the entry and rename, so a crash never leaves a
		// half-written entry that looks complete.
		if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
			return meta, fmt.Errorf("create boot cache: %w", err)
		}
		tmp, err := os.MkdirTemp(cacheRoot, ".build-")
		if err != nil {
			return meta, fmt.Errorf("create boot cache: %w", err)
		}
		defer func() { _ = os.RemoveAll(tmp) }()
		if meta, err = buildBusyboxBoot(deb, busyboxPath, tmp, key); err != nil {
			return meta, err
		}
		data, err := json.MarshalIndent(meta, "", "  ")
		if err != nil {
			return meta, err
		}
		if err := system.WriteFileAtomic(filepath.Join(tmp, "boot.json"), data, 0o644); err != nil {
			return meta, err
		}
		// A concurrent build may have filled the entry meanwhile; either
		// copy is as good as the other.
		if err := os.Rename(tmp, entry); err != nil {
			if _, rerr := readBootCache(entry, key); rerr != nil {
				return meta, fmt.Errorf("store boot files in the cache: %w", err)
			}
		}
	}
	for _, f := range []string{KernelFile, InitrdFile} {
		if err := copyFile(filepath.Join(entry, f), filepath.Join(outDir, f), 0o644); err != nil {
			return meta, fmt.Errorf("copy %s from the cache: %w", f, err)
		}
	}
	return meta, nil
}

func readBootCache(dir, key string) (bootCacheMeta, error) {
	var meta bootCacheMeta
	data, err := os.ReadFile(filepath.Join(dir, "boot.json"))
	if err != nil {
		return meta, err
	}
	if err := json.Unmarshal(data, &meta); err != nil || meta.Key != key {
		return meta, fmt.Errorf("boot cache %s does not match", dir)
	}
	for _, f := range []string{KernelFile, InitrdFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || !st.Mode().IsRegular() {
			return meta, fmt.Errorf("boot cache %s lacks %s", dir, f)
		}
	}
	return meta, nil
}

// buildBusyboxBoot extracts the ELF vmlinux and builds the initrd into dir.
func buildBusyboxBoot(deb DebianKernel, busybox, dir, key string) (bootCacheMeta, error) {
	meta := bootCacheMeta{Key: key}
	var err error
	if meta.KernelInfo, err = ExtractVmlinux(deb.Vmlinuz, filepath.Join(dir, KernelFile)); err != nil {
		return meta, err
	}
	ir, err := BuildInitrd(InitrdSpec{ModulesDir: deb.ModulesDir, Modules: BusyboxModules, Busybox: busybox},
		filepath.Join(dir, InitrdFile))
	if err != nil {
		return meta, err
	}
	for _, m := range ir.Modules {
		meta.InitrdModules = append(meta.InitrdModules, m.Name)
	}
	return meta, nil
}

// busyboxEtc is the busybox image's /etc: root only, no password (the way
// in is the agent), a hostname the agent replaces at boot.
var busyboxEtc = map[string]string{
	"passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
	"group":      "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
	"shadow":     "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
	"shells":     "/bin/sh\n/bin/ash\n",
	"hostname":   "banger\n",
	"hosts":      "127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n",
	"profile":    "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
	"os-release": "NAME=\"banger busybox\"\nID=banger-busybox\nPRETTY_NAME=\"banger busybox guest\"\nHOME_URL=\"https://github.com/banger-dev/banger\"\n",
}

// BusyboxTree creates dir (which must not exist) as the busybox image's
// root file system tree: busybox with a link for each applet it lists, the
// agent, /sbin/init and a minimal /etc.
func BusyboxTree(ctx context.Context, r system.Runner, dir, busybox, agentBinary string) error {
	if _, err := os.Lstat(dir); err == nil {
		return fmt.Errorf("rootfs directory %s already exists", dir)
	}
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{
		{"", 0o755}, {"bin", 0o755}, {"sbin", 0o755}, {"usr/bin", 0o755}, {"usr/sbin", 0o755},
		{"usr/local/bin", 0o755}, {"usr/local/sbin", 0o755}, {"etc", 0o755}, {"root", 0o700},
		{"home", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755},
		{"tmp", 0o777 | fs.ModeSticky}, {"mnt", 0o755}, {"var/log", 0o755}, {"var/tmp", 0o777 | fs.ModeSticky},
	} {
		p := filepath.Join(dir, d.name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return fmt.Errorf("install busybox: %w", err)
	}
	out, err := system.RunChecked(ctx, r, system.Command{Path: busybox, Args: []string{"--list-full"}})
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	links := 0
	for _, line := range strings.Split(string(out.Stdout), "\n") {
		applet := strings.TrimSpace(line)
		// /sbin/init is banger's script; linuxrc is for initrds.
		if applet == "" || applet == "sbin/init" || applet == "linuxrc" || applet == "bin/busybox" ||
			!strings.Contains(applet, "/") || path.Clean(applet) != applet || strings.HasPrefix(applet, "../") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(applet))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", dst); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link applet %s: %w", applet, err)
		}
		links++
	}
	if links == 0 {
		return fmt.Errorf("busybox %s lists no applets", busybox)
	}
	if err := os.WriteFile(filepath.Join(dir, "sbin", "init"), busyboxInit, 0o755); err != nil {
		return err
	}
	if err := copyFile(agentBinary, filepath.Join(dir, "usr", "local", "bin", "banger-vsock-agent"), 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	for name, body := range busyboxEtc {
		mode := fs.FileMode(0o644)
		if name == "shadow" {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(body), mode); err != nil {
			return err
		}
	}
	return nil
}
