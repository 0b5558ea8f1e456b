package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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
	)
	cmd.AddCommand(newAccessCmds(app, g)...)
	return cmd
}

func newVMCreateCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req  api.VMCreateRequest
		disk string
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Create a VM and boot it",
		Long: `Create a VM from an image and boot it. The VM gets its own kernel, disk,
address and DNS name, and persists until you delete it. Unset sizes come from
the [vm] section of the configuration (banger config defaults).`,
		Example: `  banger vm create --name dev
  banger vm create --name big --vcpus 4 --memory 4096 --disk 20G
  banger vm create --name later --no-start --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := validateVMName(req.Name); err != nil {
				return err
			}
			// 0 on the wire means "the config's default", so an explicit
			// --memory 0 or --vcpus 0 would silently become that default.
			for _, f := range []struct {
				name, example string
				value         int
			}{{"memory", "--memory 1024", req.MemoryMiB}, {"vcpus", "--vcpus 2", req.VCPUs}} {
				if cmd.Flags().Changed(f.name) && f.value <= 0 {
					return fmt.Errorf("--%s must be a positive number (e.g. %s); leave it out for the default from config", f.name, f.example)
				}
			}
			if disk != "" {
				size, err := config.ParseSize(disk)
				if err != nil {
					return fmt.Errorf("--disk: %w", err)
				}
				req.DiskSizeBytes = int64(size)
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
	f.StringVar(&disk, "disk", "", "root disk size, e.g. 8G (default from config)")
	f.BoolVar(&req.Autostart, "autostart", false, "start the VM again when the daemon starts")
	f.BoolVar(&req.NoStart, "no-start", false, "create the VM without booting it")
	f.BoolVar(&req.Isolated, "isolated", false, "no traffic to or from other VMs (the host and the internet still work)")
	f.StringArrayVarP(&req.Publish, "publish", "p", nil, "forward a host TCP port to the VM, [HOSTADDR:]HOSTPORT:GUESTPORT (repeatable; host address defaults to 127.0.0.1)")
	_ = cmd.MarkFlagRequired("name")
	addJSONFlag(cmd, g)
	return cmd
}

func newVMListCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				vms, err := c.VMList(cmd.Context())
				if err != nil {
					return err
				}
				return app.emit(g, api.VMList{VMs: vms}, func() error {
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
	addJSONFlag(cmd, g)
	return cmd
}

func renderVMTable(w io.Writer, vms []api.VM, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tIP\tIMAGE\tVCPUS\tMEMORY\tDISK\tAGE")
	for _, vm := range vms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%dM\t%s\t%s\n", termtext.Line(vm.Name), termtext.Line(string(vm.State)), termtext.Line(dash(vm.IP)), termtext.Line(dash(vm.Image)),
			vm.VCPUs, vm.MemoryMiB, config.ByteSize(vm.DiskSizeBytes), age(now.Sub(vm.CreatedAt)))
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
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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
		Short:   "Stop and delete VMs with their disks (asks first unless --force)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := validateVMName(name); err != nil {
					return err
				}
			}
			names := strings.Join(args, ", ")
			if err := app.confirm(confirmation{
				Given: force, Flag: "--force", Action: "delete " + names,
				Question: "Delete " + names + " and their disks? This cannot be undone.", Declined: "not deleted",
			}); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				for _, name := range args {
					if err := c.VMDelete(cmd.Context(), name, app.progress(g)); err != nil {
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
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete without asking")
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
