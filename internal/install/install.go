// Package install performs `banger system install`, `status`, `restart` and
// `uninstall`: the three binaries at their canonical paths, install
// metadata, the runtime and state directories with the right owners, the two
// hardened systemd units and the sysctl, modules-load and tmpfiles drop-ins.
//
// Everything is written beneath a root directory ("/" on a real system, a
// temporary directory in tests), and systemd is reached only through an
// injected system.Runner, so the whole flow runs in tests without systemd.
// Install is idempotent and all-or-nothing: a failure undoes every step it
// took. It records the directories it created in a manifest, so uninstall
// returns the tree to exactly what it was before the first install.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/sdnotify"
	"github.com/banger-dev/banger/internal/system"
)

// Canonical install paths, as seen on the installed system.
const (
	BangerPath  = "/usr/local/bin/banger"
	BangerdPath = "/usr/local/bin/bangerd"
	AgentPath   = "/usr/local/lib/banger/banger-vsock-agent"

	unitDir      = "/etc/systemd/system"
	sysctlPath   = "/etc/sysctl.d/60-banger.conf"
	modulesPath  = "/etc/modules-load.d/banger.conf"
	tmpfilesPath = "/etc/tmpfiles.d/banger.conf"
	cacheDir     = "/var/cache/banger"
	agentDir     = "/usr/local/lib/banger"
	// manifestName is in the config dir, next to install.toml.
	manifestName = "install-manifest.toml"
)

// Owner is the user a system install serves: bangerd runs as them and the
// root helper answers only their uid.
type Owner struct {
	User  string `json:"user"`
	UID   int    `json:"uid"`
	GID   int    `json:"gid"`
	Group string `json:"group"`
	Home  string `json:"home"`
}

// LookupOwner resolves a user name from the system's user database.
func LookupOwner(name string) (Owner, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: %w", name, err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: primary group %s: %w", name, u.Gid, err)
	}
	var o Owner
	o.User, o.Group, o.Home = u.Username, g.Name, u.HomeDir
	if _, err := fmt.Sscan(u.Uid, &o.UID); err != nil {
		return Owner{}, fmt.Errorf("owner %q: uid %q: %w", name, u.Uid, err)
	}
	if _, err := fmt.Sscan(u.Gid, &o.GID); err != nil {
		return Owner{}, fmt.Errorf("owner %q: gid %q: %w", name, u.Gid, err)
	}
	return o, o.validate()
}

// validate refuses owners banger cannot serve safely or cannot write into a
// unit file without quoting.
func (o Owner) validate() error {
	if o.UID == 0 {
		return errors.New("the owner cannot be root: the point of the install is that the daemon runs unprivileged; pass --owner YOUR_USER")
	}
	if o.UID < 0 || o.GID < 0 {
		return fmt.Errorf("owner uid %d / gid %d invalid", o.UID, o.GID)
	}
	for _, n := range []struct{ what, v string }{{"user name", o.User}, {"group name", o.Group}} {
		if !plainName(n.v) {
			return fmt.Errorf("owner %s %q is not a plain name (letters, digits, '_', '-', '.'); banger writes it into unit files", n.what, n.v)
		}
	}
	if !filepath.IsAbs(o.Home) || filepath.Clean(o.Home) != o.Home || o.Home == "/" || !plainPath(o.Home) {
		return fmt.Errorf("owner home %q must be an absolute path of letters, digits, '_', '-', '.' and '/', other than /", o.Home)
	}
	return nil
}

func plainName(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !plainRune(r) {
			return false
		}
	}
	return true
}

// plainRune is a character that needs no quoting in a unit file.
func plainRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.'
}

func plainPath(s string) bool {
	for _, part := range strings.Split(strings.Trim(s, "/"), "/") {
		if part == "" || len(part) > 255 || part[0] == '-' {
			return false
		}
		for _, r := range part {
			if !plainRune(r) {
				return false
			}
		}
	}
	return true
}

