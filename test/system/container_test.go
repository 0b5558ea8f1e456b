package systemtest

// The container: a Debian bookworm tree with systemd as PID 1, booted by
// systemd-nspawn in a network namespace the test made, with the devices
// the root helper and the VMM need bound in. The tree is built once by
// debootstrap and cached, keyed by its inputs; each run boots an overlay
// of it, so nothing a run does reaches the cache.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/test/testbin"
)

// The container's recipe. rootfsRecipe is part of the cache key: bump it
// when the steps in buildRootfs change.
const (
	suite        = "bookworm"
	mirror       = "http://deb.debian.org/debian"
	rootfsRecipe = "2"
	// ownerUser is the user banger is installed for; otherUser is a second
	// local user the root helper must refuse.
	ownerUser = "tester"
	otherUser = "other"
)

// rootfsPackages are what the installed system needs beyond minbase:
// systemd as PID 1, the tools the daemon and helper run (nft, dmsetup,
// mkfs.ext4 and friends), and QEMU as the VMM.
var rootfsPackages = []string{
	"dbus", "dmsetup", "e2fsprogs", "iproute2", "nftables",
	"qemu-system-x86", "systemd", "systemd-sysv",
}

// Budgets: systemd in a container reaches multi-user.target in seconds;
// the rest is generous for a loaded 2-core machine.
const (
	bootBudget     = 120 * time.Second
	shutdownBudget = 60 * time.Second
)

// needSystemTier skips unless this machine can run the tier, saying why.
func needSystemTier(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("the system tier boots a systemd container; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("the system tier needs root: it boots a systemd container (systemd-nspawn) and installs banger in it")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"systemd-nspawn", "systemd-container"}, {"debootstrap", "debootstrap"}, {"nsenter", "util-linux"},
		{"ip", "iproute2"}, {"mount", "mount"}, {"apt-get", "apt"}, {"dpkg-deb", "dpkg"}, {"depmod", "kmod"},
		{"mkfs.ext4", "e2fsprogs"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Skipf("the system tier needs %s (apt-get install %s)", tool.bin, tool.pkg)
		}
	}
	if !staticBusybox() {
		t.Skip("the system tier builds the busybox test image, which needs a static busybox (apt-get install busybox-static)")
	}
	for _, dev := range []string{"/dev/net/tun", "/dev/loop-control"} {
		if _, err := os.Stat(dev); err != nil {
			t.Skipf("the system tier binds %s into the container, and this host has none", dev)
		}
	}
	if err := exec.Command("apt-cache", "show", "--no-all-versions", "linux-image-amd64").Run(); err != nil {
		t.Skip("the busybox test image needs Debian's kernel package, and apt knows no linux-image-amd64 here (run apt-get update)")
	}
}

// staticBusybox says whether the busybox on PATH is a static binary, as
// the image build copies it into guests.
func staticBusybox() bool {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return false
	}
	f, err := elf.Open(bb)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// kvmUsable is scripts/smoke.sh's test: the device answers and it is not
