package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/privileged"
)

// helperOps is the root helper over its socket, serving this (root) test
// process, as an unprivileged daemon's helper serves it.
func helperOps(t *testing.T, stateDir string) privileged.Ops {
	t.Helper()
	dir := t.TempDir()
	local, err := privileged.NewLocal(privileged.Policy{Owner: privileged.Owner{UID: 0, GID: 0}, StateDir: stateDir, RuntimeDir: dir},
		privileged.HostBackend())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := privileged.NewServer(privileged.ServerOptions{Ops: local, Owner: privileged.Owner{UID: 0, GID: 0}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "helper.sock")
	ln, err := privileged.Listen(socket, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return privileged.NewClient(socket)
}

// TestEgressThroughTheRootHelper runs a VM's egress policy the way an
// unprivileged daemon does — its port admitted, its policy applied and
// its DNS answers learned through the root helper's menu over the socket
// — in a sandbox with a guest namespace on the VM's tap name and address,
// and an upstream namespace with a DNS server and two TCP listeners.
func TestEgressThroughTheRootHelper(t *testing.T) {
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	n, _ := newTestNetwork(t, "banger0")
	n.stateDir = t.TempDir()
	n.ops = netPort(helperOps(t, n.stateDir))
	for _, step := range []func() error{
		func() error { return n.ops.EnsureBridge(ctx, n.bridge) },
		func() error { return n.ops.EnableIPForward(ctx) },
		func() error { return n.ops.EnsureNAT(ctx, n.bridge) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	upstream, guest := nstest.NewNS(t), nstest.NewNS(t)
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "up0", HostAddr: netip.MustParsePrefix("203.0.113.1/24"), GuestAddr: netip.MustParsePrefix("203.0.113.2/24")})
	nstest.AddAddr(t, upstream, netip.MustParsePrefix("203.0.113.3/24"))
	nstest.ServeDNS(t, upstream, "203.0.113.2:53", map[string]string{"allowed.example.": "203.0.113.2", "other.example.": "203.0.113.3"})
	nstest.ServeTCP(t, upstream, "203.0.113.2:8080")
	nstest.ServeTCP(t, upstream, "203.0.113.3:8080")

	gw := n.bridge.Gateway()
	srv, err := dns.NewServer(dns.Config{Subnet: n.bridge.Subnet, Upstreams: staticUpstream{netip.MustParseAddrPort("203.0.113.2:53")}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(netip.AddrPortFrom(gw, 53)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	n.dns = srv

	vm := createEgressVM(t, n.store, "agent", &egressSettings{Mode: "allowlist", Allow: []string{"allowed.example:8080"}})
	l, err := n.lease(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	mac, err := network.ParseGuestMAC(l.MAC)
	if err != nil {
		t.Fatal(err)
	}
	// The VM's NIC: a veth under the tap's name (no VMM reads a tap here).
	tap := network.TapName(vm.ID)
	nstest.Link(t, guest, nstest.LinkConfig{HostName: tap, Master: n.bridge.Name, GuestAddr: netip.PrefixFrom(l.IP, n.bridge.Subnet.Bits()), GuestMAC: mac, Gateway: gw})
	if err := n.ops.Admit(ctx, n.portOf(tap, l, false)); err != nil {
		t.Fatal(err)
	}
	if err := n.applyEgress(ctx, vm, tap, l, false); err != nil {
		t.Fatal(err)
	}

	server := netip.AddrPortFrom(gw, 53)
	if r := nstest.Resolve(t, guest, server, "allowed.example"); nstest.ARecords(r) != "203.0.113.2" {
		t.Fatalf("allowed name: %s", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.2:8080", true, "allowed name's address and port")
	if r := nstest.Resolve(t, guest, server, "other.example"); r.Rcode != mdns.RcodeNameError {
		t.Errorf("other name: %s, want NXDOMAIN", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.3:8080", false, "direct connection to an address no allowed name gave")

	// vm egress agent --mode deny, live.
	vm.Network = netSettings{Egress: &egressSettings{Mode: "deny"}}.json()
	if err := n.applyEgress(ctx, vm, tap, l, true); err != nil {
		t.Fatal(err)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.2:8080", false, "after the change to deny")

	n.evict(ctx, tap, l)
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	if strings.Contains(string(out), tap) || strings.Contains(string(out), "learned") {
		t.Errorf("the VM's rules outlived its eviction:\n%s", out)
	}
}

// staticUpstream is one upstream resolver.
type staticUpstream struct{ addr netip.AddrPort }

func (s staticUpstream) Upstreams() []netip.AddrPort { return []netip.AddrPort{s.addr} }
