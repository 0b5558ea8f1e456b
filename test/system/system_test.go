// Package systemtest runs system mode as a daily user meets it, under a
// real systemd: `banger system install` from freshly built binaries in a
// systemd container (systemd-nspawn), then VMs as the unprivileged owner
// through bangerd.service and banger-root-helper.service, a daemon restart
// that must not take the VMs down, `banger update` from a local signed
// release and its rollback, and uninstall. The VMM is QEMU (TCG on hosts
// without usable KVM) booting the busybox image banger builds.
//
// Root only; skips with a reason elsewhere. Run it with
//
//	go test -count=1 -v -timeout 30m ./test/system
package systemtest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/updater/updatertest"
	"github.com/banger-dev/banger/test/testbin"
)

// Where the test puts things inside the container.
const (
	buildDir = "/opt/banger-build" // this build's three binaries, as `make build` leaves them
	imageDir = "/srv/banger-test"  // the busybox image's files, readable by the daemon
	subnet   = "172.31.9.0/24"
	bridgeIP = "172.31.9.1"
)

// Capabilities (linux/capability.h bit numbers).
const (
	capChown          = 0
	capDacReadSearch  = 2
	capFowner         = 3
	capKill           = 5
	capSetgid         = 6
	capSetuid         = 7
	capNetBindService = 10
	capNetAdmin       = 12
	capSysChroot      = 18
	capSysAdmin       = 21
	capMknod          = 27
)

func TestSystemMode(t *testing.T) {
	needSystemTier(t)
	start := time.Now()
	rootfs := cachedRootfs(t)
	// A throwaway release key, built into every binary as a release build
	// carries the real one, so `banger update` verifies releases signed
	// with it.
	key := updatertest.NewKey(t)
	bins := buildBinaries(t, key)
	good := buildRelease(t, "v0.2.0-test", key)
	bad := buildRelease(t, "v0.3.0-test", key)
	bad.files["bangerd"] = brokenDaemon
	t.Logf("built this build and two releases; %s since the test started", time.Since(start).Round(time.Second))
	img := buildBusyboxImage(t, bins)
	vmm := "qemu (TCG: no usable KVM here)"
	if kvmUsable() {
		vmm = "qemu (KVM)"
	}
	t.Logf("VMM: %s; system mode under systemd in a systemd-nspawn container", vmm)

	c := bootContainer(t, rootfs, func(root string) {
		for _, name := range []string{"banger", "bangerd", "banger-vsock-agent"} {
			copyFile(t, filepath.Join(bins, name), filepath.Join(root, buildDir, name), 0o755)
		}
		for name, src := range map[string]string{"vmlinux": img.Kernel, "rootfs.ext4": img.Rootfs, "initrd.img": img.Initrd} {
			copyFile(t, src, filepath.Join(root, imageDir, name), 0o644)
		}
	})
	t.Logf("container %s booted; %s since the test started", c.name, time.Since(start).Round(time.Second))

	ok := t.Run("install", func(t *testing.T) { installFlow(t, c.on(t)) }) &&
		t.Run("owner-config", func(t *testing.T) { ownerConfigFlow(t, c.on(t)) }) &&
		t.Run("daily-use", func(t *testing.T) { dailyUseFlow(t, c.on(t)) }) &&
		t.Run("daemon-restart", func(t *testing.T) { restartFlow(t, c.on(t)) }) &&
		t.Run("update-and-rollback", func(t *testing.T) { updateFlow(t, c.on(t), key, good, bad) })
	if ok {
		t.Run("uninstall", func(t *testing.T) { uninstallFlow(t, c.on(t)) })
	}
	t.Logf("the tier took %s", time.Since(start).Round(time.Second))
}

// on returns a view of the container that fails through tb.
func (c *container) on(t *testing.T) *container {
	cc := *c
	cc.t = t
	return &cc
}

