package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// TestMicroVMConfigHasWhatBangerGuestsNeed pins the choices docs/kernel.md
// explains: the drivers both VMMs' devices need, built in, and no modules
// or initrd to need them from.
func TestMicroVMConfigHasWhatBangerGuestsNeed(t *testing.T) {
	cfg, err := LoadKernelConfig(MicroVMConfig)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range ParseKernelConfig(cfg.Fragment) {
		got[s.Symbol] = s.Value
	}
	for sym, want := range map[string]string{
		"CONFIG_64BIT": "y", "CONFIG_PVH": "y", "CONFIG_ACPI": "y", "CONFIG_VIRTIO_MMIO": "y",
		"CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y", "CONFIG_VIRTIO_BLK": "y", "CONFIG_VIRTIO_NET": "y",
		"CONFIG_VIRTIO_VSOCKETS": "y", "CONFIG_VIRTIO_CONSOLE": "y", "CONFIG_HW_RANDOM_VIRTIO": "y",
		"CONFIG_EXT4_FS": "y", "CONFIG_BLOCK": "y", "CONFIG_DEVTMPFS_MOUNT": "y", "CONFIG_TMPFS": "y",
		"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_UNIX98_PTYS": "y", "CONFIG_CGROUPS": "y",
		"CONFIG_FHANDLE": "y", "CONFIG_INOTIFY_USER": "y", "CONFIG_SECCOMP_FILTER": "y",
		"CONFIG_ACPI_BUTTON": "y", "CONFIG_INPUT_EVDEV": "y",
		"CONFIG_MODULES": "n", "CONFIG_BLK_DEV_INITRD": "n",
	} {
		if got[sym] != want {
			t.Errorf("%s = %q in the microvm fragment, want %q", sym, got[sym], want)
		}
	}
	for sym, v := range got {
		if v == "m" {
			t.Errorf("%s=m: the microvm kernel has no modules", sym)
		}
	}
}

func TestLoadKernelConfigNamesTheChoices(t *testing.T) {
	_, err := LoadKernelConfig("huge")
	if err == nil || !strings.Contains(err.Error(), `"huge"`) || !strings.Contains(err.Error(), MicroVMConfig) {
		t.Fatalf("LoadKernelConfig(huge) = %v, want an error naming it and the choices", err)
	}
}

func TestParseKernelConfig(t *testing.T) {
	got := ParseKernelConfig([]byte(`# a comment
CONFIG_A=y
# CONFIG_B is not set
CONFIG_C="two words"

  CONFIG_A=n
not a setting
`))
	want := []ConfigSetting{{"CONFIG_A", "n"}, {"CONFIG_B", "n"}, {"CONFIG_C", `"two words"`}}
	if !slices.Equal(got, want) {
		t.Fatalf("ParseKernelConfig = %v, want %v (later lines win, in first-seen order)", got, want)
	}
}

func TestCheckKernelConfigReportsWhatDidNotHold(t *testing.T) {
	fragment := []byte("CONFIG_BLOCK=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_MODULES is not set\nCONFIG_LOCALVERSION=\"-x\"\n# CONFIG_GONE is not set\n")
	dotConfig := []byte("CONFIG_BLOCK=y\n# CONFIG_VIRTIO_BLK is not set\nCONFIG_MODULES=y\nCONFIG_LOCALVERSION=\"-x\"\n")
	got := CheckKernelConfig(fragment, dotConfig)
	want := []string{"CONFIG_VIRTIO_BLK=y (got n)", "CONFIG_MODULES=n (got y)"}
	if !slices.Equal(got, want) {
		t.Fatalf("CheckKernelConfig = %q, want %q", got, want)
	}
	if bad := CheckKernelConfig(fragment, append(dotConfig, "CONFIG_VIRTIO_BLK=y\n# CONFIG_MODULES is not set\n"...)); len(bad) != 0 {
		t.Fatalf("a configuration that holds reported %q", bad)
	}
}

