package e2e

// The real-boot environment: a user-mode banger whose daemon runs inside a
// network namespace the test makes (bridge, taps, NAT and the DNS resolver
// all live there), with a real VMM (QEMU microvm, under TCG on hosts without
// usable KVM; Firecracker with BANGER_E2E_VMM=firecracker) booting the
// busybox image banger builds itself. A second namespace, "upstream",
// stands in for the internet: the daemon's namespace routes to it through a
// veth pair, and it serves HTTP and DNS.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/store"
	"github.com/banger-dev/banger/test/testbin"
)

// Addresses of the fake internet. 198.51.100.0/24 is TEST-NET-2: reserved
// for documentation, so it collides with no real route.
const (
	upstreamIP     = "198.51.100.1"
	daemonUplinkIP = "198.51.100.2"
	upstreamHTTP   = upstreamIP + ":8080"
	upstreamName   = "upstream.example"
	realSubnet     = "172.31.8.0/24"
	realGateway    = "172.31.8.1"
)

// Boot budgets (TEST-HOST.md: busybox guests boot in 5-7 s under TCG,
// systemd guests in 20-35 s, and times swing up to 2x between runs).
const (
	busyboxBootTimeout = 90 * time.Second
	systemdBootTimeout = 180 * time.Second
)

// realHost is one user-mode banger installation whose daemon runs in its own
// network namespace with a real VMM.
type realHost struct {
	tb       testing.TB
	dir      string
	env      []string
	ns       string // the daemon's network namespace
	upstream string // the fake internet's namespace
	vmm      string
	// bootTimeout is what the config gives a boot.
	bootTimeout time.Duration
	// networkOff configures no VM networking (the image builder).
	networkOff bool
	// shared is state every view of the host (one per subtest) adds to.
	shared *hostShared
}

type hostShared struct {
	mu sync.Mutex
	// daemons are the PIDs of every bangerd this host ran, checked at the end.
	daemons []int
}

// on returns a view of the host that reports failures to tb: each subtest
// must fail through its own *testing.T.
func (h *realHost) on(tb testing.TB) *realHost {
	c := *h
	c.tb = tb
	return &c
}

// realBootVMM is the VMM the suite runs: $BANGER_E2E_VMM (qemu or
// firecracker; scripts/smoke.sh sets it), else qemu.
func realBootVMM() string {
	if v := os.Getenv("BANGER_E2E_VMM"); v != "" {
		return v
	}
	return "qemu"
}

// needRealBoot skips unless this machine can boot real guests, saying why.
func needRealBoot(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("real boots are skipped with -short")
	}
	if os.Geteuid() != 0 {
		tb.Skip("real boots need root: the daemon runs in a network namespace it builds a bridge, taps and NAT in")
	}
	vmm := realBootVMM()
	switch vmm {
	case "qemu":
		if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			tb.Skip("real boots need qemu-system-x86_64 (apt-get install --no-install-recommends qemu-system-x86)")
		}
	case "firecracker":
		if _, err := exec.LookPath("firecracker"); err != nil {
			tb.Skip("BANGER_E2E_VMM=firecracker but no firecracker binary is on PATH")
		}
	default:
		tb.Fatalf("BANGER_E2E_VMM=%q: want qemu or firecracker", vmm)
	}
	for _, tool := range []string{"ip", "nft", "apt-get", "apt-cache", "dpkg-deb", "depmod", "mkfs.ext4", "resize2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("real boots need %s (iproute2, nftables, apt, kmod, e2fsprogs)", tool)
		}
	}
	if bb, err := exec.LookPath("busybox"); err != nil || !staticELF(bb) {
		tb.Skip("real boots need a static busybox for the test image (apt-get install busybox-static)")
	}
	if err := exec.Command("apt-cache", "show", "--no-all-versions", "linux-image-amd64").Run(); err != nil {
		tb.Skip("real boots need Debian's kernel package, and apt knows no linux-image-amd64 here (run apt-get update)")
	}
	return vmm
}

