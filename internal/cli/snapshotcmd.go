package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/termtext"
)

// validateSnapshotName applies the lifecycle's name rule (the one VMs
// follow) to a snapshot name, so a typo fails before the daemon is asked.
func validateSnapshotName(name string) error {
	if !lifecycle.ValidName(name) {
		return fmt.Errorf("invalid snapshot name %q: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit", name)
	}
	return nil
}

// newVMPauseCmds returns `vm pause` and `vm resume`.
func newVMPauseCmds(app *App, g *globalFlags) []*cobra.Command {
	pause := &cobra.Command{
		Use:   "pause NAME...",
		Short: "Freeze a running VM's CPUs; it keeps its memory, address and disk",
		Long: `Freeze a running VM: its vCPUs stop at once and its memory, devices, address
and disk stay as they are. A paused VM answers nothing (exec, cp, ssh and
port forwards refuse or stall) until ` + "`banger vm resume`" + `; its clock jumps
forward when it resumes. A paused VM can be snapshotted, stopped or deleted.`,
		Example: `  banger vm pause dev
  banger vm resume dev`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.eachVM(cmd, g, args, func(c *api.Client, name string) (api.VM, error) {
				return c.VMPause(cmd.Context(), name)
			})
		},
	}
	resume := &cobra.Command{
		Use:     "resume NAME...",
		Short:   "Let a paused VM run again",
		Example: `  banger vm resume dev`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.eachVM(cmd, g, args, func(c *api.Client, name string) (api.VM, error) {
				return c.VMResume(cmd.Context(), name)
			})
		},
	}
	addJSONFlag(pause, g)
	addJSONFlag(resume, g)
	return []*cobra.Command{pause, resume}
}

// eachVM runs op on every named VM in turn and prints each result as
// `NAME: STATE` (or its JSON), stopping at the first error.
func (app *App) eachVM(cmd *cobra.Command, g *globalFlags, names []string, op func(*api.Client, string) (api.VM, error)) error {
	return app.withClient(cmd, g, func(c *api.Client) error {
		for _, name := range names {
			vm, err := op(c, name)
			if err != nil {
				return err
			}
			if err := app.printDone(g, vm); err != nil {
				return err
			}
		}
		return nil
	})
}

func newVMSnapshotCmd(app *App, g *globalFlags) *cobra.Command {
	var req api.VMSnapshotRequest
	cmd := &cobra.Command{
		Use:   "snapshot NAME [--name SNAP]",
		Short: "Save a VM's memory, processes and disk at one instant",
		Long: `Save a VM's whole state — guest memory (so its running processes), device
state and disk — at one instant. A running VM is paused only while the state
is written and the disk copied, then runs on; a paused VM stays paused. The
snapshot is named SNAP, or NAME-YYYYMMDD-HHMMSS (UTC) without --name.

Return the VM to it with ` + "`banger vm rollback`" + `, start new VMs from it with
` + "`banger vm fork`" + `, and list snapshots with ` + "`banger snapshot list`" + `.`,
		Example: `  banger vm snapshot dev --name before-upgrade
  banger vm exec dev -- sudo apt-get -y dist-upgrade
  banger vm rollback dev before-upgrade`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if req.Snapshot != "" {
				if err := validateSnapshotName(req.Snapshot); err != nil {
					return err
				}
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				s, err := c.VMSnapshot(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.emit(g, s, func() error {
					fmt.Fprintf(app.Stdout, "%s: saved snapshot %s (%s)\n", termtext.Line(s.VM), termtext.Line(s.Name), config.FormatBytes(s.SizeBytes))
					return nil
				})
			})
		},
	}
	cmd.Flags().StringVar(&req.Snapshot, "name", "", "snapshot name: lowercase letters, digits and dashes (default NAME-YYYYMMDD-HHMMSS)")
	addJSONFlag(cmd, g)
	return cmd
}

