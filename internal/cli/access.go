package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/banger-dev/banger/internal/agent"
	"github.com/banger-dev/banger/internal/api"
	"github.com/banger-dev/banger/internal/config"
	"github.com/banger-dev/banger/internal/ssh"
	"github.com/banger-dev/banger/internal/termtext"
)

// newAccessCmds returns the vm subcommands that reach into a VM: exec, cp,
// ssh and sync. (`banger ssh-config` is newSSHConfigCmd, at the top level.)
func newAccessCmds(app *App, g *globalFlags) []*cobra.Command {
	return []*cobra.Command{
		newVMExecCmd(app, g),
		newVMCpCmd(app, g),
		newVMSSHCmd(app, g),
		newVMSyncCmd(app, g),
	}
}

// execOptions is one `vm exec`.
type execOptions struct {
	Name string
	Argv []string
	TTY  bool
	User string
	Dir  string
	Env  []string
}

func newVMExecCmd(app *App, g *globalFlags) *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec NAME [-t] [-u USER] -- COMMAND [ARG...]",
		Short: "Run a command in a VM through its guest agent",
		Long: `Run a command in a running VM through the guest agent (no network or SSH
needed). Standard input streams to it, its output streams back, and banger
exits with its exit code (128+N when signal N ended it). Ctrl-C and other
signals are passed on; if the command ignores them, a second Ctrl-C ends the
session (the command is killed) and banger exits 130. With -t the command gets
a terminal (raw mode, window size kept in sync); with -t and no command you get
a login shell. In a -t session typed at a terminal, ~. at the start of a line
ends the session (banger exits 255) and ~~ sends one ~, as in ssh.
Output of the command is passed on unchanged, as ssh does.`,
		Example: `  banger vm exec dev -- uname -a
  banger vm exec dev -- sh -c 'cd /src && make test'
  tar c . | banger vm exec dev -- tar x -C /tmp/src
  banger vm exec -t dev`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Name, o.Argv = args[0], args[1:]
			if err := validateVMName(o.Name); err != nil {
				return err
			}
			if len(o.Argv) == 0 && !o.TTY {
				return errors.New("no command given; add one after --, or use -t for an interactive shell")
			}
			code, err := app.runExec(cmd.Context(), g, o)
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
	f.BoolVarP(&o.TTY, "tty", "t", false, "give the command a terminal")
	f.StringVarP(&o.User, "user", "u", "", "guest user to run as (default: the VM's login user)")
	f.StringVarP(&o.Dir, "workdir", "w", "", "working directory in the guest (default: the user's home)")
	f.StringArrayVarP(&o.Env, "env", "e", nil, "set an environment variable, NAME=VALUE (repeatable)")
	return cmd
}

// runExec runs one command and returns its shell-style exit code.
func (app *App) runExec(ctx context.Context, g *globalFlags, o execOptions) (int, error) {
	for _, kv := range o.Env {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return 0, fmt.Errorf("--env %q: use NAME=VALUE", kv)
		}
	}
	c, _, err := app.connect(ctx, g)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	req := api.VMExecRequest{Name: o.Name, Argv: o.Argv, User: o.User, Dir: o.Dir, Env: o.Env, TTY: o.TTY}
	stdinFd, stdinTTY := terminalFd(app.Stdin)
	stdoutFd, stdoutTTY := terminalFd(app.Stdout)
	if o.TTY {
		req.Term = os.Getenv("TERM")
		if stdoutTTY {
			if cols, rows, err := term.GetSize(stdoutFd); err == nil {
				req.Rows, req.Cols = uint16(rows), uint16(cols)
			}
		}
	}
	p, err := c.VMExec(ctx, req)
	if err != nil {
		if api.IsCommandNotFound(err) {
			// What a shell says and returns for a missing command.
			printError(app.Stderr, err)
			return api.CommandNotFoundCode, nil
		}
		return 0, err
	}
	defer func() { _ = p.Close() }()

	end := newSessionEnd(p)
	restore := func() {}
	sigs := make(chan os.Signal, 8)
	interactive := o.TTY && stdinTTY // a person typing into a terminal session
	if interactive {
		old, err := term.MakeRaw(stdinFd)
		if err != nil {
			return 0, fmt.Errorf("put the terminal in raw mode: %w", err)
		}
		var once sync.Once
		restore = func() { once.Do(func() { _ = term.Restore(stdinFd, old) }) }
		defer restore()
		// Keystrokes like ^C travel as bytes to the guest's terminal; only
		// the window size needs a signal.
		signal.Notify(sigs, syscall.SIGWINCH)
	} else {
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	}
	defer func() {
		// After Stop no more signals arrive, so closing ends the relay below.
		signal.Stop(sigs)
		close(sigs)
	}()
	go relaySignals(sigs, p, end, o.Name, func() {
		if cols, rows, err := term.GetSize(stdoutFd); err == nil {
			_ = p.Resize(uint16(rows), uint16(cols))
		}
	})
	go pumpStdin(p, app.Stdin, interactive, func() {
		end.end(escapeExitCode, fmt.Sprintf("\nbanger: ~. ended the session with vm %q (which kills its command)", o.Name))
	})
	st, err := p.Wait(app.Stdout, app.Stderr)
	if code, note, ok := end.ended(); ok {
		restore() // so the note starts on a line of its own
		fmt.Fprintln(app.Stderr, note)
		return code, nil
	}
	if err != nil {
		return 0, fmt.Errorf("vm %q: %w", o.Name, err)
	}
	if st.Error != "" {
		fmt.Fprintf(app.Stderr, "banger: vm %q: %s\n", o.Name, termtext.Escape(st.Error))
	}
	return st.ShellCode(), nil
}

