package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
)

// Egress and lifetime: `vm create --egress/--allow/--ttl/--idle-ttl`,
// `vm egress` and `vm ttl`, and how `vm show` and `vm list` show them.

// lifetimeFlags are vm create's lifetime flags.
type lifetimeFlags struct {
	ttl, idle time.Duration
}

// addEgressFlags adds --egress, --allow, --ttl, --idle-ttl and
// --ttl-action to vm create.
func addEgressFlags(cmd *cobra.Command, req *api.VMCreateRequest, life *lifetimeFlags) {
	f := cmd.Flags()
	f.StringVar(&req.Egress, "egress", "", "what the VM may connect to outside: allow, deny or allowlist (default from config, network.egress)")
	f.StringArrayVar(&req.Allow, "allow", nil, "with allowlist: HOST, *.SUFFIX, IPv4 address or CIDR, optionally :PORT (repeatable)")
	f.DurationVar(&life.ttl, "ttl", 0, "delete the VM (or stop it, --ttl-action) this long after creating it, e.g. 30m")
	f.DurationVar(&life.idle, "idle-ttl", 0, "delete (or stop) the VM once it has run this long with no exec, cp, ssh or forwarded connection")
	f.StringVar(&req.TTLAction, "ttl-action", "", "what happens when the TTL runs out: delete (default) or stop")
}

// apply checks the durations and puts them on the request.
func (l lifetimeFlags) apply(req *api.VMCreateRequest) error {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--ttl", l.ttl}, {"--idle-ttl", l.idle}} {
		if d.v != 0 && d.v < time.Second {
			return fmt.Errorf("%s %v is too short; give at least a second, e.g. %s 30m", d.flag, d.v, d.flag)
		}
	}
	req.TTLSeconds, req.IdleTTLSeconds = int64(l.ttl/time.Second), int64(l.idle/time.Second)
	return nil
}

func newVMEgressCmd(app *App, g *globalFlags) *cobra.Command {
	var req api.VMEgressRequest
	cmd := &cobra.Command{
		Use:   "egress NAME --mode allow|deny|allowlist [--allow HOST|CIDR[:PORT]]...",
		Short: "Change what a VM may connect to outside (applies at once to a running VM)",
		Long: `Replace a VM's egress policy. allow lets it reach anything the host reaches;
deny lets it reach nothing outside banger's bridge (other VMs follow --isolated,
and banger's DNS still answers .banger names); allowlist lets it reach only the
--allow entries: host names (exact, or *.example.com for every name below it,
resolved through banger's DNS, which answers no other names), IPv4 addresses
and networks, each optionally with :PORT. A running VM gets the new policy at
once, and its open connections are checked against it again.`,
		Example: `  banger vm egress dev --mode deny
  banger vm egress dev --mode allowlist --allow github.com --allow '*.githubusercontent.com:443' --allow 10.0.0.0/8`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if err := validateVMName(req.Name); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vm, err := c.VMEgress(cmd.Context(), req)
				if err != nil {
					return err
				}
				return app.emit(g, vm, func() error {
					fmt.Fprintf(app.Stdout, "%s: egress %s\n", vm.Name, egressText(vm.Egress))
					return nil
				})
			})
		},
	}
	cmd.Flags().StringVar(&req.Mode, "mode", "", "allow, deny or allowlist (default: allowlist with --allow, else network.egress)")
	cmd.Flags().StringArrayVar(&req.Allow, "allow", nil, "HOST, *.SUFFIX, IPv4 address or CIDR, optionally :PORT (repeatable)")
	addJSONFlag(cmd, g)
	return cmd
}

func newVMTTLCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		idle   string
		action string
	)
	cmd := &cobra.Command{
		Use:   "ttl NAME DURATION|none",
		Short: "Set, extend or clear when a VM is deleted (or stopped) on its own",
		Long: `Set the VM's time to live to DURATION from now (extending or shortening it),
or clear it with none. --idle-ttl sets or clears (none) the idle limit, and
--ttl-action what happens: delete or stop.`,
		Example: `  banger vm ttl dev 2h
  banger vm ttl dev none --idle-ttl none`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.VMTTLRequest{Name: args[0], Action: action}
			if err := validateVMName(req.Name); err != nil {
				return err
			}
			var err error
			if req.TTLSeconds, err = parseTTL(args[1], "the time to live"); err != nil {
				return err
			}
			if cmd.Flags().Changed("idle-ttl") {
				secs, err := parseTTL(idle, "--idle-ttl")
				if err != nil {
					return err
				}
				req.IdleTTLSeconds = &secs
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vm, err := c.VMTTL(cmd.Context(), req)
				if err != nil {
					return err
				}
				return app.emit(g, vm, func() error {
					fmt.Fprintf(app.Stdout, "%s: %s\n", vm.Name, lifetimeText(vm.Lifetime, time.Now()))
					return nil
				})
			})
		},
	}
	cmd.Flags().StringVar(&idle, "idle-ttl", "", "idle limit, e.g. 10m, or none")
	cmd.Flags().StringVar(&action, "ttl-action", "", "delete or stop (default: unchanged)")
	addJSONFlag(cmd, g)
	return cmd
}

// parseTTL reads "30m" or "none" (0) as whole seconds.
func parseTTL(s, what string) (int64, error) {
	if s == "none" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%s %q is not a duration of at least a second (such as 30m or 2h) or none", what, s)
	}
	return int64(d / time.Second), nil
}

// egressText is a policy in one line: "allowlist (github.com, 10.0.0.0/8)".
func egressText(e *api.EgressPolicy) string {
	if e == nil {
		return "allow"
	}
	if len(e.Allow) == 0 {
		return e.Mode
	}
	return e.Mode + " (" + strings.Join(e.Allow, ", ") + ")"
}

// timeLeft is how long until the VM's lifetime ends ("29m", "idle 9m"),
// "" when it does not.
func timeLeft(l *api.Lifetime, now time.Time) string {
	if l == nil {
		return ""
	}
	switch {
	case l.IdleExpiresAt != nil && (l.ExpiresAt == nil || l.IdleExpiresAt.Before(*l.ExpiresAt)):
		return "idle " + age(max(l.IdleExpiresAt.Sub(now), 0))
	case l.ExpiresAt != nil:
		return age(max(l.ExpiresAt.Sub(now), 0))
	case l.IdleTTLSeconds > 0:
		return "idle " + age(time.Duration(l.IdleTTLSeconds)*time.Second)
	}
	return ""
}

// lifetimeText describes a lifetime in a sentence for `vm show` and `vm
// ttl`.
func lifetimeText(l *api.Lifetime, now time.Time) string {
	if l == nil {
		return "no time to live"
	}
	var parts []string
	if l.ExpiresAt != nil {
		parts = append(parts, fmt.Sprintf("%s in %s (%s)", l.Action, age(max(l.ExpiresAt.Sub(now), 0)), l.ExpiresAt.Local().Format(time.DateTime)))
	}
	if l.IdleTTLSeconds > 0 {
		s := fmt.Sprintf("%s after %s idle", l.Action, age(time.Duration(l.IdleTTLSeconds)*time.Second))
		if l.IdleExpiresAt != nil {
			s += fmt.Sprintf(" (at %s unless used)", l.IdleExpiresAt.Local().Format(time.DateTime))
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// hasLifetime reports whether any VM has a limited lifetime (vm list
// shows a TTL column only then).
func hasLifetime(vms []api.VM) bool {
	for _, vm := range vms {
		if vm.Lifetime != nil {
			return true
		}
	}
	return false
}