func newVMRollbackCmd(app *App, g *globalFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "rollback NAME SNAP",
		Short: "Return a VM to a snapshot of it (discards its current state; asks first unless --yes)",
		Long: `Return VM NAME to snapshot SNAP exactly: its memory and running processes,
and its disk, as they were when SNAP was saved. Everything the VM did since
is discarded — files written, processes started — so banger asks first
unless --yes. SNAP must be a snapshot of NAME; the snapshot itself is kept,
so you can roll back to it again. The VM runs afterwards.`,
		Example: `  banger vm snapshot dev --name clean
  banger vm rollback dev clean
  banger vm rollback dev clean --yes --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.VMRollbackRequest{Name: args[0], Snapshot: args[1]}
			if err := validateVMName(req.Name); err != nil {
				return err
			}
			if err := validateSnapshotName(req.Snapshot); err != nil {
				return err
			}
			if err := app.confirm(confirmation{
				Given: yes, Flag: "--yes", Action: "roll " + req.Name + " back",
				Question: fmt.Sprintf("Roll %s back to %s? Its memory, processes and disk changes since then are lost.", req.Name, req.Snapshot),
				Declined: "not rolled back",
			}); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vm, err := c.VMRollback(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.emit(g, vm, func() error {
					fmt.Fprintf(app.Stdout, "%s: rolled back to %s, %s\n", termtext.Line(vm.Name), termtext.Line(req.Snapshot), termtext.Line(string(vm.State)))
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "roll back without asking")
	addJSONFlag(cmd, g)
	return cmd
}

func newVMForkCmd(app *App, g *globalFlags) *cobra.Command {
	var req api.VMForkRequest
	cmd := &cobra.Command{
		Use:   "fork SNAP|VM --name NEW [--count N]",
		Short: "Start new VMs from a snapshot, or from a VM's current state",
		Long: `Start new VMs from snapshot SNAP: each resumes where the snapshot left off,
with the same files and processes, but as a machine of its own — its own MAC,
address, DNS name, hostname, machine-id and SSH host keys, a reseeded RNG and
the right time. Their disks share the snapshot's blocks until written.

Given a VM instead of a snapshot, banger snapshots it first (the snapshot is
kept and listed by ` + "`banger snapshot list`" + `). With --count N the new VMs are
named NEW-1 … NEW-N.`,
		Example: `  banger vm fork dev --name dev2
  banger vm snapshot dev --name ready
  banger vm fork ready --name try --count 3    # try-1, try-2, try-3`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Source = args[0]
			if err := validateForkNames(req.Name, req.Count); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				vms, err := c.VMFork(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.emit(g, api.VMList{VMs: vms}, func() error {
					renderVMTable(app.Stdout, vms, time.Now())
					return nil
				})
			})
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "name of the new VM; with --count, the prefix of NEW-1 … NEW-N (required)")
	cmd.Flags().IntVar(&req.Count, "count", 1, "how many VMs to start")
	_ = cmd.MarkFlagRequired("name")
	addJSONFlag(cmd, g)
	return cmd
}

// validateForkNames checks the names a fork of count VMs called name would
// give, so a name that only breaks the rule once numbered fails here.
func validateForkNames(name string, count int) error {
	if count < 1 {
		return fmt.Errorf("--count must be at least 1 (got %d)", count)
	}
	if count == 1 {
		return validateVMName(name)
	}
	if err := validateVMName(name); err != nil {
		return err
	}
	return validateVMName(fmt.Sprintf("%s-%d", name, count))
}

func newSnapshotCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "snapshot",
		Aliases: []string{"snapshots", "snap"},
		Short:   "List, inspect and delete saved VM states",
		Long: `Snapshots are saved VM states: memory, device state and disk at one instant.
Make one with ` + "`banger vm snapshot NAME`" + `; golden snapshots (GOLDEN yes) are
made by ` + "`banger image warm`" + ` or the first create of an image and shape, and
let ` + "`banger vm create`" + ` start VMs warm.`,
	}
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List snapshots with their VM, image and size on disk",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				snaps, err := c.SnapshotList(cmd.Context())
				if err != nil {
					return err
				}
				return app.emit(g, api.SnapshotList{Snapshots: snaps}, func() error {
					if len(snaps) == 0 {
						fmt.Fprintln(app.Stdout, "No snapshots yet. Save one with `banger vm snapshot NAME`.")
						return nil
					}
					return renderSnapshotTable(app.Stdout, snaps)
				})
			})
		},
	}
	addJSONFlag(list, g)
	show := &cobra.Command{
		Use:   "show SNAP",
		Short: "Show one snapshot in detail",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				s, err := c.SnapshotShow(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return app.emit(g, s, func() error { return renderSnapshot(app.Stdout, s) })
			})
		},
	}
	addJSONFlag(show, g)
	cmd.AddCommand(list, show, newSnapshotDeleteCmd(app, g))
	return cmd
}

