package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/lifecycle"
	"github.com/banger-dev/banger/internal/oci"
)

// runOptions is one `banger run`.
type runOptions struct {
	Name       string
	Create     api.VMCreateRequest
	Disk       string
	Inputs     []string // HOST:GUEST
	Outputs    []string // GUEST:HOST
	Keep       bool
	Argv       []string
	DeleteWait time.Duration
}

// runCreatorLabel marks the VMs `banger run` makes.
const runCreatorLabel = "run"

func newRunCmd(app *App, g *globalFlags) *cobra.Command {
	o := runOptions{DeleteWait: time.Minute}
	cmd := &cobra.Command{
		Use:   "run [--image I] [--cp HOST:GUEST]... [--out GUEST:HOST]... [--egress MODE] [--keep] [-- COMMAND [ARG...]]",
		Short: "Run one command in a fresh VM and delete the VM afterwards",
		Long: `Create a VM (warm from the image's golden snapshot when there is one), copy
the --cp inputs into it, run the command (with a terminal when stdin and
stdout are one, as vm exec -t), stream its output, copy the --out outputs
back, delete the VM and exit with the command's exit code. The VM is deleted
also when the command fails or you press Ctrl-C (the first Ctrl-C goes to the
command, as with vm exec); --keep keeps it.

--cp HOST:GUEST copies a host file or directory into the VM (into GUEST when
it is an existing directory, as cp does); --out GUEST:HOST copies a guest path
back after the command, also when it failed. Guest paths are absolute or
relative to the guest user's home.

An image made from a container image (image pull, image import --oci-layout
or --docker-archive) runs as docker run does: with no command after --, its
Entrypoint followed by its Cmd; with one, its Entrypoint followed by the
command's words (without an Entrypoint, just the command). Its Env,
WorkingDir and User apply as for vm exec. Other images need a command.`,
		Example: `  banger run -- uname -a
  banger run --cp ./src:src -- make -C src test
  banger run --cp .:w --out w/dist:./dist -- sh -c 'cd w && make dist'
  banger run --image myapp            # the image's Entrypoint and Cmd
  banger run --image myapp -- --help  # its Entrypoint with --help`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Argv = args
			if o.Name == "" {
				o.Name = lifecycle.GeneratedName("run")
			}
			if err := validateVMName(o.Name); err != nil {
				return err
			}
			var err error
			if o.Create.DiskSizeBytes, err = parseShape(cmd, o.Create.VCPUs, o.Create.MemoryMiB, o.Disk); err != nil {
				return err
			}
			if err := checkRunCopies(o); err != nil {
				return err
			}
			code, err := app.runOnce(cmd.Context(), g, o)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "VM name (default run-<8 hex digits>)")
	f.StringVar(&o.Create.Image, "image", "", "image to boot (default from config)")
	f.IntVar(&o.Create.VCPUs, "vcpus", 0, "number of virtual CPUs (default from config)")
	f.IntVar(&o.Create.MemoryMiB, "memory", 0, "memory in MiB (default from config)")
	f.StringVar(&o.Disk, "disk", "", "root disk size, e.g. 8G (default from config)")
	f.BoolVar(&o.Create.Cold, "cold", false, "boot the kernel even when a golden snapshot could start the VM warm")
	f.StringVar(&o.Create.Egress, "egress", "", "what the VM may connect to outside: allow, deny or allowlist (default from config, network.egress)")
	f.StringArrayVar(&o.Create.Allow, "allow", nil, "with allowlist: HOST, *.SUFFIX, IPv4 address or CIDR, optionally :PORT (repeatable)")
	f.StringArrayVar(&o.Inputs, "cp", nil, "copy HOST:GUEST into the VM before the command (repeatable)")
	f.StringArrayVar(&o.Outputs, "out", nil, "copy GUEST:HOST out of the VM after the command (repeatable)")
	f.BoolVar(&o.Keep, "keep", false, "keep the VM afterwards instead of deleting it")
	return cmd
}

// splitCopy splits "A:B" at its first colon.
func splitCopy(flag, spec string) (string, string, error) {
	a, b, ok := strings.Cut(spec, ":")
	if !ok || a == "" || b == "" {
		return "", "", fmt.Errorf("--%s %q: write both sides, %s", flag, spec, map[string]string{"cp": "HOST:GUEST", "out": "GUEST:HOST"}[flag])
	}
	return a, b, nil
}

// checkRunCopies checks --cp and --out before anything is created.
func checkRunCopies(o runOptions) error {
	for _, spec := range o.Inputs {
		host, _, err := splitCopy("cp", spec)
		if err != nil {
			return err
		}
		if _, err := os.Stat(host); err != nil {
			return fmt.Errorf("--cp %q: cannot copy %s: %w", spec, host, unwrapPathErr(err))
		}
	}
	for _, spec := range o.Outputs {
		if _, _, err := splitCopy("out", spec); err != nil {
			return err
		}
	}
	return nil
}

