package network_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var testBridge = network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}

func TestBridgeAndTapLifecycle(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()

	for i := range 2 {
		if err := network.EnsureBridge(ctx, testBridge, testOwner); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i+1, err)
		}
	}
	br := mustLink(t, "banger0")
	if _, ok := br.(*netlink.Bridge); !ok || br.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("banger0 = %s, flags %v; want an up bridge", br.Type(), br.Attrs().Flags)
	}
	mac := br.Attrs().HardwareAddr.String()
	assertAddrs(t, br, "172.30.0.1/24")

	// A changed subnet replaces the old address instead of adding one.
	moved := network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.5.0/24")}
	if err := network.EnsureBridge(ctx, moved, testOwner); err != nil {
		t.Fatal(err)
	}
	assertAddrs(t, mustLink(t, "banger0"), "172.30.5.1/24")
	if err := network.EnsureBridge(ctx, testBridge, testOwner); err != nil {
		t.Fatal(err)
	}
	assertAddrs(t, mustLink(t, "banger0"), "172.30.0.1/24")

	tap := network.TapName("0123456789abcdef")
	for i := range 2 {
		if err := network.CreateTap(ctx, tap, "banger0", 65534, 65534); err != nil {
			t.Fatalf("CreateTap #%d: %v", i+1, err)
		}
	}
	l := mustLink(t, tap)
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Owner != 65534 || tt.Group != 65534 {
		t.Fatalf("tap = %#v; want a persistent tap owned by 65534:65534", l)
	}
	if l.Attrs().MasterIndex != br.Attrs().Index || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap master %d (bridge %d), flags %v; want attached and up", l.Attrs().MasterIndex, br.Attrs().Index, l.Attrs().Flags)
	}
	if got := mustLink(t, "banger0").Attrs().HardwareAddr.String(); got != mac {
		t.Errorf("bridge MAC changed from %s to %s when a tap joined", mac, got)
	}
	if taps, err := tapNames(ctx); err != nil || !slices.Equal(taps, []string{tap}) {
		t.Errorf("taps = %v, %v; want [%s]", taps, err, tap)
	}
	if err := network.CreateTap(ctx, tap, "banger0", 1000, 1000); !errors.Is(err, network.ErrInterfaceConflict) {
		t.Errorf("CreateTap with another owner: %v, want ErrInterfaceConflict", err)
	}

	// The owner can attach to the tap; another unprivileged user cannot.
	node := tunNode(t)
	if code := openTapAs(t, node, tap, 65534); code != 0 {
		t.Errorf("uid 65534 (owner) could not attach to %s: exit %d", tap, code)
	}
	if code := openTapAs(t, node, tap, 65533); code != 3 {
		t.Errorf("uid 65533 (not owner) attaching to %s: exit %d, want EPERM (3)", tap, code)
	}

	for i := range 2 {
		if err := network.DeleteTap(ctx, tap, 65534); err != nil {
			t.Fatalf("DeleteTap #%d: %v", i+1, err)
		}
		if err := network.DeleteBridge(ctx, "banger0", testOwner); err != nil {
			t.Fatalf("DeleteBridge #%d: %v", i+1, err)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("teardown left interface %s (%s)", l.Attrs().Name, l.Type())
		}
	}
	routes, err := network.HostRoutes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst.Overlaps(testBridge.Subnet) {
			t.Errorf("teardown left route %v on %s", r.Dst, r.Dev)
		}
	}
}

func TestCreateTapWithoutBridge(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	err := network.CreateTap(context.Background(), "bgt-orphan", "banger0", 1000, 1000)
	if !errors.Is(err, network.ErrNoBridge) {
		t.Errorf("CreateTap without bridge: %v, want ErrNoBridge", err)
	}
	if _, err := netlink.LinkByName("bgt-orphan"); err == nil {
		t.Error("a tap was created although the bridge is missing")
	}
}

