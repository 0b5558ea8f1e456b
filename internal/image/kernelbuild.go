package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/banger-dev/banger/internal/system"
)

// MicroVMConfig names banger's microVM kernel configuration
// (kernelconfig/microvm.config): everything a banger guest needs built in,
// no modules, no initrd. docs/kernel.md explains its choices.
const MicroVMConfig = "microvm"

// KernelChoice values for `image build --kernel`, besides a file path.
const (
	KernelChoiceMicroVM = MicroVMConfig
	KernelChoiceDebian  = "debian"
)

// kernelConfigs are the configuration fragments `banger kernel build
// --config NAME` can apply, as kernelconfig/NAME.config.
//
//go:embed kernelconfig/*.config
var kernelConfigs embed.FS

// kernelBuildRecipe changes whenever how a kernel is built (the make
// targets, the environment, the layout of a cache entry) changes in a way
// the cache key does not otherwise capture.
const kernelBuildRecipe = "banger-kernel-build-1"

// builtKernelsDir is the cache subdirectory holding built kernels, one
// directory per key: <config>_<source version>-<key>.
const builtKernelsDir = "built-kernels"

// Bounds on the build's commands: the source tarball unpacks in about 15 s;
// the compile takes minutes on 2 cores (docs/performance.md).
const (
	kernelExtractTimeout   = 15 * time.Minute
	kernelConfigureTimeout = 5 * time.Minute
	kernelCompileTimeout   = 3 * time.Hour
)

// KernelConfig is a named configuration fragment.
type KernelConfig struct {
	Name     string
	Fragment []byte
}

// Hash is the fragment's SHA-256 (hex), part of the cache key.
func (c KernelConfig) Hash() string {
	sum := sha256.Sum256(c.Fragment)
	return hex.EncodeToString(sum[:])
}

// KernelConfigNames lists the configurations banger carries.
func KernelConfigNames() []string {
	entries, _ := kernelConfigs.ReadDir("kernelconfig")
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".config"); ok {
			names = append(names, n)
		}
	}
	return names
}

// LoadKernelConfig returns the configuration called name.
func LoadKernelConfig(name string) (KernelConfig, error) {
	if !slices.Contains(KernelConfigNames(), name) {
		return KernelConfig{}, fmt.Errorf("there is no kernel configuration %q: use one of %s", name, strings.Join(KernelConfigNames(), ", "))
	}
	data, err := kernelConfigs.ReadFile("kernelconfig/" + name + ".config")
	if err != nil {
		return KernelConfig{}, err
	}
	return KernelConfig{Name: name, Fragment: data}, nil
}

// ConfigSetting is one line of a configuration fragment: a symbol and the
// value it must have ("n" for "# CONFIG_X is not set").
type ConfigSetting struct {
	Symbol string
	Value  string
}

