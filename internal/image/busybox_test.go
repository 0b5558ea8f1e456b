package image

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

// staticBusybox returns the host's static busybox or skips.
func staticBusybox(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static")
	}
	if _, err := readStaticBusybox(p); err != nil {
		t.Skipf("needs busybox-static: %v", err)
	}
	return p
}

func TestBusyboxInitSyntax(t *testing.T) {
	bb := staticBusybox(t)
	p := filepath.Join(t.TempDir(), "init")
	writeFile(t, p, busyboxInit)
	if out, err := exec.Command(bb, "sh", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("sh -n /sbin/init: %v\n%s", err, out)
	}
	// Every applet the init uses must exist in the busybox it runs on.
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	for _, a := range []string{"mount", "umount", "grep", "mkdir", "ln", "hostname", "ip", "cat", "usleep",
		"head", "kill", "sync", "poweroff", "reboot", "cut"} {
		if !have[a] {
			t.Errorf("the init uses %s, which this busybox lacks", a)
		}
	}
}

func TestBusyboxTree(t *testing.T) {
	bb := staticBusybox(t)
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("#!/bin/sh\n"))
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := BusyboxTree(context.Background(), system.ExecRunner{}, dir, bb, agent); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"bin/sh", "bin/mount", "sbin/poweroff", "usr/bin/wget"} {
		target, err := os.Readlink(filepath.Join(dir, l))
		if err != nil || target != "/bin/busybox" {
			t.Errorf("%s -> %q, %v; want a link to /bin/busybox", l, target, err)
		}
	}
	init, err := os.ReadFile(filepath.Join(dir, "sbin", "init"))
	if err != nil || string(init) != string(busyboxInit) {
		t.Errorf("/sbin/init is not banger's script (%v)", err)
	}
	if st, err := os.Lstat(filepath.Join(dir, "usr/local/bin/banger-vsock-agent")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("agent: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || st.Mode()&fs.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("/tmp mode: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/passwd")); !strings.HasPrefix(string(b), "root:x:0:0:") {
		t.Errorf("/etc/passwd: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "linuxrc")); err == nil {
		t.Error("linuxrc applet linked into the rootfs")
	}
	if err := BusyboxTree(context.Background(), system.ExecRunner{}, dir, bb, agent); err == nil {
		t.Error("BusyboxTree overwrote an existing tree")
	}
}

func TestBuildBusyboxRejectsBadInputs(t *testing.T) {
	bb := staticBusybox(t)
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("x"))
	dynamic := filepath.Join(t.TempDir(), "busybox")
	writeFile(t, dynamic, []byte("not an ELF"))
	b := &Builder{Runner: &systemtest.Runner{}}
	for name, spec := range map[string]BusyboxSpec{
		"missing agent":   {Busybox: bb, AgentBinary: "/nonexistent/agent"},
		"bad busybox":     {Busybox: dynamic, AgentBinary: agent},
		"missing kernel":  {Busybox: bb, AgentBinary: agent, Kernel: "/nonexistent/vmlinux"},
		"bad kernel name": {Busybox: bb, AgentBinary: agent, KernelPackage: "linux image"},
	} {
		spec.OutDir, spec.WorkDir = t.TempDir(), filepath.Join(t.TempDir(), "work")
		if _, err := b.BuildBusybox(context.Background(), spec, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := os.Stat(spec.WorkDir); err == nil {
			t.Errorf("%s: work dir created before validation", name)
		}
	}
}

// TestBuildBusyboxForReal builds the busybox image from Debian's kernel
// twice: the second build takes the vmlinux and initrd from the cache.
func TestBuildBusyboxForReal(t *testing.T) {
	bb := staticBusybox(t)
	needCmd(t, "mkfs.ext4", "e2fsck", "debugfs")
	kern := realKernel(t) // skips without root or apt; shares the cache below
	agent := buildAgent(t)
	cache := testCacheDir(t)
	b := &Builder{Runner: system.ExecRunner{}, CacheDir: cache}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	build := func() BuildResult {
		t.Helper()
		out := t.TempDir()
		work := filepath.Join(t.TempDir(), "work")
		res, err := b.BuildBusybox(ctx, BusyboxSpec{OutDir: out, WorkDir: work, Busybox: bb, AgentBinary: agent}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(work); !os.IsNotExist(err) {
			t.Errorf("work dir %s left behind", work)
		}
		for _, s := range res.Recipe.StageDurations {
			t.Logf("stage %-7s %5.2fs", s.Name, s.Seconds)
		}
		return res
	}
	first := build()
	entries, _ := filepath.Glob(filepath.Join(cache, "boot", kern.Package+"_"+kern.Version+"-*", "boot.json"))
	if len(entries) == 0 {
		t.Fatal("no boot cache entry after a build")
	}
	before := map[string]time.Time{}
	for _, e := range entries {
		st, _ := os.Stat(filepath.Join(filepath.Dir(e), KernelFile))
		before[e] = st.ModTime()
	}
	second := build()
	for _, e := range entries {
		if st, _ := os.Stat(filepath.Join(filepath.Dir(e), KernelFile)); !st.ModTime().Equal(before[e]) {
			t.Errorf("boot cache entry %s rebuilt", filepath.Dir(e))
		}
	}

	res := second
	if first.Recipe.KernelVersion != res.Recipe.KernelVersion || res.Recipe.From != FromBusybox || res.Recipe.User != "root" ||
		!strings.HasPrefix(res.Recipe.Busybox, "BusyBox v") {
		t.Errorf("recipe: %s", res.Recipe.JSON())
	}
	var recipe map[string]any
	_ = json.Unmarshal(res.Recipe.JSON(), &recipe)
	if recipe["from"] != "busybox" {
		t.Errorf("recipe JSON: %s", res.Recipe.JSON())
	}
	if info, err := InspectKernel(res.Kernel); err != nil || info.Format != FormatELF || !info.PVH {
		t.Errorf("kernel: %+v, %v", info, err)
	}
	_, data, _ := readInitrd(t, res.Initrd)
	for _, m := range []string{"ext4 ", "virtio_console ", "button ", "evdev "} {
		if !strings.Contains(string(data[modulesListPath]), m) {
			t.Errorf("initrd does not load %s", m)
		}
	}
	if res.RootfsBytes != DefaultBusyboxRootfsSize {
		t.Errorf("rootfs is %d bytes, want %d", res.RootfsBytes, DefaultBusyboxRootfsSize)
	}
	if out, err := exec.Command("e2fsck", "-fn", res.Rootfs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	for p, want := range map[string]string{
		"/sbin/init":                        "Type: regular",
		"/bin/busybox":                      "Type: regular",
		"/bin/sh":                           "Type: symlink",
		"/usr/local/bin/banger-vsock-agent": "Mode:  0755",
		"/tmp":                              "Mode:  01777",
	} {
		s, err := debugfs(t, res.Rootfs, "stat "+p)
		if err != nil || !strings.Contains(s, want) {
			t.Errorf("%s: want %q: %v\n%s", p, want, err, s)
		}
	}
}
