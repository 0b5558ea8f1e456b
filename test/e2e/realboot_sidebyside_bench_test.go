package e2e

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/system"
)

// BenchmarkRealBootSideBySide measures, in one run and on one host, what
// docs/performance.md compares (QEMU only: the by-hand baseline reads
// QEMU's command line):
//
//	cold      vm.create with Cold → response (agent ready, guest set up)
//	by-hand   the cold VM's own QEMU command line (same kernel, initrd,
//	          arguments; its run dir swapped for a fresh one, its disk for a
//	          fresh clone of the image as banger makes it), run by hand in
//	          the daemon's namespace → the agent answers a health call
//	warm      vm.create from the image's golden snapshot → response
//	          (restored, new identity given)
//	pause, resume, snapshot save (and its size), rollback of a 256 MiB VM;
//	snapshot save of a 1 GiB VM; fork of 10 VMs from one snapshot (total,
//	and the forks' QEMU memory: RSS, and PSS, which counts shared pages once)
//
// Each iteration does all of it once; metrics are medians over iterations.
//
//	go test -run '^$' -bench RealBootSideBySide -benchtime 2x -timeout 60m ./test/e2e
func BenchmarkRealBootSideBySide(b *testing.B) {
	vmm := needRealBoot(b)
	if vmm != "qemu" {
		b.Skip("the by-hand baseline reads QEMU's command line; BANGER_E2E_VMM=qemu")
	}
	h := newRealHost(b, vmm, busyboxBootTimeout)
	img := h.buildImage("default", "busybox")
	h.daemonPID()
	c := api.NewClient(h.socket())
	defer c.Close()
	// The first create that may use a golden snapshot makes it.
	stages, total, err := h.createTimed(api.VMCreateRequest{Name: "golden"})
	if err != nil {
		b.Fatalf("golden create: %v%s", err, h.diagnostics())
	}
	b.Logf("golden create: %s", formatStages(stages, total))
	m := sideMetrics{}
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer() // the rounds are minutes of waiting; ns/op says nothing
		sideBySideRound(b, h, c, img, i, m)
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		b.ReportMetric(median(m[name]), name)
	}
	if cold, warm := median(m["cold-s"]), median(m["warm-s"]); warm > 0 {
		b.ReportMetric(cold/warm, "cold/warm")
	}
	if cold, hand := median(m["cold-s"]), median(m["byhand-s"]); hand > 0 {
		b.ReportMetric(cold/hand, "cold/byhand")
		b.ReportMetric(median(m["cold-agent-ready-s"])/hand, "cold-agent-ready/byhand")
	}
	b.ReportMetric(0, "ns/op")
}

// sideMetrics are the samples of each metric, by metric name.
type sideMetrics map[string][]float64

