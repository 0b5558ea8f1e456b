package network_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/banger-dev/banger/internal/network/portforward"
)

// TestGuestNetworking walks the calls bangerd makes (through the root
// helper for the privileged ones) in the order it makes them, with a veth
// namespace standing in for the VM's NIC since nothing here runs a VMM to
// read the tap: daemon start, VM create/start, the guest resolving and
// reaching the "internet" by name, a port forward, VM delete, uninstall.
func TestGuestNetworking(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()

	// The "internet": an upstream namespace with a web server and a
	// resolver, behind the host's uplink, with no route to the VM subnet.
	upstream := nstest.NewNS(t)
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "uplink0", HostAddr: netip.MustParsePrefix("203.0.113.1/24"), GuestAddr: netip.MustParsePrefix("203.0.113.2/24")})
	web := listenIn(t, upstream, "203.0.113.2:80", func(c net.Conn) { _, _ = io.WriteString(c, c.RemoteAddr().String()+"\n") })
	upstreamDNS(t, upstream, "203.0.113.2:53", map[string]netip.Addr{"web.example.": web.Addr()})

	// Daemon start.
	routes, err := network.HostRoutes(ctx, "banger0")
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	if err := network.CheckSubnet(subnet, routes); err != nil {
		t.Fatal(err)
	}
	br := network.Bridge{Name: "banger0", Subnet: subnet}
	if err := network.EnsureBridge(ctx, br, testOwner); err != nil {
		t.Fatal(err)
	}
	if err := network.SetIPForward(true); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Ensure(ctx, firewall.Config{Bridge: br.Name, Subnet: br.Subnet}); err != nil {
		t.Fatal(err)
	}
	upstreams := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(upstreams, []byte("nameserver 203.0.113.2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolver, err := dns.NewServer(dns.Config{Subnet: br.Subnet, Upstreams: &dns.ResolvConf{Path: upstreams}})
	if err != nil {
		t.Fatal(err)
	}
	if err := resolver.Start(netip.AddrPortFrom(br.Gateway(), 53)); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resolver.Close() }()
	st := openStore(t)

	// VM create.
	vmID := createVMs(t, st, 1)[0]
	lease, err := st.AllocateLease(ctx, vmID, network.MACAddress(vmID).String(), network.Candidates(br.Subnet))
	if err != nil {
		t.Fatal(err)
	}
	if err := resolver.Set("vm000", lease.IP); err != nil {
		t.Fatal(err)
	}
	// VM start.
	tap := network.TapName(vmID)
	if err := network.CreateTap(ctx, tap, br.Name, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	mac, err := network.ParseGuestMAC(lease.MAC)
	if err != nil {
		t.Fatal(err)
	}
	guest := nstest.NewNS(t)
	nstest.Link(t, guest, nstest.LinkConfig{HostName: "bgt-nic", Master: br.Name, GuestAddr: netip.PrefixFrom(lease.IP, br.Subnet.Bits()), GuestMAC: mac, Gateway: br.Gateway()})
	// The veth stands in for the tap, so it is the port admitted.
	if err := firewall.Admit(ctx, firewall.Guest{Bridge: br.Name, Tap: "bgt-nic", MAC: mac, Addr: lease.IP}); err != nil {
		t.Fatal(err)
	}
	app := listenIn(t, guest, netip.AddrPortFrom(lease.IP, 8000).String(), func(c net.Conn) { _, _ = io.WriteString(c, "hello from the guest\n") })

	// The guest resolves a name through banger's server and reaches it
	// through NAT.
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return guest.DialContext(ctx, network, netip.AddrPortFrom(br.Gateway(), 53).String())
	}}
	addrs, err := res.LookupHost(ctx, "web.example")
	if err != nil || len(addrs) != 1 {
		t.Fatalf("guest lookup of web.example: %v, %v", addrs, err)
	}
	if seen := readLine(t, guest, net.JoinHostPort(addrs[0], "80")); !strings.HasPrefix(seen, "203.0.113.1:") {
		t.Errorf("upstream saw the guest as %q, want the masqueraded 203.0.113.1", seen)
	}
	if own, err := res.LookupHost(ctx, "vm000.banger"); err != nil || len(own) != 1 || own[0] != lease.IP.String() {
		t.Errorf("guest lookup of its own name: %v, %v; want %s", own, err, lease.IP)
	}

	// A port forward from the host's loopback to the guest.
	fwd, err := portforward.Start(netip.MustParseAddrPort("127.0.0.1:0"), app, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readLine(t, nil, fwd.Addr().String()); got != "hello from the guest" {
		t.Errorf("through the port forward: %q", got)
	}

	// VM stop and delete.
	if err := fwd.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Evict(ctx, br.Name, "bgt-nic", lease.IP); err != nil {
		t.Fatal(err)
	}
	if err := network.DeleteTap(ctx, tap, 65534); err != nil {
		t.Fatal(err)
	}
	resolver.Delete("vm000")
	if err := st.ReleaseLease(ctx, vmID); err != nil {
		t.Fatal(err)
	}
	if _, err := res.LookupHost(ctx, "vm000.banger"); err == nil {
		t.Error("deleted VM still resolves")
	}

	// Uninstall.
	if err := resolver.Close(); err != nil {
		t.Fatal(err)
	}
	if err := firewall.Remove(ctx, br.Name); err != nil {
		t.Fatal(err)
	}
	if err := network.DeleteBridge(ctx, br.Name, testOwner); err != nil {
		t.Fatal(err)
	}
	if taps, err := tapNames(ctx); err != nil || len(taps) != 0 {
		t.Errorf("taps left: %v, %v", taps, err)
	}
}

func listenIn(t *testing.T, ns *nstest.NS, addr string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
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
			handle(c)
			_ = c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// upstreamDNS answers A questions for names on addr inside ns, NXDOMAIN
// for anything else.
func upstreamDNS(t *testing.T, ns *nstest.NS, addr string, names map[string]netip.Addr) {
	t.Helper()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		resp := new(mdns.Msg).SetReply(req)
		if ip, ok := names[strings.ToLower(req.Question[0].Name)]; ok && req.Question[0].Qtype == mdns.TypeA {
			resp.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: req.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: ip.AsSlice()}}
		} else if !ok {
			resp.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// readLine connects to addr from ns (the test's own namespace if nil) and
// returns the first line.
func readLine(t *testing.T, ns *nstest.NS, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	if ns == nil {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	} else {
		c, err = ns.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}
