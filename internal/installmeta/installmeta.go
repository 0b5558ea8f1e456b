// Package installmeta reads and writes /etc/banger/install.toml, the record
// `banger system install` leaves of which build was installed and for whom.
// doctor compares it with the running binaries; the root helper takes the
// owner's uid from it.
package installmeta

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/buildinfo"
	"github.com/banger-dev/banger/internal/paths"
	"github.com/banger-dev/banger/internal/system"
)

// ErrNotInstalled means there is no install metadata: banger runs in user mode.
var ErrNotInstalled = errors.New("banger is not installed system-wide")

// Meta is the content of install.toml.
type Meta struct {
	Version   string `toml:"version"`
	Commit    string `toml:"commit"`
	BuiltAt   string `toml:"built_at"`
	OwnerUser string `toml:"owner_user"`
	OwnerUID  int    `toml:"owner_uid"`
	OwnerGID  int    `toml:"owner_gid"`
	// Home is the owner's home directory. Empty in files written before it
	// existed; omitted when empty so such files round-trip unchanged.
	Home        string    `toml:"home,omitempty"`
	InstalledAt time.Time `toml:"installed_at"`
}

// Build returns the build stamp recorded in m.
func (m Meta) Build() buildinfo.Info {
	return buildinfo.Info{Version: m.Version, Commit: m.Commit, BuiltAt: m.BuiltAt}
}

// OwnedBy reports whether uid is the owner recorded by `banger system
// install` in the system layout: after installing, the owner's daily
// commands (and pkg/client.Default) mean the system daemon, and without this
// each plain `banger vm list` started a second, user-mode daemon with an
// empty database. Root is never switched (a root user-mode banger next to a
// system install is a supported setup).
func OwnedBy(system paths.Layout, uid int) bool {
	if uid == 0 {
		return false
	}
	meta, err := Read(system.InstallMetaPath())
	return err == nil && meta.OwnerUID == uid
}

// Read loads path; a missing file is ErrNotInstalled.
func Read(path string) (Meta, error) {
	var m Meta
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, ErrNotInstalled
	}
	if err != nil {
		return m, fmt.Errorf("read install metadata: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("install metadata %s is corrupt (%v); rerun `sudo banger system install`", path, err)
	}
	return m, nil
}

// Write stores m at path (0644: not secret, and doctor reads it as the owner),
// replacing any previous file atomically and durably.
func Write(path string, m Meta) error {
	data, err := toml.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode install metadata: %w", err)
	}
	return system.WriteFileAtomic(path, data, 0o644)
}

// UpdateBuildInfo records that the installed binaries are now build b,
// keeping everything else (owner, home, InstalledAt) as `banger system
// install` wrote it. `banger update` calls it after swapping binaries.
// A missing file is ErrNotInstalled: there is no install to update.
func UpdateBuildInfo(path string, b buildinfo.Info) (Meta, error) {
	m, err := Read(path)
	if err != nil {
		return m, err
	}
	m.Version, m.Commit, m.BuiltAt = b.Version, b.Commit, b.BuiltAt
	if err := Write(path, m); err != nil {
		return m, fmt.Errorf("update install metadata: %w", err)
	}
	return m, nil
}
