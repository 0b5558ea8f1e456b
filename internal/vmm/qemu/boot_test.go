package qemu

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/vmm"
)

// bootTimeout is how long a busybox guest may take under TCG before the
// boot counts as failed: measured boots take 2-7 s here, and times swing
// up to 2x between runs (TEST-HOST.md).
const bootTimeout = 90 * time.Second

// testInit is the test guest's /init: it loads the drivers, reports what
// the host configured (disk sizes, read-only flag, MAC, entropy source) on
// the console, makes the /dev/virtio-ports/banger link udev would make,
// lets any power-button event power the guest off (the ACPI side of QMP
// system_powerdown), and then runs the payload: the real agent or the
// marker.
const testInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
say() { echo "banger-test-init: $*"; }

while read -r name file; do
	insmod "$file" || say "insmod $name failed"
done </etc/modules.order

# Drivers probe asynchronously: wait for what is reported on.
wait_for() {
	i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		[ $i -lt 300 ] || { say "$1 did not appear"; return 1; }
		usleep 100000
	done
}
wait_for /sys/block/vdb/size
wait_for /sys/class/net/eth0/address
wait_for /dev/input/event0

for ev in /dev/input/event*; do
	(head -c 1 "$ev" >/dev/null && say "power button pressed" && poweroff -f) &
done

port=
i=0
while [ -z "$port" ]; do
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat "$d/name" 2>/dev/null)" = banger ] && port=${d##*/}
	done
	i=$((i + 1))
	[ $i -lt 300 ] || { say "no virtio-serial port named banger"; poweroff -f; }
	[ -n "$port" ] || usleep 100000
done
mkdir -p /dev/virtio-ports
ln -s "../$port" /dev/virtio-ports/banger

say "facts vda=$(cat /sys/block/vda/size) vdb=$(cat /sys/block/vdb/size) vdb_ro=$(cat /sys/block/vdb/ro) mac=$(cat /sys/class/net/eth0/address) rng=$(cat /sys/class/misc/hw_random/rng_current)"
say "payload starting after $(cut -d' ' -f1 /proc/uptime)s"
. /payload.sh
say "payload ended; powering off"
poweroff -f
`

// markerPayload stands in for the agent when it cannot be built: it
// answers every line on the port with "banger-marker <line>".
const markerPayload = `# The port stays open for the guest's life: reopening it lost a reply once.
exec 3<>/dev/virtio-ports/banger
while :; do
	# read sees end of file while no host is connected; wait and retry.
	while read -r line <&3; do
		echo "banger-marker $line" >&3
	done
	usleep 100000
