package nstest

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// Stand-ins for the outside world that egress tests reach from a guest:
// TCP listeners, an upstream DNS server, a second address.

// ServeTCP accepts connections on addr inside ns, writes "hi" and closes
// each, until the test ends.
func ServeTCP(t testing.TB, ns *NS, addr string) {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
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
			_, _ = io.WriteString(c, "hi\n")
			_ = c.Close()
		}
	}()
}

// ExpectConnect dials addr over TCP from ns and fails the test unless the
// outcome is want. A connection that should work is retried for a few
// seconds (fresh veths drop their first packets); one that should not is
// tried once, for a second.
func ExpectConnect(t testing.TB, ns *NS, addr string, want bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := ns.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			_ = c.Close()
		}
		switch {
		case (err == nil) == want:
			return
		case !want:
			t.Errorf("%s: %s connected, want it blocked", what, addr)
			return
		case time.Now().After(deadline):
			t.Errorf("%s: %s: %v, want a connection", what, addr, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ServeDNS answers A questions for zone's names ("example.com." →
// "192.0.2.7", TTL 60) on UDP addr inside ns, other types of them with an
// empty answer and every other name with NXDOMAIN, until the test ends.
func ServeDNS(t testing.TB, ns *NS, addr string, zone map[string]string) {
	t.Helper()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
		resp := new(mdns.Msg).SetReply(req)
		q := req.Question[0]
		if a, ok := zone[strings.ToLower(q.Name)]; ok && q.Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(q.Name + " 60 IN A " + a)
			resp.Answer = append(resp.Answer, rr)
		} else if !ok {
			resp.Rcode = mdns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})
	pc, err := ns.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: h}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
}

// AddAddr adds p to ns's eth0 (Link's end of the pair).
func AddAddr(t testing.TB, ns *NS, p netip.Prefix) {
	t.Helper()
	nh := ns.Netlink(t)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		t.Fatalf("add %s in namespace: %v", p, err)
	}
}

// Resolve asks server over UDP from inside ns for name's A records.
func Resolve(t testing.TB, ns *NS, server netip.AddrPort, name string) *mdns.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := ns.DialContext(ctx, "udp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	c := &mdns.Client{Net: "udp", Timeout: 3 * time.Second}
	r, _, err := c.ExchangeWithConnContext(ctx, new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA), &mdns.Conn{Conn: conn})
	if err != nil {
		t.Fatalf("A %s: %v", name, err)
	}
	return r
}

// ARecords lists r's A records' addresses, comma-separated.
func ARecords(r *mdns.Msg) string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return strings.Join(out, ",")
}