// runOnce is `banger run`: create, copy in, exec, copy out, delete. It
// returns the command's exit code. Signals (Ctrl-C, SIGTERM, SIGHUP) stop
// the steps around the command and never skip the delete.
func (app *App) runOnce(parent context.Context, g *globalFlags, o runOptions) (int, error) {
	ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop() // after the delete: a signal while deleting does not cut it short
	c, _, err := app.connect(ctx, g)
	if err != nil {
		return 0, err
	}
	defer c.Close()

	// With --image the command is settled before a VM is made for it; the
	// configured default image is known only once the VM exists.
	argv := o.Argv
	if o.Create.Image != "" {
		if argv, err = app.runArgv(ctx, c, o.Create.Image, o.Argv); err != nil {
			return 0, err
		}
	}
	req := o.Create
	req.Name = o.Name
	req.Labels = map[string]string{api.LabelCreator: runCreatorLabel}
	progress := func(api.Event) {}
	if _, tty := terminalFd(app.Stderr); tty {
		progress = app.progress(g)
	}
	vm, err := c.VMCreate(ctx, req, progress)
	if api.IsCode(err, api.CodeAlreadyExists) {
		return 0, err // someone else's VM: never delete it
	}
	defer func() {
		if o.Keep {
			fmt.Fprintf(app.Stderr, "banger: kept vm %s; `banger vm delete %s` removes it\n", o.Name, o.Name)
			return
		}
		if derr := app.removeRunVM(parent, c, o); derr != nil {
			printError(app.Stderr, derr)
		}
	}()
	if err != nil {
		return app.stepFailed(ctx, err)
	}
	if o.Create.Image == "" {
		if argv, err = app.runArgv(ctx, c, vm.Image, o.Argv); err != nil {
			return app.stepFailed(ctx, err)
		}
	}
	for _, spec := range o.Inputs {
		host, guest, _ := splitCopy("cp", spec)
		if err := app.runCp(ctx, g, runCopy(host, o.Name+":"+guest)); err != nil {
			return app.stepFailed(ctx, fmt.Errorf("--cp %s: %w", spec, err))
		}
	}
	tty := isTerminal(app.Stdin) && isTerminal(app.Stdout)
	code, err := app.runExec(ctx, g, execOptions{Name: o.Name, Argv: argv, TTY: tty})
	if err != nil {
		return app.stepFailed(ctx, err)
	}
	for _, spec := range o.Outputs {
		if ctx.Err() != nil {
			fmt.Fprintf(app.Stderr, "banger: interrupted; not copying %s out\n", spec)
			continue
		}
		guest, host, _ := splitCopy("out", spec)
		if err := app.runCp(ctx, g, runCopy(o.Name+":"+guest, host)); err != nil {
			printError(app.Stderr, fmt.Errorf("--out %s: %w", spec, err))
			if code == 0 {
				code = 1
			}
		}
	}
	return code, nil
}

// runArgv is the command `banger run` runs in a VM of the named image:
// for an image made from a container image, what docker run would run
// (oci.ProcessConfig.Command); for any other image, argv itself.
func (app *App) runArgv(ctx context.Context, c *api.Client, image string, argv []string) ([]string, error) {
	img, err := c.ImageShow(ctx, image)
	if err != nil {
		return nil, err
	}
	return commandFor(img, argv)
}

// commandFor is runArgv's decision, given the image.
func commandFor(img api.Image, argv []string) ([]string, error) {
	if img.Origin != nil {
		cfg, err := oci.ParseProcessConfig(img.Origin.Config)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", img.Name, err)
		}
		argv = cfg.Command(argv)
		if len(argv) == 0 {
			return nil, fmt.Errorf("image %q has no Entrypoint or Cmd; give the command to run after --", img.Name)
		}
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("give the command to run after --: image %q is not a container image, so it has no Entrypoint or Cmd", img.Name)
	}
	return argv, nil
}

// runCopy is a quiet `vm cp SRC DST` with vm cp's default limits.
func runCopy(src, dst string) cpOptions {
	return cpOptions{
		Src: src, Dst: dst, Quiet: true,
		Limits: copyLimits{MaxBytes: defaultCopyMaxBytes, MaxFiles: defaultCopyMaxFiles, MinFree: defaultCopyMinFree, Idle: defaultCopyIdle},
		Umask:  agent.ProcessUmask("/proc/self/status"),
	}
}

// removeRunVM deletes the run's VM with a context of its own, so an
// interrupted run still cleans up. A create cut short may still be undoing
// itself in the daemon, so "in use" is retried for a while.
func (app *App) removeRunVM(parent context.Context, c *api.Client, o runOptions) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), o.DeleteWait)
	defer cancel()
	for {
		err := c.VMDelete(ctx, api.VMDeleteRequest{Name: o.Name, Force: true}, func(api.Event) {})
		switch {
		case err == nil, api.IsCode(err, api.CodeNotFound):
			return nil
		case api.IsCode(err, api.CodeInUse) || api.IsCode(err, api.CodeFailedPrecondition):
			select {
			case <-ctx.Done():
				return fmt.Errorf("delete vm %q: %w; remove it with `banger vm delete %s`", o.Name, err, o.Name)
			case <-time.After(200 * time.Millisecond):
			}
		default:
			return fmt.Errorf("delete vm %q: %w; remove it with `banger vm delete %s`", o.Name, err, o.Name)
		}
	}
}

// interruptedCode is what an interrupted run exits with, as a shell
// reports SIGINT.
const interruptedCode = 128 + int(syscall.SIGINT)

// stepFailed is runOnce's result for a step that failed: a signal that
// stopped it is reported as an interruption, not as the step's error.
func (app *App) stepFailed(ctx context.Context, err error) (int, error) {
	if ctx.Err() != nil {
		fmt.Fprintln(app.Stderr, "banger: interrupted")
		return interruptedCode, nil
	}
	return 0, err
}

func isTerminal(v any) bool {
	_, ok := terminalFd(v)
	return ok
}
