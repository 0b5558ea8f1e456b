package firewall_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

var (
	subnet = netip.MustParsePrefix("172.30.0.0/24")
	cfg    = firewall.Config{Bridge: "banger0", Subnet: subnet}
	macA   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0a}
	macB   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	// testOwner is the banger instance the tests' bridges are marked with.
	testOwner = network.Owner{UID: 0, StateDir: "/var/lib/banger-test"}
)

func TestRefusesBadConfig(t *testing.T) {
	t.Parallel()
	if nstest.SandboxIfRoot(t) {
		return
	}
	ctx := context.Background()
	for name, c := range map[string]firewall.Config{
		"foreign bridge": {Bridge: "docker0", Subnet: subnet},
		"public subnet":  {Bridge: "banger0", Subnet: netip.MustParsePrefix("8.8.8.0/24")},
		"no subnet":      {Bridge: "banger0"},
	} {
		if err := firewall.Ensure(ctx, c); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("%s: Ensure = %v, want ErrInvalid", name, err)
		}
	}
	good := firewall.Guest{Bridge: cfg.Bridge, Tap: "bgt-a", MAC: macA, Addr: netip.MustParseAddr("172.30.0.2")}
	for name, g := range map[string]firewall.Guest{
		"foreign interface": {Bridge: good.Bridge, Tap: "eth0", MAC: good.MAC, Addr: good.Addr},
		"foreign bridge":    {Bridge: "docker0", Tap: good.Tap, MAC: good.MAC, Addr: good.Addr},
		"IPv6 address":      {Bridge: good.Bridge, Tap: good.Tap, MAC: good.MAC, Addr: netip.MustParseAddr("fd00::2")},
		"no MAC":            {Bridge: good.Bridge, Tap: good.Tap, Addr: good.Addr},
		"broadcast MAC":     {Bridge: good.Bridge, Tap: good.Tap, MAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Addr: good.Addr},
		"multicast MAC":     {Bridge: good.Bridge, Tap: good.Tap, MAC: net.HardwareAddr{0x03, 0, 0, 0, 0, 1}, Addr: good.Addr},
		"vendor MAC":        {Bridge: good.Bridge, Tap: good.Tap, MAC: net.HardwareAddr{0x00, 0x16, 0x3e, 0, 0, 1}, Addr: good.Addr},
	} {
		if err := firewall.Admit(ctx, g); !errors.Is(err, network.ErrInvalid) {
			t.Errorf("Admit(%s) = %v, want ErrInvalid", name, err)
		}
	}
	if err := firewall.Evict(ctx, cfg.Bridge, "eth0", good.Addr); !errors.Is(err, network.ErrInvalid) {
		t.Errorf("Evict(eth0) = %v, want ErrInvalid", err)
	}
}

