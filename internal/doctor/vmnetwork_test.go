package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

// TestVMNetworkCheckNoticesWhatWasTakenAway: with a real bridge, tap and
// firewall in a namespace, the check passes; then a tap deleted, a table
// deleted or a binding dropped behind the daemon's back each fail it, and
// another banger's bridge under our name is named as such.
func TestVMNetworkCheckNoticesWhatWasTakenAway(t *testing.T) {
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	owner := network.Owner{UID: 1000, StateDir: "/var/lib/banger"}
	br := network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}
	vm := NetVM{Name: "dev", ID: "0123456789abcdef", IP: netip.MustParseAddr("172.30.0.2"), MAC: network.MACAddress("0123456789abcdef").String()}
	tap := network.TapName(vm.ID)
	guest := firewall.Guest{Bridge: br.Name, Tap: tap, MAC: network.MACAddress(vm.ID), Addr: vm.IP}
	setUp := func() {
		t.Helper()
		if err := network.EnsureBridge(ctx, br, owner); err != nil {
			t.Fatal(err)
		}
		if err := firewall.Ensure(ctx, firewall.Config{Bridge: br.Name, Subnet: br.Subnet}); err != nil {
			t.Fatal(err)
		}
		if err := firewall.Admit(ctx, guest); err != nil {
			t.Fatal(err)
		}
		if err := network.CreateTap(ctx, tap, br.Name, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}
	n := RealVMNetwork(true, br.Name, br.Subnet.String(), owner.StateDir, func(context.Context) ([]NetVM, error) { return []NetVM{vm}, nil })
	n.Firewall = firewall.Inspect
	check := func(want Status, detail string) {
		t.Helper()
		r := run(VMNetworkCheck(n))
		if r.Status != want || !strings.Contains(strings.Join(r.Details, "\n"), detail) {
			t.Errorf("check = %s %q %q; want %s with a detail containing %q", r.Status, r.Summary, r.Details, want, detail)
		}
	}

	setUp()
	check(Pass, "")

	if err := network.DeleteTap(ctx, tap, 1000); err != nil {
		t.Fatal(err)
	}
	check(Fail, "VM dev runs without its tap "+tap)
	setUp()

	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: firewall.TableName(br.Name)})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	check(Fail, "nftables: table bridge banger-banger0 is missing")
	setUp()

	if err := firewall.Evict(ctx, br.Name, tap, vm.IP); err != nil {
		t.Fatal(err)
	}
	check(Fail, "VM dev (172.30.0.2) is not admitted")
	setUp()

	n.Subnet = "10.213.0.0/24"
	check(Fail, "VM dev still has 172.30.0.2 from an earlier network.subnet")
	n.Subnet = br.Subnet.String()

	link, err := netlink.LinkByName(br.Name)
	if err != nil {
		t.Fatal(err)
	}
	other := network.Owner{UID: 0, StateDir: "/root/.local/state/banger"}
	if err := netlink.LinkSetAlias(link, other.Alias()); err != nil {
		t.Fatal(err)
	}
	check(Fail, "bridge banger0 belongs to another banger (state dir /root/.local/state/banger, uid 0)")
}

// TestVMNetworkCheckBeforeSetup: no bridge and no running VM is a warning
// (the daemon has not set networking up yet), and networking off passes.
func TestVMNetworkCheckBeforeSetup(t *testing.T) {
	n := VMNetwork{
		Enabled: true, Bridge: "banger0", Subnet: "172.30.0.0/24", StateDir: "/var/lib/banger",
		RunningVMs:  func(context.Context) ([]NetVM, error) { return nil, nil },
		BridgeOwner: func(string) (network.Owner, bool, error) { return network.Owner{}, false, netlink.LinkNotFoundError{} },
	}
	if r := run(VMNetworkCheck(n)); r.Status != Warn {
		t.Errorf("no bridge yet: %s %q, want WARN", r.Status, r.Summary)
	}
	n.Enabled = false
	if r := run(VMNetworkCheck(n)); r.Status != Pass {
		t.Errorf("networking off: %s %q, want PASS", r.Status, r.Summary)
	}
}
