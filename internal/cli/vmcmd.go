package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/termtext"
)

// validateVMName applies the lifecycle's one name rule here too, so a typo
// fails before the daemon starts.
func validateVMName(name string) error { return lifecycle.ValidateName(name) }

func newVMCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "vm",
		Aliases: []string{"vms"},
		Short:   "Create, run and manage VMs",
	}
	cmd.AddCommand(
		newVMCreateCmd(app, g),
		newVMListCmd(app, g),
		newVMShowCmd(app, g),
		newVMLifecycleCmd(app, g, "start", "Boot a stopped VM and wait until its agent answers"),
		newVMStopCmd(app, g),
		newVMLifecycleCmd(app, g, "restart", "Stop a VM (if running) and boot it again"),
		newVMDeleteCmd(app, g),
		newVMLogsCmd(app, g),
		newVMPortForwardCmd(app, g),
		newVMEgressCmd(app, g),
		newVMTTLCmd(app, g),
		newVMSnapshotCmd(app, g),
		newVMRollbackCmd(app, g),
		newVMForkCmd(app, g),
	)
	cmd.AddCommand(newVMPauseCmds(app, g)...)
	cmd.AddCommand(newAccessCmds(app, g)...)
	return cmd
}

func newVMCreateCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req    api.VMCreateRequest
		disk   string
		labels []string
		life   lifetimeFlags
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create a VM and boot it",
		Long: `Create a VM from an image and boot it. The VM gets its own kernel, disk,
address and DNS name, and persists until you delete it. Unset sizes come from
the [vm] section of the configuration (banger config defaults).

When the image has a golden snapshot for the VM's vCPUs, memory and disk
(` + "`banger image warm`" + ` makes one; so does the first create of that shape), the
VM starts warm from it instead of booting, and gets its own identity (MAC,
address, hostname, machine-id, SSH host keys) as a booted VM would. --cold
boots anyway.`,
		Example: `  banger vm create --name dev
  banger vm create --name big --vcpus 4 --memory 4096 --disk 20G
  banger vm create --name later --no-start --json
  banger vm create --name fresh --cold`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validateVMName(req.Name); err != nil {
				return err
			}
			var err error
			if req.DiskSizeBytes, err = parseShape(cmd, req.VCPUs, req.MemoryMiB, disk); err != nil {
				return err
			}
			if req.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			if err := life.apply(&req); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vm, err := c.VMCreate(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.printVM(g, vm)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "VM name: lowercase letters, digits and dashes (required)")
	f.StringVar(&req.Image, "image", "", "image to boot (default from config)")
	f.IntVar(&req.VCPUs, "vcpus", 0, "number of virtual CPUs (default from config)")
	f.IntVar(&req.MemoryMiB, "memory", 0, "memory in MiB (default from config)")
	f.StringVar(&disk, "disk", "", "root disk size, e.g. 8G (default from config, or the image's size when it is bigger)")
	f.BoolVar(&req.Autostart, "autostart", false, "start the VM again when the daemon starts")
	f.BoolVar(&req.NoStart, "no-start", false, "create the VM without booting it")
	f.BoolVar(&req.Isolated, "isolated", false, "no traffic to or from other VMs (the host and the internet still work)")
	f.BoolVar(&req.Cold, "cold", false, "boot the kernel even when a golden snapshot of the image could start the VM warm")
	f.StringArrayVar(&labels, "label", nil, "tag the VM, KEY=VALUE (repeatable; `vm list --label` filters on it)")
	f.StringArrayVarP(&req.Publish, "publish", "p", nil, "forward a host TCP port to the VM, [HOSTADDR:]HOSTPORT:GUESTPORT (repeatable; host address defaults to 127.0.0.1)")
	addEgressFlags(cmd, &req, &life)
	_ = cmd.MarkFlagRequired("name")
	addJSONFlag(cmd, g)
	return cmd
}

// parseShape checks a VM shape's flags (--vcpus, --memory, --disk) and
// returns the disk size in bytes. 0 on the wire means "the config's
// default", so an explicit --memory 0 or --vcpus 0 is refused rather than
// silently becoming that default.
func parseShape(cmd *cobra.Command, vcpus, memoryMiB int, disk string) (diskBytes int64, err error) {
	for _, f := range []struct {
		name, example string
		value         int
	}{{"memory", "--memory 1024", memoryMiB}, {"vcpus", "--vcpus 2", vcpus}} {
		if cmd.Flags().Changed(f.name) && f.value <= 0 {
			return 0, fmt.Errorf("--%s must be a positive number (e.g. %s); leave it out for the default from config", f.name, f.example)
		}
	}
	if disk == "" {
		return 0, nil
	}
	size, err := config.ParseSize(disk)
	if err != nil {
		return 0, fmt.Errorf("--disk: %w", err)
	}
	return int64(size), nil
}