// terminalFd reports whether rw is a terminal, and its descriptor.
func terminalFd(rw any) (int, bool) {
	f, ok := rw.(*os.File)
	if !ok {
		return -1, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// remoteSpec is "NAME:PATH" for a path in a VM.
var remoteSpec = regexp.MustCompile(`^([a-z0-9][a-z0-9-]{0,62}):(.*)$`)

// cpOptions is one `vm cp`.
type cpOptions struct {
	Src, Dst      string
	User          string
	PreserveOwner bool
	Quiet         bool
	// Out of a VM only (see copyReceiver): limits and trust.
	Limits      copyLimits
	SpecialBits bool
	// Umask is this process's umask, cleared from the modes the guest sends.
	Umask fs.FileMode
}

func newVMCpCmd(app *App, g *globalFlags) *cobra.Command {
	var o cpOptions
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories into or out of a VM",
		Long: `Copy a file or a directory tree (recursively) between this machine and a
running VM; write the VM side as NAME:PATH. PATH is absolute or relative to
the guest user's home. As with cp, copying into an existing directory puts
the source inside it. Progress goes to stderr.

Into a VM, modes and modification times are kept and files belong to the
guest user (--preserve-owner keeps the numeric owner instead).

Out of a VM the guest is not trusted, so the copy is written as cp -r writes
one: each mode is the guest's permission bits less your umask, setuid,
setgid and sticky bits are dropped (--special-bits keeps them; refused as
root), an existing directory keeps its mode, and files are yours
(--preserve-owner as root keeps the guest's numeric owners). The copy stops
when it would exceed --max-bytes or --max-files, would leave less than
--min-free on the destination's file system, or receives nothing for
--idle-timeout; it then removes its partial file and, if it created the
destination, everything it wrote.`,
		Example: `  banger vm cp ./src dev:/tmp/
  banger vm cp dev:/var/log/syslog .
  banger vm cp ~/.vimrc dev:`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Src, o.Dst = args[0], args[1]
			o.Umask = agent.ProcessUmask("/proc/self/status")
			return app.runCp(cmd.Context(), g, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.User, "user", "u", "", "guest user that owns the copy and anchors relative paths (default: the VM's login user)")
	f.BoolVarP(&o.PreserveOwner, "preserve-owner", "p", false, "keep numeric owners (into a VM; out of one when run as root)")
	f.BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing on success")
	o.Limits.flags(f)
	f.BoolVar(&o.SpecialBits, "special-bits", false, "out of a VM: keep setuid, setgid and sticky bits (refused as root)")
	return cmd
}

func (app *App) runCp(ctx context.Context, g *globalFlags, o cpOptions) error {
	src, dst := remoteSpec.FindStringSubmatch(o.Src), remoteSpec.FindStringSubmatch(o.Dst)
	switch {
	case src != nil && dst != nil:
		return errors.New("both paths are in a VM; copy through this machine in two steps")
	case src == nil && dst == nil:
		return errors.New("neither path is in a VM; write the VM side as NAME:PATH")
	}
	c, _, err := app.connect(ctx, g)
	if err != nil {
		return err
	}
	defer c.Close()
	prog := newCopyProgress(app.Stderr, o.Quiet)
	start := time.Now()
	var res agent.CopyResult
	var where string
	if dst != nil {
		local := o.Src
		if _, err := os.Stat(local); err != nil {
			return fmt.Errorf("cannot copy %s: %w", local, unwrapPathErr(err))
		}
		req := api.VMCopyRequest{Name: dst[1], Path: api.GuestPath(dst[2]), BaseName: filepath.Base(filepath.Clean(local)), User: o.User, PreserveOwner: o.PreserveOwner}
		res, err = c.VMCopyTo(ctx, req, local, agent.TreeSender{FollowRoot: true, Progress: prog.add})
		where = dst[1] + ":" + res.Path
	} else {
		gpath := api.GuestPath(src[2])
		local := o.Dst
		if st, err := os.Stat(local); err == nil && st.IsDir() {
			local = filepath.Join(local, path.Base(gpath))
		}
		var tr agent.TreeReceiver
		tr, err = copyReceiver(o, os.Geteuid(), prog.add)
		if err != nil {
			prog.stop()
			return err
		}
		req := api.VMCopyRequest{Name: src[1], Path: gpath, User: o.User, MaxBytes: tr.MaxBytes}
		res, err = c.VMCopyFrom(ctx, req, local, tr)
		err = explainCopyError(err)
		where = local
	}
	prog.stop()
	if err != nil {
		return err
	}
	if !o.Quiet {
		fmt.Fprintf(app.Stderr, "copied %s to %s in %s\n", describeCopy(res), termtext.Line(where), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func describeCopy(r agent.CopyResult) string {
	parts := []string{plural(r.Files, "file")}
	if r.Dirs > 0 {
		parts = append(parts, plural(r.Dirs, "directory"))
	}
	if r.Links > 0 {
		parts = append(parts, plural(r.Links, "symlink"))
	}
	s := strings.Join(parts, ", ") + " (" + config.FormatBytes(int64(r.Bytes)) + ")"
	if r.Skipped > 0 {
		s += fmt.Sprintf("; skipped %s (sockets, devices or FIFOs)", plural(r.Skipped, "special file"))
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// copyProgress shows bytes copied on a terminal's stderr, once a second.
type copyProgress struct {
	w     io.Writer
	bytes atomic.Int64
	done  chan struct{}
	live  bool
}

func newCopyProgress(w io.Writer, quiet bool) *copyProgress {
	p := &copyProgress{w: w, done: make(chan struct{})}
	if _, tty := terminalFd(w); tty && !quiet {
		p.live = true
		start := time.Now()
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-p.done:
					return
				case <-t.C:
					n := p.bytes.Load()
					rate := float64(n) / time.Since(start).Seconds()
					fmt.Fprintf(p.w, "\rcopying: %s (%s/s)   ", config.FormatBytes(int64(n)), config.FormatBytes(int64(rate)))
				}
			}
		}()
	}
	return p
}

func (p *copyProgress) add(n int) { p.bytes.Add(int64(n)) }

func (p *copyProgress) stop() {
	close(p.done)
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func newVMSSHCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND [ARG...]]",
		Short: "Open an SSH session to a VM with banger's key and pinned host key",
		Long: `Run the system ssh client against the VM's address as its login user, with
banger's key and banger's known_hosts (StrictHostKeyChecking=yes: the host
key pinned at the VM's first boot must match). Needs VM networking; without
it, use banger vm exec -t NAME.`,
		Example: `  banger vm ssh dev
  banger vm ssh dev -- uptime`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateVMName(args[0]); err != nil {
				return err
			}
			code, err := app.runSSH(cmd.Context(), g, args[0], args[1:])
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	return cmd
}

// sshCommand is the system ssh invocation for a VM.
func sshCommand(info api.VMSSHInfo, argv []string) []string {
	user := info.User
	if user == "" {
		user = "root"
	}
	args := ssh.ClientArgs(info.KeyPath, info.KnownHostsPath, info.DNSName)
	args = append(args, user+"@"+info.IP)
	if len(argv) > 0 {
		args = append(append(args, "--"), argv...)
	}
	return args
}

// sshPrecondition says why ssh cannot reach the VM, before trying: it is
// not running, has no address, or runs no sshd (banger learnt that at its
// boot). Each case points at `vm exec -t`, which needs none of it.
func sshPrecondition(name string, info api.VMSSHInfo) error {
	switch {
	case info.State == api.VMPaused:
		return fmt.Errorf("vm %q is paused; `banger vm resume %s` resumes it", name, name)
	case info.State != api.VMRunning:
		return fmt.Errorf("vm %q is %s; start it with `banger vm start %s`", name, info.State, name)
	case info.IP == "":
		return fmt.Errorf("vm %q has no IP address yet (VM networking is off or not set up for it); `banger vm exec -t %s` works without one", name, name)
	case info.SSHServer != nil && !*info.SSHServer:
		return fmt.Errorf("vm %q runs no SSH server (its image has no sshd); `banger vm exec -t %s` opens a shell through the guest agent", name, name)
	}
	return nil
}

func (app *App) runSSH(ctx context.Context, g *globalFlags, name string, argv []string) (int, error) {
	c, _, err := app.connect(ctx, g)
	if err != nil {
		return 0, err
	}
	info, err := c.VMSSHInfo(ctx, name)
	c.Close()
	if err != nil {
		return 0, err
	}
	if err := sshPrecondition(name, info); err != nil {
		return 0, err
	}
	bin, err := exec.LookPath("ssh")
	if err != nil {
		return 0, errors.New("the ssh client is not installed (package openssh-client); `banger vm exec -t " + name + "` works without it")
	}
	cmd := exec.CommandContext(ctx, bin, sshCommand(info, argv)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = app.Stdin, app.Stdout, app.Stderr
	// The terminal sends ^C to ssh as well; banger just waits for it.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func newVMSyncCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sync NAME [PATH...]",
		Short: "Copy your configured files (or the given ones) into a VM",
		Long: `Copy files from your home directory into the same place under the VM
user's home: the paths under [sync] in the config, or the PATHs given. Only
paths inside your home are copied; one outside it, climbing out with "..", or
a symlink leading out of it is refused and nothing of it is copied. The same
sync runs at every VM start.`,
		Example: `  banger vm sync dev
  banger vm sync dev ~/.gitconfig ~/.config/gh`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := validateVMName(args[0]); err != nil {
				return err
			}
			return app.withClient(cmd, g, func(c *api.Client) error {
				res, err := c.VMSync(cmd.Context(), api.VMSyncRequest{Name: args[0], Paths: args[1:]}, func(api.Event) {})
				if err != nil {
					return err
				}
				return app.emit(g, res, func() error {
					for _, s := range res.Synced {
						fmt.Fprintf(app.Stdout, "%s -> %s (%s, %s)\n", termtext.Line(s.Path), termtext.Line(s.Dest), plural(s.Files, "file"), config.FormatBytes(int64(s.Bytes)))
					}
					for _, e := range res.Errors {
						fmt.Fprintf(app.Stderr, "banger: %s\n", termtext.Escape(e))
					}
					if len(res.Errors) > 0 {
						return exitError{1}
					}
					return nil
				})
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}

func newSSHConfigCmd(app *App, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Print ~/.ssh/config entries for reaching VMs as NAME.banger",
		Long: `Print Host entries that make plain ssh (and scp, rsync, editors' remote
modes) reach each VM as NAME.banger with banger's key, checking banger's
pinned host key. Each VM is listed with its address, so this works whether
or not this machine resolves *.banger names (see banger doctor). Save it and
include it at the top of ~/.ssh/config, before any Host line:

  banger ssh-config > ~/.ssh/banger.conf
  # once, at the top of ~/.ssh/config:  Include banger.conf

Run it again after creating VMs to add theirs. VMs without an address or
without an sshd are listed as comments; banger vm exec -t reaches them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.withClient(cmd, g, func(c *api.Client) error {
				cfg, err := c.SSHConfig(cmd.Context())
				if err != nil {
					return err
				}
				return app.emit(g, cfg, func() error {
					_, err := io.WriteString(app.Stdout, cfg.Block)
					return err
				})
			})
		},
	}
	addJSONFlag(cmd, g)
	return cmd
}