func TestKernelBuildKeyFollowsEveryInput(t *testing.T) {
	src := KernelSource{Tarball: "/usr/src/linux-source-6.1.tar.xz", Package: "linux-source-6.1", Version: "6.1.192-3"}
	cfg := KernelConfig{Name: "microvm", Fragment: []byte("CONFIG_A=y\n")}
	base := KernelBuildKey(src, cfg)
	if KernelBuildKey(src, cfg) != base {
		t.Fatal("the key is not a function of its inputs")
	}
	moved := src
	moved.Tarball = "/elsewhere/linux-source-6.1.tar.xz"
	if KernelBuildKey(moved, cfg) != base {
		t.Error("the key depends on where the tarball is, not what it is")
	}
	for name, k := range map[string]string{
		"source version": KernelBuildKey(KernelSource{Package: src.Package, Version: "6.1.193-1"}, cfg),
		"source package": KernelBuildKey(KernelSource{Package: "linux-source-6.12", Version: src.Version}, cfg),
		"fragment":       KernelBuildKey(src, KernelConfig{Name: "microvm", Fragment: []byte("CONFIG_A=n\n")}),
		"config name":    KernelBuildKey(src, KernelConfig{Name: "other", Fragment: cfg.Fragment}),
	} {
		if k == base {
			t.Errorf("changing the %s keeps the key %s", name, base)
		}
	}
}

func TestFindKernelSource(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"linux-source-5.10.tar.xz", "linux-source-6.1.tar.xz", "linux-source-6.1.tar.xz.sig", "linux-config-6.1"} {
		writeFile(t, filepath.Join(dir, n), []byte("tarball "+n))
	}
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		switch {
		case slices.Contains(c.Args, "-S"):
			return system.Output{Stdout: []byte("linux-source-6.1: " + c.Args[len(c.Args)-1] + "\n")}, nil
		case slices.Contains(c.Args, "-W"):
			return system.Output{Stdout: []byte("6.1.192-3")}, nil
		}
		return system.Output{ExitCode: 1}, nil
	}}
	src, err := FindKernelSource(context.Background(), r, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := KernelSource{Tarball: filepath.Join(dir, "linux-source-6.1.tar.xz"), Package: "linux-source-6.1", Version: "6.1.192-3"}
	if src != want {
		t.Fatalf("FindKernelSource = %+v, want %+v", src, want)
	}

	// Outside a package, the content names the version.
	notOwned := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return system.Output{ExitCode: 1, Stderr: []byte("no path found")}, nil
	}}
	src, err = FindKernelSource(context.Background(), notOwned, dir)
	if err != nil || src.Package != "" || !strings.HasPrefix(src.Version, "sha256-") {
		t.Fatalf("FindKernelSource without dpkg = %+v, %v; want a sha256- version", src, err)
	}
	writeFile(t, src.Tarball, []byte("other content"))
	again, _ := FindKernelSource(context.Background(), notOwned, dir)
	if again.Version == src.Version {
		t.Error("different tarball content kept the version")
	}

	if _, err := FindKernelSource(context.Background(), r, t.TempDir()); !errors.Is(err, ErrNoKernelSource) {
		t.Fatalf("an empty /usr/src gave %v, want ErrNoKernelSource", err)
	}
}

// fakeKbuild stands in for tar and make: tar makes the source tree, make
// allnoconfig writes .config from the fragment (minus drop, as Kconfig
// drops a symbol whose dependencies are missing), make vmlinux prints
// step lines and writes vmlinux and the release.
type fakeKbuild struct {
	drop    string
	vmlinux []byte
	steps   int
}

