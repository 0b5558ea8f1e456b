package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/system"
	imagescripts "github.com/banger-dev/banger/scripts/image"
)

// BasePackages are installed into every built image on top of debootstrap's
// minbase: an init (systemd) with udev, sshd, sudo for the default user,
// tools the guest agent and users expect, and busybox-static, whose binary
// also becomes the initrd's shell.
var BasePackages = []string{
	"systemd-sysv", "udev", "dbus", "openssh-server", "sudo", "kmod", "iproute2",
	"ca-certificates", "tzdata", "procps", "netbase", "busybox-static",
}

// RootfsSpec describes a Debian root file system tree.
type RootfsSpec struct {
	// Dir is created by debootstrap; it must not exist yet.
	Dir    string
	Mirror string
	Suite  string
	// Packages are added to BasePackages.
	Packages []string
	// CacheDir keeps debootstrap's downloaded .debs between builds; none
	// when empty.
	CacheDir string
	// User is the default user (named after the owner); "root" makes none.
	User string
	// UID is the default user's uid; 0 lets useradd pick.
	UID      int
	Timezone string
	Locale   string
	Hostname string
	// AgentBinary is banger-vsock-agent on the host; it is installed as
	// /usr/local/bin/banger-vsock-agent.
	AgentBinary string
	// Scripts are user hooks run inside the tree (chroot) after banger's
	// own customization, in order.
	Scripts []string
}

var (
	userPattern     = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	suitePattern    = regexp.MustCompile(`^[a-z][a-z0-9-]{1,30}$`)
	timezonePattern = regexp.MustCompile(`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`)
	localePattern   = regexp.MustCompile(`^[A-Za-z0-9_.@-]+$`)
	hostnamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// setupDir is where the customization files sit inside the tree while
// customize.sh runs; removed afterwards.
const setupDir = ".banger-setup"

func (s *RootfsSpec) validate() error {
	if s.Timezone == "" {
		s.Timezone = "Etc/UTC"
	}
	if s.Locale == "" {
		s.Locale = "C.UTF-8"
	}
	if s.Hostname == "" {
		s.Hostname = "banger"
	}
	switch {
	case !strings.HasPrefix(s.Mirror, "http://") && !strings.HasPrefix(s.Mirror, "https://"):
		return fmt.Errorf("the Debian mirror %q must be an http:// or https:// URL", s.Mirror)
	case !suitePattern.MatchString(s.Suite):
		return fmt.Errorf("suite %q is not a Debian suite name", s.Suite)
	case !userPattern.MatchString(s.User):
		return fmt.Errorf("user name %q is not a valid Linux user name", s.User)
	case s.UID < 0 || s.UID > 65533:
		return fmt.Errorf("uid %d is out of range", s.UID)
	case !timezonePattern.MatchString(s.Timezone) || strings.Contains(s.Timezone, ".."):
		return fmt.Errorf("timezone %q is not a zoneinfo name like Europe/Berlin", s.Timezone)
	case !localePattern.MatchString(s.Locale):
		return fmt.Errorf("locale %q is not a locale name like C.UTF-8", s.Locale)
	case !hostnamePattern.MatchString(s.Hostname):
		return fmt.Errorf("hostname %q is not a valid host name", s.Hostname)
	}
	for _, p := range s.Packages {
		if !debPackagePattern.MatchString(p) {
			return fmt.Errorf("%q is not a Debian package name", p)
		}
	}
	if err := regularFile("agent binary", s.AgentBinary); err != nil {
		return err
	}
	for _, sc := range s.Scripts {
		if err := regularFile("script", sc); err != nil {
			return err
		}
	}
	return nil
}

func regularFile(what, p string) error {
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s does not exist", what, p)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %s is not a regular file", what, p)
	}
	return nil
}

// Bounds on the long steps of a Debian build: generous for a slow mirror or
// a hook installing packages, but a hung download or script does not hold
// the build, its mounts and its work dir forever.
const (
	debootstrapTimeout = 30 * time.Minute
	customizeTimeout   = 30 * time.Minute
)