func newVMListCmd(app *App, g *globalFlags) *cobra.Command {
	var labels []string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			selector, err := parseLabels(labels)
			if err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vms, err := c.VMList(cmd.Context())
				if err != nil {
					return err
				}
				vms = filterByLabels(vms, selector)
				return app.emit(g, api.VMList{VMs: vms}, func() error {
					if len(vms) == 0 && len(selector) > 0 {
						fmt.Fprintln(app.Stdout, "No VMs with these labels.")
						return nil
					}
					if len(vms) == 0 {
						fmt.Fprintln(app.Stdout, "No VMs yet. Create one with `banger vm create --name dev`.")
						return nil
					}
					renderVMTable(app.Stdout, vms, time.Now())
					return nil
				})
			})
		},
	}
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only VMs with this label, KEY=VALUE (repeatable: all must match)")
	addJSONFlag(cmd, g)
	return cmd
}

func renderVMTable(w io.Writer, vms []api.VM, now time.Time) {
	tw := newTable(w)
	ttl := hasLifetime(vms)
	header := "NAME\tSTATE\tIP\tIMAGE\tVCPUS\tMEMORY\tDISK\tAGE"
	if ttl {
		header += "\tTTL"
	}
	fmt.Fprintln(tw, header)
	for _, vm := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%dM\t%s\t%s", termtext.Line(vm.Name), termtext.Line(string(vm.State)), termtext.Line(dash(vm.IP)), termtext.Line(dash(vm.Image)),
			vm.VCPUs, vm.MemoryMiB, config.ByteSize(vm.DiskSizeBytes), age(now.Sub(vm.CreatedAt)))
		if ttl {
			fmt.Fprintf(tw, "\t%s", dash(timeLeft(vm.Lifetime, now)))
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
}

func newVMShowCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one VM in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				vm, err := c.VMShow(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return app.printVM(g, vm)
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func (app *App) printVM(g *globalFlags, vm api.VM) error {
	return app.emit(g, vm, func() error { return renderVM(app.Stdout, vm) })
}

func renderVM(w io.Writer, vm api.VM) error {
	tw := newTable(w)
	// Fields such as the last error and exit status may quote the guest.
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, termtext.Line(v))
		}
	}
	row("name", vm.Name)
	row("id", vm.ID)
	row("state", string(vm.State))
	row("image", vm.Image)
	row("vcpus", fmt.Sprint(vm.VCPUs))
	row("memory", fmt.Sprintf("%d MiB", vm.MemoryMiB))
	row("disk", config.ByteSize(vm.DiskSizeBytes).String())
	row("ip", vm.IP)
	row("dns", vm.DNSName)
	row("vmm", vm.VMM)
	if vm.PID > 0 {
		row("pid", fmt.Sprint(vm.PID))
	}
	row("autostart", fmt.Sprint(vm.Autostart))
	if vm.Isolated {
		row("isolated", "yes (no traffic with other VMs)")
	}
	row("labels", formatLabels(vm.Labels))
	if vm.Egress != nil && vm.Egress.Mode != "allow" {
		row("egress", egressText(vm.Egress))
	}
	if vm.Lifetime != nil {
		row("ttl", lifetimeText(vm.Lifetime, time.Now()))
	}
	row("created", vm.CreatedAt.Local().Format(time.DateTime))
	if vm.StartedAt != nil {
		row("started", vm.StartedAt.Local().Format(time.DateTime))
	}
	if vm.StoppedAt != nil {
		row("stopped", vm.StoppedAt.Local().Format(time.DateTime))
	}
	row("exit", vm.ExitStatus)
	row("last error", vm.LastError)
	for _, f := range vm.Forwards {
		row("forward", f)
	}
	row("serial log", vm.SerialLog)
	return tw.Flush()
}