func (f *fakeKbuild) reply(c system.Command) (system.Output, error) {
	arg := func(prefix string) string {
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, prefix); ok {
				return v
			}
		}
		return ""
	}
	switch c.Path {
	case "tar":
		return system.Output{}, os.MkdirAll(filepath.Join(arg("-C"), "x"), 0o755)
	case "make":
	default:
		return system.Output{ExitCode: 127}, nil
	}
	out := arg("O=")
	if err := os.MkdirAll(filepath.Join(out, "include", "config"), 0o755); err != nil {
		return system.Output{}, err
	}
	switch c.Args[len(c.Args)-1] {
	case "allnoconfig":
		frag, err := os.ReadFile(arg("KCONFIG_ALLCONFIG="))
		if err != nil {
			return system.Output{}, err
		}
		var kept []string
		for _, l := range strings.Split(string(frag), "\n") {
			if f.drop == "" || !strings.HasPrefix(l, f.drop+"=") {
				kept = append(kept, l)
			}
		}
		return system.Output{}, os.WriteFile(filepath.Join(out, ".config"), []byte(strings.Join(kept, "\n")), 0o644)
	case "vmlinux":
		for i := 0; i < f.steps; i++ {
			fmt.Fprintf(c.Stream, "  CC      kernel/file%d.o\n", i)
		}
		fmt.Fprintf(c.Stream, "  LD      vmlinux\n")
		if err := os.WriteFile(filepath.Join(out, "include", "config", "kernel.release"), []byte("6.1.192-banger-microvm\n"), 0o644); err != nil {
			return system.Output{}, err
		}
		return system.Output{}, os.WriteFile(filepath.Join(out, "vmlinux"), f.vmlinux, 0o644)
	}
	return system.Output{}, nil
}

var testKernelSource = KernelSource{Tarball: "/usr/src/linux-source-6.1.tar.xz", Package: "linux-source-6.1", Version: "6.1.192-3"}

func TestKernelBuilderBuildsOnceThenUsesTheCache(t *testing.T) {
	cfg, err := LoadKernelConfig(MicroVMConfig)
	if err != nil {
		t.Fatal(err)
	}
	kb := &fakeKbuild{vmlinux: testELF(true, 4096), steps: 2*makeProgressEvery + 10}
	r := &systemtest.Runner{Reply: kb.reply}
	cache := t.TempDir()
	clock := time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC)
	b := KernelBuilder{Runner: r, CacheDir: cache, Jobs: 3, Now: func() time.Time { clock = clock.Add(time.Minute); return clock }}
	var progress []string
	k, err := b.Build(context.Background(), testKernelSource, cfg, func(stage, msg string) { progress = append(progress, stage+": "+msg) })
	if err != nil {
		t.Fatal(err)
	}

	cmds := r.Commands()
	if len(cmds) != 4 || cmds[0].Path != "tar" {
		t.Fatalf("commands = %q, want tar and three makes", r.Lines())
	}
	compile := cmds[3]
	if !slices.Contains(compile.Args, "-j3") || compile.Args[len(compile.Args)-1] != "vmlinux" {
		t.Errorf("compile = %s, want make -j3 ... vmlinux", compile)
	}
	src, out := "", ""
	for _, a := range compile.Args {
		if v, ok := strings.CutPrefix(a, "O="); ok {
			out = v
		}
	}
	src = compile.Args[slices.Index(compile.Args, "-C")+1]
	if filepath.Dir(out) != src {
		t.Errorf("build dir %s is not right under the source %s: Kbuild would record absolute temporary paths", out, src)
	}
	for _, env := range []string{"KBUILD_BUILD_TIMESTAMP=1970-01-01 00:00:00 UTC", "KBUILD_BUILD_USER=banger", "KBUILD_BUILD_HOST=banger"} {
		if !slices.Contains(compile.Env, env) {
			t.Errorf("compile env %q lacks %s: the kernel would record the machine and the clock", compile.Env, env)
		}
	}

	// make's thousands of lines come out as a handful of reports.
	var compileReports []string
	for _, p := range progress {
		if strings.HasPrefix(p, "compile: ") {
			compileReports = append(compileReports, p)
		}
	}
	wantReports := []string{
		"compile: make -j3 vmlinux (several minutes)",
		"compile: 250 steps done (CC kernel/file249.o)",
		"compile: 500 steps done (CC kernel/file499.o)",
		"compile: 511 steps done; linking vmlinux",
	}
	if !slices.Equal(compileReports, wantReports) {
		t.Errorf("compile progress = %q, want %q", compileReports, wantReports)
	}

	if k.Cached || k.Release != "6.1.192-banger-microvm" || k.Key != KernelBuildKey(testKernelSource, cfg) || k.ConfigHash != cfg.Hash() {
		t.Errorf("built kernel = %+v", k)
	}
	if data, err := os.ReadFile(k.Vmlinux); err != nil || string(data) != string(kb.vmlinux) {
		t.Fatalf("cached vmlinux: %v", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(cache, builtKernelsDir, ".build-*")); len(leftovers) != 0 {
		t.Errorf("the build left %v behind", leftovers)
	}

	again, err := b.Build(context.Background(), testKernelSource, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Commands()) != 4 || !again.Cached || again.Vmlinux != k.Vmlinux {
		t.Fatalf("second build ran %q and gave %+v; want the cached kernel and no commands", r.Lines()[4:], again)
	}

	// Another source version is another kernel.
	newer := testKernelSource
	newer.Version = "6.1.193-1"
	if k2, err := b.Build(context.Background(), newer, cfg, nil); err != nil || k2.Cached || k2.Vmlinux == k.Vmlinux {
		t.Fatalf("a new source version gave %+v, %v; want a fresh build", k2, err)
	}
}

