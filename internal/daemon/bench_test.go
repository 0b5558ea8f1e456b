package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/vmm/firecracker"
	"github.com/banger-dev/banger/test/testbin"
)

// benchDaemon runs an in-process daemon on the fake Firecracker with the
// real agent as its guest, and one imported image.
func benchDaemon(b *testing.B) *api.Client {
	b.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		b.Skip("mkfs.ext4 (e2fsprogs) is not installed")
	}
	bins, err := testbin.Build()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	b.Setenv("BANGER_FAKE_GUEST", bins.Agent)
	b.Setenv("BANGER_FC_SPEC", testbin.SpecPath())

	dir, err := os.MkdirTemp("", "bgb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	layout := testLayoutAt(dir)
	cfg := testConfig()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	opts := Options{Layout: layout, Config: cfg, Build: buildinfo.Current(),
		Driver: firecracker.New(firecracker.Config{BinaryPath: bins.FakeFirecracker})}
	go func() { done <- Run(ctx, opts, ready) }()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	c := api.NewClient(layout.SocketPath())
	b.Cleanup(func() {
		// VMMs outlive the daemon by design: delete every VM first, so a
		// benchmark that stopped half-way leaves no process behind.
		if vms, err := c.VMList(context.Background()); err == nil {
			for _, vm := range vms {
				_ = c.VMDelete(context.Background(), api.VMDeleteRequest{Name: vm.Name}, nil)
			}
		}
		c.Close()
		cancel()
		<-done
	})

	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", rootfs, "16M").CombinedOutput(); err != nil {
		b.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if _, err := c.ImageImport(context.Background(), api.ImageImportRequest{Name: "default", Kernel: bins.Agent, Rootfs: rootfs}, nil); err != nil {
		b.Fatal(err)
	}
	return c
}

// createTiming is one create's wall time split at the daemon's progress
// events: disk (clone + resize), launch (VMM process start, API config,
// InstanceStart), agent (until the guest agent answers) and setup (SSH key,
// host-key pin, file sync) — so banger's own work can be told apart from
// the stand-in VMM's and guest's start-up.
type createTiming struct {
	total, disk, launch, agent, setup time.Duration
}

// createOne creates name, booting it cold (Cold) or as the daemon would
// (warm, from the golden snapshot, once one exists).
func createOne(b *testing.B, c *api.Client, name string, cold bool) createTiming {
	start := time.Now()
	marks := map[string]time.Duration{}
	req := api.VMCreateRequest{Name: name, VCPUs: 1, MemoryMiB: 128, DiskSizeBytes: 64 << 20, Cold: cold}
	vm, err := c.VMCreate(context.Background(), req, func(e api.Event) {
		if _, seen := marks[e.Stage]; !seen {
			marks[e.Stage] = time.Since(start)
		}
	})
	t := createTiming{total: time.Since(start)}
	if err != nil || vm.State != api.VMRunning {
		b.Fatalf("create %s: %v (%s)", name, err, vm.State)
	}
	t.disk = marks["boot"]
	t.launch = marks["agent"] - marks["boot"]
	t.agent = marks["agent-ready"] - marks["agent"]
	t.setup = t.total - marks["agent-ready"]
	return t
}