// TestNATAndIsolation builds, inside the test's own namespace, a bridge
// with two guest namespaces behind it and an "upstream" namespace that has
// no route back to the VM subnet, then checks NAT, the forward rules,
// isolation and clean removal beside a foreign ruleset.
func TestNATAndIsolation(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	if err := network.EnsureBridge(ctx, network.Bridge{Name: "banger0", Subnet: subnet}, testOwner); err != nil {
		t.Fatal(err)
	}
	gw := network.Gateway(subnet)
	guestA, guestB, upstream := nstest.NewNS(t), nstest.NewNS(t), nstest.NewNS(t)
	nstest.Link(t, guestA, nstest.LinkConfig{HostName: "bgt-ga", Master: "banger0", GuestAddr: netip.MustParsePrefix("172.30.0.2/24"), GuestMAC: macA, Gateway: gw})
	nstest.Link(t, guestB, nstest.LinkConfig{HostName: "bgt-gb", Master: "banger0", GuestAddr: netip.MustParsePrefix("172.30.0.3/24"), GuestMAC: macB, Gateway: gw})
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "up0", HostAddr: netip.MustParsePrefix("203.0.113.1/24"), GuestAddr: netip.MustParsePrefix("203.0.113.2/24")})
	if err := network.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	foreign := addForeignTables(t)

	upstreamSrv := serveRemoteAddr(t, upstream, "203.0.113.2:8080")
	guestBSrv := serveRemoteAddr(t, guestB, "172.30.0.3:9000")
	guestASrv := serveRemoteAddr(t, guestA, "172.30.0.2:9000")
	// Guests may reach only DNS on the host: a stand-in on the gateway.
	hostSrv := serveRemoteAddr(t, nil, "172.30.0.1:53")

	// Without NAT the upstream cannot answer: it has no route to guests.
	if _, err := ask(guestA, upstreamSrv); err == nil {
		t.Fatal("guest reached upstream before NAT was set up; the test topology is wrong")
	}

	for i := range 2 {
		if err := firewall.Ensure(ctx, cfg); err != nil {
			t.Fatalf("Ensure #%d: %v", i+1, err)
		}
	}
	assertRuleCounts(t, map[string]int{"ip/postrouting": 1, "ip/forward": 7, "ip/input": 5, "bridge/prerouting": 4, "bridge/forward": 2})
	guestPortA := firewall.Guest{Bridge: cfg.Bridge, Tap: "bgt-ga", MAC: macA, Addr: netip.MustParseAddr("172.30.0.2")}
	for _, g := range []firewall.Guest{guestPortA, {Bridge: cfg.Bridge, Tap: "bgt-gb", MAC: macB, Addr: netip.MustParseAddr("172.30.0.3")}} {
		if err := firewall.Admit(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := firewall.Present(ctx, cfg.Bridge); err != nil || !ok {
		t.Errorf("Present = %v, %v; want true", ok, err)
	}

	seen, err := ask(guestA, upstreamSrv)
	if err != nil {
		t.Fatalf("guest to upstream through NAT: %v", err)
	}
	if !strings.HasPrefix(seen, "203.0.113.1:") {
		t.Errorf("upstream saw the guest as %s, want the host's uplink address 203.0.113.1 (masquerade)", seen)
	}
	mustReach(t, "guest A to guest B", guestA, guestBSrv)

	// The upstream side may not open connections to guests even with a
	// route to them: only replies go to the bridge.
	if err := upstream.Do(func() error { return addRoute(subnet, netip.MustParseAddr("203.0.113.1")) }); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, "upstream to guest A", upstream, guestASrv)

	isolatedA := guestPortA
	isolatedA.Isolated = true
	for i := range 2 {
		if err := firewall.Admit(ctx, isolatedA); err != nil {
			t.Fatalf("Admit isolated #%d: %v", i+1, err)
		}
	}
	mustNotReach(t, "isolated guest A to guest B", guestA, guestBSrv)
	mustNotReach(t, "guest B to isolated guest A", guestB, guestASrv)
	mustReach(t, "isolated guest A to the host's DNS port", guestA, hostSrv)
	mustReach(t, "isolated guest A to upstream", guestA, upstreamSrv)

	// Rebuilding the rules keeps the isolated VMs.
	if err := firewall.Ensure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	mustNotReach(t, "isolated guest A to guest B after Ensure", guestA, guestBSrv)

	for i := range 2 {
		if err := firewall.Admit(ctx, guestPortA); err != nil {
			t.Fatalf("Admit not isolated #%d: %v", i+1, err)
		}
	}
	mustReach(t, "guest A to guest B once no longer isolated", guestA, guestBSrv)

	for i := range 2 {
		if err := firewall.Evict(ctx, cfg.Bridge, guestPortA.Tap, guestPortA.Addr); err != nil {
			t.Fatalf("Evict #%d: %v", i+1, err)
		}
	}
	// An evicted port is no longer this bridge's (the daemon deletes the
	// tap before it evicts the port); its bindings are gone.
	if st, err := firewall.Inspect(ctx, cfg.Bridge); err != nil || st.Admitted(guestPortA.Tap, guestPortA.MAC, guestPortA.Addr) || len(st.Missing) != 0 {
		t.Errorf("after Evict: %+v, %v; want guest A's binding gone and every table, chain and set there", st, err)
	}
	if err := firewall.Admit(ctx, isolatedA); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if err := firewall.Remove(ctx, cfg.Bridge); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	if ok, err := firewall.Present(ctx, cfg.Bridge); err != nil || ok {
		t.Errorf("Present after Remove = %v, %v; want false", ok, err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == firewall.TableName(cfg.Bridge) {
				t.Errorf("table %v %s survived Remove", fam, tb.Name)
			}
		}
	}
	foreign.assertIntact(t)
	// The upstream still has its route to the subnet from above, so the
	// connection works, but now without masquerading.
	if seen, err := ask(guestA, upstreamSrv); err != nil || !strings.HasPrefix(seen, "172.30.0.2:") {
		t.Errorf("after Remove upstream saw the guest as %q (%v), want its own address: no NAT left", seen, err)
	}
	if err := firewall.Evict(ctx, cfg.Bridge, guestPortA.Tap, guestPortA.Addr); err != nil {
		t.Errorf("Evict without tables: %v, want nil", err)
	}
	if err := firewall.Admit(ctx, guestPortA); !errors.Is(err, firewall.ErrNotEnsured) {
		t.Errorf("Admit without tables: %v, want ErrNotEnsured", err)
	}
}

