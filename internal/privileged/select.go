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

func (unavailable) err(op string) error {
	return fmt.Errorf("%w: %s needs root: run `sudo banger system install --owner $USER` once (or run the daemon as root for development)", ErrNoPrivilege, op)
}

func (u unavailable) EnsureBridge(context.Context, BridgeSpec) error {
	return u.err("creating the bridge")
}
func (u unavailable) DeleteBridge(context.Context, string) error { return u.err("deleting the bridge") }
func (u unavailable) CreateTap(context.Context, TapSpec) error   { return u.err("creating a tap") }
func (u unavailable) DeleteTap(context.Context, string) error    { return u.err("deleting a tap") }
func (u unavailable) EnsureNAT(context.Context, NATSpec) error   { return u.err("setting up NAT") }
func (u unavailable) RemoveNAT(context.Context, NATSpec) error   { return u.err("removing NAT") }
func (u unavailable) Isolate(context.Context, IsolationSpec) error {
	return u.err("isolating a VM")
}
func (u unavailable) Unisolate(context.Context, IsolationSpec) error {
	return u.err("un-isolating a VM")
}
func (u unavailable) EnableIPForward(context.Context) error { return u.err("enabling IP forwarding") }
func (u unavailable) ConfigureResolver(context.Context, ResolverSpec) error {
	return u.err("configuring DNS")
}
func (u unavailable) RevertResolver(context.Context, string) error { return u.err("reverting DNS") }
func (u unavailable) AttachLoop(context.Context, LoopAttach) (string, error) {
	return "", u.err("attaching a loop device")
}
func (u unavailable) DetachLoop(context.Context, string) error {
	return u.err("detaching a loop device")
}
func (u unavailable) CreateSnapshot(context.Context, SnapshotSpec) (string, error) {
	return "", u.err("creating a device-mapper snapshot")
}
func (u unavailable) RemoveSnapshot(context.Context, string) error {
	return u.err("removing a device-mapper snapshot")
}
func (u unavailable) Chown(context.Context, ChownSpec) error { return u.err("changing a file's owner") }
func (u unavailable) Chmod(context.Context, ChmodSpec) error { return u.err("changing a file's mode") }
func (u unavailable) LaunchJailer(context.Context, JailerLaunch) (JailedVMM, error) {
	return JailedVMM{}, u.err("launching the jailer")
}
func (u unavailable) RemoveJail(context.Context, string) error { return u.err("removing a jail") }

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