// the PVM flavour, which cannot run ordinary guest kernels (docs/qemu.md).
func kvmUsable() bool {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return false
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// cachedRootfs returns the container tree for this recipe, building it
// with debootstrap when the cache has none (about two minutes and 400 MB).
func cachedRootfs(t *testing.T) string {
	t.Helper()
	cache, err := testbin.CacheDir()
	if err != nil {
		t.Skipf("no cache dir for the container tree: %v (set BANGER_TEST_CACHE)", err)
	}
	h := sha256.Sum256([]byte(strings.Join(append([]string{suite, mirror, rootfsRecipe, ownerUser, otherUser}, rootfsPackages...), "\n")))
	dir := filepath.Join(cache, "system", "rootfs-"+suite+"-"+hex.EncodeToString(h[:6]))
	if _, err := os.Stat(filepath.Join(dir, "etc", "banger-test-rootfs")); err == nil {
		return dir
	}
	start := time.Now()
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := buildRootfs(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		t.Fatalf("build the container tree: %v", err)
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("built the container tree in %s (cached in %s)", time.Since(start).Round(time.Second), dir)
	return dir
}

// buildRootfs debootstraps the tree and prepares it: the two users, no
// login prompts, and a marker saying the tree is complete.
func buildRootfs(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	args := []string{"--variant=minbase", "--include=" + strings.Join(rootfsPackages, ","), suite, dir, mirror}
	if out, err := exec.CommandContext(ctx, "debootstrap", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("debootstrap: %w\n%s", err, tail(out, 3000))
	}
	for _, argv := range [][]string{
		{"useradd", "--create-home", "--uid", "1000", "--user-group", "--shell", "/bin/sh", ownerUser},
		{"useradd", "--create-home", "--uid", "1001", "--user-group", "--shell", "/bin/sh", otherUser},
		// Nothing reads a console: the test drives the container with nsenter.
		{"systemctl", "mask", "console-getty.service", "getty@.service", "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer"},
	} {
		if out, err := exec.CommandContext(ctx, "chroot", append([]string{dir}, argv...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "hostname"), []byte("banger-system-test\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "etc", "banger-test-rootfs"), []byte("recipe "+rootfsRecipe+"\n"), 0o644)
}

// container is one booted systemd container.
type container struct {
	t *testing.T
	// name is the machine name, also the network namespace's.
	name string
	// root is the container's file system as the host sees it (the overlay).
	root   string
	nspawn *exec.Cmd
	leader int
	log    string
	done   chan struct{}
}

// bootContainer boots rootfs (through an overlay) in a new network
// namespace, runs prepare on the overlay first, and waits for systemd to
// finish booting. The container, the overlay and the namespace are
// removed when the test ends.
func bootContainer(t *testing.T, rootfs string, prepare func(root string)) *container {
	t.Helper()
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	c := &container{t: t, name: "bgsys-" + hex.EncodeToString(suffix), done: make(chan struct{})}

	run(t, "ip", "netns", "add", c.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", c.name).Run() })
	run(t, "ip", "-n", c.name, "link", "set", "lo", "up")

	work := t.TempDir()
	c.root = filepath.Join(work, "merged")
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", rootfs, filepath.Join(work, "upper"), filepath.Join(work, "work"))
	run(t, "mount", "-t", "overlay", "overlay", "-o", opts, c.root)
	t.Cleanup(func() {
		if err := exec.Command("umount", c.root).Run(); err != nil {
			_ = exec.Command("umount", "-l", c.root).Run()
		}
	})
	prepare(c.root)

	args := []string{
		"--quiet", "--boot", "--directory=" + c.root, "--machine=" + c.name,
		// This host's PID 1 is not systemd: there is no machined to register with.
		"--register=no", "--keep-unit",
		"--network-namespace-path=/run/netns/" + c.name,
		// Unlike --private-network, a namespace path does not grant the
		// container CAP_NET_ADMIN, and the root helper needs it for the
		// bridge, taps and nftables (in the container's namespace only).
		"--capability=CAP_NET_ADMIN",
		"--console=pipe",
		// The root helper's devices: loop-control and the loop devices
		// there are now. The container gets its own /dev/net/tun node from
		// nspawn (see openTun). /dev/mapper/control is left out on
		// purpose: the nodes of devices made after boot (dm-N, new loopN)
		// appear in the host's devtmpfs, not in the container's /dev, so
		// dm-snapshot disks cannot work in here; without the control node
		// the daemon falls back to copied disks on every host alike.
		"--bind=/dev/loop-control",
	}
	loops, _ := filepath.Glob("/dev/loop[0-9]*")
	for _, l := range loops {
		args = append(args, "--bind="+l)
	}
	if kvmUsable() {
		args = append(args, "--bind=/dev/kvm")
	}
	c.log = filepath.Join(work, "console.log")
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.nspawn = exec.Command("systemd-nspawn", args...)
	c.nspawn.Stdout, c.nspawn.Stderr = logf, logf
	c.nspawn.Stdin = nil
	c.nspawn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.nspawn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() {
		_ = c.nspawn.Wait()
		_ = logf.Close()
		close(c.done)
	}()
	t.Cleanup(c.stop)

	deadline := time.Now().Add(bootBudget)
	for c.leader == 0 {
		c.leader = childPID(c.nspawn.Process.Pid)
		if c.leader == 0 {
			c.waitOrFail(deadline, "systemd-nspawn to start the container's init")
		}
	}
	// is-system-running --wait returns once the boot is over: "running",
	// or "degraded" when a unit failed (reported, not fatal: nspawn
	// containers have units that cannot work in them).
	for {
		out, _ := c.execCmd(context.Background(), "", "systemctl", "is-system-running", "--wait").Output()
		state := strings.TrimSpace(string(out))
		if state == "running" {
			break
		}
		if state == "degraded" {
			failed, _ := c.execCmd(context.Background(), "", "systemctl", "--failed", "--no-legend", "--plain").Output()
			t.Logf("the container booted degraded; failed units (not banger's):\n%s", failed)
			break
		}
		c.waitOrFail(deadline, "systemd in the container to finish booting (state "+strconv.Quote(state)+")")
	}
	c.openTun()
	return c
}

// openTun makes the container's /dev/net/tun 0666, as udev does on a
// normal host: the owner's VMM opens it to attach the tap the helper made
// for it (some hosts, this test host among them, have it 0600 with no
// udev). The node is the container's own (nspawn copies it into the
// container's /dev, a tmpfs), so the host's is left alone.
func (c *container) openTun() {
	c.t.Helper()
	if out, err := c.execCmd(context.Background(), "", "sh", "-c",
		"mountpoint -q /dev/net/tun && exit 1; [ -c /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }; chmod 0666 /dev/net/tun").CombinedOutput(); err != nil {
		c.t.Fatalf("make the container's /dev/net/tun usable: %v\n%s", err, out)
	}
}

// waitOrFail sleeps a little, failing the test once deadline has passed or
// the container died.
func (c *container) waitOrFail(deadline time.Time, what string) {
	c.t.Helper()
	select {
	case <-c.done:
		c.t.Fatalf("the container exited while waiting for %s\n%s", what, c.consoleTail())
	case <-time.After(200 * time.Millisecond):
	}
	if time.Now().After(deadline) {
		c.t.Fatalf("timed out after %s waiting for %s\n%s", bootBudget, what, c.consoleTail())
	}
}

// stop powers the container off, and kills nspawn (the process this test
// started) if it does not exit in time. Every process in the container
// dies with its PID namespace.
func (c *container) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.execCmd(context.Background(), "", "systemctl", "poweroff", "--no-block").Run()
	select {
	case <-c.done:
	case <-time.After(shutdownBudget):
		c.t.Logf("the container did not power off within %s; killing systemd-nspawn (pid %d)", shutdownBudget, c.nspawn.Process.Pid)
		_ = c.nspawn.Process.Kill()
		<-c.done
	}
}

func (c *container) consoleTail() string {
	b, _ := os.ReadFile(c.log)
	return "container console tail:\n" + tail(b, 3000)
}

// execCmd runs argv inside the container (all its namespaces), as root
// when user is "", else as that user through runuser, with a login-like
// environment and no sudo anywhere.
func (c *container) execCmd(ctx context.Context, user string, argv ...string) *exec.Cmd {
	args := []string{"-t", strconv.Itoa(c.leader), "-a", "--"}
	if user != "" {
		args = append(args, "runuser", "-u", user, "--", "env", "-i",
			"HOME=/home/"+user, "USER="+user, "LOGNAME="+user, "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8")
	} else {
		args = append(args, "env", "-i", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
	}
	return exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
}

// result is one command's outcome.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, tail([]byte(r.stdout), 4000), tail([]byte(r.stderr), 4000))
}

// run runs argv in the container as user ("" for root) with a guard
// against hangs.
func (c *container) run(user string, argv ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := c.execCmd(ctx, user, argv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	if err != nil && code == 0 {
		code = -1
	}
	return result{out.String(), errb.String(), code}
}

// must runs argv and fails the test unless it exits 0.
func (c *container) must(user string, argv ...string) string {
	c.t.Helper()
	r := c.run(user, argv...)
	if r.code != 0 {
		who := user
		if who == "" {
			who = "root"
		}
		c.t.Fatalf("in the container, as %s: %s: %s%s", who, strings.Join(argv, " "), r, c.journal())
	}
	return r.stdout
}

// journal is the tail of both units' journals, for failure messages.
func (c *container) journal() string {
	out, _ := c.execCmd(context.Background(), "", "journalctl", "--no-pager", "-n", "60", "-u", "bangerd.service", "-u", "banger-root-helper.service").CombinedOutput()
	return "\njournal of banger's units (tail):\n" + string(out)
}

// childPID is the first child of pid (nspawn's child is the container's
// init), or 0 when it has none yet.
func childPID(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(field); err == nil {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n))
				if strings.TrimSpace(string(comm)) == "systemd" {
					return n
				}
			}
		}
	}
	return 0
}

// run runs a host command and fails the test on error.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