func (m sideMetrics) add(name string, v float64) { m[name] = append(m[name], v) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

func stageAt(stages []stageTime, name string) (time.Duration, bool) {
	for _, s := range stages {
		if s.stage == name {
			return s.at, true
		}
	}
	return 0, false
}

func sideBySideRound(b *testing.B, h *realHost, c *api.Client, img api.Image, i int, m sideMetrics) {
	ctx := context.Background()
	cold, warm := fmt.Sprintf("cold-%d", i), fmt.Sprintf("warm-%d", i)

	stages, total, err := h.createTimed(api.VMCreateRequest{Name: cold, Cold: true})
	if err != nil {
		b.Fatalf("cold create: %v%s", err, h.diagnostics())
	}
	b.Logf("cold: %s", formatStages(stages, total))
	m.add("cold-s", total.Seconds())
	if at, ok := stageAt(stages, "agent-ready"); ok {
		m.add("cold-agent-ready-s", at.Seconds())
	}
	hand := h.byHand(b, cold, img)
	b.Logf("by hand: agent answered after %s", hand.Round(time.Millisecond))
	m.add("byhand-s", hand.Seconds())
	h.must("vm", "delete", "--force", cold)

	stages, total, err = h.createTimed(api.VMCreateRequest{Name: warm})
	if err != nil {
		b.Fatalf("warm create: %v%s", err, h.diagnostics())
	}
	b.Logf("warm: %s", formatStages(stages, total))
	if _, ok := stageAt(stages, "restore"); !ok {
		b.Fatalf("warm create did not restore the golden snapshot: %s", formatStages(stages, total))
	}
	m.add("warm-s", total.Seconds())

	m.add("pause-ms", timed(b, "pause", func() error { _, err := c.VMPause(ctx, warm); return err }).Seconds()*1000)
	m.add("resume-ms", timed(b, "resume", func() error { _, err := c.VMResume(ctx, warm); return err }).Seconds()*1000)

	snap := fmt.Sprintf("s-%d", i)
	var s api.Snapshot
	m.add("save-256M-s", timed(b, "snapshot", func() (err error) {
		s, err = c.VMSnapshot(ctx, api.VMSnapshotRequest{Name: warm, Snapshot: snap}, nil)
		return err
	}).Seconds())
	m.add("size-256M-MB", float64(s.SizeBytes)/1e6)
	m.add("rollback-s", timed(b, "rollback", func() error {
		_, err := c.VMRollback(ctx, api.VMRollbackRequest{Name: warm, Snapshot: snap}, nil)
		return err
	}).Seconds())

	var forks []api.VM
	fork := fmt.Sprintf("f%d", i)
	m.add("fork10-s", timed(b, "fork", func() (err error) {
		forks, err = c.VMFork(ctx, api.VMForkRequest{Source: snap, Name: fork, Count: 10}, nil)
		return err
	}).Seconds())
	var rss, pss float64
	for _, f := range forks {
		r, p := qemuMemory(b, f.PID)
		rss, pss = rss+r, pss+p
	}
	m.add("fork-rss-MB/vm", rss/float64(len(forks)))
	m.add("fork-pss-MB/vm", pss/float64(len(forks)))
	for _, f := range forks {
		h.must("vm", "delete", "--force", f.Name)
	}
	h.must("vm", "delete", "--force", warm)

	big := fmt.Sprintf("big-%d", i)
	if _, _, err := h.createTimed(api.VMCreateRequest{Name: big, MemoryMiB: 1024, Cold: true}); err != nil {
		b.Fatalf("1 GiB create: %v%s", err, h.diagnostics())
	}
	m.add("save-1G-s", timed(b, "snapshot 1 GiB", func() (err error) {
		s, err = c.VMSnapshot(ctx, api.VMSnapshotRequest{Name: big, Snapshot: big}, nil)
		return err
	}).Seconds())
	m.add("size-1G-MB", float64(s.SizeBytes)/1e6)
	h.must("vm", "delete", "--force", big)
}

// timed runs f, failing the benchmark if it fails, and returns how long it took.
func timed(b *testing.B, what string, f func() error) time.Duration {
	start := time.Now()
	if err := f(); err != nil {
		b.Fatalf("%s: %v", what, err)
	}
	return time.Since(start)
}

// qemuMemory is the RSS and PSS of process pid, in MB (smaps_rollup).
func qemuMemory(b *testing.B, pid int) (rss, pss float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatalf("memory of pid %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			rss = kb * 1024 / 1e6
		case "Pss:":
			pss = kb * 1024 / 1e6
		}
	}
	return rss, pss
}

