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
	"path/filepath"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// ErrNotInstalled means there is no install metadata: banger runs in user mode.
var ErrNotInstalled = errors.New("banger is not installed system-wide")

// Meta is the content of install.toml.
type Meta struct {
	Version     string    `toml:"version"`
	Commit      string    `toml:"commit"`
	BuiltAt     string    `toml:"built_at"`
	OwnerUser   string    `toml:"owner_user"`
	OwnerUID    int       `toml:"owner_uid"`
	OwnerGID    int       `toml:"owner_gid"`
	InstalledAt time.Time `toml:"installed_at"`
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
// replacing any previous file atomically.
func Write(path string, m Meta) error {
	data, err := toml.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
