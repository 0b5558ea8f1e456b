// Package paths is the one place that knows where banger keeps things. A
// Layout describes either the user-mode layout (XDG directories, used for
// development, tests and CI) or the system-mode layout installed by
// `banger system install`; everything else asks the Layout.
package paths

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Mode says which layout is in use.
type Mode string

// The two layouts.
const (
	ModeUser   Mode = "user"
	ModeSystem Mode = "system"
)

// Layout is the set of directories one banger installation uses.
type Layout struct {
	Mode Mode `json:"mode"`
	// ConfigDir holds config.toml (and, in user mode, SSH keys and known_hosts).
	ConfigDir string `json:"config_dir"`
	// StateDir holds the SQLite database, images and per-VM disks: what must
	// survive a reboot.
	StateDir string `json:"state_dir"`
	// RuntimeDir holds sockets, the daemon lock and per-VM run dirs: what a
	// reboot may erase.
	RuntimeDir string `json:"runtime_dir"`
	// SystemRoot prefixes the system-wide paths (/etc/banger, /run/banger) so
	// tests can point them at a temporary tree. Empty means "/".
	SystemRoot string `json:"system_root,omitempty"`
}

// Env looks up an environment variable; os.Getenv in production, a map in tests.
type Env func(key string) string

// User returns the user-mode layout from the XDG variables, falling back to
// the XDG defaults under home. When XDG_RUNTIME_DIR is unset (e.g. over
// plain su), the runtime dir falls back to /tmp/banger-<uid>.
func User(env Env, home string, uid int) (Layout, error) {
	if home == "" {
		return Layout{}, errors.New("cannot find the home directory: set HOME or the XDG_*_HOME variables")
	}
	pick := func(key, fallback string) string {
		if v := env(key); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "banger")
		}
		return fallback
	}
	runtime := filepath.Join(os.TempDir(), "banger-"+strconv.Itoa(uid))
	if v := env("XDG_RUNTIME_DIR"); v != "" && filepath.IsAbs(v) {
		runtime = filepath.Join(v, "banger")
	}
	return Layout{
		Mode:       ModeUser,
		ConfigDir:  pick("XDG_CONFIG_HOME", filepath.Join(home, ".config", "banger")),
		StateDir:   pick("XDG_STATE_HOME", filepath.Join(home, ".local", "state", "banger")),
		RuntimeDir: runtime,
		SystemRoot: env("BANGER_SYSTEM_ROOT"),
	}, nil
}

// System returns the system-mode layout rooted at root ("" or "/" for the real
// system; a temporary directory in tests).
func System(root string) Layout {
	return Layout{
		Mode:       ModeSystem,
		ConfigDir:  filepath.Join(rootOr(root), "etc", "banger"),
		StateDir:   filepath.Join(rootOr(root), "var", "lib", "banger"),
		RuntimeDir: filepath.Join(rootOr(root), "run", "banger"),
		SystemRoot: root,
	}
}

// Detect returns the system layout when system is true, else the user layout
// for the current process.
func Detect(system bool) (Layout, error) {
	if system {
		return System(os.Getenv("BANGER_SYSTEM_ROOT")), nil
	}
	home, _ := os.UserHomeDir()
	return User(os.Getenv, home, os.Getuid())
}

func rootOr(root string) string {
	if root == "" {
		return "/"
	}
	return root
}

// ConfigFile is the TOML configuration file.
func (l Layout) ConfigFile() string { return filepath.Join(l.ConfigDir, "config.toml") }

// OwnerConfigFile is the install owner's own configuration layer in system
// mode, laid over root's ConfigFile: ~owner/.config/banger/config.toml,
// which the owner edits without sudo and the daemon (running as the owner)
// reads. home is the owner's home directory; "" in user mode, where the
// one config file is the user's already.
func (l Layout) OwnerConfigFile(home string) string {
	if l.Mode != ModeSystem || home == "" {
		return ""
	}
	return filepath.Join(home, ".config", "banger", "config.toml")
}

// DBPath is the SQLite state database.
func (l Layout) DBPath() string { return filepath.Join(l.StateDir, "banger.db") }

// SocketPath is the daemon's API socket.
func (l Layout) SocketPath() string { return filepath.Join(l.RuntimeDir, "bangerd.sock") }

// LockPath is the file the running daemon holds an exclusive lock on, so a
// second daemon is refused and a socket left by a crash can be told apart
// from a live one.
func (l Layout) LockPath() string { return filepath.Join(l.RuntimeDir, "bangerd.lock") }

// DaemonLogPath is where a daemon started on demand by the CLI writes its log.
func (l Layout) DaemonLogPath() string { return filepath.Join(l.StateDir, "bangerd.log") }

// OwnerDir holds the owner's banger SSH key and the managed known_hosts.
// It must be writable by the daemon, which runs as the owner: the config dir
// in user mode, the state dir in system mode (/etc/banger is root's).
func (l Layout) OwnerDir() string {
	if l.Mode == ModeSystem {
		return l.StateDir
	}
	return l.ConfigDir
}

// ImagesDir holds image kernels, initrds and rootfs files.
func (l Layout) ImagesDir() string { return filepath.Join(l.StateDir, "images") }

// VMStateDir holds one VM's persistent files (disk, serial log).
func (l Layout) VMStateDir(id string) string { return filepath.Join(l.StateDir, "vms", id) }

// VMsStateDir is the parent of every VMStateDir.
func (l Layout) VMsStateDir() string { return filepath.Join(l.StateDir, "vms") }

// SnapshotDir holds one snapshot's files (VMM state, guest memory, disk).
func (l Layout) SnapshotDir(id string) string { return filepath.Join(l.StateDir, "snapshots", id) }

// SnapshotsDir is the parent of every SnapshotDir.
func (l Layout) SnapshotsDir() string { return filepath.Join(l.StateDir, "snapshots") }

// VMRunDir holds one VM's sockets while it runs.
func (l Layout) VMRunDir(id string) string { return filepath.Join(l.RuntimeDir, "vms", id) }

// VMsRunDir is the parent of every VMRunDir.
func (l Layout) VMsRunDir() string { return filepath.Join(l.RuntimeDir, "vms") }

// JailDir is the jailer's chroot base: one jail per jailed Firecracker,
// built by the jailer as <JailDir>/<exec name>/<vm id>/root. In system mode
// it is /var/lib/banger-jail, a root-owned sibling of the state dir: the
// jailer works in it as root, so no directory on the way may be the owner's
// (the owner could swap a path component for a symlink), yet it must be on
// the state dir's file system so disks are hard-linked in, not copied. In
// user mode (a root daemon in tests and development) it sits in the state dir.
func (l Layout) JailDir() string {
	if l.Mode == ModeSystem {
		return filepath.Join(rootOr(l.SystemRoot), "var", "lib", "banger-jail")
	}
	return filepath.Join(l.StateDir, "jail")
}

// InstallMetaPath is /etc/banger/install.toml, written by `banger system
// install`; it exists in both modes' view because the CLI compares itself
// against the installed build.
func (l Layout) InstallMetaPath() string {
	return filepath.Join(rootOr(l.SystemRoot), "etc", "banger", "install.toml")
}

// HelperSocketPath is the root helper's socket.
func (l Layout) HelperSocketPath() string {
	return filepath.Join(rootOr(l.SystemRoot), "run", "banger", "root-helper.sock")
}

// Ensure creates the layout's directories with private permissions.
func (l Layout) Ensure() error {
	for _, d := range []string{l.ConfigDir, l.StateDir, l.RuntimeDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	return nil
}
