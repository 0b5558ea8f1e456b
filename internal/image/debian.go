package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/system"
)

// DefaultKernelPackage is Debian's metapackage for the current amd64 kernel.
const DefaultKernelPackage = "linux-image-amd64"

// DebianKernel is an unpacked Debian kernel package in the cache.
type DebianKernel struct {
	Package string // e.g. linux-image-6.1.0-56-amd64
	Version string // the package version, e.g. 6.1.192-2
	// Release is the kernel release (uname -r), e.g. 6.1.0-56-amd64.
	Release string
	// Dir is the unpacked package: boot/, lib/modules/<Release>/.
	Dir        string
	Vmlinuz    string
	ModulesDir string
}

// DebianKernels fetches kernel packages with the host's apt (download
// only: nothing is installed on the host) and keeps them unpacked in
// CacheDir/<package>_<version>, so a second build of the same version
// downloads nothing.
type DebianKernels struct {
	Runner   system.Runner
	CacheDir string
}

// kernelDownloadTimeout bounds apt-get downloading one kernel package
// (tens of MiB).
const kernelDownloadTimeout = 10 * time.Minute

var debPackagePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// Fetch resolves pkg (a metapackage such as linux-image-amd64 is followed
// to the versioned package it depends on), downloads and unpacks it, and
// runs depmod, since Debian ships no modules.dep.
func (k DebianKernels) Fetch(ctx context.Context, pkg string) (DebianKernel, error) {
	if !debPackagePattern.MatchString(pkg) {
		return DebianKernel{}, fmt.Errorf("%q is not a Debian package name", pkg)
	}
	name, version, err := k.resolve(ctx, pkg)
	if err != nil {
		return DebianKernel{}, err
	}
	dir := filepath.Join(k.CacheDir, name+"_"+version)
	if kern, err := loadUnpacked(name, version, dir); err == nil {
		return kern, nil
	}
	if err := os.MkdirAll(k.CacheDir, 0o755); err != nil {
		return DebianKernel{}, fmt.Errorf("create kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(k.CacheDir, ".fetch-")
	if err != nil {
		return DebianKernel{}, fmt.Errorf("create kernel cache: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	dl := filepath.Join(tmp, "deb")
	if err := os.Mkdir(dl, 0o755); err != nil {
		return DebianKernel{}, err
	}
	// Running as root, apt would try to drop to the _apt user, which cannot
	// write into our directory; the download is verified by apt either way.
	if _, err := system.RunChecked(ctx, k.Runner, system.Command{Path: "apt-get", Dir: dl, Timeout: kernelDownloadTimeout,
		Args: []string{"-q", "-o", "APT::Sandbox::User=root", "download", name + "=" + version}}); err != nil {
		return DebianKernel{}, aptErr(fmt.Errorf("download %s %s: %w", name, version, err))
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return DebianKernel{}, fmt.Errorf("download %s %s: apt-get left %d .deb files, want 1", name, version, len(debs))
	}
	unpacked := filepath.Join(tmp, "root")
	if _, err := system.RunChecked(ctx, k.Runner, system.Command{Path: "dpkg-deb", Args: []string{"-x", debs[0], unpacked}}); err != nil {
		return DebianKernel{}, fmt.Errorf("unpack %s: %w", filepath.Base(debs[0]), err)
	}
	release, err := kernelRelease(unpacked)
	if err != nil {
		return DebianKernel{}, fmt.Errorf("package %s: %w", name, err)
	}
	if _, err := system.RunChecked(ctx, k.Runner, system.Command{Path: "depmod", Args: []string{"-b", unpacked, release}}); err != nil {
		return DebianKernel{}, fmt.Errorf("index modules of %s: %w", release, err)
	}
	_ = os.RemoveAll(dir) // an incomplete earlier attempt
	if err := os.Rename(unpacked, dir); err != nil {
		return DebianKernel{}, fmt.Errorf("store kernel in cache: %w", err)
	}
	return loadUnpacked(name, version, dir)
}

// resolve follows a metapackage to the kernel package it names, returning
// the package and its candidate version.
func (k DebianKernels) resolve(ctx context.Context, pkg string) (string, string, error) {
	for range 3 {
		out, err := system.RunChecked(ctx, k.Runner, system.Command{Path: "apt-cache", Args: []string{"show", "--no-all-versions", pkg}})
		if err != nil {
			return "", "", aptErr(fmt.Errorf("look up package %s: %w", pkg, err))
		}
		fields := parseControl(string(out.Stdout))
		if fields["Package"] == "" || fields["Version"] == "" {
			return "", "", fmt.Errorf("apt knows no package %s (run apt-get update?)", pkg)
		}
		next := kernelDependency(fields["Depends"])
		if next == "" || !strings.HasPrefix(pkg, "linux-image-") || pkg == next {
			return fields["Package"], fields["Version"], nil
		}
		// A versioned image package ships boot/vmlinuz-*; a metapackage
		// only depends on one. Both are named linux-image-*, so tell them
		// apart by whether they depend on another linux-image package.
		pkg = next
	}
	return "", "", fmt.Errorf("package %s: too many levels of linux-image metapackages", pkg)
}

// parseControl reads the first stanza of Debian control data.
func parseControl(s string) map[string]string {
	fields := map[string]string{}
	last := ""
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(fields) > 0 {
				break
			}
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && last != "" {
			fields[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			last = k
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// kernelDependency picks the linux-image-* package from a Depends field.
func kernelDependency(depends string) string {
	for _, alt := range strings.FieldsFunc(depends, func(r rune) bool { return r == ',' || r == '|' }) {
		name := strings.Fields(strings.TrimSpace(alt))
		if len(name) > 0 && strings.HasPrefix(name[0], "linux-image-") {
			return strings.Split(name[0], ":")[0]
		}
	}
	return ""
}

func kernelRelease(root string) (string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil || len(entries) != 1 {
		return "", errors.New("it does not hold exactly one lib/modules/<release> directory")
	}
	return entries[0].Name(), nil
}

func loadUnpacked(name, version, dir string) (DebianKernel, error) {
	release, err := kernelRelease(dir)
	if err != nil {
		return DebianKernel{}, err
	}
	kern := DebianKernel{Package: name, Version: version, Release: release, Dir: dir,
		Vmlinuz:    filepath.Join(dir, "boot", "vmlinuz-"+release),
		ModulesDir: filepath.Join(dir, "lib", "modules", release)}
	for _, p := range []string{kern.Vmlinuz, filepath.Join(kern.ModulesDir, "modules.dep")} {
		if _, err := os.Stat(p); err != nil {
			return DebianKernel{}, fmt.Errorf("kernel cache %s is incomplete: %w", dir, err)
		}
	}
	return kern, nil
}

// aptErr explains a missing apt: the Debian kernel needs a Debian-family
// host, and --kernel is the way around it.
func aptErr(err error) error {
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("%w: fetching the Debian kernel needs apt-get and dpkg-deb; pass --kernel PATH instead", err)
	}
	return err
}