func newSnapshotDeleteCmd(app *App, g *globalFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete SNAP...",
		Aliases: []string{"rm"},
		Short:   "Delete snapshots and their files (asks first unless --force)",
		Long: `Delete snapshots and free their files. VMs forked from a snapshot keep
running: their disks are their own. A VM cannot be rolled back to a deleted
snapshot.`,
		Example: `  banger snapshot delete dev-20261207-101500
  banger snapshot rm before-upgrade clean --force`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			names := strings.Join(args, ", ")
			if err := app.confirm(confirmation{
				Given: force, Flag: "--force", Action: "delete snapshot " + names,
				Question: "Delete snapshot " + names + "? This cannot be undone.", Declined: "not deleted",
			}); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				for _, name := range args {
					if err := c.SnapshotDelete(cmd.Context(), name); err != nil {
						return err
					}
					if !g.json {
						fmt.Fprintf(app.Stdout, "%s: deleted\n", termtext.Line(name))
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

func renderSnapshotTable(w io.Writer, snaps []api.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVM\tIMAGE\tSIZE\tGOLDEN\tCREATED")
	for _, s := range snaps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", termtext.Line(s.Name), termtext.Line(dash(s.VM)), termtext.Line(dash(s.Image)),
			snapshotSize(s), yesNo(s.Golden), s.CreatedAt.Local().Format("2006-01-02 15:04"))
	}
	return tw.Flush()
}

// snapshotSize is the size column: a snapshot still being written has no
// final size yet, and says so instead.
func snapshotSize(s api.Snapshot) string {
	if s.State != "" && s.State != api.SnapshotReady {
		return termtext.Line(string(s.State))
	}
	return config.FormatBytes(s.SizeBytes)
}

func renderSnapshot(w io.Writer, s api.Snapshot) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, termtext.Line(v))
		}
	}
	row("name", s.Name)
	row("id", s.ID)
	row("state", string(s.State))
	row("vm", s.VM)
	row("vm id", s.VMID)
	row("image", s.Image)
	row("vmm", s.VMM)
	row("vcpus", fmt.Sprint(s.VCPUs))
	row("memory", fmt.Sprintf("%d MiB", s.MemoryMiB))
	row("disk", config.FormatBytes(s.DiskSizeBytes))
	row("size", config.FormatBytes(s.SizeBytes)+" on disk")
	row("golden", yesNo(s.Golden))
	row("created", s.CreatedAt.Local().Format(time.DateTime))
	if s.Golden {
		used := "never (a warm create has not started from it yet)"
		if s.LastUsedAt != nil {
			used = s.LastUsedAt.Local().Format(time.DateTime)
		}
		row("last used", used)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newImageWarmCmd(app *App, g *globalFlags) *cobra.Command {
	var (
		req  api.ImageWarmRequest
		disk string
	)
	cmd := &cobra.Command{
		Use:   "warm NAME [--vcpus N] [--memory MIB] [--disk SIZE]",
		Short: "Boot an image once and save it, so VMs of that shape start warm",
		Long: `Boot a throwaway VM of image NAME with the given shape, wait for its agent,
and save it as the image's golden snapshot. ` + "`banger vm create`" + ` of that image
with the same vCPUs, memory and disk then restores the snapshot instead of
booting (in a fraction of the time) and gives the VM its own identity, so it
is indistinguishable from a cold-booted one. banger also does this on the
first create of an image and shape; warm ahead of time to make that first
create fast too. Golden snapshots are remade when the image, its kernel,
banger's agent or the VMM change. An image keeps image.golden_snapshots of
them (3 unless configured; 0 turns warm creates off): making one more
deletes the one a create last started from longest ago. Unset sizes come
from the configuration, as for ` + "`banger vm create`" + `.`,
		Example: `  banger image warm default
  banger image warm default --vcpus 2 --memory 1024 --disk 8G
  banger vm create --name fast       # default shape: starts from the golden snapshot
  banger vm create --name slow --cold  # boots anyway`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Image = args[0]
			var err error
			if req.DiskSizeBytes, err = parseShape(cmd, req.VCPUs, req.MemoryMiB, disk); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				s, err := c.ImageWarm(cmd.Context(), req, app.progress(g))
				if err != nil {
					return err
				}
				return app.emit(g, s, func() error {
					fmt.Fprintf(app.Stdout, "%s: warm (%d vCPU, %d MiB, %s disk; snapshot %s, %s)\n", termtext.Line(s.Image),
						s.VCPUs, s.MemoryMiB, config.FormatBytes(s.DiskSizeBytes), termtext.Line(s.Name), config.FormatBytes(s.SizeBytes))
					return nil
				})
			})
		},
	}
	f := cmd.Flags()
	f.IntVar(&req.VCPUs, "vcpus", 0, "number of virtual CPUs (default from config)")
	f.IntVar(&req.MemoryMiB, "memory", 0, "memory in MiB (default from config)")
	f.StringVar(&disk, "disk", "", "root disk size, e.g. 8G (default from config)")
	// --disk is vm create's spelling, which is what the shape must match;
	// --disk-size is accepted too.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "disk-size" {
			name = "disk"
		}
		return pflag.NormalizedName(name)
	})
	addJSONFlag(cmd, g)
	return cmd
}

// snapshotsOfVMs maps each of the named VMs (by name or ID) that has
// snapshots to their names. Golden snapshots belong to their image, not to
// the throwaway VM they were taken of, and are left out. A daemon from
// before snapshots has none.
func snapshotsOfVMs(ctx context.Context, c *api.Client, vms []string) (map[string][]string, error) {
	all, err := c.SnapshotList(ctx)
	if api.IsCode(err, api.CodeNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the VMs' snapshots: %w", err)
	}
	out := map[string][]string{}
	for _, vm := range vms {
		for _, s := range all {
			if !s.Golden && (s.VM == vm || s.VMID == vm) {
				out[vm] = append(out[vm], s.Name)
			}
		}
	}
	return out, nil
}

// vmDeleteQuestion asks about the VMs names and, by name, every snapshot
// that goes with them.
func vmDeleteQuestion(names string, snaps map[string][]string) string {
	var all []string
	for _, list := range snaps {
		all = append(all, list...)
	}
	if len(all) == 0 {
		return "Delete " + names + " and their disks? This cannot be undone."
	}
	slices.Sort(all)
	return fmt.Sprintf("Delete %s and their disks, and their snapshots %s? This cannot be undone.", names, termtext.Line(strings.Join(all, ", ")))
}