func staticELF(path string) bool {
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

// testCache is where downloads and boot files persist between runs:
// $BANGER_TEST_CACHE, else ~/.cache/banger-test (shared with the image and
// QEMU packages' tests).
func testCache(tb testing.TB) string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		tb.Skipf("no cache dir: %v (set BANGER_TEST_CACHE)", err)
	}
	return filepath.Join(d, "banger-test")
}

func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ipCmd runs ip(8) and fails the test on error.
func ipCmd(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newRealHost builds the namespaces, the fake internet and a banger
// installation configured for vmm, and registers their removal.
func newRealHost(tb testing.TB, vmm string, bootTimeout time.Duration) *realHost {
	tb.Helper()
	suffix := randomSuffix()
	h := &realHost{tb: tb, ns: "bgrb-" + suffix, upstream: "bgup-" + suffix, vmm: vmm, bootTimeout: bootTimeout,
		shared: &hostShared{}}
	for _, ns := range []string{h.ns, h.upstream} {
		ipCmd(tb, "netns", "add", ns)
		tb.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		ipCmd(tb, "-n", ns, "link", "set", "lo", "up")
	}
	// The veth pair is made inside the daemon's namespace with its peer
	// moved straight to upstream: neither end ever exists in the host's.
	ipCmd(tb, "-n", h.ns, "link", "add", "up0", "type", "veth", "peer", "name", "dn0", "netns", h.upstream)
	ipCmd(tb, "-n", h.ns, "addr", "add", daemonUplinkIP+"/24", "dev", "up0")
	ipCmd(tb, "-n", h.ns, "link", "set", "up0", "up")
	ipCmd(tb, "-n", h.ns, "route", "add", "default", "via", upstreamIP)
	ipCmd(tb, "-n", h.upstream, "addr", "add", upstreamIP+"/24", "dev", "dn0")
	ipCmd(tb, "-n", h.upstream, "link", "set", "dn0", "up")
	// No route back to the VM subnet in upstream: only NAT gets answers home.

	// `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over
	// /etc/resolv.conf for the daemon, whose DNS forwards there.
	etc := filepath.Join("/etc/netns", h.ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = os.RemoveAll(etc)
		_ = os.Remove("/etc/netns") // only if empty: others may use it
	})
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+upstreamIP+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	serveUpstream(tb, h.upstream)

	wrapper := filepath.Join(tb.TempDir(), "bangerd-in-ns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", h.ns, bins.Bangerd)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		tb.Fatal(err)
	}
	h.dir, h.env = newInstall(tb, "bgrb", wrapper)
	h.writeConfig()
	tb.Cleanup(h.teardown)
	return h
}

// newInstall makes the directories of one user-mode banger installation
// whose CLI starts daemon (bangerd or a wrapper), and returns its root and
// environment. The daemon caches kernels and boot files under its state
// dir: those point at the shared test cache (keyed by inputs inside), so
// reruns download and extract nothing; debootstrap's .debs get a cache of
// their own, as internal/image's test may run debootstrap at the same time.
func newInstall(tb testing.TB, prefix, daemon string) (string, []string) {
	tb.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	env := append(os.Environ(),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_STATE_HOME="+filepath.Join(dir, "state"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		// Keeps the daemon from taking an agent installed on this machine
		// (by `make demo`): it uses the one built beside bangerd.
		"BANGER_SYSTEM_ROOT="+filepath.Join(dir, "root"),
		"BANGER_DAEMON="+daemon,
	)
	for _, d := range []string{"home", "config/banger", "state/banger/cache", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			tb.Fatal(err)
		}
	}
	cache := testCache(tb)
	for link, target := range map[string]string{
		"kernels": "kernels", "boot": "boot", "debootstrap": "debootstrap-e2e",
	} {
		if err := os.MkdirAll(filepath.Join(cache, target), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(cache, target), filepath.Join(dir, "state/banger/cache", link)); err != nil {
			tb.Fatal(err)
		}
	}
	return dir, env
}