// Options configures Install.
type Options struct {
	// Root is the system root; "" or "/" for the real system.
	Root  string
	Owner Owner
	// SourceDir holds banger, bangerd and banger-vsock-agent to install;
	// "" leaves the binaries alone (re-running install from the installed
	// CLI, e.g. to change the owner).
	SourceDir string
	// Build is recorded in install.toml.
	Build buildinfo.Info
	// Now is the clock for InstalledAt; time.Now when nil.
	Now func() time.Time
	// Systemctl runs systemctl; nil skips systemd entirely (a --root
	// install into a tree no systemd manages).
	Systemctl system.Runner
}

// Result says what an install or uninstall did.
type Result struct {
	// Changed lists each change, e.g. "wrote /etc/systemd/system/bangerd.service".
	Changed []string `json:"changed"`
	// Warnings are steps that failed without failing the whole operation.
	Warnings []string `json:"warnings,omitempty"`
}

// tree maps system paths into the root.
type tree struct{ root string }

func (t tree) at(p string) string {
	if t.root == "" || t.root == "/" {
		return p
	}
	return filepath.Join(t.root, p)
}

func (t tree) layout() paths.Layout { return paths.System(t.root) }

// systemLayout is the layout as the installed system sees it, for paths
// written into unit files.
func systemLayout() paths.Layout { return paths.System("") }

// manifest records what the first install created, so uninstall can undo
// exactly that and leave pre-existing directories alone.
type manifest struct {
	// CreatedDirs are system paths (without the root), parents first.
	CreatedDirs []string `toml:"created_dirs"`
}

