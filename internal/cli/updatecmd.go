package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/banger-dev/banger/internal/download"
	"github.com/banger-dev/banger/internal/install"
	"github.com/banger-dev/banger/internal/system"
	"github.com/banger-dev/banger/internal/updater"
)

// updateEnv is what `banger update` reaches outside the process. The real
// one comes from defaultUpdateEnv; tests build their own (a local HTTPS
// server's client, a fake runner, a test key).
type updateEnv struct {
	euid func() int
	// systemdRunning reports whether systemd is PID 1 (the services can be
	// restarted).
	systemdRunning func() bool
	httpClient     *http.Client // nil: download's default client
	runner         system.Runner
	publicKey      string
	sleep          func(context.Context, time.Duration) error
}

func defaultUpdateEnv() updateEnv {
	h := defaultSystemHost()
	return updateEnv{
		euid:           h.euid,
		systemdRunning: h.systemdRunning,
		runner:         h.runner,
		publicKey:      updater.EmbeddedPublicKey(),
	}
}

func newUpdateCmd(app *App, g *globalFlags) *cobra.Command {
	return newUpdateCmdWith(app, g, defaultUpdateEnv())
}

type updateFlags struct {
	check      bool
	channel    string
	version    string
	yes        bool
	releaseURL string
	allowHTTP  bool
	root       string
}

func newUpdateCmdWith(app *App, g *globalFlags, env updateEnv) *cobra.Command {
	var f updateFlags
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Install the latest signed banger release over the system install",
		Long: `update downloads the newest release on a channel (or the --version you name),
verifies its signature against the release key built into this banger,
checks that the new daemon can use your state database, swaps the three
binaries atomically, restarts the services and runs banger doctor. Any
failure after the swap puts the previous binaries back and restarts them.

It replaces files in /usr/local and restarts system services, so it needs
root: run it with sudo. --check only reports and needs no privileges.

  banger update --check           is there a newer release?
  sudo banger update              install it (asks first)
  sudo banger update --yes        install it without asking
  sudo banger update --version v0.2.0   install exactly that release`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUpdate(cmd.Context(), app, g, env, f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.check, "check", false, "only report the installed and the offered version; change nothing")
	fl.StringVar(&f.channel, "channel", updater.DefaultChannel, "release channel to follow")
	fl.StringVar(&f.version, "version", "", "install exactly this release (also allows reinstalling or downgrading)")
	fl.BoolVarP(&f.yes, "yes", "y", false, "do not ask for confirmation")
	fl.StringVar(&f.releaseURL, "release-url", updater.DefaultBaseURL, "release server (for mirrors)")
	fl.BoolVar(&f.allowHTTP, "insecure-allow-http", false, "allow a plain-http release server (local testing only; signatures are still checked)")
	_ = fl.MarkHidden("insecure-allow-http")
	addRootFlag(cmd, &f.root)
	addJSONFlag(cmd, g)
	return cmd
}

func runUpdate(ctx context.Context, app *App, g *globalFlags, env updateEnv, f updateFlags) error {
	fetcher := download.New(download.Options{Client: env.httpClient, AllowHTTP: f.allowHTTP, Progress: app.Stderr})
	opts := updater.Options{
		BaseURL:   f.releaseURL,
		Channel:   f.channel,
		Version:   f.version,
		PublicKey: env.publicKey,
		Fetcher:   fetcher,
		Runner:    env.runner,
		Root:      f.root,
		Running:   app.Build,
		Progress:  app.Stderr,
		Sleep:     env.sleep,
	}
	plan, err := updater.Check(ctx, opts)
	if err != nil {
		return err
	}
	if f.check {
		return app.emit(g, checkReport{Plan: plan, UpdateAvailable: plan.UpdateAvailable()}, func() error {
			printPlan(app.Stdout, plan)
			return nil
		})
	}
	if plan.Action == updater.ActionNone {
		return app.emit(g, updater.Result{From: plan.Current, To: plan.Current, Release: plan.Release, Action: plan.Action}, func() error {
			fmt.Fprintf(app.Stdout, "banger %s is up to date (%s offers %s)\n", plan.Current.Version, offeredBy(plan), plan.Release.Version)
			return nil
		})
	}
	if err := plan.Err(); err != nil {
		return err
	}
	if uid := env.euid(); uid != 0 {
		return fmt.Errorf("updating replaces /usr/local/bin/banger, /usr/local/bin/bangerd and /usr/local/lib/banger/banger-vsock-agent "+
			"and restarts banger's services, so it must run as root (this is uid %d): run `sudo banger update`", uid)
	}
	if realRoot(f.root) {
		// Without systemd the restart would fail after the swap and force a
		// rollback; refuse before touching anything instead.
		if !env.systemdRunning() {
			return errors.New("systemd is not running on this host, so banger update could not restart the services it replaces; nothing was changed")
		}
		opts.Units = []string{install.HelperUnit, install.DaemonUnit}
	}
	fmt.Fprintf(app.Stderr, "%s banger %s → %s (%s, published %s)\n", describeAction(plan.Action), plan.Current.Version,
		plan.Release.Version, offeredBy(plan), plan.Release.PublishedAt.Format("2006-01-02"))
	if !f.yes {
		ok, err := confirm(app, "Continue?")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("update cancelled; nothing was changed")
		}
	}
	res, err := updater.Apply(ctx, opts, plan)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(app.Stderr, "warning: %s\n", w)
	}
	return app.emit(g, res, func() error {
		fmt.Fprintf(app.Stdout, "banger updated: %s → %s\n", res.From.Version, res.To.Version)
		return nil
	})
}

// checkReport is `banger update --check --json`.
type checkReport struct {
	updater.Plan
	UpdateAvailable bool `json:"update_available"`
}

func printPlan(w io.Writer, p updater.Plan) {
	installed := "installed"
	if !p.Installed {
		installed = "running"
	}
	fmt.Fprintf(w, "%-10s %s\n", installed+":", p.Current.Line("banger"))
	fmt.Fprintf(w, "%-10s %s (published %s)\n", offeredBy(p)+":", p.Release.Version, p.Release.PublishedAt.Format("2006-01-02"))
	switch {
	case p.Action == updater.ActionNone:
		fmt.Fprintln(w, "banger is up to date")
	case p.Blocked != "":
		fmt.Fprintf(w, "%s is available, but this banger cannot install it: %s\n", p.Release.Version, p.Blocked)
	default:
		fmt.Fprintf(w, "%s is available: run `sudo banger update%s`\n", p.Release.Version, versionFlag(p))
	}
}

func offeredBy(p updater.Plan) string {
	if p.Release.Channel != "" {
		return p.Release.Channel
	}
	return "requested"
}

func versionFlag(p updater.Plan) string {
	if p.Release.Channel == "" {
		return " --version " + p.Release.Version
	}
	if p.Release.Channel != updater.DefaultChannel {
		return " --channel " + p.Release.Channel
	}
	return ""
}

func describeAction(a updater.Action) string {
	switch a {
	case updater.ActionReinstall:
		return "reinstalling"
	case updater.ActionDowngrade:
		return "downgrading"
	}
	return "updating"
}

// confirm asks on stderr and reads one line from stdin. Without a terminal
// there is nobody to ask, so it refuses rather than guessing.
func confirm(app *App, question string) (bool, error) {
	if !app.IsTerminal() {
		return false, errors.New("stdin is not a terminal, so nobody can confirm the update: pass --yes")
	}
	fmt.Fprintf(app.Stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(app.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}