// newBusyboxHost is a real-boot host whose image "default" is the busybox
// image, built by a second daemon (newBuilderHost) and imported, with this
// host's daemon running.
func newBusyboxHost(t *testing.T, vmm string) *realHost {
	t.Helper()
	h := newRealHost(t, vmm, busyboxBootTimeout)
	start := time.Now()
	builder := newBuilderHost(t, h)
	img := builder.buildImage("default", "busybox")
	builder.run("daemon", "stop")
	h.importImage("default", img)
	h.daemonPID()
	t.Logf("busybox image built and imported in %s", time.Since(start).Round(100*time.Millisecond))
	return h
}

// newBuilderHost is a second installation for image builds, its daemon in
// the host's network namespace with networking off. Builds download
// (Debian's kernel, debootstrap's packages) and the daemon's namespace
// reaches only the fake internet; this daemon creates nothing in the
// host's namespace, only its downloads use the uplink, as the image
// package's tests do. Its images are imported into the suite's host.
func newBuilderHost(tb testing.TB, main *realHost) *realHost {
	tb.Helper()
	b := &realHost{tb: tb, vmm: main.vmm, bootTimeout: main.bootTimeout, networkOff: true, shared: main.shared}
	b.dir, b.env = newInstall(tb, "bgrbb", bins.Bangerd)
	b.writeConfig()
	tb.Cleanup(b.teardown)
	return b
}

// writeConfig writes the host's config; a running daemon must be stopped
// for a change to take effect.
func (h *realHost) writeConfig() {
	h.tb.Helper()
	vmm := fmt.Sprintf("vmm = %q\n", h.vmm)
	if h.vmm == "firecracker" {
		fc, _ := exec.LookPath("firecracker")
		vmm += fmt.Sprintf("[firecracker]\nbinary = %q\n", fc)
	}
	net := fmt.Sprintf("enabled = \"on\"\nsubnet = %q\n", realSubnet)
	if h.networkOff {
		net = "enabled = \"off\"\n"
	}
	cfg := vmm + fmt.Sprintf(`[vm]
vcpus = 1
memory_mib = 256
disk_size = "256M"
boot_timeout = %q
stop_timeout = "30s"
[network]
`, h.bootTimeout.String()) + net
	if err := os.WriteFile(filepath.Join(h.dir, "config", "banger", "config.toml"), []byte(cfg), 0o600); err != nil {
		h.tb.Fatal(err)
	}
}

// teardown ends whatever a failed test left running: VMM processes of this
// host (by PID) and its daemon.
func (h *realHost) teardown() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.Banger, "daemon", "stop")
	cmd.Env = h.env
	_ = cmd.Run()
	for _, pid := range h.vmmPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range h.daemonPIDs() {
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (h *realHost) runDir() string   { return filepath.Join(h.dir, "run", "banger") }
func (h *realHost) stateDir() string { return filepath.Join(h.dir, "state", "banger") }
func (h *realHost) socket() string   { return filepath.Join(h.runDir(), "bangerd.sock") }

// command is banger with this host's environment; in the daemon's network
// namespace when inNS (for ssh, which dials the guest's address).
func (h *realHost) command(ctx context.Context, inNS bool, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if inNS {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, bins.Banger}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bins.Banger, args...)
	}
	cmd.Env = h.env
	return cmd
}

// result is one banger run.
type result struct {
	stdout, stderr string
	code           int
}

func (h *realHost) runCmd(inNS bool, stdin []byte, args ...string) result {
	// A guard against hangs (image builds run debootstrap); the flows'
	// own waits are the boot timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := h.command(ctx, inNS, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
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

func (h *realHost) run(args ...string) result { return h.runCmd(false, nil, args...) }

// must runs banger and fails the test unless it exits 0.
func (h *realHost) must(args ...string) string {
	h.tb.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.tb.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, h.diagnostics())
	}
	return r.stdout
}