// Install performs a system install. On error every step it took is undone.
func Install(ctx context.Context, opts Options) (res Result, err error) {
	if err := opts.Owner.validate(); err != nil {
		return res, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := tree{root: opts.Root}
	if fi, err := os.Stat(t.at("/")); err != nil || !fi.IsDir() {
		return res, fmt.Errorf("install root %q is not a directory", opts.Root)
	}
	if opts.SourceDir != "" {
		for _, name := range []string{"banger", "bangerd", "banger-vsock-agent"} {
			if err := checkExecutable(filepath.Join(opts.SourceDir, name)); err != nil {
				return res, fmt.Errorf("install from %s: %w; run `make build` and install from bin/", opts.SourceDir, err)
			}
		}
	}
	j := &journal{}
	defer func() {
		if err != nil {
			if rerr := j.rollback(); rerr != nil {
				err = fmt.Errorf("%w; undoing the install also failed, fix by hand: %v", err, rerr)
			} else {
				err = fmt.Errorf("%w (nothing was changed)", err)
			}
			res = Result{}
			return
		}
		j.commit()
	}()

	l := t.layout()
	mPath := filepath.Join(l.ConfigDir, manifestName)
	var m manifest
	if data, rerr := os.ReadFile(mPath); rerr == nil {
		if uerr := toml.Unmarshal(data, &m); uerr != nil {
			return res, fmt.Errorf("install manifest %s is corrupt: %v; remove it and retry", mPath, uerr)
		}
	}
	o := opts.Owner
	dirs := []struct {
		path     string
		mode     fs.FileMode
		uid, gid int
		// own says banger owns the directory, so its mode and owner are
		// corrected if they drifted; shared ones (/usr/local/bin) are
		// created if missing and otherwise left alone.
		own bool
	}{
		{"/usr/local/bin", 0o755, 0, 0, false},
		{agentDir, 0o755, 0, 0, true},
		{systemLayout().ConfigDir, 0o755, 0, 0, true},
		{unitDir, 0o755, 0, 0, false},
		{filepath.Dir(sysctlPath), 0o755, 0, 0, false},
		{filepath.Dir(modulesPath), 0o755, 0, 0, false},
		{filepath.Dir(tmpfilesPath), 0o755, 0, 0, false},
		{systemLayout().StateDir, 0o700, o.UID, o.GID, true},
		// Root's: the jailer works in it as root (privileged.JailerPolicy).
		{systemLayout().JailDir(), 0o755, 0, 0, true},
		{systemLayout().RuntimeDir, 0o770 | fs.ModeSticky, 0, o.GID, true},
	}
	for _, d := range dirs {
		if err := ensureDir(j, &res, &m, t, d.path, d.mode, d.uid, d.gid, d.own); err != nil {
			return res, err
		}
	}

	binChanged := false
	if opts.SourceDir != "" {
		for _, b := range []struct{ src, dst string }{
			{"banger-vsock-agent", AgentPath}, {"bangerd", BangerdPath}, {"banger", BangerPath},
		} {
			changed, err := installBinary(j, filepath.Join(opts.SourceDir, b.src), t.at(b.dst))
			if err != nil {
				return res, err
			}
			if changed {
				binChanged = true
				res.Changed = append(res.Changed, "installed "+t.at(b.dst))
			}
		}
	}

	p := unitParams{Owner: o, Bangerd: BangerdPath, Runtime: systemLayout().RuntimeDir, Jails: systemLayout().JailDir(),
		RestartStatus: sdnotify.RestartExitStatus}
	files := []struct{ path, name, tmpl string }{
		{filepath.Join(unitDir, DaemonUnit), "daemon unit", daemonUnitTemplate},
		{filepath.Join(unitDir, HelperUnit), "helper unit", helperUnitTemplate},
		{sysctlPath, "sysctl drop-in", sysctlTemplate},
		{modulesPath, "modules-load drop-in", modulesTemplate},
		{tmpfilesPath, "tmpfiles drop-in", tmpfilesTemplate},
	}
	unitsChanged := false
	for _, f := range files {
		data, err := render(f.name, f.tmpl, p)
		if err != nil {
			return res, err
		}
		changed, err := writeFile(j, t.at(f.path), data, 0o644)
		if err != nil {
			return res, err
		}
		if changed {
			unitsChanged = true
			res.Changed = append(res.Changed, "wrote "+t.at(f.path))
		}
	}

	meta, err := newMeta(l.InstallMetaPath(), opts)
	if err != nil {
		return res, err
	}
	metaData, err := toml.Marshal(meta)
	if err != nil {
		return res, err
	}
	if changed, err := writeFile(j, l.InstallMetaPath(), metaData, 0o644); err != nil {
		return res, err
	} else if changed {
		res.Changed = append(res.Changed, "wrote "+l.InstallMetaPath())
	}
	mData, err := toml.Marshal(m)
	if err != nil {
		return res, err
	}
	if _, err := writeFile(j, mPath, mData, 0o644); err != nil {
		return res, err
	}

	if opts.Systemctl != nil {
		if err := startUnits(ctx, j, &res, opts.Systemctl, binChanged || unitsChanged); err != nil {
			return res, err
		}
	}
	return res, nil
}

// newMeta is the install.toml to write: this build and owner, keeping the
// first install's InstalledAt when re-run.
func newMeta(path string, opts Options) (installmeta.Meta, error) {
	m := installmeta.Meta{
		Version: opts.Build.Version, Commit: opts.Build.Commit, BuiltAt: opts.Build.BuiltAt,
		OwnerUser: opts.Owner.User, OwnerUID: opts.Owner.UID, OwnerGID: opts.Owner.GID,
		Home: opts.Owner.Home, InstalledAt: opts.Now().UTC().Truncate(time.Second),
	}
	old, err := installmeta.Read(path)
	switch {
	case err == nil:
		m.InstalledAt = old.InstalledAt
	case errors.Is(err, installmeta.ErrNotInstalled):
	default:
		// A corrupt file is replaced; the install is what it describes.
	}
	return m, nil
}

// startUnits reloads systemd, enables both units and (re)starts them, and
// applies the sysctl and modules drop-ins now rather than at next boot.
func startUnits(ctx context.Context, j *journal, res *Result, r system.Runner, changed bool) error {
	if changed {
		if err := systemctl(ctx, r, "daemon-reload"); err != nil {
			return err
		}
		j.add(func() error { return systemctl(context.WithoutCancel(ctx), r, "daemon-reload") })
	}
	// Only units this install enabled are disabled again on rollback.
	var newlyEnabled []string
	for _, u := range []string{DaemonUnit, HelperUnit} {
		if systemctl(ctx, r, "is-enabled", "--quiet", u) != nil {
			newlyEnabled = append(newlyEnabled, u)
		}
	}
	if err := systemctl(ctx, r, "enable", HelperUnit, DaemonUnit); err != nil {
		return err
	}
	if len(newlyEnabled) > 0 {
		j.add(func() error {
			return systemctl(context.WithoutCancel(ctx), r, append([]string{"disable", "--now"}, newlyEnabled...)...)
		})
		res.Changed = append(res.Changed, "enabled "+strings.Join(newlyEnabled, " and "))
	}
	verb := "start"
	if changed {
		verb = "restart"
	}
	resetFailed(ctx, r)
	if err := systemctl(ctx, r, verb, HelperUnit, DaemonUnit); err != nil {
		return err
	}
	if changed {
		res.Changed = append(res.Changed, verb+"ed "+HelperUnit+" and "+DaemonUnit)
	}
	// Drop-ins take effect at boot anyway; failing to apply them now (no
	// dm_snapshot module in this kernel, say) is worth a warning only.
	if err := systemctl(ctx, r, "restart", "systemd-sysctl.service", "systemd-modules-load.service"); err != nil {
		res.Warnings = append(res.Warnings, "applying sysctl and module drop-ins now: "+err.Error())
	}
	return nil
}

// Restart restarts both units, helper first (the daemon needs it).
func Restart(ctx context.Context, r system.Runner) error {
	resetFailed(ctx, r)
	return systemctl(ctx, r, "restart", HelperUnit, DaemonUnit)
}

// resetFailed clears the units' failed state and start-rate counter. A
// daemon that crash-loops (Restart=on-failure every 2 s) exhausts systemd's
// start limit within seconds; from then on systemd refuses every start,
// including the restart the user runs once the cause is fixed ("start of
// the service was attempted too often"). Best effort: a unit that is not
// failed is left as it is, and a real problem shows in the start after.
func resetFailed(ctx context.Context, r system.Runner) {
	_ = systemctl(ctx, r, "reset-failed", HelperUnit, DaemonUnit)
}

// systemctl runs `systemctl ARGS...`; the error names the verb and quotes
// why it failed.
func systemctl(ctx context.Context, r system.Runner, args ...string) error {
	if _, err := system.RunChecked(ctx, r, system.Command{Path: "systemctl", Args: args}); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s is missing", filepath.Base(p))
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// journal collects undo steps while an install runs, and steps to make it
// permanent once it succeeded.
type journal struct {
	undo     []func() error
	onCommit []func() error
}

func (j *journal) add(undo func() error) { j.undo = append(j.undo, undo) }

func (j *journal) rollback() error {
	var errs []error
	for i := len(j.undo) - 1; i >= 0; i-- {
		if err := j.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (j *journal) commit() {
	for _, f := range j.onCommit {
		_ = f() // a leftover .previous backup is harmless
	}
}

// ensureDir makes sure the system path p exists as a directory, creating
// missing parents (0755 root) and recording every directory it created in
// m. When own is set, an existing directory's mode and owner are corrected.
func ensureDir(j *journal, res *Result, m *manifest, t tree, p string, mode fs.FileMode, uid, gid int, own bool) error {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i := range parts {
		sys := "/" + filepath.Join(parts[:i+1]...)
		full := t.at(sys)
		last := i == len(parts)-1
		// Parents may be symlinks (/var/run, merged /usr): root owns them.
		// banger's own directory must be a real one.
		stat := os.Stat
		if last {
			stat = os.Lstat
		}
		fi, err := stat(full)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			want, wu, wg := fs.FileMode(0o755), 0, 0
			if last {
				want, wu, wg = mode, uid, gid
			}
			if err := os.Mkdir(full, 0o700); err != nil {
				return fmt.Errorf("create %s: %w", full, err)
			}
			j.add(func() error { return os.Remove(full) })
			if err := setOwnerMode(full, want, wu, wg); err != nil {
				return err
			}
			if !contains(m.CreatedDirs, sys) {
				m.CreatedDirs = append(m.CreatedDirs, sys)
			}
			res.Changed = append(res.Changed, "created "+full)
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory; move it aside and retry", full)
		case last && own:
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode()&(fs.ModePerm|fs.ModeSticky) == mode && int(st.Uid) == uid && int(st.Gid) == gid {
				continue
			}
			oldMode, oldUID, oldGID := fi.Mode()&(fs.ModePerm|fs.ModeSticky|fs.ModeSetgid|fs.ModeSetuid), int(st.Uid), int(st.Gid)
			if err := setOwnerMode(full, mode, uid, gid); err != nil {
				return err
			}
			j.add(func() error { return setOwnerMode(full, oldMode, oldUID, oldGID) })
			res.Changed = append(res.Changed, fmt.Sprintf("set %s to %s %d:%d", full, mode, uid, gid))
		}
	}
	return nil
}

func setOwnerMode(p string, mode fs.FileMode, uid, gid int) error {
	if err := os.Lchown(p, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	// chmod after chown: chown clears set-id bits.
	if err := os.Chmod(p, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", p, err)
	}
	return nil
}

// writeFile puts data at p (root-owned, mode) unless it is already there,
// and journals how to put back what was there before.
func writeFile(j *journal, p string, data []byte, mode fs.FileMode) (bool, error) {
	old, oldMode, existed, err := readRegular(p)
	if err != nil {
		return false, err
	}
	if existed && bytes.Equal(old, data) && oldMode == mode {
		return false, nil
	}
	if err := system.WriteFileAtomic(p, data, mode); err != nil {
		return false, err
	}
	if existed {
		j.add(func() error { return system.WriteFileAtomic(p, old, oldMode) })
	} else {
		j.add(func() error { return removeIfExists(p) })
	}
	return true, nil
}

func readRegular(p string) (data []byte, mode fs.FileMode, existed bool, err error) {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, false, fmt.Errorf("%s exists and is not a regular file; move it aside and retry", p)
	}
	data, err = os.ReadFile(p)
	return data, fi.Mode().Perm(), true, err
}

// installBinary replaces dst with src unless they are already identical,
// keeping the old binary as a backup until the install commits.
func installBinary(j *journal, src, dst string) (bool, error) {
	same, err := sameContent(src, dst)
	if err != nil {
		return false, err
	}
	if same {
		return false, nil
	}
	r, err := system.AtomicReplace(dst, src, 0o755)
	if err != nil {
		return false, err
	}
	j.add(func() error { return system.RestoreBackup(r) })
	j.onCommit = append(j.onCommit, func() error { return system.RemoveBackup(r) })
	return true, nil
}

func sameContent(a, b string) (bool, error) {
	fb, err := os.Lstat(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	if !fb.Mode().IsRegular() || fa.Size() != fb.Size() || fb.Mode().Perm() != 0o755 {
		return false, nil
	}
	ra, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer func() { _ = ra.Close() }()
	rb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer func() { _ = rb.Close() }()
	bufA, bufB := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(ra, bufA)
		nb, eb := io.ReadFull(rb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if ea != nil || eb != nil {
			return errors.Is(ea, io.EOF) || errors.Is(ea, io.ErrUnexpectedEOF), nil
		}
	}
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
