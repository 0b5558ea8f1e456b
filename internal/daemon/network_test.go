package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/store"
)

// recordingNetOps records the privileged network calls a vmNetwork makes
// and changes nothing.
type recordingNetOps struct {
	mu    sync.Mutex
	calls []string
}

func (r *recordingNetOps) rec(format string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
	return nil
}

func (r *recordingNetOps) EnsureBridge(_ context.Context, b network.Bridge) error {
	return r.rec("EnsureBridge %s", b.Name)
}
func (r *recordingNetOps) CreateTap(_ context.Context, t tapRequest) error {
	return r.rec("CreateTap %s", t.Name)
}
func (r *recordingNetOps) DeleteTap(_ context.Context, name string) error {
	return r.rec("DeleteTap %s", name)
}
func (r *recordingNetOps) EnsureNAT(context.Context, network.Bridge) error {
	return r.rec("EnsureNAT")
}
func (r *recordingNetOps) EnableIPForward(context.Context) error { return r.rec("EnableIPForward") }
func (r *recordingNetOps) RouteDNS(context.Context, dnsRoute) error {
	return r.rec("RouteDNS")
}

// Admit and Evict check the port as the root helper would, through the
// adapter the daemon uses, so a port the helper would refuse fails here.
func (r *recordingNetOps) Admit(_ context.Context, g guestPort) error {
	if err := isolationSpec(g).Validate(); err != nil {
		return err
	}
	return r.rec("Admit %s %s %s isolated=%v", g.Tap, g.MAC, g.Addr, g.Isolated)
}
func (r *recordingNetOps) Evict(_ context.Context, g guestPort) error {
	if err := isolationSpec(g).Validate(); err != nil {
		return err
	}
	return r.rec("Evict %s %s", g.Tap, g.Addr)
}

func (r *recordingNetOps) ApplyEgress(_ context.Context, e firewall.Egress) error {
	if err := e.Validate(); err != nil {
		return err
	}
	return r.rec("ApplyEgress %s %s %s %v", e.Tap, e.Addr, e.Mode, e.Allow)
}
func (r *recordingNetOps) LearnEgress(_ context.Context, l firewall.LearnSpec) error {
	if err := l.Validate(); err != nil {
		return err
	}
	return r.rec("LearnEgress %s %v", l.Tap, l.Addrs)
}

func (r *recordingNetOps) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

func newTestNetwork(t *testing.T, bridge string) (*vmNetwork, *recordingNetOps) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ops := &recordingNetOps{}
	return &vmNetwork{
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), ops: ops, store: st,
		bridge: network.Bridge{Name: bridge, Subnet: netip.MustParsePrefix("172.30.0.0/24")},
		domain: "banger", uid: os.Getuid(), gid: os.Getgid(), stateDir: testOwner.StateDir,
	}, ops
}

