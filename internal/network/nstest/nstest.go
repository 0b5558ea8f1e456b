// Package nstest gives banger's networking tests private network
// namespaces, so no test ever touches the host's own network.
//
// A root test starts with
//
//	if nstest.Sandbox(t) {
//		return
//	}
//
// which re-runs just that test in a child process placed in a fresh network
// namespace (only a loopback, brought up). Everything the test then does —
// every goroutine, every socket, every netlink and nftables call — happens
// inside that namespace, which the kernel destroys when the child exits.
// Inside it, NewNS makes further namespaces ("guest", "upstream") and Link
// joins them to the sandbox with veth pairs.
package nstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// sandboxEnv names the test a child process was started to run; its
// presence means "you are already inside the sandbox namespace".
const sandboxEnv = "BANGER_NSTEST_SANDBOX"

// RequireRoot skips t unless the process runs as root, which creating
// network namespaces, bridges and nftables tables needs.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces, bridges, taps and nftables tables (run the tests as root)")
	}
}

// InSandbox reports whether this process is a sandbox child, i.e. already
// inside a private network namespace made for one test.
func InSandbox() bool { return os.Getenv(sandboxEnv) != "" }

// Sandbox re-runs the calling top-level test in a child process inside a
// new network namespace and reports whether the caller should return
// because the child already ran it (true in the parent, false in the child).
// The parent fails with the child's output if the child failed, skips if
// the child skipped, and logs the child's output in verbose mode. It skips
// t when not root or when the kernel refuses a new network namespace.
func Sandbox(t *testing.T) bool {
	t.Helper()
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("nstest.Sandbox must be called from a top-level test, not %s", t.Name())
	}
	if os.Getenv(sandboxEnv) == t.Name() {
		if err := loopbackUp(); err != nil {
			t.Fatalf("bring up loopback in sandbox namespace: %v", err)
		}
		return false
	}
	RequireRoot(t)

	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.v=true", "-test.count=1"}
	if d, ok := t.Deadline(); ok {
		// The child times out a little before the parent, so its panic
		// (with goroutine dump) is what gets reported.
		if left := time.Until(d) - 5*time.Second; left > 0 {
			args = append(args, "-test.timeout="+left.Truncate(time.Second).String())
		}
	}
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Env = append(os.Environ(), sandboxEnv+"="+t.Name())
	if _, set := os.LookupEnv("GORACE"); !set {
		// A race-enabled binary otherwise sleeps a second at exit.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		// If the parent dies the child must not linger in its namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		if strings.Contains(err.Error(), "operation not permitted") || strings.Contains(err.Error(), "invalid argument") {
			t.Skipf("cannot create a network namespace here: %v", err)
		}
		t.Fatalf("test failed inside its sandbox network namespace (%v):\n%s", err, text)
	}
	if strings.Contains(text, "--- SKIP: "+t.Name()+" ") {
		t.Skipf("skipped inside its sandbox network namespace:\n%s", text)
	}
	if !strings.Contains(text, "--- PASS: "+t.Name()+" ") {
		t.Fatalf("sandbox child did not report %s as passed:\n%s", t.Name(), text)
	}
	if testing.Verbose() {
		t.Logf("sandbox child output:\n%s", text)
	}
	return true
}

// SandboxIfRoot is Sandbox for tests that expect to be refused before any
// system call (validation tests): as root they still run in a sandbox, so
// a regression that lets bad input through cannot touch the host's
// network; as an ordinary user they run in place, where the kernel would
// refuse any change anyway.
func SandboxIfRoot(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		return false
	}
	return Sandbox(t)
}

func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// NS is a network namespace created by NewNS. Its methods run work inside
// it from any goroutine.
type NS struct {
	h netns.NsHandle
}

