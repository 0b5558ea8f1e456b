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

// fakeRunner records resolvectl invocations and answers from a script.
type fakeRunner struct {
	calls  []string
	answer func(args []string) (system.Output, error)
}

func (f *fakeRunner) Run(_ context.Context, c system.Command) (system.Output, error) {
	f.calls = append(f.calls, c.String())
	if f.answer == nil {
		return system.Output{}, nil
	}
	return f.answer(c.Args)
}

func TestResolvedConfigure(t *testing.T) {
	ctx := context.Background()
	run := &fakeRunner{}
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
	if !slices.Equal(run.calls, want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(run.calls, "\n"), strings.Join(want, "\n"))
	}

	// Never on a foreign link, never with a bad domain.
	run.calls = nil
	for _, err := range []error{
		r.Configure(ctx, "eth0", netip.MustParseAddr("172.30.0.1"), "banger"),
		r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "bad domain"),
		r.Configure(ctx, "banger0", netip.Addr{}, "banger"),
		r.Revert(ctx, "wlan0"),
	} {
		if !errors.Is(err, network.ErrInvalid) {
			t.Errorf("bad input: %v, want ErrInvalid", err)
		}
	}
	if len(run.calls) != 0 {
		t.Errorf("bad input still ran %v", run.calls)
	}
}

func TestResolvedAbsent(t *testing.T) {
	ctx := context.Background()
	cases := map[string]func([]string) (system.Output, error){
		"not installed": func([]string) (system.Output, error) {
			return system.Output{}, fmt.Errorf("run resolvectl: %w", &exec.Error{Name: "resolvectl", Err: exec.ErrNotFound})
		},
		"not running": func([]string) (system.Output, error) {
			return system.Output{ExitCode: 1, Stderr: []byte("Failed to get global data: Could not activate remote peer 'org.freedesktop.resolve1'.\n")}, nil
		},
		"no bus": func([]string) (system.Output, error) {
			return system.Output{ExitCode: 1, Stderr: []byte("Failed to connect to bus: No such file or directory\n")}, nil
		},
	}
	for name, answer := range cases {
		r := dns.Resolved{Runner: &fakeRunner{answer: answer}}
		if err := r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "banger"); !errors.Is(err, dns.ErrResolvedUnavailable) {
			t.Errorf("%s: Configure = %v, want ErrResolvedUnavailable", name, err)
		}
		if err := r.Revert(ctx, "banger0"); err != nil {
			t.Errorf("%s: Revert = %v, want nil (nothing to revert)", name, err)
		}
	}

	r := dns.Resolved{Runner: &fakeRunner{answer: func(args []string) (system.Output, error) {
		return system.Output{ExitCode: 1, Stderr: []byte("Failed to set DNS configuration: Link banger0 not known\n")}, nil
	}}}
	err := r.Configure(ctx, "banger0", netip.MustParseAddr("172.30.0.1"), "banger")
	if err == nil || errors.Is(err, dns.ErrResolvedUnavailable) || !strings.Contains(err.Error(), "Link banger0 not known") {
		t.Errorf("other failure: %v; want resolvectl's message, not 'unavailable'", err)
	}
}
