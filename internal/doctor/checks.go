package doctor

import (
	"context"
	"errors"
	"fmt"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/store"
)

// VersionCheck compares this CLI's build with what `banger system install`
// recorded. Drift is a warning, not a failure: it usually means a rebuilt
// CLI next to an older installed daemon. Dev builds carry no meaningful
// version, so drift against them is not reported.
func VersionCheck(cli buildinfo.Info, metaPath string) Check {
	return Check{Name: "banger version", Run: func(context.Context) Result {
		r := Result{Status: Pass, Summary: fmt.Sprintf("%s (commit %s, built %s)", cli.Version, cli.ShortCommit(), cli.BuiltAt)}
		meta, err := installmeta.Read(metaPath)
		if errors.Is(err, installmeta.ErrNotInstalled) {
			r.Details = []string{"no system install recorded (" + metaPath + "); user mode"}
			return r
		}
		if err != nil {
			r.Status = Warn
			r.Details = []string{err.Error()}
			return r
		}
		installed := buildinfo.Info{Version: meta.Version, Commit: meta.Commit, BuiltAt: meta.BuiltAt}
		r.Details = []string{fmt.Sprintf("installed: %s (commit %s, built %s) for %s", installed.Version, installed.ShortCommit(), installed.BuiltAt, meta.OwnerUser)}
		if cli.IsDev() || installed.IsDev() {
			r.Details = append(r.Details, "drift check skipped: a dev build has no comparable version")
			return r
		}
		var drift []string
		if cli.Version != installed.Version {
			drift = append(drift, fmt.Sprintf("version differs: CLI %s, installed %s", cli.Version, installed.Version))
		}
		if cli.Commit != installed.Commit {
			drift = append(drift, fmt.Sprintf("commit differs: CLI %s, installed %s", cli.ShortCommit(), installed.ShortCommit()))
		}
		if len(drift) > 0 {
			r.Status = Warn
			r.Details = append(r.Details, drift...)
			r.Details = append(r.Details, "run `sudo banger system install` from this build, or `banger update`")
		}
		return r
	}}
}

// SchemaCheck classifies the state database without modifying it.
func SchemaCheck(dbPath string) Check {
	return Check{Name: "state database", Run: func(context.Context) Result {
		st, err := store.InspectSchemaState(dbPath)
		if err != nil {
			return Result{Status: Fail, Summary: "cannot read " + dbPath, Details: []string{err.Error()}}
		}
		r := Result{Summary: st.Line(), Details: []string{dbPath}}
		switch st.ExitCode() {
		case 0:
			r.Status = Pass
		case 1:
			r.Status = Pass
			r.Details = append(r.Details, "the daemon applies pending migrations when it next starts")
		default:
			r.Status = Fail
			r.Details = append(r.Details, "this database was written by a newer banger: install that version again or restore a backup")
		}
		return r
	}}
}

// DaemonInfoFunc asks the daemon for its build; doctor never starts one.
type DaemonInfoFunc func(ctx context.Context) (buildinfo.Info, int, error)

// BuildDriftAdvice says how a daemon of another build than the CLI's is
// brought in line: in user mode the CLI replaces it itself; the system
// daemon is systemd's and runs the installed binary, which only an
// update or an install changes.
func BuildDriftAdvice(system bool) string {
	if system {
		return "`sudo banger update` (or installing this build with `sudo banger system install`) brings them together"
	}
	return "the next banger command restarts it"
}

// DaemonCheck reports whether the daemon answers and whether it is this
// build. system says the daemon is bangerd.service, which the CLI never
// starts or restarts, so the advice differs.
func DaemonCheck(cli buildinfo.Info, socket string, system bool, info DaemonInfoFunc) Check {
	down, drift := "any banger command starts it in user mode; `banger daemon status` shows it", BuildDriftAdvice(system)
	if system {
		down = "it runs as bangerd.service: `sudo systemctl start bangerd`; `journalctl -u bangerd` says why it stopped"
	}
	return Check{Name: "daemon", Run: func(ctx context.Context) Result {
		b, pid, err := info(ctx)
		if err != nil {
			return Result{Status: Fail, Summary: "not reachable at " + socket, Details: []string{err.Error(), down}}
		}
		r := Result{Status: Pass, Summary: fmt.Sprintf("reachable, pid %d, %s", pid, b.Line("bangerd"))}
		if !b.SameBuild(cli) {
			r.Status = Warn
			r.Details = []string{joinNonEmpty("the daemon is a different build than this CLI", drift)}
		}
		return r
	}}
}
