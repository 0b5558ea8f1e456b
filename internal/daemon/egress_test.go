package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/store"
)

func TestParseEgress(t *testing.T) {
	for _, c := range []struct {
		mode  string
		allow []string
		def   string
		want  string
	}{
		{"", nil, "allow", "allow []"},
		{"", nil, "deny", "deny []"},
		{"", []string{"GitHub.com", "*.example.com:443", "10.0.0.0/8", "192.0.2.7:22"}, "allow",
			"allowlist [github.com *.example.com:443 10.0.0.0/8 192.0.2.7:22]"},
		{"allowlist", nil, "allow", "allowlist []"},
	} {
		s, err := parseEgress(c.mode, c.allow, c.def)
		if got := fmt.Sprintf("%s %v", s.Mode, s.Allow); err != nil || got != c.want {
			t.Errorf("parseEgress(%q, %q, %q) = %s, %v; want %s", c.mode, c.allow, c.def, got, err, c.want)
		}
	}
	for _, c := range []struct {
		mode  string
		allow []string
		says  string
	}{
		{"open", nil, "not allow, deny or allowlist"},
		{"deny", []string{"example.com"}, "needs egress mode allowlist"},
		{"", []string{"10.0.0.1/8"}, "host bits"},
		{"", []string{"fd00::/64"}, "only IPv4"},
		{"", []string{"example.com:0"}, "1-65535"},
		{"", []string{"localhost"}, "must have a dot"},
		{"", []string{"ex ample.com"}, "not a DNS label"},
	} {
		if _, err := parseEgress(c.mode, c.allow, "allow"); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("parseEgress(%q, %q) = %v, want an error saying %q", c.mode, c.allow, err, c.says)
		}
	}
	many := make([]string, maxEgressNames+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.com", i)
	}
	if _, err := parseEgress("", many, "allow"); err == nil {
		t.Errorf("%d names accepted, the limit is %d", len(many), maxEgressNames)
	}
}

// TestNetworkAppliesEgressBeforeTheTap: a restricted VM's policy is in
// the firewall before its tap exists and its names are restricted in the
// DNS server while it runs; an allow VM costs no extra privileged call;
// the restriction goes with the tap.
func TestNetworkAppliesEgressBeforeTheTap(t *testing.T) {
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	srv, err := dns.NewServer(dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n.dns = srv
	deny := egressSettings{Mode: "allowlist", Allow: []string{"example.com", "10.0.0.0/8:443"}}
	restricted := createEgressVM(t, n.store, "restricted", &deny)
	open := createEgressVM(t, n.store, "open", nil)

	if _, _, err := n.attach(ctx, restricted, false); err != nil {
		t.Fatal(err)
	}
	l, _ := n.store.GetLease(ctx, restricted.ID)
	tap := network.TapName(restricted.ID)
	got := ops.take()
	want := []string{
		fmt.Sprintf("Admit %s %s %s isolated=false", tap, l.MAC, l.IP),
		fmt.Sprintf("ApplyEgress %s %s allowlist [10.0.0.0/8:443]", tap, l.IP),
		"CreateTap " + tap,
	}
	if !slices.Equal(got, want) {
		t.Errorf("attach calls %q, want %q", got, want)
	}
	if rules, ok := srv.Restricted(l.IP); !ok || len(rules) != 1 || rules[0].String() != "example.com" {
		t.Errorf("DNS restriction of %s: %v, %v; want example.com", l.IP, rules, ok)
	}

	if _, _, err := n.attach(ctx, open, false); err != nil {
		t.Fatal(err)
	}
	lo, _ := n.store.GetLease(ctx, open.ID)
	for _, c := range ops.take() {
		if strings.HasPrefix(c, "ApplyEgress") {
			t.Errorf("an allow VM cost a privileged call: %s", c)
		}
	}
	if _, ok := srv.Restricted(lo.IP); ok {
		t.Error("an allow VM's names are restricted")
	}

	// Live change to allow removes the table (the firewall call is made).
	restricted.Network = netSettings{Egress: &egressSettings{Mode: "allow"}}.json()
	if err := n.applyEgress(ctx, restricted, tap, l, true); err != nil {
		t.Fatal(err)
	}
	if got := ops.take(); !slices.Equal(got, []string{fmt.Sprintf("ApplyEgress %s %s allow []", tap, l.IP)}) {
		t.Errorf("live change to allow: %q", got)
	}
	if _, ok := srv.Restricted(l.IP); ok {
		t.Error("still restricted after the change to allow")
	}

	restricted.Network = netSettings{Egress: &deny}.json()
	if err := n.applyEgress(ctx, restricted, tap, l, true); err != nil {
		t.Fatal(err)
	}
	n.detach(ctx, restricted.ID)
	if _, ok := srv.Restricted(l.IP); ok {
		t.Error("a stopped VM's address is still restricted; the next VM to get it would inherit its policy")
	}
}

func createEgressVM(t *testing.T, st *store.Store, name string, e *egressSettings) store.VM {
	t.Helper()
	vm := store.VM{ID: store.NewID(), Name: name, VCPUs: 1, MemoryMiB: 128, VMM: "firecracker",
		Network: netSettings{Egress: e}.json()}
	if err := st.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

// A daemon that starts while a restricted VM runs restricts its names
// again: the firewall table outlived the old daemon, the DNS server's
// memory did not. The table is left as it is (no ApplyEgress): rebuilding
// it would forget learned addresses and open connections.
func TestReadmitRestoresTheDNSRestriction(t *testing.T) {
	ctx := context.Background()
	n, ops := newTestNetwork(t, "banger0")
	srv, err := dns.NewServer(dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n.dns = srv
	vm := createEgressVM(t, n.store, "running", &egressSettings{Mode: "deny"})
	l, err := n.lease(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	n.readmit(ctx, vm, network.TapName(vm.ID), l)
	if _, ok := srv.Restricted(l.IP); !ok {
		t.Error("a running deny VM's names are unrestricted after a daemon restart")
	}
	for _, c := range ops.take() {
		if strings.HasPrefix(c, "ApplyEgress") {
			t.Errorf("readmit rebuilt the egress table: %s", c)
		}
	}
}