// exec runs argv in the VM through `banger vm exec`.
func (h *realHost) exec(vm string, argv ...string) result {
	return h.run(append([]string{"vm", "exec", vm, "--"}, argv...)...)
}

// mustExec runs argv in the VM and fails unless it exits 0.
func (h *realHost) mustExec(vm string, argv ...string) string {
	h.tb.Helper()
	r := h.exec(vm, argv...)
	if r.code != 0 {
		h.tb.Fatalf("vm exec %s -- %s: exit %d\nstdout: %s\nstderr: %s%s", vm, strings.Join(argv, " "), r.code, r.stdout, r.stderr, h.diagnostics())
	}
	return r.stdout
}

// diagnostics is the tail of the daemon log, for failure messages.
func (h *realHost) diagnostics() string {
	log, _ := os.ReadFile(filepath.Join(h.stateDir(), "bangerd.log"))
	if len(log) > 4000 {
		log = log[len(log)-4000:]
	}
	return "\ndaemon log tail:\n" + string(log)
}

func (h *realHost) vm(name string) api.VM {
	h.tb.Helper()
	var vm api.VM
	if err := json.Unmarshal([]byte(h.must("vm", "show", name, "--json")), &vm); err != nil {
		h.tb.Fatal(err)
	}
	return vm
}

// daemonPID starts the daemon if needed, asks it for its PID and
// remembers it for the final check.
func (h *realHost) daemonPID() int {
	h.tb.Helper()
	h.must("vm", "list") // `daemon status` reports; any other command starts it
	var st struct {
		Info api.DaemonInfo `json:"info"`
	}
	if err := json.Unmarshal([]byte(h.must("daemon", "status", "--json")), &st); err != nil {
		h.tb.Fatal(err)
	}
	h.shared.mu.Lock()
	if !slices.Contains(h.shared.daemons, st.Info.PID) {
		h.shared.daemons = append(h.shared.daemons, st.Info.PID)
	}
	h.shared.mu.Unlock()
	return st.Info.PID
}

// daemonPIDs are the daemons this host has run.
func (h *realHost) daemonPIDs() []int {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	return slices.Clone(h.shared.daemons)
}

// serialTail is the end of a VM's console, for failure messages.
func (h *realHost) serialTail(vm api.VM) string {
	b, _ := os.ReadFile(vm.SerialLog)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// vmmPIDs lists live processes started from this host's runtime dir (the
// VMMs: their command lines name their sockets there).
func (h *realHost) vmmPIDs() []int { return testbin.ProcessesUnder(h.dir) }

// taps lists banger's taps in the daemon's namespace.
func (h *realHost) taps() []string {
	return linksWithPrefix(h.ns, network.TapPrefix)
}

// linksWithPrefix lists the links of namespace ns ("" for the host's)
// whose names start with one of prefixes.
func linksWithPrefix(ns string, prefixes ...string) []string {
	args := []string{"-o", "link", "show"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, _ := exec.Command("ip", args...).Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				names = append(names, name)
			}
		}
	}
	return names
}

// nftTables lists the nftables tables of namespace ns ("" for the host's).
func nftTables(ns string) []string {
	cmd := exec.Command("nft", "list", "tables")
	if ns != "" {
		cmd = exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables")
	}
	out, _ := cmd.Output()
	var tables []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			tables = append(tables, l)
		}
	}
	return tables
}

