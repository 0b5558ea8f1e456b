package image

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// GuestModules are the drivers a banger guest needs before its root file
// system is mounted, by module name: virtio transports (MMIO for
// Firecracker and QEMU microvm, PCI for ordinary QEMU machines), the root
// disk, the network, the agent channels (virtio-serial and vsock), ext4 and
// an entropy source. Names a kernel has built in are skipped; names it does
// not know at all are reported as missing.
var GuestModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
	"vmw_vsock_virtio_transport", "ext4", "virtio_rng",
}

// ModuleIndex is a kernel's module metadata as depmod writes it
// (modules.dep, modules.softdep, modules.alias, modules.builtin).
type ModuleIndex struct {
	// Dir is lib/modules/<version>.
	Dir string
	// deps maps a module's path (relative to Dir) to its dependencies'.
	deps map[string][]string
	// byName maps a normalized module name to its path.
	byName   map[string]string
	builtin  map[string]bool
	aliases  []moduleAlias
	softPre  map[string][]string
	softPost map[string][]string
}

type moduleAlias struct{ pattern, module string }

// Module is one loadable module in load order.
type Module struct {
	Name string
	// Path is relative to the index's Dir (e.g. kernel/fs/ext4/ext4.ko).
	Path string
}

// moduleName normalizes a module file or user-given name: no directory,
// no .ko[.xz|.zst|.gz] suffix, dashes as underscores (what the kernel does).
func moduleName(p string) string {
	n := path.Base(p)
	if i := strings.Index(n, ".ko"); i >= 0 {
		n = n[:i]
	}
	return strings.ReplaceAll(n, "-", "_")
}

// LoadModuleIndex reads the depmod output in dir (lib/modules/<version>).
// modules.dep is required; the other files are used when present.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	ix := &ModuleIndex{Dir: dir, deps: map[string][]string{}, byName: map[string]string{},
		builtin: map[string]bool{}, softPre: map[string][]string{}, softPost: map[string][]string{}}
	err := readLines(filepath.Join(dir, "modules.dep"), func(line string) {
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			return
		}
		ix.deps[mod] = strings.Fields(deps)
		ix.byName[moduleName(mod)] = mod
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s has no modules.dep: run depmod for this kernel first", dir)
	}
	if err != nil {
		return nil, err
	}
	optional := func(name string, fn func(string)) error {
		if err := readLines(filepath.Join(dir, name), fn); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := optional("modules.builtin", func(l string) { ix.builtin[moduleName(l)] = true }); err != nil {
		return nil, err
	}
	if err := optional("modules.alias", func(l string) {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "alias" {
			ix.aliases = append(ix.aliases, moduleAlias{pattern: f[1], module: moduleName(f[2])})
		}
	}); err != nil {
		return nil, err
	}
	if err := optional("modules.softdep", func(l string) {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "softdep" {
			return
		}
		mod, list := moduleName(f[1]), ""
		for _, w := range f[2:] {
			switch w {
			case "pre:", "post:":
				list = w
			default:
				switch list {
				case "pre:":
					ix.softPre[mod] = append(ix.softPre[mod], w)
				case "post:":
					ix.softPost[mod] = append(ix.softPost[mod], w)
				} // words before pre:/post: are malformed; kmod ignores them too
			}
		}
	}); err != nil {
		return nil, err
	}
	return ix, nil
}

func readLines(p string, fn func(string)) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			fn(line)
		}
	}
	return sc.Err()
}

// lookup resolves a name the way modprobe does: a module name, else every
// module whose alias matches. builtin is true when the kernel has it built
// in (nothing to load).
func (ix *ModuleIndex) lookup(name string) (paths []string, builtin bool) {
	n := moduleName(name)
	if ix.builtin[n] {
		return nil, true
	}
	if p, ok := ix.byName[n]; ok {
		return []string{p}, false
	}
	for _, a := range ix.aliases {
		if ok, _ := path.Match(a.pattern, name); ok {
			if ix.builtin[a.module] {
				return nil, true
			}
			if p, ok := ix.byName[a.module]; ok && !contains(paths, p) {
				paths = append(paths, p)
			}
		}
	}
	return paths, false
}

// Resolve returns the modules needed to load names, each after everything
// it depends on (modules.dep) and after its soft "pre:" dependencies (ext4
// wants crc32c, which no hard dependency names), with "post:" ones after
// it. missing lists names the kernel neither has as a module nor built in.
func (ix *ModuleIndex) Resolve(names []string) (order []Module, missing []string) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(p string)
	// Soft dependencies are best effort, as in modprobe: a kernel without
	// them is not missing anything.
	visitName := func(n string, required bool) {
		paths, builtin := ix.lookup(n)
		if len(paths) == 0 && !builtin && required {
			missing = append(missing, n)
		}
		for _, p := range paths {
			visit(p)
		}
	}
	visit = func(p string) {
		if state[p] != 0 {
			return // done, or a dependency cycle (depmod rejects those)
		}
		state[p] = visiting
		name := moduleName(p)
		for _, s := range ix.softPre[name] {
			visitName(s, false)
		}
		// modules.dep lists the full transitive closure, most basic last;
		// visiting each first still yields a correct order whatever the
		// listing order.
		deps := ix.deps[p]
		for i := len(deps) - 1; i >= 0; i-- {
			visit(deps[i])
		}
		state[p] = done
		order = append(order, Module{Name: name, Path: p})
		for _, s := range ix.softPost[name] {
			visitName(s, false)
		}
	}
	for _, n := range names {
		visitName(n, true)
	}
	sort.Strings(missing)
	return order, missing
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