// NewNS creates a network namespace with its loopback up; it is released
// (and, once its last socket closes, destroyed by the kernel) when the test
// ends.
func NewNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is switched into the new namespace and never
		// unlocked, so the runtime discards it when this goroutine ends
		// instead of reusing it for unrelated goroutines.
		runtime.LockOSThread()
		h, err := netns.New()
		if err == nil {
			err = loopbackUp()
		}
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		if r.h.IsOpen() {
			_ = r.h.Close()
		}
		t.Fatalf("create network namespace: %v", r.err)
	}
	ns := &NS{h: r.h}
	t.Cleanup(func() { _ = ns.h.Close() })
	return ns
}

// Handle is the namespace's file descriptor handle, for netlink.NewHandleAt
// and nftables.WithNetNSFd.
func (n *NS) Handle() netns.NsHandle { return n.h }

// Do runs fn on a thread inside the namespace and returns its error.
// Sockets fn creates stay in the namespace after it returns, so listeners
// made here can be served from any goroutine.
func (n *NS) Do(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		// Never unlocked: see NewNS.
		runtime.LockOSThread()
		if err := netns.Set(n.h); err != nil {
			ch <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// InNamed runs fn on a thread inside the named network namespace (one in
// /run/netns, as `ip netns add` makes), like NS.Do.
func InNamed(name string, fn func() error) error {
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", name, err)
	}
	defer func() { _ = h.Close() }()
	return (&NS{h: h}).Do(fn)
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet listener inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// DialContext dials from inside the namespace. It has the signature of
// net.Dialer.DialContext so it can be plugged into clients and resolvers.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Netlink returns a netlink handle operating inside the namespace, closed
// when the test ends.
func (n *NS) Netlink(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(n.h)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

// LinkConfig describes a veth pair from the current namespace into an NS.
type LinkConfig struct {
	// HostName is the veth end left in the current namespace.
	HostName string
	// Master, if set, is a bridge in the current namespace HostName joins.
	Master string
	// HostAddr, if valid, is assigned to HostName.
	HostAddr netip.Prefix
	// GuestAddr is assigned to "eth0" inside the namespace.
	GuestAddr netip.Prefix
	// GuestMAC, if set, is eth0's MAC address (a VM's NIC has the MAC
	// banger gave it; banger's firewall drops frames from any other).
	GuestMAC net.HardwareAddr
	// Gateway, if valid, becomes the namespace's default route.
	Gateway netip.Addr
}

// Link creates a veth pair: cfg.HostName here (up, optionally addressed or
// enslaved to a bridge) and eth0 inside ns with cfg.GuestAddr. The pair is
// deleted when the test ends.
func Link(t testing.TB, ns *NS, cfg LinkConfig) {
	t.Helper()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: cfg.HostName},
		PeerName:         "eth0",
		PeerNamespace:    netlink.NsFd(int(ns.h)),
		PeerHardwareAddr: cfg.GuestMAC,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("create veth %s: %v", cfg.HostName, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(cfg.HostName); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	host, err := netlink.LinkByName(cfg.HostName)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Master != "" {
		br, err := netlink.LinkByName(cfg.Master)
		if err != nil {
			t.Fatalf("bridge %s: %v", cfg.Master, err)
		}
		if err := netlink.LinkSetMaster(host, br); err != nil {
			t.Fatalf("attach %s to %s: %v", cfg.HostName, cfg.Master, err)
		}
	}
	if cfg.HostAddr.IsValid() {
		if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(cfg.HostAddr)}); err != nil {
			t.Fatalf("address %s on %s: %v", cfg.HostAddr, cfg.HostName, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}

	nh := ns.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatalf("guest eth0: %v", err)
	}
	if err := nh.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(cfg.GuestAddr)}); err != nil {
		t.Fatalf("address %s on guest eth0: %v", cfg.GuestAddr, err)
	}
	if err := nh.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
		if err := nh.RouteAdd(route); err != nil {
			t.Fatalf("default route via %s in guest: %v", cfg.Gateway, err)
		}
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
