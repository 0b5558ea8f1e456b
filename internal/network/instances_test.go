package network_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

// instance is one banger's network on the shared host: its owner, its
// bridge and one guest (a veth standing in for a VM's NIC) admitted to it.
type instance struct {
	owner network.Owner
	br    network.Bridge
	guest *nstest.NS
	port  firewall.Guest
}

// start does what a daemon's start and one VM's start do to the host.
func (in *instance) start(t *testing.T, guestPort string, mac net.HardwareAddr) {
	t.Helper()
	ctx := context.Background()
	if err := network.EnsureBridge(ctx, in.br, in.owner); err != nil {
		t.Fatal(err)
	}
	if err := network.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Ensure(ctx, firewall.Config{Bridge: in.br.Name, Subnet: in.br.Subnet}); err != nil {
		t.Fatal(err)
	}
	addr := in.br.Gateway().Next()
	in.port = firewall.Guest{Bridge: in.br.Name, Tap: guestPort, MAC: mac, Addr: addr}
	if err := firewall.Admit(ctx, in.port); err != nil {
		t.Fatal(err)
	}
	in.guest = nstest.NewNS(t)
	nstest.Link(t, in.guest, nstest.LinkConfig{HostName: guestPort, Master: in.br.Name, GuestAddr: netip.PrefixFrom(addr, in.br.Subnet.Bits()), GuestMAC: mac, Gateway: in.br.Gateway()})
	// The host's name server on the gateway, the one service guests reach.
	l, err := net.Listen("tcp", netip.AddrPortFrom(in.br.Gateway(), 53).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, in.br.Name+"\n")
			_ = c.Close()
		}
	}()
}

// assertWorks checks the instance's guest reaches its gateway and its
// bridge, tables and binding are all there.
func (in *instance) assertWorks(t *testing.T, when string) {
	t.Helper()
	if got := readLine(t, in.guest, netip.AddrPortFrom(in.br.Gateway(), 53).String()); got != in.br.Name {
		t.Errorf("%s: %s's guest got %q from its gateway, want %q", when, in.br.Name, got, in.br.Name)
	}
	st, err := firewall.Inspect(context.Background(), in.br.Name)
	if err != nil || len(st.Missing) != 0 || !st.Admitted(in.port.Tap, in.port.MAC, in.port.Addr) {
		t.Errorf("%s: %s's firewall %+v (%v); want complete with %s admitted", when, in.br.Name, st, err, in.port.Tap)
	}
	if o, ok, err := network.LinkOwner(in.br.Name); err != nil || !ok || o != in.owner {
		t.Errorf("%s: %s marked %+v (%v, %v), want %+v", when, in.br.Name, o, ok, err, in.owner)
	}
}

// TestTwoInstancesSideBySide: a second banger (another user, or a system
// install next to a root user-mode daemon) starting on the same host
// leaves the first one's bridge, taps, tables and traffic alone, refuses
// its bridge and subnet by name, and each marks its taps as its own.
func TestTwoInstancesSideBySide(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	a := &instance{owner: network.Owner{UID: 0, StateDir: "/var/lib/banger"},
		br: network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.0.0/24")}}
	b := &instance{owner: network.Owner{UID: 1000, StateDir: "/home/dev/.local/state/banger"},
		br: network.Bridge{Name: "banger1", Subnet: netip.MustParsePrefix("172.30.1.0/24")}}

	a.start(t, "bgt-a1", net.HardwareAddr{0x02, 0, 0, 0, 0xa, 1})
	if err := network.CreateTap(ctx, "bgt-atap", a.br.Name, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	a.assertWorks(t, "first instance alone")

	b.start(t, "bgt-b1", net.HardwareAddr{0x02, 0, 0, 0, 0xb, 1})
	if err := network.CreateTap(ctx, "bgt-btap", b.br.Name, 65533, 65533); err != nil {
		t.Fatal(err)
	}
	a.assertWorks(t, "after the second instance started")
	b.assertWorks(t, "second instance")

	taps, err := network.ListTapInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]network.TapInfo{
		"bgt-atap": {Name: "bgt-atap", Master: a.br.Name, Owner: a.owner, Marked: true},
		"bgt-btap": {Name: "bgt-btap", Master: b.br.Name, Owner: b.owner, Marked: true},
	}
	for _, tap := range taps {
		if tap != want[tap.Name] {
			t.Errorf("tap %+v, want %+v", tap, want[tap.Name])
		}
		delete(want, tap.Name)
	}
	if len(want) != 0 {
		t.Errorf("taps missing from ListTapInfo: %v", want)
	}

	// The second instance configured with the first one's bridge.
	err = network.EnsureBridge(ctx, network.Bridge{Name: a.br.Name, Subnet: netip.MustParsePrefix("172.30.2.0/24")}, b.owner)
	wantMsg := "bridge banger0 belongs to another banger (state dir /var/lib/banger, uid 0); set network.bridge and network.subnet in your config to use another"
	if !errors.Is(err, network.ErrOwnedElsewhere) || !strings.Contains(err.Error(), wantMsg) {
		t.Errorf("EnsureBridge of another instance's bridge: %v, want %q", err, wantMsg)
	}
	// ... or with its subnet on a bridge of its own.
	err = network.EnsureBridge(ctx, network.Bridge{Name: "banger2", Subnet: a.br.Subnet}, b.owner)
	if !errors.Is(err, network.ErrSubnetConflict) || !strings.Contains(err.Error(), "the bridge of another banger (state dir /var/lib/banger, uid 0)") {
		t.Errorf("EnsureBridge on another instance's subnet: %v, want a conflict naming that banger", err)
	}
	if err := network.DeleteBridge(ctx, a.br.Name, b.owner); !errors.Is(err, network.ErrOwnedElsewhere) {
		t.Errorf("DeleteBridge of another instance's bridge: %v, want ErrOwnedElsewhere", err)
	}
	// A tap name the other instance uses cannot be taken over either.
	if err := network.CreateTap(ctx, "bgt-atap", b.br.Name, 65534, 65534); !errors.Is(err, network.ErrOwnedElsewhere) {
		t.Errorf("CreateTap of another instance's tap: %v, want ErrOwnedElsewhere", err)
	}
	a.assertWorks(t, "after the second instance's refused requests")

	// The second instance's uninstall takes only its own.
	if err := firewall.Remove(ctx, b.br.Name); err != nil {
		t.Fatal(err)
	}
	if err := network.DeleteBridge(ctx, b.br.Name, b.owner); err != nil {
		t.Fatal(err)
	}
	a.assertWorks(t, "after the second instance was removed")
}
