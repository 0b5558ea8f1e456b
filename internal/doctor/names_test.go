package doctor

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/system/systemtest"
)

func TestNameResolutionCheck(t *testing.T) {
	settings := NameSettings{Enabled: true, Domain: "banger", Bridge: "banger0", Gateway: netip.MustParseAddr("172.30.0.1")}
	routed := system.Output{Stdout: []byte("Link 7 (banger0): ~banger\n")}
	unrouted := system.Output{Stdout: []byte("Link 7 (banger0):\n")}
	noLink := system.Output{ExitCode: 1, Stderr: []byte(`Failed to resolve interface "banger0": No such device`)}
	notRunning := system.Output{ExitCode: 1, Stderr: []byte("Failed to get global data: Could not activate remote peer.")}
	const stub = "etc/resolv.conf=nameserver 127.0.0.53\noptions edns0\n"
	const nssResolve = "etc/nsswitch.conf=hosts: files resolve [!UNAVAIL=return] dns\n"
	const nssDNS = "etc/nsswitch.conf=hosts:          files dns\n"
	cases := []struct {
		name     string
		off      bool
		files    []string
		out      system.Output
		notFound bool
		status   Status
		summary  string
	}{
		{name: "networking off", off: true, status: Pass, summary: "VM networking is off"},
		{name: "resolved routes the domain", files: []string{stub, nssResolve}, out: routed, status: Pass, summary: "systemd-resolved sends *.banger to banger's DNS server on banger0"},
		{name: "resolved without the route", files: []string{stub, nssDNS}, out: unrouted, status: Warn, summary: "systemd-resolved has no ~banger route on banger0"},
		{name: "resolved, bridge not up", files: []string{stub, nssDNS}, out: noLink, status: Warn, summary: "bridge banger0 is not up"},
		{name: "stub but resolved stopped", files: []string{stub, nssDNS}, out: notRunning, status: Warn, summary: "systemd-resolved does not answer (Failed to get global data"},
		{name: "stub but no resolvectl", files: []string{stub, nssDNS}, notFound: true, status: Warn, summary: "resolvectl is not installed"},
		{name: "plain resolv.conf", files: []string{"etc/resolv.conf=nameserver 192.168.1.1\nnameserver 1.1.1.1\n", nssDNS}, status: Warn,
			summary: "*.banger does not resolve here: /etc/resolv.conf uses 192.168.1.1, 1.1.1.1, not systemd-resolved or banger's server"},
		{name: "resolv.conf names banger's server", files: []string{"etc/resolv.conf=nameserver 172.30.0.1\n"}, status: Pass, summary: "/etc/resolv.conf sends every name to banger's DNS server 172.30.0.1"},
		{name: "no resolv.conf", status: Warn, summary: "cannot read /etc/resolv.conf"},
		{name: "nsswitch without dns", files: []string{stub, "etc/nsswitch.conf=hosts: files myhostname\n"}, out: routed, status: Warn, summary: "uses neither dns nor resolve"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := scratchHost(t, tc.files...)
			runner := &systemtest.Runner{Reply: func(system.Command) (system.Output, error) {
				if tc.notFound {
					return system.Output{}, exec.ErrNotFound
				}
				return tc.out, nil
			}}
			h.Runner = runner
			s := settings
			s.Enabled = !tc.off
			r := run(NameResolutionCheck(h, s))
			if r.Status != tc.status || !strings.Contains(r.Summary, tc.summary) {
				t.Fatalf("%s %q, want %s containing %q", r.Status, r.Summary, tc.status, tc.summary)
			}
			if r.Status == Warn && !strings.Contains(strings.Join(r.Details, "\n"), "`banger ssh-config` lists VMs by address") {
				t.Errorf("warning without the ssh-config hint: %q", r.Details)
			}
			if r.Status == Warn && !strings.Contains(strings.Join(r.Details, "\n"), "server=/banger/172.30.0.1") {
				t.Errorf("warning without the forwarding hint: %q", r.Details)
			}
			for _, c := range runner.Lines() {
				if c != "resolvectl domain banger0" {
					t.Errorf("ran %q: doctor only reads", c)
				}
			}
		})
	}
}