func createTestVM(t *testing.T, st *store.Store, name string, isolated bool) store.VM {
	t.Helper()
	vm := store.VM{ID: store.NewID(), Name: name, VCPUs: 1, MemoryMiB: 128, VMM: "firecracker",
		Network: netSettings{Isolated: isolated}.json()}
	if err := st.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

// TestNetworkAdmitsEveryVMPort: every VM's tap is pinned to its MAC and
// address before the VMM gets it, isolated or not, and unpinned when it
// goes; the MAC pinned is the one the VMM is given.
func TestNetworkAdmitsEveryVMPort(t *testing.T) {
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	for _, isolated := range []bool{false, true} {
		vm := createTestVM(t, n.store, fmt.Sprintf("vm-%v", isolated), isolated)
		iface, _, err := n.attach(ctx, vm, isolated)
		if err != nil {
			t.Fatal(err)
		}
		l, err := n.store.GetLease(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		tap := network.TapName(vm.ID)
		if iface.MAC != network.MACAddress(vm.ID).String() || iface.TapName != tap {
			t.Errorf("launch interface %+v, want tap %s with MAC %s", iface, tap, network.MACAddress(vm.ID))
		}
		want := []string{fmt.Sprintf("Admit %s %s %s isolated=%v", tap, iface.MAC, l.IP, isolated), "CreateTap " + tap}
		if got := ops.take(); !slices.Equal(got, want) {
			t.Errorf("attach (isolated=%v) calls %q, want %q", isolated, got, want)
		}
		n.detach(ctx, vm.ID)
		want = []string{"DeleteTap " + tap, fmt.Sprintf("Evict %s %s", tap, l.IP)}
		if got := ops.take(); !slices.Equal(got, want) {
			t.Errorf("detach calls %q, want %q", got, want)
		}
	}
}

// TestNetworkReadmitsRunningVMsTaps: at daemon start the taps of VMs that
// kept running are admitted again (the firewall may have been rebuilt
// without their bindings) and re-marked, stale taps lose theirs with the
// tap, and another banger's taps on the host are left alone.
func TestNetworkReadmitsRunningVMsTaps(t *testing.T) {
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	if err := network.EnsureBridge(ctx, n.bridge, testOwner); err != nil {
		t.Fatal(err)
	}
	// Another banger's bridge with a tap marked as its own, and an unmarked
	// tap (an older banger's) on it: neither is this daemon's.
	other := network.Bridge{Name: "banger1", Subnet: netip.MustParsePrefix("172.30.1.0/24")}
	if err := network.EnsureBridge(ctx, other, network.Owner{UID: 1000, StateDir: "/home/dev/.local/state/banger"}); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{"bgt-theirs", "bgt-unmarked"} {
		if err := network.CreateTap(ctx, tap, other.Name, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetAlias(mustLink(t, "bgt-unmarked"), ""); err != nil {
		t.Fatal(err)
	}
	running := createTestVM(t, n.store, "running", true)
	stale := createTestVM(t, n.store, "stale", false)
	leases := map[string]store.Lease{}
	for _, vm := range []store.VM{running, stale} {
		l, err := n.lease(ctx, vm)
		if err != nil {
			t.Fatal(err)
		}
		leases[vm.ID] = l
		if err := network.CreateTap(ctx, network.TapName(vm.ID), n.bridge.Name, n.uid, n.gid); err != nil {
			t.Fatal(err)
		}
	}
	n.removeStaleTaps(ctx, map[string]bool{running.ID: true})
	runTap, staleTap := network.TapName(running.ID), network.TapName(stale.ID)
	want := []string{
		fmt.Sprintf("Admit %s %s %s isolated=true", runTap, leases[running.ID].MAC, leases[running.ID].IP),
		"CreateTap " + runTap,
		"DeleteTap " + staleTap,
		fmt.Sprintf("Evict %s %s", staleTap, leases[stale.ID].IP),
	}
	got := ops.take()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// testOwner is the banger instance this package's test bridges are
// marked with.
var testOwner = network.Owner{UID: os.Getuid(), StateDir: "/var/lib/banger-test"}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNetworkMovesVMsToANewSubnet: after network.subnet changes, a VM's
// next start gives it an address in the new subnet — lease, firewall
// binding and the guest's boot parameters alike — instead of the old
// address behind the new gateway.
func TestNetworkMovesVMsToANewSubnet(t *testing.T) {
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	vm := createTestVM(t, n.store, "dev", false)
	old, err := n.lease(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	n.bridge.Subnet = netip.MustParsePrefix("10.213.0.0/24")
	iface, args, err := n.attach(ctx, vm, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := n.store.GetLease(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !n.bridge.Subnet.Contains(l.IP) || l.IP == old.IP {
		t.Fatalf("lease after the subnet change: %s (was %s), want one in %s", l.IP, old.IP, n.bridge.Subnet)
	}
	wantArgs := []string{"banger.ip=" + l.IP.String() + "/24", "banger.gw=10.213.0.1"}
	for _, a := range wantArgs {
		if !slices.Contains(args, a) {
			t.Errorf("guest boot parameters %q lack %q", args, a)
		}
	}
	want := []string{fmt.Sprintf("Admit %s %s %s isolated=false", iface.TapName, iface.MAC, l.IP), "CreateTap " + iface.TapName}
	if got := ops.take(); !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}