// installFlow: `banger system install --owner tester` from the build
// directory, then both units active under systemd, status and doctor clean.
func installFlow(t *testing.T, c *container) {
	out := c.must("", buildDir+"/banger", "system", "install", "--owner", ownerUser)
	t.Logf("install:\n%s", out)
	c.waitActive(install.HelperUnit, install.DaemonUnit)

	// The owner's settings: the VMM and a small VM for TCG. /etc/banger is
	// root's, so this takes root (docs/privileges.md says why and what
	// would change that).
	cfg := fmt.Sprintf(`vmm = "qemu"
[vm]
vcpus = 1
memory_mib = 256
disk_size = "256M"
boot_timeout = "90s"
stop_timeout = "30s"
[network]
enabled = "on"
subnet = %q
`, subnet)
	if err := os.WriteFile(filepath.Join(c.root, "etc/banger/config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must("", "banger", "system", "restart")
	c.waitDaemon()

	if user := c.unitProp(install.DaemonUnit, "User"); user != ownerUser {
		t.Errorf("bangerd.service runs as %q, want %q", user, ownerUser)
	}
	c.checkNotifyUnits()
	// status as the owner, no sudo: exit 0 means units, helper and
	// binaries agree.
	if r := c.run(ownerUser, "banger", "system", "status"); r.code != 0 {
		t.Errorf("banger system status as %s: %s", ownerUser, r)
	} else {
		t.Logf("system status:\n%s", r.stdout)
	}
	r := c.run(ownerUser, "banger", "--system", "doctor")
	t.Logf("doctor:\n%s", r.stdout)
	if r.code != 0 {
		t.Errorf("banger --system doctor as %s failed: %s", ownerUser, r)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.Contains(line, "FAIL") {
			t.Errorf("doctor: %s", line)
		}
	}
	if !regexp.MustCompile(`(?m)^PASS +tun device +the owner \(` + ownerUser + `\) can open /dev/net/tun`).MatchString(r.stdout) {
		t.Errorf("doctor did not pass the owner's tun check:\n%s", r.stdout)
	}
	// As on this test host before openTun: a 0600 /dev/net/tun is the
	// owner's VMM failing to attach to its tap; doctor says so and how to fix it.
	c.must("", "chmod", "0600", "/dev/net/tun")
	r = c.run(ownerUser, "banger", "--system", "doctor")
	c.openTun()
	if r.code == 0 || !regexp.MustCompile(`(?m)^FAIL +tun device +the owner \(`+ownerUser+`\) cannot open /dev/net/tun`).MatchString(r.stdout) ||
		!strings.Contains(r.stdout, "chmod 0666 /dev/net/tun") {
		t.Errorf("doctor with a 0600 /dev/net/tun: exit %d\n%s", r.code, r.stdout)
	}
}

// checkNotifyUnits: both units are Type=notify, so systemd calls them
// active only once they said READY=1 (the API answers, the helper listens).
func (c *container) checkNotifyUnits() {
	c.t.Helper()
	for _, u := range []string{install.HelperUnit, install.DaemonUnit} {
		if typ := c.unitProp(u, "Type"); typ != "notify" {
			c.t.Errorf("%s is Type=%s, want notify", u, typ)
		}
		r := c.run("", "systemctl", "status", "--no-pager", u)
		if r.code != 0 || !strings.Contains(r.stdout, "Active: active (running)") {
			c.t.Errorf("systemctl status %s: %s", u, r)
		}
	}
}

// ownerConfigFlow: the owner changes a setting with `banger config set`,
// no sudo: it lands in their own ~/.config/banger/config.toml, the daemon
// restarts through systemd (exit 75, RestartForceExitStatus) and applies
// it; a key that is root's is refused and nothing changes.
func ownerConfigFlow(t *testing.T, c *container) {
	u := ownerUser
	before := c.mainPID(install.DaemonUnit)
	out := c.must(u, "banger", "config", "set", "vm.memory_mib", "320")
	t.Logf("config set:\n%s", out)
	if !strings.Contains(out, "daemon: runs with the new configuration") {
		t.Fatalf("config set did not report the daemon applying it:\n%s", out)
	}
	c.waitDaemon()
	if now := c.mainPID(install.DaemonUnit); now == before {
		t.Errorf("bangerd.service kept pid %d: the daemon did not restart", now)
	}
	c.checkNotifyUnits()
	layer := "/home/" + u + "/.config/banger/config.toml"
	if r := c.run(u, "sh", "-c", "test -O "+layer+" && grep -qx 'memory_mib = 320' "+layer); r.code != 0 {
		t.Errorf("%s is not the owner's or lacks the value: %s", layer, r)
	}
	if got := strings.TrimSpace(c.must(u, "banger", "config", "get", "vm.memory_mib")); got != "320" {
		t.Errorf("config get vm.memory_mib = %q", got)
	}
	// That the daemon applies it shows in daily-use: v1 gets 320 MiB.

	pid := c.mainPID(install.DaemonUnit)
	r := c.run(u, "banger", "config", "set", "network.bridge", "bangerx")
	if r.code == 0 || !strings.Contains(r.stderr, "is root's to set") {
		t.Errorf("config set of a root key: %s", r)
	}
	if now := c.mainPID(install.DaemonUnit); now != pid {
		t.Errorf("a refused set restarted the daemon (pid %d → %d)", pid, now)
	}
}

// dailyUseFlow: the owner, with no privileges, imports the image, creates
// a VM, runs commands in it, copies files both ways, stops and starts it,
// and deletes a second one; the processes run with the least privilege
// the units promise, and the helper refuses another local user.
func dailyUseFlow(t *testing.T, c *container) {
	u := ownerUser
	c.must(u, "banger", "--system", "image", "import", "bb",
		"--kernel", imageDir+"/vmlinux", "--rootfs", imageDir+"/rootfs.ext4", "--initrd", imageDir+"/initrd.img")
	c.must(u, "banger", "--system", "vm", "create", "--name", "v1", "--image", "bb")
	vm := c.vm("v1")
	if vm.State != api.VMRunning || vm.PID <= 0 || !strings.HasPrefix(vm.IP, strings.TrimSuffix(bridgeIP, "1")) {
		t.Fatalf("vm after create: %+v", vm)
	}
	// The default the owner set in owner-config (root's file says 256).
	if vm.MemoryMiB != 320 {
		t.Errorf("v1 has %d MiB; the owner's vm.memory_mib = 320 did not reach the daemon", vm.MemoryMiB)
	}

	r := c.run(u, "banger", "--system", "vm", "exec", "v1", "--", "sh", "-c", `echo "out $0"; echo err >&2; exit 7`, "two words")
	if r.code != 7 || r.stdout != "out two words\n" || !strings.Contains(r.stderr, "err") {
		t.Fatalf("vm exec: %s", r)
	}

	// cp both ways, from and to the owner's home.
	c.must(u, "sh", "-c", "head -c 100000 /dev/urandom > $HOME/up.bin")
	c.must(u, "banger", "--system", "vm", "cp", "/home/"+u+"/up.bin", "v1:/root/up.bin")
	want := sumIn(t, c, u, "sha256sum", "/home/"+u+"/up.bin")
	if got := sumIn(t, c, u, "banger", "--system", "vm", "exec", "v1", "--", "sha256sum", "/root/up.bin"); got != want {
		t.Errorf("copied into the VM: sha256 %s, want %s", got, want)
	}
	c.must(u, "banger", "--system", "vm", "cp", "v1:/root/up.bin", "/home/"+u+"/down.bin")
	if got := sumIn(t, c, u, "sha256sum", "/home/"+u+"/down.bin"); got != want {
		t.Errorf("copied out of the VM: sha256 %s, want %s", got, want)
	}

	// The owner's SSH key is theirs to read and replace without sudo
	// (docs/privileges.md, "Where the owner's material lives").
	key := "/var/lib/banger/ssh/id_ed25519"
	if r := c.run(u, "sh", "-c", "test -O "+key+" && test -w "+key+" && test -w $(dirname "+key+")"); r.code != 0 {
		t.Errorf("%s is not the owner's to edit: %s", key, r)
	}

	checkPrivileges(t, c, vm.PID)
	checkHelperRefusesOthers(t, c)

	// stop → start keeps the disk.
	c.must(u, "banger", "--system", "vm", "exec", "v1", "--", "sh", "-c", "echo kept > /root/persist && sync")
	c.must(u, "banger", "--system", "vm", "stop", "v1")
	if st := c.vm("v1"); st.State != api.VMStopped || st.PID != 0 {
		t.Fatalf("after stop: %+v", st)
	}
	if c.pidAlive(vm.PID) {
		t.Errorf("VMM pid %d alive after stop", vm.PID)
	}
	c.must(u, "banger", "--system", "vm", "start", "v1")
	if got := strings.TrimSpace(c.must(u, "banger", "--system", "vm", "exec", "v1", "--", "cat", "/root/persist")); got != "kept" {
		t.Errorf("file written before stop reads %q after start", got)
	}

	// delete: a second VM, created and removed, leaves no tap behind.
	c.must(u, "banger", "--system", "vm", "create", "--name", "v2", "--image", "bb")
	v2 := c.vm("v2")
	c.must(u, "banger", "--system", "vm", "delete", "--force", "v2")
	if c.pidAlive(v2.PID) {
		t.Errorf("VMM pid %d of deleted v2 still alive", v2.PID)
	}
	if r := c.run(u, "banger", "--system", "vm", "show", "v2"); r.code == 0 {
		t.Errorf("v2 still listed after delete: %s", r.stdout)
	}
}

// checkPrivileges reads the processes' credentials: bangerd runs as the
// owner with CAP_NET_BIND_SERVICE alone, the helper as root with no more
// than its unit's bounding set, the VMM (vmmPID as the daemon reports it,
// in the container's PID namespace) as the owner with none.
func checkPrivileges(t *testing.T, c *container, vmmPID int) {
	t.Helper()
	owner := c.uid(ownerUser)
	daemon := c.mainPID(install.DaemonUnit)
	if uid, caps := c.creds(daemon); uid != owner || caps != 1<<capNetBindService {
		t.Errorf("bangerd (pid %d): uid %d CapEff %#x, want uid %d CapEff %#x (CAP_NET_BIND_SERVICE only)", daemon, uid, caps, owner, uint64(1)<<capNetBindService)
	}
	helper := c.mainPID(install.HelperUnit)
	var allowed uint64
	for _, b := range []int{capNetAdmin, capSysAdmin, capChown, capFowner, capDacReadSearch, capMknod, capSysChroot, capSetuid, capSetgid, capKill} {
		allowed |= 1 << b
	}
	uid, caps := c.creds(helper)
	if uid != 0 || caps&^allowed != 0 || caps&(1<<capNetAdmin) == 0 {
		t.Errorf("root helper (pid %d): uid %d CapEff %#x; want uid 0, CAP_NET_ADMIN, nothing outside %#x", helper, uid, caps, allowed)
	}
	// The VMM holds nothing: vmmproc starts it from a thread whose ambient
	// set is empty, so bangerd's CAP_NET_BIND_SERVICE does not pass on.
	vmm := c.hostPID(vmmPID)
	if uid, caps := c.creds(vmm); uid != owner || caps != 0 {
		t.Errorf("VMM (pid %d): uid %d CapEff %#x, want uid %d and no capabilities", vmmPID, uid, caps, owner)
	}
}

// checkHelperRefusesOthers: a second local user gets nothing from the
// helper. Without the owner's group it cannot even reach the socket
// (/run/banger is 1770 root:owner); with the owner's group (as if added
// to it) the helper itself must refuse its uid.
func checkHelperRefusesOthers(t *testing.T, c *container) {
	t.Helper()
	r := c.run(otherUser, "banger", "system", "status")
	if r.code == 0 {
		t.Errorf("system status as %s reached the helper: %s", otherUser, r)
	}
	// The helper answers helper.info to the owner only: as other in the
	// owner's group, status must report the refusal.
	r = c.runAs(otherUser, ownerUser, "banger", "system", "status")
	if r.code == 0 || !strings.Contains(strings.ToLower(r.stdout+r.stderr), "refuse") {
		t.Errorf("system status as %s with group %s: want the helper's refusal: %s", otherUser, ownerUser, r)
	}
	t.Logf("helper, asked by %s:\n%s%s", otherUser, r.stdout, r.stderr)
}

// restartFlow: `systemctl restart bangerd` with a VM running: the VM keeps
// running (same VMM process) and the new daemon adopts it.
func restartFlow(t *testing.T, c *container) {
	before := c.vm("v1")
	if before.State != api.VMRunning {
		t.Fatalf("v1 not running before the restart: %+v", before)
	}
	oldDaemon := c.mainPID(install.DaemonUnit)
	c.must("", "systemctl", "restart", install.DaemonUnit)
	c.waitDaemon()
	if now := c.mainPID(install.DaemonUnit); now == oldDaemon {
		t.Fatalf("bangerd.service still has pid %d after restart", now)
	}
	after := c.vm("v1")
	if after.State != api.VMRunning || after.PID != before.PID {
		t.Fatalf("after the daemon restart: state %s pid %d, want running with the same VMM pid %d", after.State, after.PID, before.PID)
	}
	if got := strings.TrimSpace(c.must(ownerUser, "banger", "--system", "vm", "exec", "v1", "--", "cat", "/root/persist")); got != "kept" {
		t.Errorf("exec in the adopted VM read %q", got)
	}
}

// uninstallFlow: uninstall removes units, binaries, bridge, NAT, taps and
// the runtime dir and keeps state; a reinstall finds the VM again; then
// --purge removes the state too.
func uninstallFlow(t *testing.T, c *container) {
	vm := c.vm("v1")
	out := c.must("", "/usr/local/bin/banger", "system", "uninstall")
	t.Logf("uninstall:\n%s", out)
	c.checkNothingLeft(vm.PID)
	for _, p := range []string{"/var/lib/banger/banger.db"} {
		if !c.exists(p) {
			t.Errorf("%s removed by uninstall without --purge", p)
		}
	}

	c.must("", buildDir+"/banger", "system", "install", "--owner", ownerUser)
	c.waitDaemon()
	if again := c.vm("v1"); again.ID != vm.ID {
		t.Errorf("after reinstall v1 is %+v, want the kept VM %s", again, vm.ID)
	}
	c.must("", "/usr/local/bin/banger", "system", "uninstall", "--purge", "--yes")
	c.checkNothingLeft(0)
	for _, p := range []string{"/var/lib/banger", "/etc/banger", "/var/cache/banger"} {
		if c.exists(p) {
			t.Errorf("%s left after uninstall --purge", p)
		}
	}
}

// checkNothingLeft: no unit, binary, bridge, nft table, tap, loop
// device or runtime dir is left, and the VMM (when vmmPID > 0) is gone.
func (c *container) checkNothingLeft(vmmPID int) {
	t := c.t
	t.Helper()
	for _, p := range []string{
		"/etc/systemd/system/" + install.DaemonUnit, "/etc/systemd/system/" + install.HelperUnit,
		install.BangerPath, install.BangerdPath, install.AgentPath, "/run/banger",
		"/etc/sysctl.d/60-banger.conf", "/etc/modules-load.d/banger.conf", "/etc/tmpfiles.d/banger.conf",
	} {
		if c.exists(p) {
			t.Errorf("%s left after uninstall", p)
		}
	}
	for _, u := range []string{install.DaemonUnit, install.HelperUnit} {
		if state := strings.TrimSpace(c.run("", "systemctl", "is-active", u).stdout); state == "active" {
			t.Errorf("%s still active after uninstall", u)
		}
	}
	if links, _ := exec.Command("ip", "-n", c.name, "-o", "link", "show").Output(); strings.Count(string(links), "\n") != 1 {
		t.Errorf("links left in the container's namespace (want lo only):\n%s", links)
	}
	if tables, _ := exec.Command("ip", "netns", "exec", c.name, "nft", "list", "tables").Output(); strings.TrimSpace(string(tables)) != "" {
		t.Errorf("nftables tables left in the container's namespace:\n%s", tables)
	}
	if vmmPID > 0 && c.pidAlive(vmmPID) {
		t.Errorf("VMM pid %d alive after uninstall", vmmPID)
	}
	if loops := loopsUnder(c.root); len(loops) > 0 {
		t.Errorf("loop devices left attached to the container's files: %v", loops)
	}
}

// waitActive waits until systemd reports every unit active.
func (c *container) waitActive(units ...string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.run("", append([]string{"systemctl", "is-active"}, units...)...)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("units not active after 30s: %s%s", r.stdout, c.journal())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitDaemon waits until both units are active and the daemon answers
// the owner. The units are Type=notify, so "active" already means ready;
// asking the daemon too keeps the check honest about what the owner sees.
func (c *container) waitDaemon() {
	c.t.Helper()
	c.waitActive(install.HelperUnit, install.DaemonUnit)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.run(ownerUser, "banger", "--system", "daemon", "status")
		if r.code == 0 {
			c.waitActive(install.HelperUnit, install.DaemonUnit)
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the daemon does not answer the owner after 30s: %s%s", r, c.journal())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (c *container) unitProp(unit, prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must("", "systemctl", "show", "--value", "-p", prop, unit))
}

// mainPID is the unit's main process, as a PID in the host's namespace
// (the test reads /proc from the host).
func (c *container) mainPID(unit string) int {
	c.t.Helper()
	inner, err := strconv.Atoi(c.unitProp(unit, "MainPID"))
	if err != nil || inner <= 0 {
		c.t.Fatalf("%s has no main process (%q)", unit, c.unitProp(unit, "MainPID"))
	}
	return c.hostPID(inner)
}

// hostPID maps a PID of the container's namespace to the host's, through
// NSpid in /proc/PID/status.
func (c *container) hostPID(inner int) int {
	c.t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(inner) && c.inContainer(pid) {
				return pid
			}
		}
	}
	c.t.Fatalf("no host process is pid %d in the container", inner)
	return 0
}

// inContainer says whether pid shares the container's PID namespace.
func (c *container) inContainer(pid int) bool {
	a, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	b, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.leader))
	return err1 == nil && err2 == nil && a == b
}

