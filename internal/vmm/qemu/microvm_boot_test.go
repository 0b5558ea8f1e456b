package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/image"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/vmm"
)

// kernelBuildBudget is how much test time a kernel build that is not in
// the cache may need: minutes on 2 cores (docs/performance.md), with
// room for a loaded machine. With less time left the test skips and says
// how to build the kernel first.
const kernelBuildBudget = 40 * time.Minute

// microVMKernel returns banger's microVM kernel, built from /usr/src's
// linux-source with the microvm configuration and cached in the tests'
// cache (built-kernels/, keyed by source version and configuration, as
// `banger kernel build` keys it), or skips saying what is missing.
func microVMKernel(t testing.TB) image.BuiltKernel {
	t.Helper()
	if os.Getenv("BANGER_KERNEL_BUILD") == "0" {
		t.Skip("BANGER_KERNEL_BUILD=0: the microVM kernel build is turned off")
	}
	ctx := context.Background()
	src, err := image.FindKernelSource(ctx, system.ExecRunner{}, "/usr/src")
	if err != nil {
		t.Skipf("the microVM kernel needs its source: %v", err)
	}
	cfg, err := image.LoadKernelConfig(image.MicroVMConfig)
	if err != nil {
		t.Fatal(err)
	}
	b := image.KernelBuilder{Runner: system.ExecRunner{}, CacheDir: testCacheDir(t)}
	if k, ok := b.Lookup(src, cfg); ok {
		return k
	}
	for _, tool := range []string{"make", "gcc", "flex", "bison", "bc", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("building the microVM kernel needs %s (apt-get install build-essential bc flex bison libelf-dev libssl-dev)", tool)
		}
	}
	if d, ok := deadline(t); ok && time.Until(d) < kernelBuildBudget {
		t.Skipf("the microVM kernel for %s %s is not cached and the test has %v left: build it first with scripts/kernel-build.sh",
			src.Package, src.Version, time.Until(d).Round(time.Second))
	}
	start := time.Now()
	k, err := b.Build(ctx, src, cfg, func(stage, msg string) { t.Logf("kernel build: %s: %s", stage, msg) })
	if err != nil {
		t.Fatalf("build the microVM kernel: %v", err)
	}
	t.Logf("microVM kernel %s built in %v", k.Release, time.Since(start).Round(time.Second))
	return k
}

// deadline is t.Deadline for tests; benchmarks have none.
func deadline(t testing.TB) (time.Time, bool) {
	if tt, ok := t.(*testing.T); ok {
		return tt.Deadline()
	}
	return time.Time{}, false
}

// coldBootHost skips unless QEMU, a static busybox and mkfs.ext4 are
// here. Unlike bootHost it needs no root: the guest has no network.
func coldBootHost(t testing.TB) (qemuPath, busybox string) {
	t.Helper()
	if testing.Short() {
		t.Skip("real QEMU boot skipped in -short mode")
	}
	qemuPath, err := exec.LookPath(DefaultBinary)
	if err != nil {
		t.Skipf("real QEMU boot needs %s (apt-get install --no-install-recommends qemu-system-x86)", DefaultBinary)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("the busybox image needs mkfs.ext4 (apt-get install e2fsprogs)")
	}
	busybox, err = exec.LookPath("busybox")
	if err == nil && !isStatic(busybox) {
		err = errors.New("it is dynamically linked")
	}
	if err != nil {
		t.Skipf("the busybox image needs a static busybox (apt-get install busybox-static): %v", err)
	}
	return qemuPath, busybox
}

// staticAgent builds banger-vsock-agent as released (static) into dir.
func staticAgent(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "banger-vsock-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/banger-dev/banger/cmd/banger-vsock-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the guest agent: %v: %s", err, out)
	}
	return bin
}

// busyboxImage builds the default (busybox) image into dir the way `image
// build --from busybox` does: with kernel, the microVM kernel and no
// initrd; with "", Debian's kernel and banger's initrd.
func busyboxImage(t testing.TB, dir, busybox, agentBin, kernel string) image.BuildResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "image")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &image.Builder{Runner: system.ExecRunner{}, CacheDir: testCacheDir(t)}
	res, err := b.BuildBusybox(ctx, image.BusyboxSpec{OutDir: out, WorkDir: filepath.Join(dir, "work"),
		Busybox: busybox, AgentBinary: agentBin, Kernel: kernel}, nil)
	if err != nil {
		if kernel == "" {
			t.Skipf("the Debian kernel for the busybox image cannot be fetched here: %v", err)
		}
		t.Fatalf("build the busybox image: %v", err)
	}
	return res
}