// Debootstrap creates the tree with debootstrap --variant=minbase. It needs
// root. Its phases ("I: Resolving dependencies ...", not the per-package
// lines) go to progress as they happen: the step takes minutes.
func Debootstrap(ctx context.Context, r system.Runner, s RootfsSpec, progress Progress) error {
	if err := s.validate(); err != nil {
		return err
	}
	if _, err := os.Lstat(s.Dir); err == nil {
		return fmt.Errorf("rootfs directory %s already exists", s.Dir)
	}
	pkgs := append(append([]string{}, BasePackages...), s.Packages...)
	args := []string{"--variant=minbase", "--components=main", "--include=" + strings.Join(pkgs, ",")}
	if s.CacheDir != "" {
		if err := os.MkdirAll(s.CacheDir, 0o755); err != nil {
			return fmt.Errorf("create debootstrap cache: %w", err)
		}
		abs, err := filepath.Abs(s.CacheDir)
		if err != nil {
			return err
		}
		args = append(args, "--cache-dir="+abs)
	}
	args = append(args, s.Suite, s.Dir, s.Mirror)
	phases := &lineWriter{line: func(l string) {
		if debootstrapPhase(l) {
			progress("rootfs", l)
		}
	}}
	c := system.Command{Path: "debootstrap", Args: args, Stream: phases, Timeout: debootstrapTimeout}
	if _, err := system.RunChecked(ctx, r, c); err != nil {
		return fmt.Errorf("debootstrap %s from %s: %w", s.Suite, s.Mirror, err)
	}
	return nil
}

// Customize installs the agent, runs scripts/image/customize.sh and the
// user's hooks inside the tree. It needs root (chroot).
func Customize(ctx context.Context, r system.Runner, s RootfsSpec) (err error) {
	if err := s.validate(); err != nil {
		return err
	}
	agentDst := filepath.Join(s.Dir, "usr", "local", "bin", "banger-vsock-agent")
	if err := os.MkdirAll(filepath.Dir(agentDst), 0o755); err != nil {
		return err
	}
	if err := copyFile(s.AgentBinary, agentDst, 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}

	setup := filepath.Join(s.Dir, setupDir)
	if err := os.MkdirAll(filepath.Join(setup, "hooks"), 0o700); err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(setup) }()
	if err := fs.WalkDir(imagescripts.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := imagescripts.FS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(setup, p), data, 0o755)
	}); err != nil {
		return fmt.Errorf("install customization scripts: %w", err)
	}
	for i, sc := range s.Scripts {
		dst := filepath.Join(setup, "hooks", fmt.Sprintf("%02d-%s", i+1, sanitizeName(filepath.Base(sc))))
		if err := copyFile(sc, dst, 0o755); err != nil {
			return fmt.Errorf("install script %s: %w", sc, err)
		}
	}

	// Hooks may install packages: give them /proc, /sys, /dev and the
	// host's DNS, and take all of it away again before the tree is imaged.
	if len(s.Scripts) > 0 {
		undo, err := chrootMounts(s.Dir)
		if err != nil {
			return err
		}
		defer func() {
			if uerr := undo(); err == nil {
				err = uerr
			}
		}()
	}

	uid := ""
	if s.UID > 0 {
		uid = strconv.Itoa(s.UID)
	}
	_, err = system.RunChecked(ctx, r, system.Command{Path: "chroot", Args: []string{s.Dir, "/bin/sh", "/" + setupDir + "/customize.sh"},
		Timeout: customizeTimeout,
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"HOME=/root",
			"BANGER_SETUP=/" + setupDir,
			"BANGER_USER=" + s.User,
			"BANGER_UID=" + uid,
			"BANGER_TIMEZONE=" + s.Timezone,
			"BANGER_LOCALE=" + s.Locale,
			"BANGER_HOSTNAME=" + s.Hostname,
		}})
	if err != nil {
		return fmt.Errorf("customize rootfs: %w", err)
	}
	return nil
}

// debootstrapPhase says whether a line of debootstrap's output marks a
// phase worth showing: its "I: " lines, less the four it prints for every
// package.
func debootstrapPhase(line string) bool {
	rest, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return false
	}
	for _, perPackage := range []string{"Retrieving ", "Validating ", "Extracting ", "Unpacking ", "Configuring "} {
		if strings.HasPrefix(rest, perPackage) {
			return false
		}
	}
	return true
}

// maxStreamLine bounds a line a lineWriter holds: a command printing
// without newlines has its output cut into lines of this size.
const maxStreamLine = 4 << 10

// lineWriter calls line for each line written to it, without its newline;
// a last line without one is dropped.
type lineWriter struct {
	line func(string)
	buf  []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' || len(w.buf) == maxStreamLine {
			w.line(strings.TrimSpace(string(w.buf)))
			w.buf = w.buf[:0]
			if b == '\n' {
				continue
			}
		}
		w.buf = append(w.buf, b)
	}
	return len(p), nil
}

func sanitizeName(n string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, n)
}