// creds reads a host PID's effective uid and capabilities.
func (c *container) creds(pid int) (uid int, capEff uint64) {
	c.t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		c.t.Fatalf("read credentials of pid %d: %v", pid, err)
	}
	uid = -1
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "Uid:":
			uid, _ = strconv.Atoi(f[2])
		case len(f) == 2 && f[0] == "CapEff:":
			capEff, _ = strconv.ParseUint(f[1], 16, 64)
		}
	}
	return uid, capEff
}

// pidAlive says whether a VMM PID (as the daemon reports it: the
// container's namespace) still runs.
func (c *container) pidAlive(inner int) bool {
	return c.run("", "kill", "-0", strconv.Itoa(inner)).code == 0
}

func (c *container) uid(user string) int {
	c.t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(c.must("", "id", "-u", user)))
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *container) exists(p string) bool {
	_, err := os.Lstat(filepath.Join(c.root, p))
	return err == nil
}

// runAs runs argv as user with group as its primary group.
func (c *container) runAs(user, group string, argv ...string) result {
	return c.run("", append([]string{"runuser", "-u", user, "-g", group, "--"}, argv...)...)
}

// vm reads a VM as the owner sees it.
func (c *container) vm(name string) api.VM {
	c.t.Helper()
	var vm api.VM
	out := c.must(ownerUser, "banger", "--system", "vm", "show", name, "--json")
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		c.t.Fatalf("vm show %s: %v\n%s", name, err, out)
	}
	return vm
}