// TestRefusesBadInput needs no root: validation comes before any system
// call, so foreign names and bad subnets never reach the kernel.
func TestRefusesBadInput(t *testing.T) {
	t.Parallel()
	if nstest.SandboxIfRoot(t) {
		return
	}
	ctx := context.Background()
	subnet := testBridge.Subnet
	calls := map[string]error{
		"EnsureBridge eth0":        network.EnsureBridge(ctx, network.Bridge{Name: "eth0", Subnet: subnet}, testOwner),
		"EnsureBridge public":      network.EnsureBridge(ctx, network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("8.8.8.0/24")}, testOwner),
		"EnsureBridge host bits":   network.EnsureBridge(ctx, network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.1/24")}, testOwner),
		"EnsureBridge no subnet":   network.EnsureBridge(ctx, network.Bridge{Name: "banger0"}, testOwner),
		"DeleteBridge docker0":     network.DeleteBridge(ctx, "docker0", testOwner),
		"CreateTap eth0":           network.CreateTap(ctx, "eth0", "banger0", 1000, 1000),
		"CreateTap foreign bridge": network.CreateTap(ctx, "bgt-x", "virbr0", 1000, 1000),
		"CreateTap negative uid":   network.CreateTap(ctx, "bgt-x", "banger0", -1, 1000),
		"CreateTap huge gid":       network.CreateTap(ctx, "bgt-x", "banger0", 1000, 1<<32-1),
		"DeleteTap veth0":          network.DeleteTap(ctx, "veth0", 1000),
		"DeleteTap banger0":        network.DeleteTap(ctx, "banger0", 1000),
	}
	for name, err := range calls {
		if !errors.Is(err, network.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestRefusesConflicts checks what validation cannot: names that exist
// as the wrong kind of interface, and subnets the host already routes.
func TestRefusesConflicts(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	addVeth(t, "banger1", netip.Prefix{})
	addVeth(t, "bgt-dummy", netip.Prefix{})
	addVeth(t, "lan0", netip.MustParsePrefix("172.30.0.77/16"))

	err := network.EnsureBridge(ctx, network.Bridge{Name: "banger1", Subnet: netip.MustParsePrefix("10.213.0.0/24")}, testOwner)
	if !errors.Is(err, network.ErrInterfaceConflict) {
		t.Errorf("EnsureBridge over a veth: %v, want ErrInterfaceConflict", err)
	}
	if err := network.DeleteBridge(ctx, "banger1", testOwner); !errors.Is(err, network.ErrInterfaceConflict) {
		t.Errorf("DeleteBridge on a veth: %v, want ErrInterfaceConflict", err)
	}
	if err := network.DeleteTap(ctx, "bgt-dummy", 1000); !errors.Is(err, network.ErrInterfaceConflict) {
		t.Errorf("DeleteTap on a veth: %v, want ErrInterfaceConflict", err)
	}
	mustLink(t, "banger1")
	mustLink(t, "bgt-dummy")

	err = network.EnsureBridge(ctx, testBridge, testOwner)
	var ce *network.SubnetConflictError
	if !errors.Is(err, network.ErrSubnetConflict) || !errors.As(err, &ce) || ce.Route.Dev != "lan0" {
		t.Fatalf("EnsureBridge on a routed subnet: %v, want a conflict with lan0", err)
	}
	if _, err := netlink.LinkByName("banger0"); err == nil {
		t.Error("bridge was created despite the subnet conflict")
	}
	routes, err := network.HostRoutes(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := netip.MustParsePrefix("10.213.0.0/24")
	if err := network.CheckSubnet(got, routes); err != nil {
		t.Errorf("CheckSubnet(%v) with 172.30.0.0/16 routed: %v", got, err)
	}
	ok := network.Bridge{Name: "banger0", Subnet: got}
	if err := network.EnsureBridge(ctx, ok, testOwner); err != nil {
		t.Fatalf("EnsureBridge on the chosen subnet: %v", err)
	}
	// Its own route must not count as a conflict the second time.
	if err := network.EnsureBridge(ctx, ok, testOwner); err != nil {
		t.Fatalf("EnsureBridge again: %v", err)
	}
	if err := network.CreateTap(ctx, "bgt-dummy", "banger0", 1000, 1000); !errors.Is(err, network.ErrInterfaceConflict) {
		t.Errorf("CreateTap over a veth: %v, want ErrInterfaceConflict", err)
	}
}

func TestIPForward(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	for _, want := range []bool{true, false, true} {
		if err := network.SetIPForward(want); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if got := strings.TrimSpace(string(b)) == "1"; err != nil || got != want {
			t.Errorf("ip_forward = %q, %v; want %v", b, err, want)
		}
	}
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("interface %s: %v", name, err)
	}
	return l
}

func assertAddrs(t *testing.T, l netlink.Link, want ...string) {
	t.Helper()
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range addrs {
		got = append(got, a.IPNet.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s addresses = %v, want %v", l.Attrs().Name, got, want)
	}
}

// addVeth adds a veth pair (name and "p-"+name) standing in for a foreign
// interface; the dummy driver is not available everywhere.
func addVeth(t *testing.T, name string, addr netip.Prefix) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	d := &netlink.Veth{LinkAttrs: attrs, PeerName: ("p-" + name)[:min(15, len(name)+2)]}
	if err := netlink.LinkAdd(d); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	if addr.IsValid() {
		ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
		if err := netlink.AddrAdd(d, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
}

// tunNode makes a private, world-accessible tun device node. Opening it is
// the same as opening /dev/net/tun (same driver, same permission checks on
// the tap), without depending on — or changing — the host's /dev, where
// the node may be root-only.
func tunNode(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgtest-tun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "tun")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Skipf("cannot create a tun device node in %s (%v); the non-root tap check needs one", dir, err)
	}
	if err := os.Chmod(node, 0o666); err != nil {
		t.Fatal(err)
	}
	return node
}

// openTapAs re-executes the test binary as uid:uid (same namespace) to
// attach to tap through node, returning the helper's exit code.
func openTapAs(t *testing.T, node, tap string, uid uint32) int {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), helperTapEnv+"="+tap, helperTunEnv+"="+node)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run open-tap helper as uid %d: %v", uid, err)
	}
	if len(out) > 0 {
		t.Logf("open-tap helper as uid %d: %s", uid, out)
	}
	return cmd.ProcessState.ExitCode()
}

// tapNames lists the names of the banger taps in the current namespace.
func tapNames(ctx context.Context) ([]string, error) {
	infos, err := network.ListTapInfo(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(infos))
	for _, t := range infos {
		names = append(names, t.Name)
	}
	return names, nil
}
