package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/ulikunitz/xz"
)

// fakeModuleTree writes a lib/modules/<release> tree with depmod-style
// index files and small stand-in .ko files.
func fakeModuleTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib", "modules", "6.99.0-test")
	files := map[string]string{
		"modules.dep": `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko.xz:
kernel/net/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/sound/unrelated.ko:
`,
		"modules.softdep": "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\nsoftdep cifs gcm\n",
		"modules.alias":   "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias virtio:d00000002v* virtio_blk\n",
		"modules.builtin": "kernel/drivers/char/hw_random/virtio-rng.ko\nkernel/drivers/char/virtio_console.ko\n",
	}
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), []byte(content))
	}
	for _, line := range strings.Split(files["modules.dep"], "\n") {
		mod, _, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		body := []byte("module " + mod)
		if strings.HasSuffix(mod, ".xz") {
			var b bytes.Buffer
			w, err := xz.NewWriter(&b)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(body); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			body = b.Bytes()
		}
		writeFile(t, filepath.Join(dir, mod), body)
	}
	return dir
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

// checkDependencyOrder fails unless every module comes after all of its
// modules.dep dependencies.
func checkDependencyOrder(t *testing.T, ix *ModuleIndex, order []Module) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range order {
		if _, dup := pos[m.Path]; dup {
			t.Fatalf("%s listed twice", m.Path)
		}
		pos[m.Path] = i
	}
	for i, m := range order {
		for _, dep := range ix.deps[m.Path] {
			j, ok := pos[dep]
			if !ok {
				t.Errorf("%s needs %s, which is not in the list", m.Name, dep)
			} else if j > i {
				t.Errorf("%s (at %d) comes before its dependency %s (at %d)", m.Name, i, dep, j)
			}
		}
	}
}

func before(t *testing.T, order []string, a, b string) {
	t.Helper()
	i, j := slices.Index(order, a), slices.Index(order, b)
	if i < 0 || j < 0 || i > j {
		t.Errorf("want %s before %s in %v", a, b, order)
	}
}

func TestResolveModules(t *testing.T) {
	ix, err := LoadModuleIndex(fakeModuleTree(t))
	if err != nil {
		t.Fatal(err)
	}
	order, missing := ix.Resolve([]string{"virtio_mmio", "virtio-blk", "virtio_net", "ext4", "virtio_rng", "virtio_console", "no_such_driver"})
	checkDependencyOrder(t, ix, order)
	got := names(order)
	if !slices.Equal(missing, []string{"no_such_driver"}) {
		t.Errorf("missing = %v, want [no_such_driver]", missing)
	}
	for _, m := range []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
		"crc16", "mbcache", "jbd2", "crc32c_intel", "crc32c_generic", "ext4"} {
		if !slices.Contains(got, m) {
			t.Errorf("%s not resolved: %v", m, got)
		}
	}
	// ext4's crc32c comes only from a softdep through an alias.
	before(t, got, "crc32c_generic", "jbd2")
	before(t, got, "jbd2", "ext4")
	before(t, got, "virtio_ring", "virtio_blk")
	if slices.Contains(got, "unrelated") || slices.Contains(got, "virtio_rng") {
		t.Errorf("unrequested or built-in module loaded: %v", got)
	}
}

func TestLoadModuleIndexWithoutDepmod(t *testing.T) {
	_, err := LoadModuleIndex(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "run depmod") {
		t.Fatalf("err = %v", err)
	}
}

// readInitrd reads a gzip'd newc archive back with an independent reader.
func readInitrd(t *testing.T, p string) (map[string]*cpio.Header, map[string][]byte, []string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("initrd is not gzip: %v", err)
	}
	r := cpio.NewReader(zr)
	hdrs, data := map[string]*cpio.Header{}, map[string][]byte{}
	var order []string
	for {
		h, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("cpio entry after %v: %v", order[max(0, len(order)-1):], err)
		}
		if _, dup := hdrs[h.Name]; dup {
			t.Fatalf("duplicate entry %s", h.Name)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, b
		order = append(order, h.Name)
	}
	return hdrs, data, order
}

func loadList(t *testing.T, data []byte) [][2]string {
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("bad module list line %q", sc.Text())
		}
		out = append(out, [2]string{f[0], f[1]})
	}
	return out
}