func deleteAll(b *testing.B, c *api.Client, names []string) {
	for _, n := range names {
		if err := c.VMDelete(context.Background(), api.VMDeleteRequest{Name: n}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func percentile(ds []time.Duration, q float64) float64 {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	b.ReportMetric(percentile(ds, 0.50), "p50-ms")
	b.ReportMetric(percentile(ds, 0.99), "p99-ms")
	b.ReportMetric(0, "ns/op") // wall time per op is meaningless across batch sizes
}

// reportTimings adds the p50 of each stage to the total's percentiles.
func reportTimings(b *testing.B, ts []createTiming) {
	stage := func(f func(createTiming) time.Duration) []time.Duration {
		out := make([]time.Duration, len(ts))
		for i, t := range ts {
			out[i] = f(t)
		}
		return out
	}
	reportPercentiles(b, stage(func(t createTiming) time.Duration { return t.total }))
	b.ReportMetric(percentile(stage(func(t createTiming) time.Duration { return t.disk }), 0.5), "disk-p50-ms")
	b.ReportMetric(percentile(stage(func(t createTiming) time.Duration { return t.launch }), 0.5), "launch-p50-ms")
	b.ReportMetric(percentile(stage(func(t createTiming) time.Duration { return t.agent }), 0.5), "agent-p50-ms")
	b.ReportMetric(percentile(stage(func(t createTiming) time.Duration { return t.setup }), 0.5), "setup-p50-ms")
}

// cpuMeter adds up this process's CPU time (user + system) between start
// and stop: the in-process daemon's own work, plus the benchmark's client,
// which is small. Unlike wall time it does not count waiting for the
// stand-in VMMs and guests (other processes) or for a loaded machine.
type cpuMeter struct {
	total, at time.Duration
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (m *cpuMeter) start() { m.at = processCPU() }
func (m *cpuMeter) stop()  { m.total += processCPU() - m.at }

// report adds banger's own CPU time per create.
func (m *cpuMeter) report(b *testing.B, creates int) {
	b.ReportMetric(float64(m.total.Microseconds())/1000/float64(creates), "daemon-cpu-ms/create")
}

// BenchmarkCreateToRunning measures vm.create until the agent answers, one
// at a time. Run with -benchtime 100x (or more) for stable percentiles.
func BenchmarkCreateToRunning(b *testing.B) {
	c := benchDaemon(b)
	var ts []createTiming
	var names []string
	b.ResetTimer()
	var cpu cpuMeter
	cpu.start()
	for i := range b.N {
		name := fmt.Sprintf("b%d", i)
		ts = append(ts, createOne(b, c, name, true))
		names = append(names, name)
	}
	cpu.stop()
	b.StopTimer()
	reportTimings(b, ts)
	cpu.report(b, len(ts))
	deleteAll(b, c, names)
}

// BenchmarkWarmCreateToRunning is BenchmarkCreateToRunning for warm
// creates: one cold create makes the image's golden snapshot, then each
// create restores it (disk = copy of the snapshot's disk; launch = restore;
// setup = the new identity).
func BenchmarkWarmCreateToRunning(b *testing.B) {
	c := benchDaemon(b)
	createOne(b, c, "golden", false)
	var ts []createTiming
	names := []string{"golden"}
	b.ResetTimer()
	var cpu cpuMeter
	cpu.start()
	for i := range b.N {
		name := fmt.Sprintf("w%d", i)
		ts = append(ts, createOne(b, c, name, false))
		names = append(names, name)
	}
	cpu.stop()
	b.StopTimer()
	reportTimings(b, ts)
	cpu.report(b, len(ts))
	deleteAll(b, c, names)
}

// BenchmarkCreateToRunning20Parallel creates VMs in waves of 20 concurrent
// creates and reports the per-create latency under that load.
func BenchmarkCreateToRunning20Parallel(b *testing.B) {
	c := benchDaemon(b)
	var (
		mu    sync.Mutex
		ts    []createTiming
		names []string
	)
	b.ResetTimer()
	var cpu cpuMeter
	var wall time.Duration
	for i := 0; i < b.N; i += 20 {
		cpu.start()
		waveStart := time.Now()
		var wg sync.WaitGroup
		for j := i; j < min(i+20, b.N); j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("p%d", j)
				d := createOne(b, c, name, true)
				mu.Lock()
				ts, names = append(ts, d), append(names, name)
				mu.Unlock()
			}()
		}
		wg.Wait()
		waveWall := time.Since(waveStart)
		wall += waveWall
		cpu.stop()
		// Per wave, so a slowdown as the daemon ages shows (-v).
		b.Logf("wave %d: %d creates in %v (%.1f/s)", i/20, min(i+20, b.N)-i, waveWall.Round(time.Millisecond), float64(min(i+20, b.N)-i)/waveWall.Seconds())
		b.StopTimer()
		deleteAll(b, c, names)
		names = nil
		b.StartTimer()
	}
	b.StopTimer()
	reportTimings(b, ts)
	cpu.report(b, len(ts))
	b.ReportMetric(float64(len(ts))/wall.Seconds(), "creates/s")
}

// BenchmarkStandInStartup measures what the stand-ins themselves cost on
// the create path: the fake Firecracker's start until its API answers
// (it parses the OpenAPI spec at start-up, which real Firecracker does not)
// plus the agent's start until it listens. Subtracting this from
// BenchmarkCreateToRunning gives banger's own control-plane overhead.
func BenchmarkStandInStartup(b *testing.B) {
	bins, err := testbin.Build()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	b.Setenv("BANGER_FC_SPEC", testbin.SpecPath())
	dir, err := os.MkdirTemp("", "bgs")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	var ds []time.Duration
	b.ResetTimer()
	for i := range b.N {
		api := filepath.Join(dir, fmt.Sprintf("fc%d.sock", i))
		agentSock := filepath.Join(dir, fmt.Sprintf("ag%d.sock", i))
		start := time.Now()
		fc := exec.Command(bins.FakeFirecracker, "--api-sock", api)
		ag := exec.Command(bins.Agent, "--listen", "unix:"+agentSock)
		if err := fc.Start(); err != nil {
			b.Fatal(err)
		}
		waitDial(b, api)
		if err := ag.Start(); err != nil {
			b.Fatal(err)
		}
		waitDial(b, agentSock)
		ds = append(ds, time.Since(start))
		for _, c := range []*exec.Cmd{fc, ag} {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		// Best effort: a socket left behind fails the next Listen loudly.
		_ = os.Remove(api)
		_ = os.Remove(agentSock)
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

func waitDial(b *testing.B, sock string) {
	for range 5000 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		time.Sleep(500 * time.Microsecond)
	}
	b.Fatalf("%s never answered", sock)
}
