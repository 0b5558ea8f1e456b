package doctor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/banger-dev/banger/internal/network/dns"
	"github.com/banger-dev/banger/internal/system"
)

// NameSettings is the part of the network configuration that decides how
// VM names (NAME.Domain) resolve on the host.
type NameSettings struct {
	// Enabled is false when VM networking is off: VMs then have no names.
	Enabled bool
	Domain  string
	Bridge  string
	// Gateway is banger's DNS server, on the bridge.
	Gateway netip.Addr
}

// resolvedStub is systemd-resolved's local stub resolver.
var resolvedStub = netip.MustParseAddr("127.0.0.53")

// NameResolutionCheck reports whether programs on this host (ssh, browsers)
// resolve NAME.DOMAIN: through systemd-resolved, which banger configures on
// its bridge, or through a resolv.conf that names banger's server. Anything
// else is a warning, not a failure: banger's own commands and `banger
// ssh-config` use addresses, and guests resolve names regardless.
func NameResolutionCheck(h Host, s NameSettings) Check {
	return Check{Name: "VM names on this host", Run: func(ctx context.Context) Result {
		if !s.Enabled {
			return Result{Status: Pass, Summary: "VM networking is off: VMs have no addresses or names"}
		}
		pattern := "*." + s.Domain
		servers, rerr := readNameservers(h.at(dns.EtcResolvConf))
		if slices.Contains(servers, s.Gateway) {
			return Result{Status: Pass, Summary: fmt.Sprintf("/etc/resolv.conf sends every name to banger's DNS server %s", s.Gateway)}
		}
		hosts := nsswitchHosts(h.at("/etc/nsswitch.conf"))
		viaResolved := slices.Contains(servers, resolvedStub) || slices.Contains(hosts, "resolve")
		r := Result{Status: Warn}
		switch {
		case viaResolved && !slices.Contains(hosts, "dns") && !slices.Contains(hosts, "resolve"):
			r.Summary = fmt.Sprintf("%s does not resolve here: the hosts line of /etc/nsswitch.conf (%s) uses neither dns nor resolve", pattern, strings.Join(hosts, " "))
		case viaResolved:
			routed, why := resolvedRoutes(ctx, h.Runner, s.Bridge, s.Domain)
			if routed {
				return Result{Status: Pass, Summary: fmt.Sprintf("systemd-resolved sends %s to banger's DNS server on %s", pattern, s.Bridge)}
			}
			r.Summary = fmt.Sprintf("%s does not resolve here yet: %s", pattern, why)
		case rerr != nil:
			r.Summary = fmt.Sprintf("%s does not resolve here: %v", pattern, rerr)
		default:
			r.Summary = fmt.Sprintf("%s does not resolve here: /etc/resolv.conf uses %s, not systemd-resolved or banger's server", pattern, addrList(servers))
		}
		r.Details = []string{
			"`banger ssh-config` lists VMs by address, so ssh, scp and rsync work without these names",
			fmt.Sprintf("to resolve them, run systemd-resolved (banger configures it), or have your resolver forward %s to %s (dnsmasq: server=/%s/%s)", s.Domain, s.Gateway, s.Domain, s.Gateway),
		}
		return r
	}}
}

// resolvedRoutes asks systemd-resolved whether the bridge carries the
// routing domain ~DOMAIN, and says why not when it does not.
func resolvedRoutes(ctx context.Context, r system.Runner, bridge, domain string) (bool, string) {
	out, err := r.Run(ctx, system.Command{Path: "resolvectl", Args: []string{"domain", bridge}})
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return false, "/etc/resolv.conf points at systemd-resolved's stub, but resolvectl is not installed"
	case err != nil:
		return false, "resolvectl: " + err.Error()
	case out.ExitCode != 0:
		msg := strings.TrimSpace(string(out.Stderr) + " " + string(out.Stdout))
		if strings.Contains(msg, "No such device") || strings.Contains(msg, "Failed to resolve interface") {
			return false, fmt.Sprintf("bridge %s is not up (the daemon creates it and configures systemd-resolved when a VM starts)", bridge)
		}
		return false, "systemd-resolved does not answer (" + firstLineOf(msg) + ")"
	}
	for _, f := range strings.Fields(string(out.Stdout)) {
		if f == "~"+domain {
			return true, ""
		}
	}
	return false, fmt.Sprintf("systemd-resolved has no ~%s route on %s (the daemon sets it when it brings the bridge up; it needs root or the root helper)", domain, bridge)
}

// readNameservers lists the nameservers of a resolv.conf.
func readNameservers(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", dns.EtcResolvConf, err)
	}
	defer f.Close()
	return dns.ParseResolvConf(f)
}

// nsswitchHosts returns the sources on the hosts line of nsswitch.conf
// (actions such as [NOTFOUND=return] dropped), or glibc's default when the
// file or the line is missing.
func nsswitchHosts(path string) []string {
	data, err := os.ReadFile(path)
	if err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			key, rest, ok := strings.Cut(line, ":")
			if !ok || strings.TrimSpace(key) != "hosts" {
				continue
			}
			var out []string
			for _, f := range strings.Fields(rest) {
				if !strings.HasPrefix(f, "[") {
					out = append(out, f)
				}
			}
			return out
		}
	}
	return []string{"dns", "files"}
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "no nameserver"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