func TestBuildInitrdFromFakeTree(t *testing.T) {
	dir := fakeModuleTree(t)
	busybox := filepath.Join(t.TempDir(), "busybox")
	writeFile(t, busybox, testELF(false, 4096))
	out := filepath.Join(t.TempDir(), "initrd.img")
	res, err := BuildInitrd(InitrdSpec{ModulesDir: dir, Busybox: busybox}, out)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, data, order := readInitrd(t, out)
	if h := hdrs["init"]; h == nil || !h.Mode.IsRegular() || h.Mode.Perm() != 0o755 || !bytes.Equal(data["init"], initScript) {
		t.Fatalf("init missing or wrong: %+v", h)
	}
	if h := hdrs["dev/console"]; h == nil || h.Mode&cpio.ModeType != cpio.TypeChar {
		t.Fatalf("dev/console is not a character device: %+v", h)
	}
	if h := hdrs["bin/sh"]; h == nil || h.Linkname != "busybox" {
		t.Fatalf("bin/sh is not a link to busybox: %+v", h)
	}
	// Directories come before what they hold.
	seen := map[string]bool{}
	for _, name := range order {
		if d := filepath.Dir(name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", name, d)
		}
		seen[name] = true
	}
	list := loadList(t, data[modulesListPath])
	if len(list) != len(res.Modules) {
		t.Fatalf("list has %d modules, result %d", len(list), len(res.Modules))
	}
	var listed []string
	for _, l := range list {
		listed = append(listed, l[0])
		p := strings.TrimPrefix(l[1], "/")
		if _, ok := hdrs[p]; !ok {
			t.Errorf("module %s listed but not in the archive", p)
		}
		if strings.HasSuffix(p, ".xz") || !strings.HasSuffix(p, ".ko") {
			t.Errorf("module %s should be stored decompressed as .ko", p)
		}
	}
	before(t, listed, "crc32c_intel", "ext4")
	before(t, listed, "virtio", "virtio_blk")
	if got := string(data["lib/modules/6.99.0-test/kernel/arch/x86/crypto/crc32c-intel.ko"]); got != "module kernel/arch/x86/crypto/crc32c-intel.ko.xz" {
		t.Errorf("xz module not decompressed: %q", got)
	}
	ix, _ := LoadModuleIndex(dir)
	checkDependencyOrder(t, ix, res.Modules)
	if !NeedsInitrd(ix) {
		t.Error("a kernel with modular virtio_blk needs an initrd")
	}

	// GNU cpio, when present, must agree that the archive is well-formed.
	if _, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command("sh", "-c", "gzip -dc "+out+" | cpio -it --quiet")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cpio -t: %v\n%s", err, b)
		}
	}
}

func TestBuildInitrdErrors(t *testing.T) {
	dir := fakeModuleTree(t)
	staticBB := filepath.Join(t.TempDir(), "busybox")
	writeFile(t, staticBB, testELF(false, 64))
	out := filepath.Join(t.TempDir(), "initrd.img")
	cases := []struct {
		name string
		spec InitrdSpec
		want string
	}{
		{"no busybox", InitrdSpec{ModulesDir: dir}, "no busybox"},
		{"busybox missing", InitrdSpec{ModulesDir: dir, Busybox: "/nonexistent/busybox"}, "read busybox"},
		{"busybox not ELF", InitrdSpec{ModulesDir: dir, Busybox: filepath.Join(dir, "modules.dep")}, "not an ELF"},
		{"dynamic busybox", InitrdSpec{ModulesDir: dir, Busybox: dynamicBinary(t)}, "dynamically linked"},
		{"required missing", InitrdSpec{ModulesDir: dir, Busybox: staticBB, Required: []string{"ext4", "virtio_scsi"}}, "lack virtio_scsi"},
		{"no depmod", InitrdSpec{ModulesDir: t.TempDir(), Busybox: staticBB}, "run depmod"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := BuildInitrd(tc.spec, out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatal("failed build left an initrd")
			}
		})
	}
}

// dynamicBinary returns a dynamically linked executable from the host.
func dynamicBinary(t *testing.T) string {
	for _, p := range []string{"/bin/sh", "/usr/bin/env", "/bin/ls"} {
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b[:min(len(b), 4096)], []byte("ld-linux")) {
			return p
		}
	}
	t.Skip("no dynamically linked binary found on this host")
	return ""
}

func TestInitScriptSyntax(t *testing.T) {
	for _, sh := range [][]string{{"busybox", "sh"}, {"dash"}, {"sh"}} {
		if _, err := exec.LookPath(sh[0]); err != nil {
			continue
		}
		cmd := exec.Command(sh[0], append(sh[1:], "-n", "/dev/stdin")...)
		cmd.Stdin = bytes.NewReader(initScript)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v -n init.sh: %v\n%s", sh, err, out)
		}
	}
}

func TestInitrdForDebianKernel(t *testing.T) {
	k := realKernel(t)
	needCmd(t, "busybox")
	bb, _ := exec.LookPath("busybox")
	if _, err := readStaticBusybox(bb); err != nil {
		t.Skipf("host busybox is not usable: %v", err)
	}
	ix, err := LoadModuleIndex(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	if !NeedsInitrd(ix) {
		t.Fatal("Debian's kernel has virtio_blk and ext4 as modules and needs an initrd")
	}
	out := filepath.Join(t.TempDir(), "initrd.img")
	start := time.Now()
	res, err := BuildInitrd(InitrdSpec{ModulesDir: k.ModulesDir, Busybox: bb}, out)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(out)
	t.Logf("initrd for %s: %d modules, %d KiB, built in %s; missing: %v", k.Release, len(res.Modules), st.Size()>>10,
		time.Since(start).Round(time.Millisecond), res.Missing)
	checkDependencyOrder(t, ix, res.Modules)
	got := names(res.Modules)
	t.Logf("load order: %s", strings.Join(got, " "))
	for _, m := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "ext4", "jbd2", "mbcache", "crc16",
		"crc32c_generic", "vmw_vsock_virtio_transport", "vsock", "virtio_rng"} {
		if !slices.Contains(got, m) {
			t.Errorf("initrd lacks %s", m)
		}
	}
	before(t, got, "crc32c_generic", "ext4")
	before(t, got, "virtio_ring", "virtio_mmio")
	before(t, got, "vsock", "vmw_vsock_virtio_transport")
	_, data, _ := readInitrd(t, out)
	list := loadList(t, data[modulesListPath])
	for i, l := range list {
		if l[0] != got[i] {
			t.Fatalf("list line %d is %s, want %s", i, l[0], got[i])
		}
	}
}