// byHand stops VM name and runs its QEMU command line by hand (in the
// daemon's namespace, where its tap lives; QEMU creates the tap itself),
// with its run dir swapped for a fresh one and its root disk for a fresh
// clone of img, and returns the time from
// starting QEMU until the guest agent answers a health call, polled as the
// daemon polls it. QEMU is killed afterwards.
func (h *realHost) byHand(b *testing.B, name string, img api.Image) time.Duration {
	b.Helper()
	vm := h.vm(name)
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", vm.PID))
	if err != nil {
		b.Fatalf("command line of %s's QEMU: %v", name, err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	runDir := filepath.Dir(chardevSocket(argv, "qmp"))
	if runDir == "." {
		b.Fatalf("no QMP socket in %s's command line: %q", name, argv)
	}
	tap, bridge := h.tapOf(b, argv)
	h.must("vm", "stop", "--force", name)
	tmp, err := os.MkdirTemp("", "bh")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	for k := range argv {
		argv[k] = strings.ReplaceAll(argv[k], runDir, tmp)
	}
	// A fresh disk, made as banger makes one (clone of the image, grown to
	// the VM's size): the cold VM's own has had its first boot.
	rootDisk := blockdevFile(argv)
	if rootDisk == "" {
		b.Fatalf("no root disk in %s's command line: %q", name, argv)
	}
	fresh := filepath.Join(tmp, "root.ext4")
	if _, err := disk.CloneResized(context.Background(), system.ExecRunner{}, img.Rootfs, fresh, vm.DiskSizeBytes); err != nil {
		b.Fatalf("fresh disk for the by-hand boot: %v", err)
	}
	for k := range argv {
		if k > 0 && argv[k-1] == "-blockdev" && strings.HasSuffix(argv[k], "file.filename="+rootDisk) {
			argv[k] = strings.TrimSuffix(argv[k], rootDisk) + fresh
		}
	}
	// The tap on the bridge, as banger sets it up before it starts QEMU: a
	// guest whose network leads nowhere waits for it.
	if tap != "" {
		ipCmd(b, "-n", h.ns, "tuntap", "add", "dev", tap, "mode", "tap")
		defer ipCmd(b, "-n", h.ns, "link", "del", tap)
		ipCmd(b, "-n", h.ns, "link", "set", tap, "master", bridge, "up")
	}
	agentSock := chardevSocket(argv, "agent")
	ctx, cancel := context.WithTimeout(context.Background(), h.bootTimeout)
	defer cancel()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns}, argv...)...)
	log, err := os.Create(filepath.Join(tmp, "qemu.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	delay := 2 * time.Millisecond
	for {
		if healthy(ctx, agentSock) {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			out, _ := os.ReadFile(log.Name())
			b.Fatalf("QEMU run by hand: no agent within %s\n%s", h.bootTimeout, out)
		case <-time.After(delay):
		}
		if time.Since(start) > 250*time.Millisecond {
			delay = min(delay*2, 100*time.Millisecond)
		}
	}
}

// tapOf is the tap named in argv's -netdev and the bridge it is on (both
// "" without one).
func (h *realHost) tapOf(b *testing.B, argv []string) (tap, bridge string) {
	for k, a := range argv {
		if k == 0 || argv[k-1] != "-netdev" {
			continue
		}
		for _, opt := range strings.Split(a, ",") {
			if v, ok := strings.CutPrefix(opt, "ifname="); ok {
				tap = v
			}
		}
	}
	if tap == "" {
		return "", ""
	}
	out, err := exec.Command("ip", "-n", h.ns, "-o", "link", "show", "dev", tap).CombinedOutput()
	if err != nil {
		b.Fatalf("tap %s: %v %s", tap, err, out)
	}
	f := strings.Fields(string(out))
	if i := slices.Index(f, "master"); i >= 0 && i+1 < len(f) {
		return tap, f[i+1]
	}
	b.Fatalf("tap %s is on no bridge: %s", tap, out)
	return "", ""
}

// healthy is one health call to the agent behind a virtio-serial socket.
func healthy(ctx context.Context, sock string) bool {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(actx, "unix", sock)
	if err != nil {
		return false
	}
	defer conn.Close()
	_, err = agent.Health(actx, conn)
	return err == nil
}

// blockdevFile is the file.filename= of the first -blockdev in argv (the
// root drive comes first).
func blockdevFile(argv []string) string {
	for k, a := range argv {
		if k == 0 || argv[k-1] != "-blockdev" {
			continue
		}
		for _, opt := range strings.Split(a, ",") {
			if p, ok := strings.CutPrefix(opt, "file.filename="); ok {
				return p
			}
		}
	}
	return ""
}

// chardevSocket is the path= of the -chardev socket with id in argv.
func chardevSocket(argv []string, id string) string {
	for k, a := range argv {
		if k == 0 || argv[k-1] != "-chardev" || !strings.HasPrefix(a, "socket,") || !strings.Contains(a, ",id="+id+",") {
			continue
		}
		for _, opt := range strings.Split(a, ",") {
			if p, ok := strings.CutPrefix(opt, "path="); ok {
				return p
			}
		}
	}
	return ""
}

// BenchmarkRealBootWarmCreate measures warm creates alone (the golden
// snapshot is made first, untimed): vm.create → response, restore and new
// identity included, with every create's stages logged. The quick loop for
// work on the warm path; BenchmarkRealBootSideBySide is the record.
//
//	go test -run '^$' -bench RealBootWarmCreate -benchtime 5x -timeout 20m -v ./test/e2e
func BenchmarkRealBootWarmCreate(b *testing.B) {
	vmm := needRealBoot(b)
	h := newRealHost(b, vmm, busyboxBootTimeout)
	h.buildImage("default", "busybox")
	stages, total, err := h.createTimed(api.VMCreateRequest{Name: "golden"})
	if err != nil {
		b.Fatalf("golden create: %v%s", err, h.diagnostics())
	}
	b.Logf("golden create: %s", formatStages(stages, total))
	var warm []float64
	b.ResetTimer()
	for i := range b.N {
		name := fmt.Sprintf("warm-%d", i)
		stages, total, err := h.createTimed(api.VMCreateRequest{Name: name})
		if err != nil {
			b.Fatalf("warm create: %v%s", err, h.diagnostics())
		}
		b.StopTimer()
		if _, ok := stageAt(stages, "restore"); !ok {
			b.Fatalf("warm create did not restore the golden snapshot: %s", formatStages(stages, total))
		}
		b.Logf("warm: %s", formatStages(stages, total))
		warm = append(warm, total.Seconds())
		h.must("vm", "delete", "--force", name)
		b.StartTimer()
	}
	b.ReportMetric(median(warm), "warm-s")
	b.ReportMetric(0, "ns/op")
}
