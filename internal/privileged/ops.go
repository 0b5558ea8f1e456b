// Package privileged is banger's privilege boundary: the fixed menu of
// typed operations that need root (declared once, in menu.go), their
// validation, and the three ways to reach them (Ops, used through Call and
// Do).
//
//   - Local performs them in-process. bangerd uses it when it runs as root
//     (tests, CI); the root helper uses it behind its socket.
//   - Server is the root helper (`bangerd --root-helper`): it serves Local on
//     a root-owned Unix socket and answers only the install owner's uid,
//     checked with SO_PEERCRED.
//   - Client is what an unprivileged bangerd uses to call the helper; it
//     is an Ops too, so the daemon cannot tell the difference.
//
// Several bangers may share a host, each with its own bridge. The bridge
// is marked with the instance an implementation serves (its policy's
// state dir and owner, network.Owner), and every network operation
// refuses a bridge marked as another instance's (network.ErrOwnedElsewhere).
//
// Nothing here runs a shell or a generic command, and no operation takes an
// arbitrary path: interface names carry banger's prefix, networks are parsed
// private IPv4 prefixes, files are passed as descriptors the caller already
// opened or resolve beneath banger's runtime directory with no symlinks, and
// the one program started (Firecracker's jailer) is the helper's own choice.
// Each operation's effect on the machine is declared with it in the menu
// and reached through Local's Backend, so the validation and transport are
// tested with a recording fake; the real effects (SystemBackend) live in
// internal/network and internal/disk.
package privileged

import (
	"errors"
	"net/netip"
	"os"
)

// BridgeSpec describes banger's bridge.
type BridgeSpec struct {
	// Name is a banger bridge name (banger0, banger-dev, …).
	Name string `json:"name"`
	// Subnet is the VM network, e.g. 172.30.0.0/24.
	Subnet netip.Prefix `json:"subnet"`
}

// TapSpec describes one VM's tap device.
type TapSpec struct {
	// Name is a banger tap name ("bgt-…", see network.TapName).
	Name   string `json:"name"`
	Bridge string `json:"bridge"`
	// UID and GID own the tap so the unprivileged VMM can open it; they must
	// be the install owner's.
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// NATSpec describes the masquerade rule for the VM subnet.
type NATSpec struct {
	Subnet netip.Prefix `json:"subnet"`
	Bridge string       `json:"bridge"`
}

// IsolationSpec names one VM on the bridge: its tap, and the MAC and
// address banger gave it. firewall.isolate admits the VM's port (firewall.Admit):
// the port may then send only IPv4 and ARP from that MAC and address, for
// every VM; with Isolated the VM is also cut off from the other VMs.
// firewall.unisolate (firewall.Evict) removes both.
type IsolationSpec struct {
	// Bridge is the VM's bridge, whose tables admit it.
	Bridge string     `json:"bridge"`
	Tap    string     `json:"tap"`
	MAC    string     `json:"mac"`
	Addr   netip.Addr `json:"addr"`
	// Isolated cuts the VM off from the other VMs (`vm create --isolated`).
	Isolated bool `json:"isolated,omitempty"`
}

// ResolverSpec routes DNS queries for Domain on Link to Server.
type ResolverSpec struct {
	// Link is banger's bridge.
	Link string `json:"link"`
	// Server is banger's name server on the bridge (the gateway), port 53.
	Server netip.Addr `json:"server"`
	Domain string     `json:"domain"`
}

// LoopAttach asks for a loop device over Backing. The caller opens the file
// itself, so the helper can only attach what the owner could already read
// (and write, unless ReadOnly); across the helper socket the descriptor
// travels as SCM_RIGHTS.
type LoopAttach struct {
	Backing *os.File `json:"-"`
	// Name is stored as the device's lo_file_name so banger finds its own
	// loops again ("banger-<id>-base"; see disk.ValidName).
	Name     string `json:"name"`
	ReadOnly bool   `json:"read_only"`
}

// SnapshotSpec describes a device-mapper snapshot of Origin with writes going
// to COW. Both are loop devices over files in banger's state dir.
type SnapshotSpec struct {
	// Name is "banger-<id>" (see ValidSnapshotName).
	Name   string `json:"name"`
	Origin string `json:"origin"`
	COW    string `json:"cow"`
	// SizeBytes is the disk size the VM sees; 0 means the origin's size.
	// When larger than the origin, the backend extends the origin with
	// zeros (device "<Name>-origin").
	SizeBytes int64 `json:"size_bytes"`
}

// ChownSpec changes the owner of Path, an absolute path beneath the runtime
// dir naming a socket or an allowed device node.
type ChownSpec struct {
	Path string `json:"path"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	// target is Path resolved beneath the runtime dir and checked (an
	// O_PATH descriptor): what the effect changes. Set by Local only.
	target *os.File
}

// ChmodSpec sets the permission bits of Path (see ChownSpec). Only owner and
// group bits may be set: nothing banger makes is for other users.
type ChmodSpec struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
	// target: see ChownSpec.
	target *os.File
}

// Requests and results of operations that take or return one value.
type (
	// Named names a bridge, a tap or a snapshot.
	Named struct {
		Name string `json:"name"`
	}
	// LinkRef names the link whose resolver configuration is reverted.
	LinkRef struct {
		Link string `json:"link"`
	}
	// DeviceRef names a loop device (/dev/loopN).
	DeviceRef struct {
		Device string `json:"device"`
	}
	// VMRef names one VM's jail.
	VMRef struct {
		VMID string `json:"vm_id"`
	}
	// DevicePath is the device loop.attach and snapshot.create made.
	DevicePath struct {
		Device string `json:"device"`
	}
)

// Owner is the uid/gid the privileged side serves and hands things to.
type Owner struct {
	UID int `json:"uid"`
	GID int `json:"gid"`
}

// HelperInfo is what the root helper reports about itself (for doctor and
// `banger system status`).
type HelperInfo struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
	Commit  string `json:"commit"`
	BuiltAt string `json:"built_at"`
	// OwnerUID is the only uid the helper serves.
	OwnerUID int `json:"owner_uid"`
	// Jailer is the jailer binary the helper launches; empty when it
	// launches none (firecracker.jailer unset when it started).
	Jailer string `json:"jailer,omitempty"`
}

// Sentinel errors callers branch on.
var (
	// ErrInvalidArgument: the request broke the policy; nothing was done.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrRefused: the helper does not serve the calling uid.
	ErrRefused = errors.New("refused")
	// ErrNotAvailable: this build or host cannot perform the operation.
	ErrNotAvailable = errors.New("not available")
	// ErrUnreachable: nothing answers on the helper socket.
	ErrUnreachable = errors.New("root helper unreachable")
	// ErrNoPrivilege: the daemon is neither root nor has a helper installed.
	ErrNoPrivilege = errors.New("no privileged helper")
)