func newVMLifecycleCmd(app *App, g *globalFlags, verb, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   verb + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				for _, name := range args {
					var (
						vm  api.VM
						err error
					)
					if verb == "start" {
						vm, err = c.VMStart(cmd.Context(), name, app.progress(g))
					} else {
						vm, err = c.VMRestart(cmd.Context(), name, app.progress(g))
					}
					if err != nil {
						return err
					}
					if err := app.printDone(g, vm); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func newVMStopCmd(app *App, g *globalFlags) *cobra.Command {
	var req api.VMStopRequest
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Shut a VM down (Ctrl-Alt-Del, then kill after the timeout)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				req.TimeoutSeconds = int(timeout.Seconds())
				for _, name := range args {
					req.Name = name
					vm, err := c.VMStop(cmd.Context(), req, app.progress(g))
					if err != nil {
						return err
					}
					if err := app.printDone(g, vm); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&req.Force, "force", "f", false, "kill the VMM at once instead of asking the guest to shut down")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long the guest gets to shut down before it is killed (default from config)")
	addJSONFlag(cmd, g)
	return cmd
}

func (app *App) printDone(g *globalFlags, vm api.VM) error {
	return app.emit(g, vm, func() error {
		fmt.Fprintf(app.Stdout, "%s: %s\n", termtext.Line(vm.Name), termtext.Line(string(vm.State)))
		return nil
	})
}

func newVMDeleteCmd(app *App, g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Stop and delete VMs with their disks and snapshots (asks first unless --force)",
		Long: `Stop VMs if they run and delete them with their disks. A VM's snapshots
(` + "`banger snapshot list`" + `) go with it: the question names them, and --force
deletes VM and snapshots without asking. VMs forked from those snapshots and
the images' golden snapshots stay.`,
		Example: `  banger vm delete dev
  banger vm rm try-1 try-2 try-3 --force`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := validateVMName(name); err != nil {
					return err
				}
			}
			names := strings.Join(args, ", ")
			ask := confirmation{Given: force, Flag: "--force", Action: "delete " + names, Declined: "not deleted"}
			// With nobody to ask, refuse before a daemon is started to
			// look the snapshots up.
			if !force && !app.IsTerminal() {
				return app.confirm(ask)
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				var snaps map[string][]string
				if !force {
					var err error
					if snaps, err = snapshotsOfVMs(cmd.Context(), c, args); err != nil {
						return err
					}
				}
				ask.Question = vmDeleteQuestion(names, snaps)
				if err := app.confirm(ask); err != nil {
					return err
				}
				for _, name := range args {
					// The user was asked about exactly these snapshots (or
					// said --force), so the daemon may delete them.
					req := api.VMDeleteRequest{Name: name, Force: force || len(snaps[name]) > 0}
					if err := c.VMDelete(cmd.Context(), req, app.progress(g)); err != nil {
						return err
					}
					if !g.json {
						fmt.Fprintf(app.Stdout, "%s: deleted\n", name)
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete without asking, snapshots included")
	addJSONFlag(cmd, g)
	return cmd
}

func newVMLogsCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req api.VMLogsRequest
		raw bool
	)
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the tail of a VM's serial console",
		Long: `Print the last lines the VM wrote to its serial console. The guest wrote
them, so banger shows control characters and escape sequences escaped (\x1b,
\r, \u009b) and drops colours: a hostile guest cannot redraw your terminal,
retitle it or write to your clipboard. That holds whether or not stdout is a
terminal, since piped output is often viewed on one. --raw prints the bytes as
the guest wrote them; --json keeps the raw text inside a JSON string.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				req.Name = args[0]
				logs, err := c.VMLogs(cmd.Context(), req)
				if err != nil {
					return err
				}
				return app.emit(g, logs, func() error {
					text := logs.Text
					if !raw {
						text = termtext.Console(text)
					}
					_, err := io.WriteString(app.Stdout, text)
					return err
				})
			})
		},
	}
	cmd.Flags().IntVarP(&req.Lines, "lines", "n", 200, "how many trailing lines to print")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the console's bytes unescaped, escape sequences included")
	addJSONFlag(cmd, g)
	return cmd
}

// progress prints events on stderr so stdout stays parseable. A message
// may quote the guest (its agent's version, a build script's output), so
// each is one escaped line.
func (app *App) progress(g *globalFlags) func(api.Event) {
	return func(ev api.Event) {
		if ev.VM != "" {
			fmt.Fprintf(app.Stderr, "%s: %s\n", termtext.Line(ev.VM), termtext.Line(ev.Message))
			return
		}
		fmt.Fprintln(app.Stderr, termtext.Line(ev.Message))
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func newVMPortForwardCmd(app *App, g *globalFlags) *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "port-forward NAME [[HOSTADDR:]HOSTPORT:GUESTPORT]",
		Short: "List a VM's forwards, or forward a host TCP port to it (persistent; --remove drops one)",
		Long: `Forward connections to a host port to a port in the VM. The forward is part
of the VM: it is active whenever the VM runs and is removed with the VM. The
host address defaults to 127.0.0.1, so only this machine can connect. With
only a VM name, list its forwards.`,
		Example: `  banger vm port-forward dev
  banger vm port-forward dev 8080:80
  banger vm port-forward dev 0.0.0.0:2222:22
  banger vm port-forward dev 8080:80 --remove`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && remove {
				return fmt.Errorf("--remove needs the forward to remove: banger vm port-forward %s HOSTPORT:GUESTPORT --remove", args[0])
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				var (
					vm  api.VM
					err error
				)
				if len(args) == 1 {
					vm, err = c.VMShow(cmd.Context(), args[0])
				} else {
					vm, err = c.VMPortForward(cmd.Context(), api.VMPortForwardRequest{Name: args[0], Spec: args[1], Remove: remove})
				}
				if err != nil {
					return err
				}
				return app.emit(g, vm, func() error {
					if len(vm.Forwards) == 0 {
						fmt.Fprintf(app.Stdout, "%s: no forwards\n", termtext.Line(vm.Name))
					}
					for _, f := range vm.Forwards {
						fmt.Fprintf(app.Stdout, "%s: forward %s\n", termtext.Line(vm.Name), termtext.Line(f))
					}
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the forward instead of adding it")
	addJSONFlag(cmd, g)
	return cmd
}
