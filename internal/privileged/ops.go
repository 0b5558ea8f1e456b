// Package privileged is banger's privilege boundary: the fixed menu of
// typed operations (Ops) that need root, their validation, and the three
// ways to reach them.
//
//   - Local performs them in-process. bangerd uses it when it runs as root
//     (tests, CI); the root helper uses it behind its socket.
//   - Server is the root helper (`bangerd --root-helper`): it serves Local on
//     a root-owned Unix socket and answers only the install owner's uid,
//     checked with SO_PEERCRED.
//   - Client is what an unprivileged bangerd uses to call the helper; it
//     implements Ops too, so the daemon cannot tell the difference.
//
// Nothing here runs a shell or a generic command, and no operation takes an
// arbitrary path: interface names carry banger's prefix, networks are parsed
// private IPv4 prefixes, files are passed as descriptors the caller already
// opened or resolve beneath banger's runtime directory with no symlinks, and
// the one program started (Firecracker's jailer) is the helper's own choice.
// Each operation reaches the machine through Backend, so the validation and
// transport are tested with a fake and the real effects live in
// internal/network and internal/disk.
package privileged

import (
	"context"
	"errors"
	"net/netip"
	"os"
)

// Ops is the menu of privileged operations. Every implementation validates
// every argument before acting; callers get ErrInvalidArgument for a request
// the policy refuses.
//
// Several bangers may share a host, each with its own bridge. The bridge
// is marked with the instance the implementation serves (its policy's
// state dir and owner, network.Owner), and every network operation
// refuses a bridge marked as another instance's (network.ErrOwnedElsewhere).
type Ops interface {
	// EnsureBridge creates the bridge if missing, marks it as this
	// instance's, gives it the subnet's gateway address (the first host
	// address) and sets it up; idempotent.
	EnsureBridge(ctx context.Context, spec BridgeSpec) error
	// DeleteBridge removes a banger bridge; a missing bridge is not an error.
	DeleteBridge(ctx context.Context, name string) error
	// CreateTap creates a tap owned by UID/GID and enslaves it to Bridge.
	CreateTap(ctx context.Context, spec TapSpec) error
	// DeleteTap removes a banger tap; a missing tap is not an error.
	DeleteTap(ctx context.Context, name string) error
	// EnsureNAT masquerades Subnet leaving through anything but Bridge, in
	// the bridge's own nftables tables; idempotent.
	EnsureNAT(ctx context.Context, spec NATSpec) error
	// RemoveNAT deletes the bridge's nftables tables (NAT, forwarding and
	// isolation rules); missing tables are not an error.
	RemoveNAT(ctx context.Context, spec NATSpec) error
	// Isolate pins one VM's port to its MAC and address and, when
	// spec.Isolated, cuts the VM off from the other VMs (it keeps the
	// host's DNS and, through NAT, the outside); Unisolate undoes it. Both
	// are idempotent.
	Isolate(ctx context.Context, spec IsolationSpec) error
	Unisolate(ctx context.Context, spec IsolationSpec) error
	// EnableIPForward turns on IPv4 forwarding. There is deliberately no
	// "disable": other software on the host (containers) relies on it too.
	EnableIPForward(ctx context.Context) error
	// ConfigureResolver routes queries for Domain (and only those) on Link
	// to Server port 53 (systemd-resolved per-link configuration).
	ConfigureResolver(ctx context.Context, spec ResolverSpec) error
	// RevertResolver drops the per-link DNS configuration of link.
	RevertResolver(ctx context.Context, link string) error
	// AttachLoop attaches a loop device to the already-open backing file and
	// returns the device path (/dev/loopN).
	AttachLoop(ctx context.Context, spec LoopAttach) (string, error)
	// DetachLoop detaches a loop device whose backing file is in banger's
	// state directory.
	DetachLoop(ctx context.Context, device string) error
	// CreateSnapshot creates the device-mapper snapshot Name over the origin
	// and COW loop devices, gives the install owner access to it, and
	// returns its device path.
	CreateSnapshot(ctx context.Context, spec SnapshotSpec) (string, error)
	// RemoveSnapshot removes a banger device-mapper snapshot; a missing one
	// is not an error.
	RemoveSnapshot(ctx context.Context, name string) error
	// Chown changes the owner of a socket or device beneath the runtime dir.
	Chown(ctx context.Context, spec ChownSpec) error
	// Chmod changes the permission bits of a socket or device beneath the
	// runtime dir.
	Chmod(ctx context.Context, spec ChmodSpec) error
	// LaunchJailer stages a VM's files into a fresh jail and starts
	// Firecracker under the jailer, which drops to the owner. It returns
	// once the jailer runs; the caller watches the pid (see jail.go).
	LaunchJailer(ctx context.Context, spec JailerLaunch) (JailedVMM, error)
	// RemoveJail stops the VM's jailed Firecracker if it still runs and
	// removes its jail; a missing jail is not an error.
	RemoveJail(ctx context.Context, vmID string) error
}

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
// address banger gave it. Isolate admits the VM's port (firewall.Admit):
// the port may then send only IPv4 and ARP from that MAC and address, for
// every VM; with Isolated the VM is also cut off from the other VMs.
// Unisolate (firewall.Evict) removes both.
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
	// zeros (device "<Name>-origin"), as disk.Overlays does.
	SizeBytes int64 `json:"size_bytes"`
}

// ChownSpec changes the owner of Path, an absolute path beneath the runtime
// dir naming a socket or an allowed device node.
type ChownSpec struct {
	Path string `json:"path"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// ChmodSpec sets the permission bits of Path (see ChownSpec). Only owner and
// group bits may be set: nothing banger makes is for other users.
type ChmodSpec struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

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