// loopDevicesUnder lists loop devices whose backing file is under dir.
func loopDevicesUnder(dir string) []string {
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

// leases reads the leases left in the host's database (daemon stopped).
func (h *realHost) leases() []store.Lease {
	h.tb.Helper()
	st, err := store.Open(context.Background(), filepath.Join(h.stateDir(), "banger.db"))
	if err != nil {
		h.tb.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	ls, err := st.ListLeases(context.Background())
	if err != nil {
		h.tb.Fatal(err)
	}
	return ls
}

// hostSnapshot is what the suite must not change in the host's own network
// namespace and kernel.
type hostSnapshot struct {
	links  []string
	tables []string
}

func snapshotHost() hostSnapshot {
	return hostSnapshot{
		links:  linksWithPrefix("", "banger", network.TapPrefix, "up0", "dn0"),
		tables: nftTables(""),
	}
}

// serveUpstream runs the fake internet inside namespace ns until the test
// ends: an HTTP server on upstreamHTTP that tells each client the address
// it came from, and a DNS server on upstreamIP:53 that knows upstreamName.
func serveUpstream(tb testing.TB, ns string) {
	tb.Helper()
	var (
		ln  net.Listener
		pc  net.PacketConn
		dln net.Listener
	)
	err := nstest.InNamed(ns, func() (err error) {
		if ln, err = net.Listen("tcp", upstreamHTTP); err != nil {
			return err
		}
		if pc, err = net.ListenPacket("udp", upstreamIP+":53"); err != nil {
			return err
		}
		dln, err = net.Listen("tcp", upstreamIP+":53")
		return err
	})
	if err != nil {
		tb.Fatalf("upstream servers: %v", err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || strings.TrimSpace(line) == "" {
						break
					}
				}
				from, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				body := "hello from upstream; you came from " + from + "\n"
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	handler := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(req)
		if len(req.Question) == 1 && strings.EqualFold(req.Question[0].Name, upstreamName+".") {
			if req.Question[0].Qtype == mdns.TypeA {
				rr, _ := mdns.NewRR(upstreamName + ". 30 IN A " + upstreamIP)
				m.Answer = append(m.Answer, rr)
			}
		} else {
			m.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	udp := &mdns.Server{PacketConn: pc, Handler: handler}
	tcp := &mdns.Server{Listener: dln, Handler: handler}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	tb.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createTimed creates a VM through the API client and returns the time of
// each progress stage's first event, relative to sending the request, and
// the total until the response.
func (h *realHost) createTimed(req api.VMCreateRequest) (stages []stageTime, total time.Duration, err error) {
	c := api.NewClient(h.socket())
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), h.bootTimeout+time.Minute)
	defer cancel()
	start := time.Now()
	seen := map[string]bool{}
	_, err = c.VMCreate(ctx, req, func(ev api.Event) {
		if ev.Stage == "" || seen[ev.Stage] {
			return
		}
		seen[ev.Stage] = true
		at := ev.Time
		if at.IsZero() {
			at = time.Now()
		}
		stages = append(stages, stageTime{ev.Stage, at.Sub(start)})
	})
	return stages, time.Since(start), err
}

type stageTime struct {
	stage string
	at    time.Duration
}

// bootSplit divides a create into banger's own work and the VMM and
// guest's boot: from the "agent" event (the VMM is running) to
// "agent-ready" (the agent answered) is the boot; the rest is banger.
func bootSplit(stages []stageTime, total time.Duration) (banger, boot time.Duration, err error) {
	var launched, ready time.Duration
	for _, s := range stages {
		switch s.stage {
		case "agent":
			launched = s.at
		case "agent-ready":
			ready = s.at
		}
	}
	if launched == 0 || ready == 0 {
		return 0, 0, errors.New("the create reported no agent/agent-ready events")
	}
	boot = ready - launched
	return total - boot, boot, nil
}

func formatStages(stages []stageTime, total time.Duration) string {
	var b strings.Builder
	for _, s := range stages {
		fmt.Fprintf(&b, "%s@%.2fs ", s.stage, s.at.Seconds())
	}
	fmt.Fprintf(&b, "response@%.2fs", total.Seconds())
	return b.String()
}