// chrootMounts mounts proc, sysfs and a bind of /dev into root and puts the
// host's resolv.conf in place; undo reverses all of it.
func chrootMounts(root string) (undo func() error, err error) {
	var mounted []string
	undo = func() error {
		var errs []error
		for i := len(mounted) - 1; i >= 0; i-- {
			if err := unix.Unmount(mounted[i], unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mounted[i], err))
			}
		}
		return errors.Join(errs...)
	}
	for _, m := range []struct {
		src, dir, fstype string
		flags            uintptr
	}{
		{"proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY},
		{"/dev", "dev", "", unix.MS_BIND},
	} {
		target := filepath.Join(root, m.dir)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, errors.Join(err, undo())
		}
		if err := unix.Mount(m.src, target, m.fstype, m.flags, ""); err != nil {
			return nil, errors.Join(fmt.Errorf("mount %s in the rootfs: %w", m.dir, err), undo())
		}
		mounted = append(mounted, target)
	}
	if data, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		resolv := filepath.Join(root, "etc", "resolv.conf")
		_ = os.Remove(resolv) // may be a dangling symlink into /run
		_ = os.WriteFile(resolv, data, 0o644)
	}
	return undo, nil
}

// Modules copied into the image so the guest can load more than the initrd
// carries (netfilter, overlayfs, ...), by path under lib/modules/<release>/.
// Hardware the VM never has (GPUs, Wi-Fi, sound, physical NICs) is left out:
// it is most of the 400 MB.
var (
	rootfsModuleDirs = []string{
		"kernel/arch", "kernel/block", "kernel/crypto", "kernel/fs", "kernel/lib",
		"kernel/mm", "kernel/net", "kernel/virt", "kernel/drivers/virtio",
		"kernel/drivers/block", "kernel/drivers/char", "kernel/drivers/md",
		"kernel/drivers/net", "kernel/drivers/vhost", "kernel/drivers/nvdimm",
		"kernel/drivers/dax", "kernel/drivers/crypto", "kernel/drivers/scsi/virtio_scsi.ko",
	}
	rootfsModuleSkip = []string{
		"kernel/drivers/net/wireless", "kernel/drivers/net/ethernet", "kernel/drivers/net/usb",
		"kernel/drivers/net/can", "kernel/drivers/net/wwan", "kernel/drivers/net/ieee802154",
		"kernel/drivers/net/hamradio", "kernel/net/bluetooth", "kernel/net/mac80211",
		"kernel/net/wireless",
	}
)

// InstallModules copies the kernel's guest-relevant modules into the tree
// (lib/modules/<release>) and indexes them with depmod.
func InstallModules(ctx context.Context, r system.Runner, modulesDir, root string) error {
	release := filepath.Base(modulesDir)
	dst := filepath.Join(root, "lib", "modules", release)
	err := filepath.WalkDir(modulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(modulesDir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel != "." && rel != "kernel" && !underAny(rel, rootfsModuleDirs) && !aboveAny(rel, rootfsModuleDirs) || underAny(rel, rootfsModuleSkip) {
				return fs.SkipDir
			}
			return nil
		}
		keep := strings.HasPrefix(rel, "modules.builtin") || rel == "modules.order" || underAny(rel, rootfsModuleDirs)
		if !keep || underAny(rel, rootfsModuleSkip) {
			return nil
		}
		out := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return copyFile(p, out, 0o644)
	})
	if err != nil {
		return fmt.Errorf("install kernel modules: %w", err)
	}
	if _, err := system.RunChecked(ctx, r, system.Command{Path: "depmod", Args: []string{"-b", root, release}}); err != nil {
		return fmt.Errorf("index kernel modules in the rootfs: %w", err)
	}
	return nil
}

func underAny(rel string, prefixes []string) bool {
	for _, p := range prefixes {
		if rel == p || strings.HasPrefix(rel, p+"/") {
			return true
		}
	}
	return false
}

func aboveAny(rel string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(p, rel+"/") {
			return true
		}
	}
	return false
}

// copyFile copies a regular file (hard-linking would tie the image build to
// the cache's inode and the cache is on the same disk anyway).
func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// treeSize adds up the sizes of the regular files under root, to check an
// image size before mkfs fails halfway.
func treeSize(root string) (int64, error) {
	var n int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += (info.Size() + 4095) &^ 4095 // whole ext4 blocks
		}
		return nil
	})
	return n, err
}

// mountsUnder lists mount points at or below dir from a mountinfo file
// (/proc/self/mountinfo), deepest first.
func mountsUnder(mountinfo, dir string) ([]string, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) the
// kernel uses in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RemoveTree deletes a build's work dir, first detaching anything still
// mounted inside it (debootstrap leaves /proc mounted when it fails), and
// refuses to delete while a mount remains: removing files through a bind
// of /dev would delete the host's device nodes.
func RemoveTree(dir, mountinfo string) error {
	if mountinfo == "" {
		mountinfo = "/proc/self/mountinfo"
	}
	mounts, err := mountsUnder(mountinfo, dir)
	if err != nil {
		return fmt.Errorf("check mounts under %s: %w", dir, err)
	}
	for _, m := range mounts {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	if mounts, err = mountsUnder(mountinfo, dir); err != nil {
		return fmt.Errorf("check mounts under %s: %w", dir, err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted", dir, mounts[0])
	}
	return os.RemoveAll(dir)
}