done
`

// agentPayload runs the real agent with no --listen, so it takes its
// channel from banger.agent_channel, which the driver put on the command
// line. Guest setup is off: the initramfs has no network config to apply.
const agentPayload = `/bin/banger-vsock-agent --setup off
`

// payload is what the test guest runs on the agent port, and how the host
// talks to it.
type payload struct {
	name   string
	script string
	// agent is the agent binary, nil for the marker.
	agent []byte
	// open starts a session on a DialAgent stream; it waits for the guest.
	open func(ctx context.Context, conn net.Conn) (guestSession, error)
}

// guestSession is one holder's conversation with the guest.
type guestSession interface {
	// ping does one round trip.
	ping(ctx context.Context) error
	// Close ends the session and closes its stream.
	Close() error
}

// choosePayload prefers the real agent (built static, as released); if it
// does not build, the marker stands in and the log says so.
// BANGER_QEMU_TEST_GUEST=marker picks the marker anyway, to tell a driver
// failure from an agent one.
func choosePayload(t *testing.T) payload {
	t.Helper()
	marker := payload{name: "marker", script: markerPayload, open: openMarker}
	if os.Getenv("BANGER_QEMU_TEST_GUEST") == "marker" {
		return marker
	}
	bin := filepath.Join(t.TempDir(), "banger-vsock-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/banger-dev/banger/cmd/banger-vsock-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err == nil {
		var data []byte
		if data, err = os.ReadFile(bin); err == nil {
			return payload{name: "banger-vsock-agent", script: agentPayload, agent: data, open: openAgent}
		}
	}
	t.Logf("the guest agent does not build (%v: %s); the marker stands in for it", err, bytes.TrimSpace(out))
	return marker
}

type agentSession struct{ *agent.Client }

func openAgent(ctx context.Context, conn net.Conn) (guestSession, error) {
	c, err := agent.NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return agentSession{c}, nil
}

func (s agentSession) ping(ctx context.Context) error {
	info, err := s.Health(ctx)
	if err == nil && info.AgentVersion == "" {
		err = fmt.Errorf("health reply %+v names no agent version", info)
	}
	return err
}

type markerSession struct {
	conn net.Conn
	r    *bufio.Reader
}

func openMarker(ctx context.Context, conn net.Conn) (guestSession, error) {
	s := markerSession{conn: conn, r: bufio.NewReader(conn)}
	if err := s.ping(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s markerSession) ping(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = s.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := s.conn.Write([]byte("ping\n")); err != nil {
		return ctxErr(ctx, err)
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return ctxErr(ctx, err)
	}
	if line != "banger-marker ping\n" {
		return fmt.Errorf("marker answered %q", line)
	}
	return nil
}

func (s markerSession) Close() error { return s.conn.Close() }

// bootHost skips unless this machine can boot a real guest, saying why.
func bootHost(t *testing.T) (qemuPath, busybox string) {
	t.Helper()
	if testing.Short() {
		t.Skip("real QEMU boot skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("real QEMU boot needs root (tap device in a private network namespace)")
	}
	qemuPath, err := exec.LookPath(DefaultBinary)
	if err != nil {
		t.Skipf("real QEMU boot needs %s (apt-get install --no-install-recommends qemu-system-x86)", DefaultBinary)
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "depmod", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("real QEMU boot needs %s to fetch the Debian kernel and make a tap", tool)
		}
	}
	busybox, err = exec.LookPath("busybox")
	if err == nil && !isStatic(busybox) {
		err = errors.New("it is dynamically linked")
	}
	if err != nil {
		t.Skipf("real QEMU boot needs a static busybox (apt-get install busybox-static): %v", err)
	}
	return qemuPath, busybox
}

func isStatic(path string) bool {
	f, err := elf.Open(path)
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

// testCacheDir keeps downloads between runs: $BANGER_TEST_CACHE, else
// os.UserCacheDir()/banger-test (shared with internal/image's tests).
func testCacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("no cache dir for the Debian kernel: %v (set BANGER_TEST_CACHE)", err)
	}
	return filepath.Join(d, "banger-test")
}

// testKernel fetches Debian's kernel package (cached per version) and
// returns its unpacked tree and an ELF vmlinux extracted from it (cached,
// keyed by package and version like the package itself).
func testKernel(t *testing.T) (image.DebianKernel, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cache := filepath.Join(testCacheDir(t), "kernels")
	kern, err := image.DebianKernels{Runner: system.ExecRunner{}, CacheDir: cache}.Fetch(ctx, image.DefaultKernelPackage)
	if err != nil {
		t.Skipf("the Debian kernel package cannot be fetched here (no apt access?): %v", err)
	}
	vmlinux := filepath.Join(testCacheDir(t), "qemu", "vmlinux-"+kern.Package+"_"+kern.Version)
	if _, err := os.Stat(vmlinux); err != nil {
		if err := os.MkdirAll(filepath.Dir(vmlinux), 0o755); err != nil {
			t.Fatal(err)
		}
		// The ELF boots 4-7 s faster than the bzImage under TCG.
		if _, err := image.ExtractVmlinux(kern.Vmlinuz, vmlinux); err != nil {
			t.Fatalf("extract vmlinux: %v", err)
		}
	}
	t.Logf("kernel %s %s ready in %v", kern.Package, kern.Version, time.Since(start).Round(time.Millisecond))
	return kern, vmlinux
}

// buildInitramfs writes a gzip newc initramfs holding busybox, the modules
// (with their dependencies, in load order), testInit and the payload.
func buildInitramfs(t *testing.T, kern image.DebianKernel, busybox string, pl payload, dst string) {
	t.Helper()
	ix, err := image.LoadModuleIndex(kern.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	// TEST-HOST.md's list, in its order (the resolver adds dependencies
	// anyway), plus the ACPI power button and evdev so the guest can see
	// QMP system_powerdown.
	mods, missing := ix.Resolve([]string{
		"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
		"virtio_console", "crc32c_generic", "crc32c-intel", "jbd2", "mbcache", "crc16", "ext4", "virtio-rng",
		"button", "evdev",
	})
	if len(missing) > 0 {
		t.Logf("kernel %s has neither module nor built-in for %v", kern.Release, missing)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	cw := cpio.NewWriter(zw)
	add := func(name string, mode cpio.FileMode, body []byte, link string) {
		h := &cpio.Header{Name: name, Mode: mode, Size: int64(len(body)), Linkname: link}
		if link != "" {
			h.Size = int64(len(link))
		}
		if err := cw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if link != "" {
			body = []byte(link)
		}
		if _, err := cw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc", "lib", "lib/modules"} {
		add(d, cpio.TypeDir|0o755, nil, "")
	}
	add("bin/busybox", cpio.TypeReg|0o755, bb, "")
	add("bin/sh", cpio.TypeSymlink|0o777, nil, "busybox")
	add("init", cpio.TypeReg|0o755, []byte(testInit), "")
	add("payload.sh", cpio.TypeReg|0o644, []byte(pl.script), "")
	if pl.agent != nil {
		add("bin/banger-vsock-agent", cpio.TypeReg|0o755, pl.agent, "")
	}
	var order strings.Builder
	for _, m := range mods {
		data := readModule(t, filepath.Join(kern.ModulesDir, m.Path))
		name := "lib/modules/" + m.Name + ".ko"
		add(name, cpio.TypeReg|0o644, data, "")
		fmt.Fprintf(&order, "%s /%s\n", m.Name, name)
	}
	add("etc/modules.order", cpio.TypeReg|0o644, []byte(order.String()), "")
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readModule returns a module's ELF: busybox insmod may not read the
// compressed .ko.xz some kernels ship.
func readModule(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.HasSuffix(path, ".ko"):
		return data
	case strings.HasSuffix(path, ".ko.xz"):
		r, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("module %s: %v", path, err)
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("module %s: %v", path, err)
		}
		return out
	default:
		t.Fatalf("module %s: unsupported compression", path)
		return nil
	}
}

// enterPrivateNetns moves the calling goroutine's thread into a new network
// namespace for the rest of the test, so the tap QEMU opens (QEMU inherits
// the thread's namespace) never touches the host's. The thread is never
// unlocked: when the test goroutine ends, Go discards it with the
// namespace.
func enterPrivateNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
}

func sparseFile(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// TestBootBusyboxGuestUnderTCG boots Debian's kernel with a busybox
// initramfs through the driver and checks what the driver promises: the
// guest sees the configured devices, the agent answers through DialAgent,
// the single serial stream is handed out to one holder at a time, QMP
// status, pause and resume act on the guest, a restarted daemon can adopt
// the process, the power button stops it cleanly, Kill ends it, and
// nothing is left behind.
func TestBootBusyboxGuestUnderTCG(t *testing.T) {
	qemuPath, busybox := bootHost(t)
	kern, vmlinux := testKernel(t)
	pl := choosePayload(t)

	dir := shortTempDir(t)
	initrd := filepath.Join(dir, "initrd.gz")
	buildInitramfs(t, kern, busybox, pl, initrd)
	const rootSize, dataSize = 64 << 20, 8 << 20
	sparseFile(t, filepath.Join(dir, "root.img"), rootSize)
	sparseFile(t, filepath.Join(dir, "data.img"), dataSize)

	enterPrivateNetns(t)
	const tap, mac = "bqtap0", "02:42:de:ad:be:ef"
	if out, err := exec.Command("ip", "tuntap", "add", "dev", tap, "mode", "tap").CombinedOutput(); err != nil {
		t.Skipf("cannot create a tap device: %v: %s", err, out)
	}

	spec := vmm.LaunchSpec{
		VMID:          "b00t",
		Name:          "boot-test",
		KernelPath:    vmlinux,
		InitrdPath:    initrd,
		BootArgs:      "console=ttyS0 panic=1 quiet",
		RootDrive:     vmm.Drive{ID: "rootfs", Path: filepath.Join(dir, "root.img")},
		ExtraDrives:   []vmm.Drive{{ID: "data", Path: filepath.Join(dir, "data.img"), ReadOnly: true}},
		Network:       []vmm.NetInterface{{ID: "eth0", TapName: tap, MAC: mac}},
		VCPUs:         1,
		MemoryMiB:     256,
		Agent:         vmm.AgentChannel{GuestCID: 3, Port: 1024},
		RunDir:        filepath.Join(dir, "run"),
		SerialLogPath: filepath.Join(dir, "serial.log"),
		VMMLogPath:    filepath.Join(dir, "vmm.log"),
	}
	d := New(Config{BinaryPath: qemuPath})
	accel, why := d.accel()
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && accel != AccelTCG {
		t.Fatalf("kvm_pvm is loaded but the driver picked %s", accel)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []string{spec.SerialLogPath, spec.VMMLogPath} {
				b, _ := os.ReadFile(p)
				t.Logf("%s:\n%s", filepath.Base(p), b)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*bootTimeout)
	defer cancel()

	start := time.Now()
	vi, err := d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	inst := vi.(*Instance)
	t.Cleanup(func() { _ = inst.Kill() })
	t.Logf("qemu pid %d answered QMP after %v; %s; agent over %s",
		inst.PID(), time.Since(start).Round(time.Millisecond), why, inst.Transport())
	if inst.Transport() != TransportSerial {
		t.Skip("this host has vhost-vsock; the test guest only serves virtio-serial")
	}

	// The stream connects at once; the session waits for the guest.
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, bootTimeout)
	sess, err := pl.open(bctx, conn)
	if err == nil {
		err = sess.ping(bctx)
	}
	bcancel()
	if err != nil {
		t.Fatalf("%s did not answer within %v of launch: %v", pl.name, bootTimeout, err)
	}
	t.Logf("%s answered %v after launch began", pl.name, time.Since(start).Round(time.Millisecond))

	serial, _ := os.ReadFile(spec.SerialLogPath)
	facts := fmt.Sprintf("banger-test-init: facts vda=%d vdb=%d vdb_ro=1 mac=%s rng=virtio_rng.0", rootSize/512, dataSize/512, mac)
	if !bytes.Contains(serial, []byte(facts)) {
		t.Errorf("the guest did not report %q on its console", facts)
	}
	if st, err := inst.Status(ctx); err != nil || st.Status != "running" || !st.Running {
		t.Fatalf("query-status = %+v, %v; want running", st, err)
	}
	busyCtx, busyCancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := inst.DialAgent(busyCtx); !errors.Is(err, ErrAgentBusy) {
		t.Errorf("a second DialAgent while the stream is held = %v, want ErrAgentBusy", err)
	}
	busyCancel()

	// Paused vCPUs cannot answer; the answer comes once they run again.
	if err := inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := inst.Status(ctx); err != nil || st.Status != "paused" {
		t.Fatalf("query-status after pause = %+v, %v", st, err)
	}
	answered := make(chan error, 1)
	go func() {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		answered <- sess.ping(pctx)
	}()
	select {
	case err := <-answered:
		t.Fatalf("a paused guest answered (err %v)", err)
	case <-time.After(time.Second):
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-answered; err != nil {
		t.Fatalf("no answer after resume: %v", err)
	}

	// The stream is handed over: the next holder starts a new session.
	_ = sess.Close()
	for i := range 2 {
		hctx, hcancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := inst.DialAgent(hctx)
		if err == nil {
			if sess, err = pl.open(hctx, conn); err == nil {
				err = sess.ping(hctx)
				_ = sess.Close()
			}
		}
		hcancel()
		if err != nil {
			t.Fatalf("holder %d after the first: %v", i+2, err)
		}
	}

	// A restarted daemon adopts the running QEMU.
	adopted, err := New(Config{BinaryPath: qemuPath}).Attach(ctx, spec, vmm.Process{PID: inst.PID()})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := adopted.(*Instance).Status(ctx); err != nil || !st.Running {
		t.Fatalf("adopted instance status = %+v, %v", st, err)
	}

	stopStart := time.Now()
	if err := inst.Stop(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful stop took %v", time.Since(stopStart).Round(time.Millisecond))
	if ex := inst.Exit(); ex.Code != 0 || ex.Signal != "" {
		t.Errorf("qemu %s after the power button, want exit code 0", ex)
	}
	select {
	case <-adopted.Done():
	case <-time.After(10 * time.Second):
		t.Error("the adopting instance did not see qemu exit")
	}
	assertGone(t, inst.PID(), inst.APISocket(), filepath.Join(spec.RunDir, agentSocketName))
	serial, _ = os.ReadFile(spec.SerialLogPath)
	for _, want := range []string{"banger-test-init: power button pressed", "reboot: Power down"} {
		if !bytes.Contains(serial, []byte(want)) {
			t.Errorf("serial log lacks %q", want)
		}
	}

	// Kill needs no guest cooperation: launch again and kill at once.
	vi, err = d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	second := vi.(*Instance)
	if err := second.Kill(); err != nil {
		t.Fatal(err)
	}
	if ex := second.Exit(); ex.Signal != "SIGKILL" {
		t.Errorf("qemu %s after Kill, want SIGKILL", ex)
	}
	assertGone(t, second.PID(), second.APISocket(), filepath.Join(spec.RunDir, agentSocketName))
	if left, _ := os.ReadDir(spec.RunDir); len(left) > 0 {
		t.Errorf("run dir still holds %v", left)
	}
}