// coldBoot boots img under the driver with the command line the daemon
// gives a VM (no network here) and returns the time from launch to the
// agent answering a health request, and the serial console.
func coldBoot(t testing.TB, qemuPath string, img image.BuildResult) (time.Duration, string) {
	t.Helper()
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root.ext4")
	data, err := os.ReadFile(img.Rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, data, 0o600); err != nil {
		t.Fatal(err)
	}
	guest := agent.BootParams{Hostname: "cold-boot", AgentPort: 1024}
	spec := vmm.LaunchSpec{
		VMID:          "c01d",
		Name:          "cold-boot",
		KernelPath:    img.Kernel,
		InitrdPath:    img.Initrd,
		BootArgs:      strings.Join(append([]string{"console=ttyS0", "reboot=k", "panic=1", "pci=off", "root=/dev/vda", "rootfstype=ext4", "rw"}, guest.Args()...), " "),
		RootDrive:     vmm.Drive{ID: "rootfs", Path: root},
		VCPUs:         1,
		MemoryMiB:     256,
		Agent:         vmm.AgentChannel{GuestCID: 3, Port: 1024},
		RunDir:        filepath.Join(dir, "run"),
		SerialLogPath: filepath.Join(dir, "serial.log"),
		VMMLogPath:    filepath.Join(dir, "vmm.log"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*bootTimeout)
	defer cancel()
	console := func() string { b, _ := os.ReadFile(spec.SerialLogPath); return string(b) }

	start := time.Now()
	vi, err := New(Config{BinaryPath: qemuPath}).Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	inst := vi.(*Instance)
	defer func() { _ = inst.Kill() }()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithTimeout(ctx, bootTimeout)
	defer bcancel()
	c, err := agent.NewClient(bctx, conn)
	if err == nil {
		defer func() { _ = c.Close() }()
		_, err = c.Health(bctx)
	}
	if err != nil {
		t.Fatalf("the agent did not answer within %v of launch: %v\nconsole:\n%s", bootTimeout, err, console())
	}
	return time.Since(start), console()
}

// TestMicroVMKernelBootsBusyboxUnderTCG builds banger's microVM kernel
// (or takes it from the cache), builds the default busybox image with it
// as `image build --kernel microvm` does, and boots it through the driver
// to the agent answering: no modules, no initrd, the root named on the
// command line.
func TestMicroVMKernelBootsBusyboxUnderTCG(t *testing.T) {
	qemuPath, busybox := coldBootHost(t)
	k := microVMKernel(t)
	dir := shortTempDir(t)
	img := busyboxImage(t, dir, busybox, staticAgent(t, dir), k.Vmlinux)
	if img.Initrd != "" {
		t.Fatalf("the busybox image with the microVM kernel has an initrd %s", img.Initrd)
	}
	if !img.KernelInfo.PVH {
		t.Fatalf("the image's kernel has no PVH note: %+v", img.KernelInfo)
	}
	took, console := coldBoot(t, qemuPath, img)
	t.Logf("kernel %s: the agent answered %v after launch", k.Release, took.Round(time.Millisecond))
	for _, want := range []string{"Linux version " + k.Release, "banger-init: starting banger-vsock-agent"} {
		if !strings.Contains(console, want) {
			t.Errorf("the console lacks %q:\n%s", want, console)
		}
	}
	if strings.Contains(console, "initramfs") {
		t.Errorf("the guest unpacked an initramfs:\n%s", console)
	}
}

// BenchmarkColdBootTCG compares cold boots of the default busybox image
// to the agent answering, microVM kernel (no initrd) against Debian's
// kernel with banger's initrd, interleaved: each iteration boots both.
// It reports the medians (docs/performance.md):
//
//	go test -run '^$' -bench ColdBootTCG -benchtime 5x ./internal/vmm/qemu/
func BenchmarkColdBootTCG(b *testing.B) {
	qemuPath, busybox := coldBootHost(b)
	k := microVMKernel(b)
	dir := shortTempDir(b)
	agentBin := staticAgent(b, dir)
	micro := busyboxImage(b, filepath.Join(dir, "micro"), busybox, agentBin, k.Vmlinux)
	debian := busyboxImage(b, filepath.Join(dir, "debian"), busybox, agentBin, "")
	var microTimes, debianTimes []time.Duration
	for b.Loop() {
		t1, _ := coldBoot(b, qemuPath, micro)
		t2, _ := coldBoot(b, qemuPath, debian)
		microTimes, debianTimes = append(microTimes, t1), append(debianTimes, t2)
	}
	b.ReportMetric(median(microTimes).Seconds(), "s-microvm-median")
	b.ReportMetric(median(debianTimes).Seconds(), "s-debian-median")
	b.Logf("microVM kernel boots %v, Debian kernel+initrd %v", microTimes, debianTimes)
}
