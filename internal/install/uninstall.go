package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/system"
)

// UninstallOptions configures Uninstall.
type UninstallOptions struct {
	Root string
	// Purge also removes state (VMs, images, the database), the cache and
	// /etc/banger including config.toml. Without it those are kept so a
	// later install picks them up again.
	Purge bool
	// Systemctl runs systemctl; nil skips systemd (--root trees).
	Systemctl system.Runner
	// TeardownNetwork removes banger's bridge and NAT; nil skips it. Its
	// failure is a warning: the files are removed regardless, and a reboot
	// clears the rest.
	TeardownNetwork func(ctx context.Context) error
}

// Uninstall removes what Install put in place: units (stopped and disabled
// first), drop-ins, binaries, install metadata, the runtime dir with the
// helper socket, and the directories the install created. It keeps going
// past failures, so a half-broken install can still be removed, and
// reports them as warnings; it errors only when something it should remove
// is still there.
func Uninstall(ctx context.Context, opts UninstallOptions) (Result, error) {
	var res Result
	t := tree{root: opts.Root}
	l := t.layout()
	warn := func(format string, args ...any) { res.Warnings = append(res.Warnings, fmt.Sprintf(format, args...)) }

	if opts.Systemctl != nil {
		if err := systemctl(ctx, opts.Systemctl, "disable", "--now", DaemonUnit, HelperUnit); err != nil {
			warn("stopping the units: %v", err)
		} else {
			res.Changed = append(res.Changed, "stopped and disabled "+DaemonUnit+" and "+HelperUnit)
		}
	}
	if opts.TeardownNetwork != nil {
		if err := opts.TeardownNetwork(ctx); err != nil {
			warn("removing the bridge and NAT: %v (a reboot clears them)", err)
		} else {
			res.Changed = append(res.Changed, "removed the bridge and NAT")
		}
	}

	var m manifest
	mPath := filepath.Join(l.ConfigDir, manifestName)
	if data, err := os.ReadFile(mPath); err == nil {
		if err := toml.Unmarshal(data, &m); err != nil {
			warn("install manifest %s is corrupt (%v): only banger's own directories are removed", mPath, err)
		}
	}

	var failed []string
	remove := func(p string) {
		err := os.Remove(p)
		switch {
		case err == nil:
			res.Changed = append(res.Changed, "removed "+p)
		case errors.Is(err, fs.ErrNotExist):
		default:
			failed = append(failed, fmt.Sprintf("%s: %v", p, err))
		}
	}
	removeAll := func(p string) {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err := os.RemoveAll(p); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", p, err))
			return
		}
		res.Changed = append(res.Changed, "removed "+p)
	}

	for _, p := range []string{
		filepath.Join(unitDir, DaemonUnit), filepath.Join(unitDir, HelperUnit),
		sysctlPath, modulesPath, tmpfilesPath,
		BangerPath, BangerdPath, AgentPath,
		// Backups `banger update` may have left behind.
		BangerPath + system.BackupSuffix, BangerdPath + system.BackupSuffix, AgentPath + system.BackupSuffix,
	} {
		remove(t.at(p))
	}
	remove(l.InstallMetaPath())
	// Runtime only: sockets (the helper's among them) and per-VM run dirs.
	removeAll(l.RuntimeDir)
	// `banger update`'s root-only staging area (updater.DefaultStagingDir):
	// nothing in it outlives an update.
	removeAll(t.at("/var/cache/banger-update"))
	if opts.Systemctl != nil {
		if err := systemctl(ctx, opts.Systemctl, "daemon-reload"); err != nil {
			warn("reloading systemd: %v", err)
		}
	}
	if opts.Purge {
		removeAll(l.StateDir)
		removeAll(l.JailDir())
		removeAll(t.at(cacheDir))
		removeAll(l.ConfigDir)
	} else {
		remove(mPath)
	}

	// Directories the install created, deepest first, if now empty. The
	// state dir stays without --purge even when empty: it is the user's.
	created := append([]string(nil), m.CreatedDirs...)
	if len(created) == 0 {
		created = []string{agentDir, systemLayout().ConfigDir}
	}
	sort.Slice(created, func(i, j int) bool { return strings.Count(created[i], "/") > strings.Count(created[j], "/") })
	for _, d := range created {
		if !opts.Purge && (d == systemLayout().StateDir || strings.HasPrefix(systemLayout().StateDir, d+"/")) {
			continue
		}
		full := t.at(d)
		if err := os.Remove(full); err == nil {
			res.Changed = append(res.Changed, "removed "+full)
		}
		// Not empty (a config.toml kept, someone else's file): left alone.
	}
	if !opts.Purge {
		if _, err := os.Stat(l.StateDir); err == nil {
			res.Warnings = append(res.Warnings, "kept "+l.StateDir+" (VMs, images, database); `banger system uninstall --purge` removes it")
		}
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("could not remove: %s", strings.Join(failed, "; "))
	}
	return res, nil
}
