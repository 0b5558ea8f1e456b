package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestParseResolvConf(t *testing.T) {
	in := `# generated
nameserver 127.0.0.53 # systemd-resolved stub
nameserver	192.168.1.1
search lan
options edns0 trust-ad
; comment
nameserver fe80::1%eth0
nameserver bogus
nameserver
  nameserver 9.9.9.9
`
	got, err := dns.ParseResolvConf(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.53", "192.168.1.1", "fe80::1%eth0", "9.9.9.9"}
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if !slices.Equal(s, want) {
		t.Errorf("ParseResolvConf = %v, want %v", s, want)
	}
}

func TestResolvConfFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nameserver 172.30.0.1\nnameserver 127.0.0.53\n")
	r := &dns.ResolvConf{Path: path, Exclude: []netip.Addr{netip.MustParseAddr("172.30.0.1")}}
	if got := r.Upstreams(); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53")}) {
		t.Errorf("Upstreams = %v; want the stub kept and banger's own address excluded", got)
	}
	write("nameserver 10.0.0.1\nnameserver 10.0.0.2\n")
	if got := r.Upstreams(); !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:53"), netip.MustParseAddrPort("10.0.0.2:53")}) {
		t.Errorf("Upstreams after the file changed = %v", got)
	}
	_ = os.Remove(path)
	if got := r.Upstreams(); len(got) != 2 {
		t.Errorf("Upstreams with the file gone = %v; want the last good list", got)
	}
}

func TestResolvedConfigure(t *testing.T) {
	ctx := context.Background()
	run := &systemtest.Runner{}
	r := dns.Resolved{Runner: run}
	if err := r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "banger"); err != nil {
		t.Fatal(err)
	}
	if err := r.Revert(ctx, "banger0"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"resolvectl dns banger0 172.30.0.1",
		"resolvectl domain banger0 ~banger",
		"resolvectl default-route banger0 false",
		"resolvectl revert banger0",
	}
	if !slices.Equal(run.Lines(), want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(run.Lines(), "\n"), strings.Join(want, "\n"))
	}

	// Never on a foreign link, never with a bad or public domain.
	run = &systemtest.Runner{}
	r = dns.Resolved{Runner: run}
	for _, err := range []error{
		r.Configure(ctx, "eth0", netip.MustParseAddr("172.30.0.1"), "banger"),
		r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "bad domain"),
		r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "com"),
		r.Configure(ctx, "banger0", netip.Addr{}, "banger"),
		r.Revert(ctx, "wlan0"),
	} {
		if !errors.Is(err, network.ErrInvalid) {
			t.Errorf("bad input: %v, want ErrInvalid", err)
		}
	}
	if calls := run.Lines(); len(calls) != 0 {
		t.Errorf("bad input still ran %v", calls)
	}
}

func TestResolvedAbsent(t *testing.T) {
	ctx := context.Background()
	cases := map[string]func(system.Command) (system.Output, error){
		"not installed": func(system.Command) (system.Output, error) {
			return system.Output{}, fmt.Errorf("run resolvectl: %w", &exec.Error{Name: "resolvectl", Err: exec.ErrNotFound})
		},
		"not running": func(system.Command) (system.Output, error) {
			return systemtest.Exit(1, "Failed to get global data: Could not activate remote peer 'org.freedesktop.resolve1'.\n")
		},
		"no bus": func(system.Command) (system.Output, error) {
			return systemtest.Exit(1, "Failed to connect to bus: No such file or directory\n")
		},
	}
	for name, answer := range cases {
		r := dns.Resolved{Runner: &systemtest.Runner{Reply: answer}}
		if err := r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "banger"); !errors.Is(err, dns.ErrResolvedUnavailable) {
			t.Errorf("%s: Configure = %v, want ErrResolvedUnavailable", name, err)
		}
		if err := r.Revert(ctx, "banger0"); err != nil {
			t.Errorf("%s: Revert = %v, want nil (nothing to revert)", name, err)
		}
	}

	r := dns.Resolved{Runner: &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
		return systemtest.Exit(1, "Failed to set DNS configuration: Link banger0 not known\n")
	}}}
	err := r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "banger")
	if err == nil || errors.Is(err, dns.ErrResolvedUnavailable) || !strings.Contains(err.Error(), "Link banger0 not known") {
		t.Errorf("other failure: %v; want resolvectl's message, not 'unavailable'", err)
	}
}

func TestValidRoutingDomain(t *testing.T) {
	for _, d := range []string{"banger", "vm.banger", "dev.internal", "test", "lab.home.arpa"} {
		if err := dns.ValidRoutingDomain(d); err != nil {
			t.Errorf("%q refused: %v", d, err)
		}
	}
	for _, d := range []string{
		"", ".", "~.", "com", "google.com", "local", "arpa", "home.arpa.com", "banger.", ".banger",
		"a..banger", "BANGER", "-x.banger", "x-.banger", "a b.banger", "banger\n",
		strings.Repeat("a", 64) + ".banger", strings.Repeat("a.", 130) + "banger",
	} {
		err := dns.ValidRoutingDomain(d)
		if !errors.Is(err, network.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", d, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error is not one line: %q", d, err)
		}
	}
}
