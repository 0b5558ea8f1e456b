package privileged

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/banger-dev/banger/internal/installmeta"
	"github.com/banger-dev/banger/internal/paths"
)

// Identity is the process asking for privileged operations.
type Identity struct {
	UID int
	GID int
}

// ForDaemon picks how a daemon with identity id reaches privileged
// operations:
//
//   - running as root: in-process (Local over backend), owner = itself,
//     launching jailers per jailer (nil: none);
//   - a system install exists (install.toml): the root helper's Client;
//   - otherwise: Unavailable, whose every call says to run
//     `sudo banger system install`.
//
// The second return value says which, for the daemon's startup log line.
func ForDaemon(layout paths.Layout, id Identity, backend Backend, jailer *JailerPolicy) (Ops, string, error) {
	if id.UID == 0 {
		l, err := NewLocal(Policy{
			Owner:             Owner(id),
			StateDir:          layout.StateDir,
			RuntimeDir:        layout.RuntimeDir,
			Protected:         []string{layout.HelperSocketPath(), layout.SocketPath()},
			DeviceMapperMajor: DeviceMapperMajor("/proc/devices"),
			Jailer:            jailer,
		}, backend)
		if err != nil {
			return nil, "", err
		}
		return l, "in-process (daemon runs as root)", nil
	}
	_, err := installmeta.Read(layout.InstallMetaPath())
	switch {
	case err == nil:
		return NewClient(layout.HelperSocketPath()), "root helper at " + layout.HelperSocketPath(), nil
	case errors.Is(err, installmeta.ErrNotInstalled):
		return Unavailable(), "unavailable (not root, no system install)", nil
	default:
		return nil, "", err
	}
}

// Unavailable returns Ops whose every operation fails with ErrNoPrivilege and
// a sentence saying what to do.
func Unavailable() Ops { return unavailable{} }

type unavailable struct{}

// perform implements Ops.
func (unavailable) perform(_ context.Context, op entry, _ any) (any, error) {
	return nil, fmt.Errorf("%w: %s needs root: run `sudo banger system install --owner $USER` once (or run the daemon as root for development)", ErrNoPrivilege, op.what())
}

// DeviceMapperMajor reads device-mapper's block major from a /proc/devices
// style file; 0 when absent (no dm in this kernel) or unreadable.
func DeviceMapperMajor(procDevices string) uint32 {
	data, err := os.ReadFile(procDevices)
	if err != nil {
		return 0
	}
	block := false
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "Block devices:" {
			block = true
			continue
		}
		var major uint32
		var name string
		if block {
			if _, err := fmt.Sscanf(line, "%d %s", &major, &name); err == nil && name == "device-mapper" {
				return major
			}
		}
	}
	return 0
}
