package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"

	"github.com/pelletier/go-toml/v2"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// Sources are the files one installation's configuration comes from. In
// user mode there is one file. In system mode root's /etc/banger/config.toml
// comes first and the install owner's own file is laid over it, so the owner
// changes their settings without sudo; the owner's file may set only the
// keys OwnerMaySet allows.
type Sources struct {
	// Root is the installation's file: root's in system mode, the user's in
	// user mode.
	Root string `json:"root"`
	// Owner is the owner's layer (system mode only; "" for none).
	Owner string `json:"owner,omitempty"`
}

// SourcesFor returns the files layout reads. The owner's home comes from
// the install metadata, not $HOME: root (sudo), the owner and the daemon
// (which runs as the owner under systemd) must all name the same file.
func SourcesFor(layout paths.Layout) Sources {
	s := Sources{Root: layout.ConfigFile()}
	if layout.Mode != paths.ModeSystem {
		return s
	}
	meta, err := installmeta.Read(layout.InstallMetaPath())
	if err != nil {
		return s
	}
	s.Owner = layout.OwnerConfigFile(ownerHome(meta))
	return s
}

// ownerHome is the home install.toml records, or the account's (files
// written before install.toml had the home).
func ownerHome(m installmeta.Meta) string {
	if m.Home != "" {
		return m.Home
	}
	u, err := user.LookupId(strconv.Itoa(m.OwnerUID))
	if err != nil {
		return ""
	}
	return u.HomeDir
}

// OwnerMaySet reports whether the owner's layer may set key. Only keys
// that change nothing the root helper does and nothing outside the owner's
// own VMs qualify; the rest — the VMM and its binaries (a configured jailer
// is launched by root), the bridge, subnet, network switch and DNS domain
// (the helper creates the bridge and NAT and routes the domain in the
// host's resolver) — stay root's. A key added later is root's until it is
// listed here.
func OwnerMaySet(key string) bool {
	switch key {
	case "daemon.log_level",
		"vm.image", "vm.vcpus", "vm.memory_mib", "vm.disk_size",
		"vm.stop_timeout", "vm.boot_timeout", "vm.console_log_max",
		"qemu.accel",
		"image.debian_mirror", "image.suite", "image.golden_snapshots",
		"sync.paths":
		return true
	}
	return false
}

// OwnerLayerError is a problem with the owner's layer alone: root's file
// loaded, so the daemon can still run with it.
type OwnerLayerError struct {
	File string
	Err  error
}

func (e *OwnerLayerError) Error() string { return fmt.Sprintf("config %s: %v", e.File, e.Err) }

func (e *OwnerLayerError) Unwrap() error { return e.Err }

// LoadSources reads s.Root over the defaults, then s.Owner over that, and
// validates the result. Problems in the owner's layer come back as
// *OwnerLayerError.
func LoadSources(s Sources) (Config, error) {
	cfg, err := Load(s.Root)
	if err != nil || s.Owner == "" {
		return cfg, err
	}
	data, err := os.ReadFile(s.Owner)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, &OwnerLayerError{File: s.Owner, Err: err}
	}
	return ApplyOwnerLayer(cfg, s.Owner, data)
}

// ApplyOwnerLayer decodes the owner's layer data (from file) over base and
// validates the result; base is returned unchanged with an
// *OwnerLayerError when the layer is bad or sets a key that is root's.
func ApplyOwnerLayer(base Config, file string, data []byte) (Config, error) {
	cfg := base
	if err := Parse(data, &cfg); err != nil {
		return base, &OwnerLayerError{File: file, Err: err}
	}
	keys, err := fileKeys(data)
	if err != nil {
		return base, &OwnerLayerError{File: file, Err: err}
	}
	for _, k := range keys {
		if !OwnerMaySet(k) {
			return base, &OwnerLayerError{File: file, Err: RootOnlyError(k)}
		}
	}
	return cfg, nil
}

// RootOnlyError is the one sentence for an owner setting a key that is root's.
func RootOnlyError(key string) error {
	return fmt.Errorf("key %q is root's to set (it changes what the root helper does or what other users share); remove it here and have root set it in /etc/banger/config.toml", key)
}

// fileKeys lists the dotted keys a TOML document sets, sorted.
func fileKeys(data []byte) ([]string, error) {
	var doc map[string]any
	if err := toml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, describeDecodeError(err)
	}
	flat := map[string]any{}
	flatten("", doc, flat)
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// flatten turns nested tables into "table.key" entries of out.
func flatten(prefix string, m map[string]any, out map[string]any) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			flatten(prefix+k+".", sub, out)
			continue
		}
		out[prefix+k] = v
	}
}
