package dns_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/network/nstest"
)

func TestRecordValidation(t *testing.T) {
	s, err := dns.NewServer(dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Domain() != "banger" {
		t.Errorf("default domain = %q", s.Domain())
	}
	v4 := netip.MustParseAddr("172.30.0.2")
	for _, name := range []string{"", "Dev", "a_b", "x.y", "-a", "a-", strings.Repeat("a", 64)} {
		if err := s.Set(name, v4); err == nil {
			t.Errorf("Set(%q) accepted an invalid name", name)
		}
	}
	if err := s.Set("dev", netip.MustParseAddr("fd00::2")); err == nil {
		t.Error("Set accepted an IPv6 address")
	}
	if err := s.Set("dev", v4); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRecords(map[string]netip.Addr{"ok": v4, "Bad": v4}); err == nil {
		t.Error("SetRecords accepted an invalid name")
	}
	if a, ok := s.Lookup("dev"); !ok || a != v4 {
		t.Error("a failed SetRecords changed the table")
	}
	for _, d := range []string{"Banger", "bad_domain", "a..b", ".banger"} {
		if _, err := dns.NewServer(dns.Config{Domain: d}); err == nil {
			t.Errorf("NewServer accepted domain %q", d)
		}
	}
}

// TestServer runs the server on banger's bridge inside the test's
// namespace, asks it questions from a guest namespace behind the bridge,
// and forwards to a fake upstream resolver in a third namespace.
func TestServer(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	if err := network.EnsureBridge(ctx, network.Bridge{Name: "banger0", Subnet: subnet}, network.Owner{StateDir: "/var/lib/banger-test"}); err != nil {
		t.Fatal(err)
	}
	gw := network.Gateway(subnet)
	guest, upstream := nstest.NewNS(t), nstest.NewNS(t)
	nstest.Link(t, guest, nstest.LinkConfig{HostName: "bgt-guest", Master: "banger0", GuestAddr: netip.MustParsePrefix("172.30.0.2/24"), Gateway: gw})
	nstest.Link(t, upstream, nstest.LinkConfig{HostName: "up0", HostAddr: netip.MustParsePrefix("198.51.100.1/24"), GuestAddr: netip.MustParsePrefix("198.51.100.2/24")})
	asked := fakeUpstream(t, upstream, "198.51.100.2:53")

	srv, err := dns.NewServer(dns.Config{
		Subnet: subnet,
		// The first upstream does not exist: the server must move on.
		Upstreams: resolvConf(t, "198.51.100.99", "198.51.100.2"),
		Timeout:   300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(netip.AddrPortFrom(gw, 53)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.SetRecords(map[string]netip.Addr{"dev": netip.MustParseAddr("172.30.0.2"), "web": netip.MustParseAddr("172.30.0.3")}); err != nil {
		t.Fatal(err)
	}
	server := netip.AddrPortFrom(gw, 53).String()
	q := func(proto, name string, qtype uint16) *mdns.Msg {
		t.Helper()
		return query(t, guest, proto, server, name, qtype, 0)
	}

	for _, proto := range []string{"udp", "tcp"} {
		r := q(proto, "dev.banger.", mdns.TypeA)
		if r.Rcode != mdns.RcodeSuccess || !r.Authoritative || aRecords(r) != "172.30.0.2" {
			t.Errorf("%s A dev.banger: %s", proto, r)
		}
	}
	if r := q("udp", "DEV.Banger.", mdns.TypeA); aRecords(r) != "172.30.0.2" {
		t.Errorf("names must be case-insensitive: %s", r)
	}
	if r := q("udp", "dev.banger.", mdns.TypeAAAA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA dev.banger: want an empty answer, got %s", r)
	}
	for _, name := range []string{"nope.banger.", "a.dev.banger."} {
		if r := q("udp", name, mdns.TypeA); r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
			t.Errorf("A %s: want NXDOMAIN with SOA, got %s", name, r)
		}
	}

	// Go's own resolver, as a guest program would use it.
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return guest.DialContext(ctx, network, server)
	}}
	addrs, err := res.LookupHost(ctx, "web.banger")
	if err != nil || !slices.Equal(addrs, []string{"172.30.0.3"}) {
		t.Errorf("Go resolver web.banger = %v, %v", addrs, err)
	}

	// Reverse lookups for banger's subnet stay here.
	before := asked.Load()
	if r := q("udp", "2.0.30.172.in-addr.arpa.", mdns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*mdns.PTR).Ptr != "dev.banger." {
		t.Errorf("PTR 172.30.0.2: %s", r)
	}
	if r := q("udp", "99.0.30.172.in-addr.arpa.", mdns.TypePTR); r.Rcode != mdns.RcodeNameError {
		t.Errorf("PTR 172.30.0.99: want NXDOMAIN, got %s", r)
	}
	if asked.Load() != before {
		t.Error("a reverse lookup inside the VM subnet was forwarded upstream")
	}

	// Everything else is forwarded.
	for _, proto := range []string{"udp", "tcp"} {
		r := q(proto, "example.com.", mdns.TypeA)
		if r.Rcode != mdns.RcodeSuccess || aRecords(r) != "192.0.2.7" {
			t.Errorf("%s A example.com (forwarded): %s", proto, r)
		}
	}
	if r := q("udp", "missing.example.com.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("upstream NXDOMAIN not passed through: %s", r)
	}
	// A big answer arrives truncated over UDP upstream; the server refetches
	// it over TCP and passes all of it to a client that can take it.
	if r := query(t, guest, "udp", server, "big.example.com.", mdns.TypeTXT, 4096); r.Truncated || len(r.Answer) != bigRecords {
		t.Errorf("big TXT over EDNS UDP: truncated=%v, %d records, want %d", r.Truncated, len(r.Answer), bigRecords)
	}
	if r := q("udp", "big.example.com.", mdns.TypeTXT); !r.Truncated {
		t.Errorf("big TXT over plain UDP: want the TC bit so the client retries over TCP")
	}
	if r := q("tcp", "big.example.com.", mdns.TypeTXT); len(r.Answer) != bigRecords {
		t.Errorf("big TXT over TCP: %d records, want %d", len(r.Answer), bigRecords)
	}

	// Records follow the daemon: delete, re-create with a new address.
	srv.Delete("dev")
	if r := q("udp", "dev.banger.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("dev.banger after Delete: want NXDOMAIN, got %s", r)
	}
	if err := srv.Set("dev", netip.MustParseAddr("172.30.0.4")); err != nil {
		t.Fatal(err)
	}
	if r := q("udp", "dev.banger.", mdns.TypeA); aRecords(r) != "172.30.0.4" {
		t.Errorf("dev.banger after Set: %s", r)
	}

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	c := &mdns.Client{Net: "udp", Timeout: 300 * time.Millisecond}
	if _, err := exchange(guest, c, server, "dev.banger.", mdns.TypeA, 0); err == nil {
		t.Error("server still answers after Close")
	}
}

func TestServerWithoutUpstreams(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	srv, err := dns.NewServer(dns.Config{Domain: "vms.test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	if err := srv.Set("a", netip.MustParseAddr("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	m := new(mdns.Msg).SetQuestion("a.vms.test.", mdns.TypeA)
	r, _, err := c.Exchange(m, srv.Addr().String())
	if err != nil || aRecords(r) != "10.0.0.2" {
		t.Errorf("A a.vms.test = %v, %v", r, err)
	}
	m = new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA)
	if r, _, err := c.Exchange(m, srv.Addr().String()); err != nil || r.Rcode != mdns.RcodeRefused {
		t.Errorf("forwarding without upstreams: %v, %v; want REFUSED", r, err)
	}
}

// resolvConf is the production upstream source over a resolv.conf listing
// servers.
func resolvConf(t *testing.T, servers ...string) *dns.ResolvConf {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	var b strings.Builder
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return &dns.ResolvConf{Path: path}
}

// selfUpstream makes a server its own upstream, as a resolv.conf listing
// the bridge address would.
type selfUpstream struct{ srv **dns.Server }

func (s selfUpstream) Upstreams() []netip.AddrPort { return []netip.AddrPort{(*s.srv).Addr()} }

func TestServerNeverForwardsToItself(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	var srv *dns.Server
	srv, err := dns.NewServer(dns.Config{Upstreams: selfUpstream{&srv}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close() }()
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	m := new(mdns.Msg).SetQuestion("example.com.", mdns.TypeA)
	if r, _, err := c.Exchange(m, srv.Addr().String()); err != nil || r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("forwarding to itself: %v, %v; want an immediate SERVFAIL", r, err)
	}
}

const bigRecords = 40

// fakeUpstream serves a tiny zone on addr inside ns over UDP and TCP:
// example.com A 192.0.2.7, big.example.com with bigRecords TXT records
// (truncated over UDP, like a real server), NXDOMAIN for the rest. It
// returns a counter of questions received.
func fakeUpstream(t *testing.T, ns *nstest.NS, addr string) *atomic.Int64 {
	t.Helper()
	var asked atomic.Int64
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		asked.Add(1)
		resp := new(mdns.Msg).SetReply(req)
		q := req.Question[0]
		switch strings.ToLower(q.Name) {
		case "example.com.":
			rr, _ := mdns.NewRR("example.com. 60 IN A 192.0.2.7")
			resp.Answer = append(resp.Answer, rr)
		case "big.example.com.":
			for i := range bigRecords {
				rr, _ := mdns.NewRR("big.example.com. 60 IN TXT \"" + strings.Repeat("x", 40) + string(rune('a'+i%26)) + "\"")
				resp.Answer = append(resp.Answer, rr)
			}
			if _, udp := w.LocalAddr().(*net.UDPAddr); udp {
				resp.Truncate(mdns.MinMsgSize)
			}
		default:
			resp.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*mdns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return &asked
}

// query asks server from inside ns, failing the test on transport errors.
func query(t *testing.T, ns *nstest.NS, proto, server, name string, qtype, ednsSize uint16) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: proto, Timeout: 3 * time.Second}
	r, err := exchange(ns, c, server, name, qtype, ednsSize)
	if err != nil {
		t.Fatalf("%s %s %s: %v", proto, mdns.TypeToString[qtype], name, err)
	}
	return r
}

func exchange(ns *nstest.NS, c *mdns.Client, server, name string, qtype, ednsSize uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg).SetQuestion(name, qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	conn, err := ns.DialContext(ctx, c.Net, server)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	r, _, err := c.ExchangeWithConnContext(ctx, m, &mdns.Conn{Conn: conn, UDPSize: max(ednsSize, mdns.MinMsgSize)})
	return r, err
}

func aRecords(r *mdns.Msg) string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return strings.Join(out, ",")
}