func TestKernelBuilderRefusesAConfigurationThatDidNotHold(t *testing.T) {
	cfg := KernelConfig{Name: "microvm", Fragment: []byte("CONFIG_BLOCK=y\nCONFIG_VIRTIO_BLK=y\n")}
	kb := &fakeKbuild{vmlinux: testELF(true, 64), drop: "CONFIG_VIRTIO_BLK"}
	r := &systemtest.Runner{Reply: kb.reply}
	cache := t.TempDir()
	_, err := KernelBuilder{Runner: r, CacheDir: cache}.Build(context.Background(), testKernelSource, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "CONFIG_VIRTIO_BLK=y (got n)") {
		t.Fatalf("Build = %v, want the dropped symbol named", err)
	}
	if len(r.Commands()) != 3 {
		t.Errorf("commands = %q: the compile must not start", r.Lines())
	}
	if entries, _ := os.ReadDir(filepath.Join(cache, builtKernelsDir)); len(entries) != 0 {
		t.Errorf("a failed build left %v in the cache", entries)
	}
}

func TestKernelBuilderRefusesAKernelWithoutPVH(t *testing.T) {
	cfg := KernelConfig{Name: "microvm", Fragment: []byte("CONFIG_BLOCK=y\n")}
	r := &systemtest.Runner{Reply: (&fakeKbuild{vmlinux: testELF(false, 64)}).reply}
	_, err := KernelBuilder{Runner: r, CacheDir: t.TempDir()}.Build(context.Background(), testKernelSource, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "PVH") {
		t.Fatalf("Build = %v, want a refusal naming PVH", err)
	}
}

func TestFindBuiltKernelPrefersTheCurrentConfiguration(t *testing.T) {
	cache := t.TempDir()
	cfg := KernelConfig{Name: "microvm", Fragment: []byte("CONFIG_NEW=y\n")}
	if _, err := FindBuiltKernel(cache, cfg); !errors.Is(err, ErrNoBuiltKernel) {
		t.Fatalf("empty cache: %v, want ErrNoBuiltKernel", err)
	}
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	entry := func(name, hash string, age int, vmlinux bool) string {
		dir := filepath.Join(cache, builtKernelsDir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeBuiltKernel(dir, BuiltKernel{Config: "microvm", ConfigHash: hash, BuiltAt: day.AddDate(0, 0, -age)}); err != nil {
			t.Fatal(err)
		}
		if vmlinux {
			writeFile(t, filepath.Join(dir, KernelFile), testELF(true, 16))
		}
		return dir
	}
	oldest := entry("microvm_6.1.190-1-aaaa", "oldhash", 9, true)
	if k, err := FindBuiltKernel(cache, cfg); err != nil || k.Dir != oldest {
		t.Fatalf("only an old-configuration kernel: %+v, %v; want it used", k, err)
	}
	current := entry("microvm_6.1.191-1-bbbb", cfg.Hash(), 5, true)
	entry("microvm_6.1.192-1-cccc", "oldhash", 1, true)   // newer, but not the current config
	entry("microvm_6.1.193-1-dddd", cfg.Hash(), 0, false) // newest, but incomplete
	entry("other_6.1.193-1-eeee", cfg.Hash(), 0, true)    // another configuration
	if k, err := FindBuiltKernel(cache, cfg); err != nil || k.Dir != current || k.Vmlinux != filepath.Join(current, KernelFile) {
		t.Fatalf("FindBuiltKernel = %+v, %v; want %s", k, err, current)
	}
}