var (
	configValueLine = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.*)$`)
	configUnsetLine = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// ParseKernelConfig reads a .config or a fragment: its settings in order,
// later lines for the same symbol winning (as Kconfig reads them). Other
// comments and blank lines are skipped.
func ParseKernelConfig(data []byte) []ConfigSetting {
	var out []ConfigSetting
	index := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var s ConfigSetting
		if m := configValueLine.FindStringSubmatch(line); m != nil {
			s = ConfigSetting{Symbol: m[1], Value: m[2]}
		} else if m := configUnsetLine.FindStringSubmatch(line); m != nil {
			s = ConfigSetting{Symbol: m[1], Value: "n"}
		} else {
			continue
		}
		if i, ok := index[s.Symbol]; ok {
			out[i] = s
			continue
		}
		index[s.Symbol] = len(out)
		out = append(out, s)
	}
	return out
}

// CheckKernelConfig compares the configuration Kconfig produced with the
// fragment asked for and describes every setting that did not hold, in
// the fragment's order: Kconfig silently drops a symbol whose dependencies
// are missing (CONFIG_VIRTIO_BLK without CONFIG_BLOCK), and such a kernel
// would only fail at boot.
func CheckKernelConfig(fragment, dotConfig []byte) []string {
	got := map[string]string{}
	for _, s := range ParseKernelConfig(dotConfig) {
		got[s.Symbol] = s.Value
	}
	var bad []string
	for _, want := range ParseKernelConfig(fragment) {
		have, ok := got[want.Symbol]
		if !ok {
			have = "n"
		}
		if have != want.Value {
			bad = append(bad, fmt.Sprintf("%s=%s (got %s)", want.Symbol, want.Value, have))
		}
	}
	return bad
}

// KernelSource is a Linux source tarball, as Debian's linux-source package
// installs it in /usr/src.
type KernelSource struct {
	Tarball string `json:"tarball"`
	// Package and Version are the Debian package holding the tarball
	// (linux-source-6.1, 6.1.192-3). Outside a package, Version is
	// "sha256-" and the tarball's hash.
	Package string `json:"package,omitempty"`
	Version string `json:"version"`
}

// ErrNoKernelSource says there is no linux-source tarball to build from.
var ErrNoKernelSource = errors.New("no Linux source tarball in /usr/src: install Debian's linux-source package (apt-get install linux-source)")

var sourceTarballPattern = regexp.MustCompile(`^linux-source-([0-9]+)\.([0-9]+)\.tar\.(xz|bz2|gz)$`)

// FindKernelSource picks the newest linux-source-X.Y tarball in dir
// (/usr/src) and its package version (dpkg-query), so the cache key changes
// when the package is upgraded.
func FindKernelSource(ctx context.Context, r system.Runner, dir string) (KernelSource, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return KernelSource{}, err
	}
	best, bestMajor, bestMinor := "", -1, -1
	for _, e := range entries {
		m := sourceTarballPattern.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		if major > bestMajor || major == bestMajor && minor > bestMinor {
			best, bestMajor, bestMinor = e.Name(), major, minor
		}
	}
	if best == "" {
		return KernelSource{}, ErrNoKernelSource
	}
	return DescribeKernelSource(ctx, r, filepath.Join(dir, best))
}

// DescribeKernelSource names tarball's version: its package's when dpkg
// knows the file, else its content hash.
func DescribeKernelSource(ctx context.Context, r system.Runner, tarball string) (KernelSource, error) {
	src := KernelSource{Tarball: tarball}
	out, err := system.RunChecked(ctx, r, system.Command{Path: "dpkg-query", Args: []string{"-S", tarball}})
	if err == nil {
		// "linux-source-6.1: /usr/src/linux-source-6.1.tar.xz"
		if pkg, _, ok := strings.Cut(strings.TrimSpace(string(out.Stdout)), ":"); ok && debPackagePattern.MatchString(pkg) {
			v, verr := system.RunChecked(ctx, r, system.Command{Path: "dpkg-query", Args: []string{"-W", "-f", "${Version}", pkg}})
			if version := strings.TrimSpace(string(v.Stdout)); verr == nil && version != "" {
				src.Package, src.Version = pkg, version
				return src, nil
			}
		}
	}
	f, err := os.Open(tarball)
	if err != nil {
		return src, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := bufio.NewReader(f).WriteTo(h); err != nil {
		return src, fmt.Errorf("hash %s: %w", tarball, err)
	}
	src.Version = "sha256-" + hex.EncodeToString(h.Sum(nil))[:16]
	return src, nil
}

// KernelBuildKey identifies a build by everything that goes into it: the
// recipe, the source's package and version, and the fragment.
func KernelBuildKey(src KernelSource, cfg KernelConfig) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00", kernelBuildRecipe, runtime.GOARCH, src.Package, src.Version, cfg.Name)
	h.Write(cfg.Fragment)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// BuiltKernel is one kernel in the cache. Its kernel.json holds all but
// Dir and Vmlinux.
type BuiltKernel struct {
	Key           string `json:"key"`
	Config        string `json:"config"`
	ConfigHash    string `json:"config_hash"`
	SourcePackage string `json:"source_package,omitempty"`
	SourceVersion string `json:"source_version"`
	// Release is the kernel's uname -r, e.g. 6.1.192-banger-microvm.
	Release      string    `json:"release"`
	Jobs         int       `json:"jobs"`
	BuildSeconds float64   `json:"build_seconds"`
	BuiltAt      time.Time `json:"built_at"`
	Dir          string    `json:"dir,omitempty"`
	Vmlinux      string    `json:"vmlinux,omitempty"`
	// Cached says the kernel came from the cache, not from this build.
	Cached bool `json:"cached"`
}

const builtKernelMeta = "kernel.json"

// KernelBuilder builds kernels from source into a cache, as the invoking
// user: nothing needs root.
type KernelBuilder struct {
	Runner system.Runner
	// CacheDir is banger's cache (StateDir/cache); kernels go under
	// CacheDir/built-kernels.
	CacheDir string
	// Jobs is make's -j; the number of CPUs when zero.
	Jobs int
	// Now is the clock for build times; time.Now when nil.
	Now func() time.Time
}

// Build returns the kernel for src and cfg from the cache, or builds it:
// unpack the source, make allnoconfig with the fragment as
// KCONFIG_ALLCONFIG, make olddefconfig, check every fragment line held,
// make vmlinux, check it is an ELF with a PVH entry. The entry is written
// beside the cache and renamed into place, so an interrupted build never
// leaves one that looks complete.
func (b KernelBuilder) Build(ctx context.Context, src KernelSource, cfg KernelConfig, progress Progress) (BuiltKernel, error) {
	if progress == nil {
		progress = func(string, string) {}
	}
	now := b.Now
	if now == nil {
		now = time.Now
	}
	jobs := b.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	if runtime.GOARCH != "amd64" {
		return BuiltKernel{}, fmt.Errorf("banger's kernel configurations are for x86_64; this is %s", runtime.GOARCH)
	}
	if k, ok := b.Lookup(src, cfg); ok {
		progress("cache", "kernel "+k.Release+" is in the cache: "+k.Vmlinux)
		return k, nil
	}
	key := KernelBuildKey(src, cfg)
	root := filepath.Join(b.CacheDir, builtKernelsDir)
	entry := b.entry(src, cfg)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return BuiltKernel{}, fmt.Errorf("create kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".build-")
	if err != nil {
		return BuiltKernel{}, fmt.Errorf("create kernel cache: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	// MkdirTemp's 0700 would keep the kernel from a daemon running as
	// another user than the one who built it.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return BuiltKernel{}, err
	}

	start := now()
	k := BuiltKernel{Key: key, Config: cfg.Name, ConfigHash: cfg.Hash(), SourcePackage: src.Package,
		SourceVersion: src.Version, Jobs: jobs}
	tree := kernelTree{runner: b.Runner, src: filepath.Join(tmp, "src")}
	if err := tree.build(ctx, src, cfg, jobs, filepath.Join(tmp, "fragment.config"), progress); err != nil {
		return BuiltKernel{}, err
	}
	if k.Release, err = tree.install(tmp); err != nil {
		return BuiltKernel{}, err
	}
	if err := os.RemoveAll(tree.src); err != nil {
		return BuiltKernel{}, fmt.Errorf("remove the build tree: %w", err)
	}
	k.BuildSeconds = now().Sub(start).Seconds()
	k.BuiltAt = now().UTC()
	if err := writeBuiltKernel(tmp, k); err != nil {
		return BuiltKernel{}, err
	}
	// A concurrent build of the same key may have won; its copy is as good.
	if err := os.Rename(tmp, entry); err != nil {
		if _, rerr := readBuiltKernel(entry); rerr != nil {
			return BuiltKernel{}, fmt.Errorf("store the kernel in the cache: %w", err)
		}
	}
	k, err = readBuiltKernel(entry)
	if err != nil {
		return BuiltKernel{}, err
	}
	progress("done", fmt.Sprintf("kernel %s built in %s: %s", k.Release, time.Duration(k.BuildSeconds*float64(time.Second)).Round(time.Second), k.Vmlinux))
	return k, nil
}

// Lookup returns the cached kernel for src and cfg, if it was built.
func (b KernelBuilder) Lookup(src KernelSource, cfg KernelConfig) (BuiltKernel, bool) {
	k, err := readBuiltKernel(b.entry(src, cfg))
	if err != nil || k.Key != KernelBuildKey(src, cfg) {
		return BuiltKernel{}, false
	}
	k.Cached = true
	return k, true
}

// entry is the cache directory of the kernel for src and cfg.
func (b KernelBuilder) entry(src KernelSource, cfg KernelConfig) string {
	return filepath.Join(b.CacheDir, builtKernelsDir, cfg.Name+"_"+sanitizeName(src.Version)+"-"+KernelBuildKey(src, cfg))
}

// kernelTree is one unpacked source tree being built. The objects go to
// src/.banger-out: with the build directory right under the source, Kbuild
// refers to sources as "../", so no temporary path ends up in the kernel
// and two builds of the same inputs match.
type kernelTree struct {
	runner system.Runner
	src    string
}

func (t kernelTree) out() string { return filepath.Join(t.src, ".banger-out") }

// kernelBuildEnv pins what Kbuild would otherwise take from the machine
// and the clock into the kernel (uname -v, /proc/version).
var kernelBuildEnv = []string{
	"KBUILD_BUILD_TIMESTAMP=1970-01-01 00:00:00 UTC",
	"KBUILD_BUILD_USER=banger",
	"KBUILD_BUILD_HOST=banger",
	"KBUILD_BUILD_VERSION=1",
	"LC_ALL=C",
	"TZ=UTC",
}

func (t kernelTree) make(ctx context.Context, timeout time.Duration, stream *lineWriter, args ...string) error {
	c := system.Command{Path: "make", Env: kernelBuildEnv, Timeout: timeout,
		Args: append([]string{"-C", t.src, "O=" + t.out(), "ARCH=x86_64"}, args...)}
	if stream != nil {
		c.Stream = stream
	}
	_, err := system.RunChecked(ctx, t.runner, c)
	return err
}

func (t kernelTree) build(ctx context.Context, src KernelSource, cfg KernelConfig, jobs int, fragment string, progress Progress) error {
	progress("extract", "unpacking "+src.Tarball+" (about 15 s)")
	if err := os.MkdirAll(t.src, 0o755); err != nil {
		return err
	}
	if _, err := system.RunChecked(ctx, t.runner, system.Command{Path: "tar", Timeout: kernelExtractTimeout,
		Args: []string{"-xf", src.Tarball, "-C", t.src, "--strip-components=1"}}); err != nil {
		return fmt.Errorf("unpack the kernel source: %w", err)
	}
	progress("configure", "make allnoconfig with the "+cfg.Name+" fragment, then olddefconfig")
	if err := os.WriteFile(fragment, cfg.Fragment, 0o644); err != nil {
		return err
	}
	if err := t.make(ctx, kernelConfigureTimeout, nil, "KCONFIG_ALLCONFIG="+fragment, "allnoconfig"); err != nil {
		return fmt.Errorf("configure the kernel: %w", err)
	}
	if err := t.make(ctx, kernelConfigureTimeout, nil, "olddefconfig"); err != nil {
		return fmt.Errorf("configure the kernel: %w", err)
	}
	dotConfig, err := os.ReadFile(filepath.Join(t.out(), ".config"))
	if err != nil {
		return fmt.Errorf("read the kernel configuration: %w", err)
	}
	if bad := CheckKernelConfig(cfg.Fragment, dotConfig); len(bad) > 0 {
		return fmt.Errorf("the %s configuration does not hold on this source (a dependency is missing?): %s",
			cfg.Name, strings.Join(bad, ", "))
	}
	progress("compile", fmt.Sprintf("make -j%d vmlinux (several minutes)", jobs))
	steps := &makeProgress{progress: progress, every: makeProgressEvery}
	if err := t.make(ctx, kernelCompileTimeout, &lineWriter{line: steps.line}, "-j"+strconv.Itoa(jobs), "vmlinux"); err != nil {
		return fmt.Errorf("compile the kernel: %w", err)
	}
	return nil
}

// install copies the vmlinux and .config into dir after checking the
// vmlinux is what the VMMs load, and returns the kernel release.
func (t kernelTree) install(dir string) (string, error) {
	vmlinux := filepath.Join(t.out(), "vmlinux")
	info, err := InspectKernel(vmlinux)
	if err != nil {
		return "", fmt.Errorf("built kernel: %w", err)
	}
	if info.Format != FormatELF || !info.PVH {
		return "", fmt.Errorf("built kernel %s has no PVH entry note: Firecracker and QEMU microvm cannot boot it", vmlinux)
	}
	release, err := os.ReadFile(filepath.Join(t.out(), "include", "config", "kernel.release"))
	if err != nil {
		return "", fmt.Errorf("read the kernel release: %w", err)
	}
	if err := os.Rename(vmlinux, filepath.Join(dir, KernelFile)); err != nil {
		return "", fmt.Errorf("keep the vmlinux: %w", err)
	}
	if err := os.Rename(filepath.Join(t.out(), ".config"), filepath.Join(dir, "config")); err != nil {
		return "", fmt.Errorf("keep the configuration: %w", err)
	}
	return strings.TrimSpace(string(release)), nil
}

// makeProgressEvery is how many of make's step lines one progress report
// stands for: a kernel build prints a few thousand.
const makeProgressEvery = 250

// makeProgress condenses make's output ("  CC      kernel/fork.o") into a
// report every few hundred steps, and passes the final link through.
type makeProgress struct {
	progress Progress
	every    int
	steps    int
}

var makeStepLine = regexp.MustCompile(`^([A-Z][A-Z0-9_\[\]]*)\s+(\S.*)$`)

func (m *makeProgress) line(l string) {
	s := makeStepLine.FindStringSubmatch(l)
	if s == nil {
		return
	}
	m.steps++
	if s[1] == "LD" && s[2] == "vmlinux" {
		m.progress("compile", fmt.Sprintf("%d steps done; linking vmlinux", m.steps))
		return
	}
	if m.steps%m.every == 0 {
		m.progress("compile", fmt.Sprintf("%d steps done (%s %s)", m.steps, s[1], s[2]))
	}
}

func writeBuiltKernel(dir string, k BuiltKernel) error {
	k.Dir, k.Vmlinux, k.Cached = "", "", false
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return err
	}
	return system.WriteFileAtomic(filepath.Join(dir, builtKernelMeta), append(data, '\n'), 0o644)
}

// readBuiltKernel loads a complete cache entry: its metadata and a regular
// vmlinux.
func readBuiltKernel(dir string) (BuiltKernel, error) {
	var k BuiltKernel
	data, err := os.ReadFile(filepath.Join(dir, builtKernelMeta))
	if err != nil {
		return k, err
	}
	if err := json.Unmarshal(data, &k); err != nil {
		return k, fmt.Errorf("kernel cache entry %s: %w", dir, err)
	}
	k.Dir, k.Vmlinux = dir, filepath.Join(dir, KernelFile)
	if err := regularFile("kernel", k.Vmlinux); err != nil {
		return k, fmt.Errorf("kernel cache entry %s: %w", dir, err)
	}
	return k, nil
}

// ErrNoBuiltKernel says no kernel of the asked configuration is in the
// cache.
var ErrNoBuiltKernel = errors.New("no microVM kernel has been built")

// FindBuiltKernel returns the kernel of configuration cfg in cacheDir to
// give new images: one built from the configuration banger carries now if
// there is one, else the newest built from an earlier version of it.
func FindBuiltKernel(cacheDir string, cfg KernelConfig) (BuiltKernel, error) {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, builtKernelsDir, cfg.Name+"_*"))
	var best BuiltKernel
	found := false
	hash := cfg.Hash()
	better := func(k BuiltKernel) bool {
		if !found {
			return true
		}
		if (k.ConfigHash == hash) != (best.ConfigHash == hash) {
			return k.ConfigHash == hash
		}
		return k.BuiltAt.After(best.BuiltAt)
	}
	for _, d := range dirs {
		k, err := readBuiltKernel(d)
		if err != nil || k.Config != cfg.Name {
			continue
		}
		if better(k) {
			best, found = k, true
		}
	}
	if !found {
		return BuiltKernel{}, fmt.Errorf("%w (config %s) in %s: run `banger kernel build`", ErrNoBuiltKernel, cfg.Name, filepath.Join(cacheDir, builtKernelsDir))
	}
	return best, nil
}
