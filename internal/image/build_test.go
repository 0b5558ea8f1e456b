package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
	imagescripts "github.com/banger-dev/banger/scripts/image"
)

// buildAgent compiles the real guest agent, static, for the image.
func buildAgent(t *testing.T) string {
	t.Helper()
	// The go that runs this test, not necessarily the first on PATH.
	goBin := "go"
	if root, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if p := filepath.Join(strings.TrimSpace(string(root)), "bin", "go"); regularFile("go", p) == nil {
			goBin = p
		}
	}
	needCmd(t, goBin)
	out := filepath.Join(t.TempDir(), "banger-vsock-agent")
	cmd := exec.Command(goBin, "build", "-o", out, "../../cmd/banger-vsock-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	return out
}

// debugfs runs one debugfs request against an image without mounting it.
func debugfs(t *testing.T, img, request string) (string, error) {
	t.Helper()
	cmd := exec.Command("debugfs", "-R", request, img)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if strings.Contains(stderr.String(), "not found") {
		return "", fmt.Errorf("%s: %s", request, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), err
}

func TestBuildImageForReal(t *testing.T) {
	if testing.Short() {
		t.Skip("the real debootstrap build takes one to two minutes; skipped with -short")
	}
	needRoot(t)
	needCmd(t, "debootstrap", "chroot", "mkfs.ext4", "e2fsck", "debugfs")
	mirror, suite := "http://deb.debian.org/debian", "bookworm"
	if m := os.Getenv("BANGER_TEST_MIRROR"); m != "" {
		mirror = m
	}
	mirrorReachable(t, mirror, suite)
	kern := realKernel(t) // shares the builder's kernel cache below
	agent := buildAgent(t)
	hook := filepath.Join(t.TempDir(), "my hook.sh")
	writeFile(t, hook, []byte("#!/bin/sh\nset -e\ntest -r /proc/self/status\necho hook-ran-as-$(id -u) > /etc/banger-hook-ran\n"))

	out := t.TempDir()
	work := filepath.Join(t.TempDir(), "work")
	b := &Builder{Runner: system.ExecRunner{}, CacheDir: testCacheDir(t), Geteuid: os.Geteuid}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var stages []string
	start := time.Now()
	res, err := b.Build(ctx, BuildSpec{OutDir: out, WorkDir: work, Rootfs: RootfsSpec{
		Mirror: mirror, Suite: suite, User: "dev", UID: 1000, AgentBinary: agent,
		Scripts: []string{hook}, Timezone: "Europe/Berlin",
	}}, func(stage, msg string) {
		stages = append(stages, stage)
		t.Logf("%6.1fs %-9s %s", time.Since(start).Seconds(), stage, msg)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Recipe.StageDurations {
		t.Logf("stage %-11s %6.1fs", s.Name, s.Seconds)
	}
	t.Logf("total %.1fs, rootfs %d MiB (sparse file), initrd modules %v", res.Recipe.BuildSeconds, res.RootfsBytes>>20, res.Recipe.InitrdModules)
	for _, s := range []string{"kernel", "rootfs", "customize", "modules", "initrd", "ext4"} {
		if !slices.Contains(stages, s) {
			t.Errorf("no progress for stage %s", s)
		}
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("work dir %s left behind", work)
	}
	if keep := os.Getenv("BANGER_TEST_KEEP_IMAGE"); keep != "" {
		// For booting the result by hand.
		_ = os.MkdirAll(keep, 0o755)
		for _, f := range []string{res.Kernel, res.Initrd, res.Rootfs} {
			_ = exec.Command("cp", "--sparse=always", f, keep).Run()
		}
	}

	if info, err := InspectKernel(res.Kernel); err != nil || info.Format != FormatELF || !info.PVH {
		t.Errorf("kernel: %+v, %v", info, err)
	}
	if res.Initrd == "" {
		t.Fatal("no initrd for Debian's modular kernel")
	}
	_, data, _ := readInitrd(t, res.Initrd)
	if !strings.Contains(string(data[modulesListPath]), "ext4 ") {
		t.Error("initrd does not load ext4")
	}

	if b, err := exec.Command("e2fsck", "-fn", res.Rootfs).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, b)
	}
	mustStat := func(p, wantType string) string {
		t.Helper()
		s, err := debugfs(t, res.Rootfs, "stat "+p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return ""
		}
		if !strings.Contains(s, "Type: "+wantType) {
			t.Errorf("%s is not a %s:\n%s", p, wantType, s)
		}
		return s
	}
	mustCat := func(p string) string {
		t.Helper()
		s, err := debugfs(t, res.Rootfs, "cat "+p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
		return s
	}
	if s := mustStat("/usr/local/bin/banger-vsock-agent", "regular"); !strings.Contains(s, "Mode:  0755") {
		t.Errorf("agent is not 0755:\n%s", s)
	}
	unit, _ := imagescripts.FS.ReadFile("banger-vsock-agent.service")
	if got := mustCat("/etc/systemd/system/banger-vsock-agent.service"); got != string(unit) {
		t.Errorf("agent unit differs from scripts/image:\n%s", got)
	}
	mustStat("/etc/systemd/system/sysinit.target.wants/banger-vsock-agent.service", "symlink")
	mustStat("/etc/systemd/system/ssh.service.wants/banger-ssh-hostkeys.service", "symlink")
	mustStat("/usr/sbin/sshd", "regular")
	mustStat("/usr/lib/systemd/systemd", "regular")
	mustStat("/usr/sbin/init", "symlink")
	mustStat("/home/dev/.ssh", "directory")
	if s := mustCat("/etc/passwd"); !strings.Contains(s, "\ndev:x:1000:1000:") {
		t.Errorf("no user dev with uid 1000 in /etc/passwd")
	}
	if s := mustCat("/etc/sudoers.d/90-banger-dev"); !strings.Contains(s, "dev ALL=(ALL:ALL) NOPASSWD: ALL") {
		t.Errorf("sudoers: %q", s)
	}
	if s := mustCat("/etc/timezone"); strings.TrimSpace(s) != "Europe/Berlin" {
		t.Errorf("timezone %q", s)
	}
	if s := mustCat("/etc/banger-hook-ran"); strings.TrimSpace(s) != "hook-ran-as-0" {
		t.Errorf("hook output %q", s)
	}
	mustStat("/usr/lib/modules/"+kern.Release+"/modules.dep", "regular")
	mustStat("/usr/lib/modules/"+kern.Release+"/kernel/fs/ext4/ext4.ko", "regular")
	for _, gone := range []string{"/etc/ssh/ssh_host_ed25519_key", "/" + setupDir, "/proc/self"} {
		if _, err := debugfs(t, res.Rootfs, "stat "+gone); err == nil {
			t.Errorf("%s should not be in the image", gone)
		}
	}
}

func TestBuildNeedsRoot(t *testing.T) {
	b := &Builder{Runner: &systemtest.Runner{}, Geteuid: func() int { return 1000 }}
	_, err := b.Build(context.Background(), BuildSpec{OutDir: t.TempDir(), WorkDir: t.TempDir()}, nil)
	if !errors.Is(err, ErrNeedsRoot) {
		t.Fatalf("err = %v, want ErrNeedsRoot", err)
	}
}

func TestBuildRejectsBadSpecsBeforeWork(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("x"))
	good := RootfsSpec{Mirror: "http://deb.debian.org/debian", Suite: "bookworm", User: "dev", AgentBinary: agent}
	cases := []struct {
		name   string
		mutate func(*BuildSpec)
		want   string
	}{
		{"mirror", func(s *BuildSpec) { s.Rootfs.Mirror = "ftp://x" }, "must be an http"},
		{"suite", func(s *BuildSpec) { s.Rootfs.Suite = "Bookworm;" }, "not a Debian suite"},
		{"user", func(s *BuildSpec) { s.Rootfs.User = "Bad User" }, "not a valid Linux user name"},
		{"package", func(s *BuildSpec) { s.Rootfs.Packages = []string{"vim", "--force"} }, "not a Debian package name"},
		{"agent", func(s *BuildSpec) { s.Rootfs.AgentBinary = "/nonexistent/agent" }, "agent binary /nonexistent/agent does not exist"},
		{"script", func(s *BuildSpec) { s.Rootfs.Scripts = []string{"/nonexistent.sh"} }, "script /nonexistent.sh does not exist"},
		{"timezone", func(s *BuildSpec) { s.Rootfs.Timezone = "../../etc/passwd" }, "not a zoneinfo name"},
		{"kernel", func(s *BuildSpec) { s.Kernel = "/nonexistent/vmlinuz" }, "kernel /nonexistent/vmlinuz does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &systemtest.Runner{}
			work := filepath.Join(t.TempDir(), "work")
			spec := BuildSpec{OutDir: t.TempDir(), WorkDir: work, Rootfs: good}
			tc.mutate(&spec)
			_, err := (&Builder{Runner: r, Geteuid: func() int { return 0 }}).Build(context.Background(), spec, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if len(r.Lines()) > 0 {
				t.Errorf("ran %v before validating", r.Lines())
			}
			if _, err := os.Stat(work); !os.IsNotExist(err) {
				t.Error("work dir created for a bad spec")
			}
		})
	}
}

// TestBuildFailureCleansWorkDir fails debootstrap (fake runner) and checks
// the work dir is gone.
func TestBuildFailureCleansWorkDir(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("x"))
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	writeFile(t, vmlinux, testELF(true, 1024))
	work := filepath.Join(t.TempDir(), "work")
	r := &systemtest.Runner{Reply: func(c system.Command) (system.Output, error) {
		if c.Path == "debootstrap" {
			if err := os.MkdirAll(filepath.Join(c.Args[len(c.Args)-2], "debootstrap"), 0o755); err != nil {
				return system.Output{}, err
			}
			return systemtest.Exit(1, "E: Couldn't download packages")
		}
		return system.Output{}, nil
	}}
	b := &Builder{Runner: r, Geteuid: func() int { return 0 }}
	_, err := b.Build(context.Background(), BuildSpec{OutDir: t.TempDir(), WorkDir: work, Kernel: vmlinux,
		Rootfs: RootfsSpec{Mirror: "http://deb.debian.org/debian", Suite: "bookworm", User: "root", AgentBinary: agent}}, nil)
	if err == nil || !strings.Contains(err.Error(), "Couldn't download packages") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Error("failed build left its work dir")
	}
}

