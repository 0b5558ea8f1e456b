package dns_test

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

func TestParseNameRule(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM":       "example.com",
		"*.example.com:443": "*.example.com:443",
		"api.example.com.":  "api.example.com",
	} {
		r, err := dns.ParseNameRule(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseNameRule(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
	for _, bad := range []string{"", "localhost", "*.com.:0", "a_b.example", "example.com:99999", "example.com:x", "*.*.example.com"} {
		if r, err := dns.ParseNameRule(bad); err == nil {
			t.Errorf("ParseNameRule(%q) = %v, want an error", bad, r)
		}
	}
}

// fwLearner is the daemon's Learner without the root helper: the VM at
// addr has tap.
type fwLearner struct {
	bridge, tap string
}

func (l fwLearner) Learn(ctx context.Context, _ netip.Addr, addrs []firewall.Learned) error {
	return firewall.Learn(ctx, firewall.LearnSpec{Bridge: l.bridge, Tap: l.tap, Addrs: addrs})
}

// TestEgressAllowlistThroughDNS is the whole egress path in a sandbox: a
// guest behind banger's bridge, firewall and DNS server, an upstream
// namespace with a fake DNS server and two TCP listeners. Allowed names
// resolve and connect, others are NXDOMAIN, a direct connection to an
// address nobody resolved fails, policy changes apply live, and nothing is
// left of the VM's rules once it is evicted.
func TestEgressAllowlistThroughDNS(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	const bridge, tap = "banger0", "bgt-guest"
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	gw := network.Gateway(subnet)
	vm := netip.MustParseAddr("172.30.0.2")
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	if err := network.EnsureBridge(ctx, network.Bridge{Name: bridge, Subnet: subnet}, network.Owner{StateDir: "/var/lib/banger-test"}); err != nil {
		t.Fatal(err)
	}
	guest, upstream := nstest.NewNS(t), nstest.NewNS(t)
	nstest.Link(t, guest, nstest.LinkConfig{HostName: tap, Master: bridge, GuestAddr: netip.PrefixFrom(vm, 24), GuestMAC: mac, Gateway: gw})
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "up0", HostAddr: netip.MustParsePrefix("203.0.113.1/24"), GuestAddr: netip.MustParsePrefix("203.0.113.2/24")})
	nstest.AddAddr(t, upstream, netip.MustParsePrefix("203.0.113.3/24"))
	if err := network.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Ensure(ctx, firewall.Config{Bridge: bridge, Subnet: subnet}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = firewall.Remove(ctx, bridge) })
	if err := firewall.Admit(ctx, firewall.Guest{Bridge: bridge, Tap: tap, MAC: mac, Addr: vm}); err != nil {
		t.Fatal(err)
	}
	nstest.ServeDNS(t, upstream, "203.0.113.2:53", map[string]string{
		"allowed.example.": "203.0.113.2", "api.wild.example.": "203.0.113.3", "other.example.": "203.0.113.3",
	})
	nstest.ServeTCP(t, upstream, "203.0.113.2:8080")
	nstest.ServeTCP(t, upstream, "203.0.113.3:8080")

	srv, err := dns.NewServer(dns.Config{Subnet: subnet, Upstreams: resolvConf(t, "203.0.113.2"), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(netip.AddrPortFrom(gw, 53)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.SetRecords(map[string]netip.Addr{"dev": vm}); err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(gw, 53).String()
	resolve := func(name string) *mdns.Msg { return query(t, guest, "udp", server, name, mdns.TypeA, 0) }
	policy := func(mode string, names ...string) {
		t.Helper()
		var rules []dns.NameRule
		for _, n := range names {
			r, err := dns.ParseNameRule(n)
			if err != nil {
				t.Fatal(err)
			}
			rules = append(rules, r)
		}
		if err := firewall.ApplyEgress(ctx, firewall.Egress{Bridge: bridge, Tap: tap, Addr: vm, Mode: mode}); err != nil {
			t.Fatal(err)
		}
		if mode == firewall.EgressAllow {
			srv.Unrestrict(vm)
		} else {
			srv.Restrict(vm, rules, fwLearner{bridge, tap})
		}
	}

	policy(firewall.EgressAllowlist, "allowed.example:8080", "*.wild.example")
	if r := resolve("allowed.example."); r.Rcode != mdns.RcodeSuccess || aRecords(r) != "203.0.113.2" {
		t.Fatalf("allowed name: %s", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.2:8080", true, "allowed name's address")
	for _, name := range []string{"other.example.", "wild.example.", "2.113.0.203.in-addr.arpa."} {
		if r := resolve(name); r.Rcode != mdns.RcodeNameError {
			t.Errorf("name %s outside the allowlist: %s, want NXDOMAIN", name, r)
		}
	}
	if r := resolve("dev.banger."); aRecords(r) != vm.String() {
		t.Errorf("banger's own names must still resolve: %s", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.3:8080", false, "address no allowed name resolved to")

	// Live change: the wildcard's answer opens 203.0.113.3 (any port).
	if r := resolve("api.wild.example."); aRecords(r) != "203.0.113.3" {
		t.Fatalf("wildcard name: %s", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.3:8080", true, "wildcard name's address")

	policy(firewall.EgressDeny)
	if r := resolve("allowed.example."); r.Rcode != mdns.RcodeNameError {
		t.Errorf("deny: %s, want NXDOMAIN", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.2:8080", false, "deny")

	policy(firewall.EgressAllow)
	if r := resolve("other.example."); aRecords(r) != "203.0.113.3" {
		t.Errorf("allow: %s", r)
	}
	nstest.ExpectConnect(t, guest, "203.0.113.3:8080", true, "allow")

	policy(firewall.EgressAllowlist, "allowed.example")
	if err := firewall.Evict(ctx, bridge, tap, vm); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	for _, leftover := range []string{tap, "learned"} {
		if strings.Contains(string(out), leftover) {
			t.Errorf("%q left in the ruleset after Evict:\n%s", leftover, out)
		}
	}
}