// foreignTables are someone else's rules: an ip table, and an inet table
// that happens to be called "banger" too.
type foreignTables struct {
	tables []*nftables.Table
	chains []*nftables.Chain
}

func addForeignTables(t *testing.T) foreignTables {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	var f foreignTables
	for _, tb := range []*nftables.Table{
		{Family: nftables.TableFamilyIPv4, Name: "foreign"},
		{Family: nftables.TableFamilyINet, Name: "banger"},
	} {
		c.AddTable(tb)
		ch := c.AddChain(&nftables.Chain{
			Name: "input", Table: tb, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
		})
		c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
		f.tables = append(f.tables, tb)
		f.chains = append(f.chains, ch)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("add foreign tables: %v", err)
	}
	return f
}

func (f foreignTables) assertIntact(t *testing.T) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	for i, tb := range f.tables {
		rules, err := c.GetRules(tb, f.chains[i])
		if err != nil || len(rules) != 1 {
			t.Errorf("foreign table %v %s: %d rules, %v; want its one rule untouched", tb.Family, tb.Name, len(rules), err)
		}
	}
}

func assertRuleCounts(t *testing.T, want map[string]int) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]nftables.TableFamily{"ip": nftables.TableFamilyIPv4, "bridge": nftables.TableFamilyBridge}
	for key, n := range want {
		fam, chain, _ := strings.Cut(key, "/")
		tb := &nftables.Table{Family: fams[fam], Name: firewall.TableName(cfg.Bridge)}
		rules, err := c.GetRules(tb, &nftables.Chain{Name: chain, Table: tb})
		if err != nil || len(rules) != n {
			t.Errorf("%s %s chain %s: %d rules, %v; want %d", fam, firewall.TableName(cfg.Bridge), chain, len(rules), err, n)
		}
	}
}

// serveRemoteAddr listens on addr inside ns (the test's own namespace if
// nil) and answers every connection with the peer address it sees.
func serveRemoteAddr(t *testing.T, ns *nstest.NS, addr string) string {
	t.Helper()
	var l net.Listener
	var err error
	if ns == nil {
		l, err = net.Listen("tcp", addr)
	} else {
		l, err = ns.Listen("tcp", addr)
	}
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, c.RemoteAddr().String()+"\n")
			_ = c.Close()
		}
	}()
	return addr
}

// ask connects from ns (the test's own namespace if nil) to addr and
// returns the first line it reads.
func ask(ns *nstest.NS, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	dial := (&net.Dialer{}).DialContext
	if ns != nil {
		dial = ns.DialContext
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// mustReach retries for a few seconds: a veth that has just come up may
// drop the first packets until the kernel activates its queue.
func mustReach(t *testing.T, what string, ns *nstest.NS, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := ask(ns, addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s (%s): %v, want a connection", what, addr, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustNotReach(t *testing.T, what string, ns *nstest.NS, addr string) {
	t.Helper()
	if seen, err := ask(ns, addr); err == nil {
		t.Errorf("%s (%s) connected (seen as %s), want it blocked", what, addr, seen)
	}
}
