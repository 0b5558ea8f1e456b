package firewall_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

func TestEgressRefusesBadPolicy(t *testing.T) {
	t.Parallel()
	if nstest.SandboxIfRoot(t) {
		return
	}
	ctx := context.Background()
	good := firewall.Egress{Bridge: cfg.Bridge, Tap: "bgt-a", Addr: addrA, Mode: firewall.EgressAllowlist}
	many := make([]firewall.EgressRule, firewall.MaxEgressRules+1)
	for i := range many {
		many[i] = firewall.EgressRule{Net: netip.MustParsePrefix("10.0.0.0/8")}
	}
	for name, e := range map[string]firewall.Egress{
		"foreign tap":      {Bridge: good.Bridge, Tap: "eth0", Addr: good.Addr, Mode: good.Mode},
		"foreign bridge":   {Bridge: "docker0", Tap: good.Tap, Addr: good.Addr, Mode: good.Mode},
		"unknown mode":     {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: "open"},
		"list on deny":     {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: firewall.EgressDeny, Allow: many[:1]},
		"too many entries": {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: good.Mode, Allow: many},
		"host bits":        {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: good.Mode, Allow: []firewall.EgressRule{{Net: netip.MustParsePrefix("10.0.0.1/8")}}},
		"IPv6 entry":       {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: good.Mode, Allow: []firewall.EgressRule{{Net: netip.MustParsePrefix("fd00::/64")}}},
		"IPv6 guest":       {Bridge: good.Bridge, Tap: good.Tap, Addr: netip.MustParseAddr("fd00::2"), Mode: good.Mode},
		"empty entry":      {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr, Mode: good.Mode, Allow: []firewall.EgressRule{{}}},
	} {
		if err := firewall.ApplyEgress(ctx, e); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("ApplyEgress(%s) = %v, want ErrInvalid", name, err)
		}
	}
	tooMany := make([]firewall.Learned, firewall.MaxLearned+1)
	for i := range tooMany {
		tooMany[i] = firewall.Learned{Addr: netip.MustParseAddr("192.0.2.1")}
	}
	for name, l := range map[string]firewall.LearnSpec{
		"foreign tap": {Bridge: cfg.Bridge, Tap: "eth0", Addrs: tooMany[:1]},
		"none":        {Bridge: cfg.Bridge, Tap: "bgt-a"},
		"too many":    {Bridge: cfg.Bridge, Tap: "bgt-a", Addrs: tooMany},
		"IPv6":        {Bridge: cfg.Bridge, Tap: "bgt-a", Addrs: []firewall.Learned{{Addr: netip.MustParseAddr("fd00::1")}}},
	} {
		if err := firewall.Learn(ctx, l); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Learn(%s) = %v, want ErrInvalid", name, err)
		}
	}
}

// TestEgressPolicy puts guest A under each mode in turn, live, and checks
// what it reaches on an upstream namespace (two addresses, behind NAT),
// that guest B and the gateway's DNS are unaffected, and that Evict and
// Remove leave no egress table.
func TestEgressPolicy(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	p := newGuestPair(t)
	upstream := nstest.NewNS(t)
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "up0", HostAddr: netip.MustParsePrefix("203.0.113.1/24"), GuestAddr: netip.MustParsePrefix("203.0.113.2/24")})
	addAddr(t, upstream, netip.MustParsePrefix("203.0.113.3/24"))
	allowed := serveRemoteAddr(t, upstream, "203.0.113.2:8080")
	other := serveRemoteAddr(t, upstream, "203.0.113.3:8080")
	otherPort := serveRemoteAddr(t, upstream, "203.0.113.2:8081")
	dnsStandIn := serveRemoteAddr(t, nil, gw.String()+":53")
	guestB := serveRemoteAddr(t, p.b, addrB.String()+":9000")

	mustReach(t, "allow: upstream", p.a, allowed)
	mustReach(t, "allow: other upstream", p.a, other)

	apply := func(mode string, allow ...firewall.EgressRule) {
		t.Helper()
		if err := firewall.ApplyEgress(ctx, firewall.Egress{Bridge: cfg.Bridge, Tap: "bgt-ga", Addr: addrA, Mode: mode, Allow: allow}); err != nil {
			t.Fatal(err)
		}
	}
	apply(firewall.EgressDeny)
	mustNotReach(t, "deny: upstream", p.a, allowed)
	mustReach(t, "deny: gateway DNS", p.a, dnsStandIn)
	mustReach(t, "deny: guest B (isolation decides)", p.a, guestB)
	mustReach(t, "deny on A: guest B to upstream", p.b, allowed)

	apply(firewall.EgressAllowlist, firewall.EgressRule{Net: netip.MustParsePrefix("203.0.113.2/32"), Port: 8080})
	mustReach(t, "allowlist: listed address and port", p.a, allowed)
	mustNotReach(t, "allowlist: listed address, other port", p.a, otherPort)
	mustNotReach(t, "allowlist: unlisted address", p.a, other)

	if err := firewall.Learn(ctx, firewall.LearnSpec{Bridge: cfg.Bridge, Tap: "bgt-ga", Addrs: []firewall.Learned{
		{Addr: netip.MustParseAddr("203.0.113.3"), Port: 8080, TTL: time.Second},
	}}); err != nil {
		t.Fatal(err)
	}
	mustReach(t, "allowlist: learned address and port", p.a, other)
	assertLearnedTimeout(t, firewall.MinLearnedTTL)

	apply(firewall.EgressAllow)
	mustReach(t, "allow again: other port", p.a, otherPort)
	assertEgressTables(t, 0)

	apply(firewall.EgressDeny)
	assertEgressTables(t, 1)
	if err := firewall.Evict(ctx, cfg.Bridge, "bgt-ga", addrA); err != nil {
		t.Fatal(err)
	}
	assertEgressTables(t, 0)
	if err := firewall.Learn(ctx, firewall.LearnSpec{Bridge: cfg.Bridge, Tap: "bgt-ga", Addrs: []firewall.Learned{{Addr: addrB}}}); !errors.Is(err, firewall.ErrNotEnsured) {
		t.Errorf("Learn after Evict = %v, want ErrNotEnsured", err)
	}
	apply(firewall.EgressDeny)
	if err := firewall.Remove(ctx, cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	assertEgressTables(t, 0)
}

// assertEgressTables checks how many VM egress tables of the bridge exist.
func assertEgressTables(t *testing.T, want int) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range tables {
		if strings.HasPrefix(tb.Name, firewall.TableName(cfg.Bridge)+"_") {
			names = append(names, tb.Name)
		}
	}
	if len(names) != want {
		t.Errorf("egress tables %v, want %d", names, want)
	}
}

// assertLearnedTimeout checks guest A's learned_ports element was given
// the clamped timeout.
func assertLearnedTimeout(t *testing.T, want time.Duration) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: firewall.EgressTableName(cfg.Bridge, "bgt-ga")}
	s, err := c.GetSetByName(tb, "learned_ports")
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(s)
	if err != nil || len(elems) != 1 {
		t.Fatalf("learned_ports = %v, %v; want one element", elems, err)
	}
	if got := elems[0].Timeout; got != want {
		t.Errorf("learned timeout %v, want %v", got, want)
	}
}