// sumIn runs a sha256sum-printing command as user and returns the sum.
func sumIn(t *testing.T, c *container, user string, argv ...string) string {
	t.Helper()
	f := strings.Fields(c.must(user, argv...))
	if len(f) == 0 {
		t.Fatalf("%s printed nothing", strings.Join(argv, " "))
	}
	return f[0]
}

// loopsUnder lists loop devices whose backing file is under dir.
func loopsUnder(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, strings.Split(f, "/")[3])
		}
	}
	return out
}

// buildBinaries builds banger, bangerd and banger-vsock-agent, stamped as
// test builds and carrying the release key, into one directory.
func buildBinaries(t *testing.T, key updatertest.Key) string {
	t.Helper()
	dir := t.TempDir()
	stamp := testbin.Stamp(testbin.Version, testbin.Commit, testbin.BuiltAt) + " " + keyFlag(key)
	for _, b := range []struct{ name, pkg string }{
		{"banger", "./cmd/banger"}, {"bangerd", "./cmd/bangerd"}, {"banger-vsock-agent", "./cmd/banger-vsock-agent"},
	} {
		if err := testbin.GoBuild(filepath.Join(dir, b.name), b.pkg, stamp); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// buildBusyboxImage builds the busybox test image with a user-mode banger
// on the host (networking off: it creates nothing in the host's network),
// its kernel and boot files from the shared test cache.
func buildBusyboxImage(t *testing.T, bins string) api.Image {
	t.Helper()
	cache, err := testbin.CacheDir()
	if err != nil {
		t.Skipf("no cache dir: %v (set BANGER_TEST_CACHE)", err)
	}
	dir := t.TempDir()
	env := append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"BANGER_SYSTEM_ROOT="+filepath.Join(dir, "root"),
		"BANGER_DAEMON="+filepath.Join(bins, "bangerd"),
	)
	for _, d := range []string{"home", "config/banger", "state/banger/cache", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"kernels": "kernels", "boot": "boot"} {
		if err := os.MkdirAll(filepath.Join(cache, target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(cache, target), filepath.Join(dir, "state/banger/cache", link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config/banger/config.toml"), []byte("[network]\nenabled = \"off\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	banger := func(args ...string) ([]byte, error) {
		cmd := exec.Command(filepath.Join(bins, "banger"), args...)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("banger %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out, err
	}
	t.Cleanup(func() { _, _ = banger("daemon", "stop") })
	out, err := banger("image", "build", "sysbb", "--from", "busybox", "--json")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "state/banger/bangerd.log"))
		t.Fatalf("%v\ndaemon log tail:\n%s", err, tail(log, 3000))
	}
	var img api.Image
	if err := json.Unmarshal(out, &img); err != nil {
		t.Fatalf("image build output: %v\n%s", err, out)
	}
	return img
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

// A release the update flow serves: its version and the three files.
type release struct {
	version string
	files   map[string][]byte // banger, bangerd, banger-vsock-agent
}

// buildRelease builds the three binaries stamped as version and carrying
// the throwaway release key, as a release build carries the real one.
func buildRelease(t *testing.T, version string, key updatertest.Key) release {
	t.Helper()
	dir := t.TempDir()
	ldflags := testbin.Stamp(version, testbin.Commit, testbin.BuiltAt) + " " + keyFlag(key)
	r := release{version: version, files: map[string][]byte{}}
	for _, b := range []struct{ name, pkg string }{
		{"banger", "./cmd/banger"}, {"bangerd", "./cmd/bangerd"}, {"banger-vsock-agent", "./cmd/banger-vsock-agent"},
	} {
		out := filepath.Join(dir, b.name)
		if err := testbin.GoBuild(out, b.pkg, ldflags); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		r.files[b.name] = data
	}
	return r
}

// keyFlag is the -ldflags setting that embeds key as the release key.
func keyFlag(key updatertest.Key) string {
	return "-X github.com/banger-dev/banger/internal/updater.releasePublicKey=" + key.Public
}

// brokenDaemon is a bangerd that passes the staged checks (its schema
// check answers "compatible") and then cannot start.
var brokenDaemon = []byte("#!/bin/sh\n[ \"$1\" = --check-migrations ] && exit 0\necho 'bangerd: broken on purpose by the system tier' >&2\nexit 1\n")

// serveReleases serves signed releases over HTTPS on loopback inside the
// container's network namespace, with the test server's certificate put
// in the container for `banger update` to trust (caFile, through
// SSL_CERT_FILE), and returns the URL and the server to publish on.
func serveReleases(t *testing.T, c *container) (url, caFile string, srv *updatertest.Server) {
	t.Helper()
	srv = updatertest.NewServer(t)
	caFile = imageDir + "/release-ca.pem"
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(c.root, caFile), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	err := nstest.InNamed(c.name, func() (err error) {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in the container's namespace: %v", err)
	}
	hs := &http.Server{Handler: srv.Config.Handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(tls.NewListener(ln, srv.TLS)) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "https://" + ln.Addr().String(), caFile, srv
}

// updateFlow: `banger update` to a newer signed release restarts the real
// units on the new binaries with the VM still running, and settles (no
// .previous left); then a release whose daemon cannot start is rolled
// back: the previous binaries byte for byte, the units running again.
func updateFlow(t *testing.T, c *container, key updatertest.Key, good, bad release) {
	url, caFile, srv := serveReleases(t, c)
	update := func() result {
		return c.run("", "env", "SSL_CERT_FILE="+caFile, "banger", "update", "--yes", "--release-url", url)
	}
	publish := func(r release) {
		var entries []updatertest.Entry
		for _, name := range []string{"banger", "bangerd", "banger-vsock-agent"} {
			entries = append(entries, updatertest.Entry{Name: name, Body: r.files[name], Mode: 0o755})
		}
		srv.Publish(t, updatertest.Release{Version: r.version, Arch: runtime.GOARCH, Channel: "stable", Key: key,
			Tarball: updatertest.Tarball(t, entries)})
	}
	vm := c.vm("v1")
	oldDaemon := c.mainPID(install.DaemonUnit)

	publish(good)
	r := update()
	if r.code != 0 {
		t.Fatalf("banger update to %s: %s%s", good.version, r, c.journal())
	}
	c.waitDaemon()
	if now := c.mainPID(install.DaemonUnit); now == oldDaemon {
		t.Errorf("bangerd.service was not restarted by the update (pid %d)", now)
	}
	c.checkInstalled(good)
	if out := c.must(ownerUser, "banger", "--system", "doctor"); strings.Contains(out, "FAIL") {
		t.Errorf("doctor after the update:\n%s", out)
	}
	if after := c.vm("v1"); after.State != api.VMRunning || after.PID != vm.PID {
		t.Errorf("v1 after the update: state %s pid %d, want running with VMM pid %d", after.State, after.PID, vm.PID)
	}

	publish(bad)
	r = update()
	if r.code == 0 {
		t.Fatalf("banger update to a release whose daemon cannot start succeeded: %s", r)
	}
	if !strings.Contains(r.stderr, "restored") {
		t.Errorf("the failed update does not say the previous install was restored: %s", r)
	}
	t.Logf("update to the broken release, as it failed:\n%s", tail([]byte(r.stderr), 1500))
	c.waitDaemon()
	c.checkInstalled(good)
	if after := c.vm("v1"); after.State != api.VMRunning || after.PID != vm.PID {
		t.Errorf("v1 after the rollback: state %s pid %d, want running with VMM pid %d", after.State, after.PID, vm.PID)
	}
}

// checkInstalled: the installed binaries are r's byte for byte, install.toml
// and both CLIs say r's version, and no .previous backup is left.
func (c *container) checkInstalled(r release) {
	t := c.t
	t.Helper()
	for name, p := range map[string]string{"banger": install.BangerPath, "bangerd": install.BangerdPath, "banger-vsock-agent": install.AgentPath} {
		got, err := os.ReadFile(filepath.Join(c.root, p))
		if err != nil || !bytes.Equal(got, r.files[name]) {
			t.Errorf("%s is not %s's %s byte for byte (%d bytes, %v)", p, r.version, name, len(got), err)
		}
		if c.exists(p + ".previous") {
			t.Errorf("%s.previous left behind", p)
		}
	}
	if meta, err := installmeta.Read(filepath.Join(c.root, "etc/banger/install.toml")); err != nil || meta.Version != r.version {
		t.Errorf("install.toml records %q (%v), want %s", meta.Version, err, r.version)
	}
	if out := c.must(ownerUser, "banger", "--system", "daemon", "status"); !strings.Contains(out, r.version) {
		t.Errorf("the running daemon is not %s:\n%s", r.version, out)
	}
}
