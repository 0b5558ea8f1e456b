package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/system"
)

// ErrResolvedUnavailable means systemd-resolved cannot be configured here:
// resolvectl is missing or resolved is not running. The host then does not
// resolve "*.banger" names by itself; guests still do.
var ErrResolvedUnavailable = errors.New("systemd-resolved is not available")

// Resolved tells systemd-resolved to send questions for banger's domain to
// banger's server, as per-link settings on the bridge:
//
//	resolvectl dns BRIDGE SERVER
//	resolvectl domain BRIDGE ~DOMAIN
//	resolvectl default-route BRIDGE false
//
// "~" makes the domain routing-only and default-route false keeps every
// other question away from banger, so the host's normal resolution is
// unchanged. resolved forgets per-link settings when the link goes away,
// so Configure must run again after the bridge is (re)created. Commands
// need root (the root helper runs them).
type Resolved struct {
	Runner system.Runner
}

// Configure points resolved at server for domain on link (the bridge).
func (r Resolved) Configure(ctx context.Context, link string, server netip.Addr, domain string) error {
	if err := network.ValidateBridgeName(link); err != nil {
		return fmt.Errorf("configure systemd-resolved: %w", err)
	}
	if !server.IsValid() {
		return fmt.Errorf("configure systemd-resolved: %w: no server address", network.ErrInvalid)
	}
	if err := ValidRoutingDomain(domain); err != nil {
		return fmt.Errorf("configure systemd-resolved: %w", err)
	}
	steps := [][]string{
		{"dns", link, server.String()},
		{"domain", link, "~" + domain},
		{"default-route", link, "false"},
	}
	for _, args := range steps {
		if err := r.run(ctx, args...); err != nil {
			return fmt.Errorf("configure systemd-resolved for %s on %s: %w", domain, link, err)
		}
	}
	return nil
}

// ValidRoutingDomain accepts DNS names under special-use or reserved names
// ("banger", "*.banger", "*.internal", "*.test", "*.home.arpa"). A per-link
// routing domain captures every query for it on the whole host, so a
// public name ("com", or "." for everything) would let banger's owner
// intercept other users' lookups. The config (network.domain), the root
// helper (resolver.configure) and Configure all apply it, so a bad domain
// is refused when the config is read. Failures wrap network.ErrInvalid.
func ValidRoutingDomain(d string) error {
	if d == "" {
		return fmt.Errorf("%w: DNS domain must be a name such as \"banger\"", network.ErrInvalid)
	}
	if err := validateDomain(d); err != nil {
		return fmt.Errorf("%w: DNS %w", network.ErrInvalid, err)
	}
	labels := strings.Split(d, ".")
	last := labels[len(labels)-1]
	if len(labels) >= 2 && labels[len(labels)-2]+"."+last == "home.arpa" {
		return nil
	}
	switch last {
	case "banger", "internal", "test":
		return nil
	}
	return fmt.Errorf("%w: DNS domain %q would capture a public name for every user of this host: use \"banger\" or a name under .banger, .internal, .test or .home.arpa", network.ErrInvalid, d)
}

// Revert drops banger's settings from link ("resolvectl revert LINK").
// A missing resolved is not an error: there is nothing to revert.
func (r Resolved) Revert(ctx context.Context, link string) error {
	if err := network.ValidateBridgeName(link); err != nil {
		return fmt.Errorf("revert systemd-resolved settings: %w", err)
	}
	err := r.run(ctx, "revert", link)
	if err != nil && !errors.Is(err, ErrResolvedUnavailable) {
		return fmt.Errorf("revert systemd-resolved settings on %s: %w", link, err)
	}
	return nil
}

// run runs resolvectl and turns its failures into errors, classifying the
// ones that mean "resolved is not there" as ErrResolvedUnavailable.
func (r Resolved) run(ctx context.Context, args ...string) error {
	_, err := system.RunChecked(ctx, r.Runner, system.Command{Path: "resolvectl", Args: args})
	var exit *system.ExitError
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return fmt.Errorf("%w: resolvectl is not installed", ErrResolvedUnavailable)
	case errors.As(err, &exit) && notRunning(exit.Output):
		return fmt.Errorf("%w: %s", ErrResolvedUnavailable, exit.Output)
	}
	return err
}

// notRunning recognises resolvectl's messages for a resolved that is not
// running or a system without D-Bus.
func notRunning(msg string) bool {
	for _, s := range []string{
		"Could not activate remote peer",
		"resolve1.service not found",
		"Failed to connect to bus",
		"was not provided by any .service files",
		"is not running",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