func TestRemoveTreeRefusesWhileMounted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "work dir")
	writeFile(t, filepath.Join(dir, "rootfs", "dev", "null"), nil)
	mountinfo := filepath.Join(t.TempDir(), "mountinfo")
	esc := strings.ReplaceAll(dir, " ", `\040`)
	writeFile(t, mountinfo, []byte("22 1 0:21 / /proc rw - proc proc rw\n"+
		"99 22 0:5 / "+esc+"/rootfs/dev rw,nosuid - devtmpfs udev rw\n"))
	err := RemoveTree(dir, mountinfo)
	if err == nil || !strings.Contains(err.Error(), "still mounted") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs", "dev", "null")); err != nil {
		t.Fatal("RemoveTree deleted files under a mount")
	}
	writeFile(t, mountinfo, []byte("22 1 0:21 / /proc rw - proc proc rw\n"))
	if err := RemoveTree(dir, mountinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("dir not removed")
	}
}

func TestCustomizeScriptSyntax(t *testing.T) {
	data, err := imagescripts.FS.ReadFile("customize.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range []string{"dash", "sh", "bash"} {
		if _, err := exec.LookPath(sh); err != nil {
			continue
		}
		cmd := exec.Command(sh, "-n", "/dev/stdin")
		cmd.Stdin = strings.NewReader(string(data))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s -n customize.sh: %v\n%s", sh, err, out)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		dir := t.TempDir()
		for _, u := range []string{"banger-vsock-agent.service", "banger-ssh-hostkeys.service"} {
			b, _ := imagescripts.FS.ReadFile(u)
			writeFile(t, filepath.Join(dir, u), b)
		}
		// verify checks that ExecStart binaries exist; only syntax matters
		// here, so complaints about missing executables are tolerated.
		out, _ := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "banger-vsock-agent.service")).CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "banger-vsock-agent.service") && !strings.Contains(line, "No such file") &&
				!strings.Contains(line, "is not executable") && !strings.Contains(line, "Command") && strings.TrimSpace(line) != "" {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
}

// TestBuildStopsAtTheNextStageOnceCancelled: a build cancelled while a
// stage runs starts no further stage, and its work dir is gone.
func TestBuildStopsAtTheNextStageOnceCancelled(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	writeFile(t, agent, []byte("x"))
	vmlinux := filepath.Join(t.TempDir(), "vmlinux")
	writeFile(t, vmlinux, testELF(true, 1024))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// debootstrap "succeeds" while the user gives up.
	r := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		cancel()
		return system.Output{}, nil
	}}
	work := filepath.Join(t.TempDir(), "work")
	b := &Builder{Runner: r, Geteuid: func() int { return 0 }}
	res, err := b.Build(ctx, BuildSpec{OutDir: t.TempDir(), WorkDir: work, Kernel: vmlinux,
		Rootfs: RootfsSpec{Mirror: "http://deb.debian.org/debian", Suite: "bookworm", User: "root", AgentBinary: agent}}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build = %+v, %v; want context.Canceled", res, err)
	}
	if got := r.Lines(); len(got) != 1 || !strings.HasPrefix(got[0], "debootstrap ") {
		t.Errorf("ran %q, want only debootstrap", got)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Error("cancelled build left its work dir")
	}
}
