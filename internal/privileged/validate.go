package privileged

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/banger-dev/banger/internal/disk"
	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/dns"
)

// These validators are pure: they look only at the request. Checks that need
// the file system or the policy (owner uid, resolved paths, loop backing
// files) are in Local.

// Limits on what banger ever asks for; anything outside is refused rather
// than clamped. Interface names, subnets and device names follow the rules
// of internal/network and internal/disk, which own them.
const (
	maxPathLen      = 1024
	maxComponentLen = 255
	maxLoopIndex    = 1 << 20
	maxID           = 1<<31 - 2 // (uid_t)-1 means "unchanged" to chown
	maxDiskBytes    = 64 << 40  // 64 TiB: far past any VM disk, short of overflow
	// maxSnapshotID keeps "banger-<id>-origin" (the extended origin the
	// backend may add) within disk.ValidName's 63 characters.
	maxSnapshotID = 49
)

// argError marks a validation failure from another package (network, disk)
// as ErrInvalidArgument without repeating its message.
type argError struct{ err error }

func (e argError) Error() string   { return e.err.Error() }
func (e argError) Unwrap() []error { return []error{ErrInvalidArgument, e.err} }

func asArg(err error) error {
	if err == nil {
		return nil
	}
	return argError{err}
}

// ValidBridgeName accepts a bridge name banger manages ("banger0"), per
// internal/network; foreign interfaces (eth0, docker0) are refused.
func ValidBridgeName(name string) error { return asArg(network.ValidateBridgeName(name)) }

// ValidTapName accepts a tap name banger manages ("bgt-…"), per
// internal/network.
func ValidTapName(name string) error { return asArg(network.ValidateTapName(name)) }

// Validate checks the spec's shape.
func (s BridgeSpec) Validate() error {
	if err := network.ValidateBridgeName(s.Name); err != nil {
		return asArg(err)
	}
	return asArg(network.ValidateSubnet(s.Subnet))
}

// Validate checks the spec's shape.
func (s TapSpec) Validate() error {
	if err := network.ValidateTapName(s.Name); err != nil {
		return asArg(err)
	}
	if err := network.ValidateBridgeName(s.Bridge); err != nil {
		return asArg(err)
	}
	return validIDs(s.UID, s.GID)
}

// Validate checks the spec's shape.
func (s NATSpec) Validate() error {
	if err := network.ValidateBridgeName(s.Bridge); err != nil {
		return asArg(err)
	}
	return asArg(network.ValidateSubnet(s.Subnet))
}

// Validate checks the spec's shape.
func (s ResolverSpec) Validate() error {
	if err := network.ValidateBridgeName(s.Link); err != nil {
		return asArg(err)
	}
	if !s.Server.Is4() || !s.Server.IsPrivate() {
		return invalid("DNS server %q must be a private IPv4 address such as 172.30.0.1", s.Server.String())
	}
	return asArg(dns.ValidRoutingDomain(s.Domain))
}

// Validate checks the spec's shape.
func (s IsolationSpec) Validate() error {
	if err := network.ValidateBridgeName(s.Bridge); err != nil {
		return asArg(err)
	}
	if err := network.ValidateTapName(s.Tap); err != nil {
		return asArg(err)
	}
	if !s.Addr.Is4() || !s.Addr.IsPrivate() {
		return invalid("VM address %q must be a private IPv4 address such as 172.30.0.2", s.Addr.String())
	}
	_, err := network.ParseGuestMAC(s.MAC)
	return asArg(err)
}

// Validate checks the spec's shape; the backing file is checked by Local.
func (s LoopAttach) Validate() error {
	if s.Backing == nil {
		return invalid("loop attach needs an open backing file")
	}
	return asArg(disk.ValidName(s.Name))
}

// Validate checks the spec's shape.
func (s SnapshotSpec) Validate() error {
	if err := ValidSnapshotName(s.Name); err != nil {
		return err
	}
	if err := ValidLoopDevice(s.Origin); err != nil {
		return err
	}
	if err := ValidLoopDevice(s.COW); err != nil {
		return err
	}
	if s.Origin == s.COW {
		return invalid("snapshot origin and COW device are both %s", s.Origin)
	}
	if s.SizeBytes < 0 || s.SizeBytes%512 != 0 || s.SizeBytes > maxDiskBytes {
		return invalid("snapshot size %d bytes must be a multiple of 512 between 0 and %d", s.SizeBytes, int64(maxDiskBytes))
	}
	return nil
}

// Validate checks the spec's shape; where the path leads is checked by Local.
func (s ChownSpec) Validate() error {
	if err := validPathShape(s.Path); err != nil {
		return err
	}
	return validIDs(s.UID, s.GID)
}

// Validate checks the spec's shape; where the path leads is checked by Local.
func (s ChmodSpec) Validate() error {
	if err := validPathShape(s.Path); err != nil {
		return err
	}
	if s.Mode&^0o770 != 0 {
		return invalid("mode %#o is not allowed: only owner and group permission bits (within 0770) may be set", s.Mode)
	}
	return nil
}

// ValidLoopDevice accepts exactly /dev/loopN.
func ValidLoopDevice(dev string) error {
	n, ok := strings.CutPrefix(dev, "/dev/loop")
	if !ok || n == "" || len(n) > 7 || (n[0] == '0' && len(n) > 1) {
		return invalid("%q is not a loop device path such as /dev/loop3", dev)
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 || i >= maxLoopIndex || strconv.Itoa(i) != n {
		return invalid("%q is not a loop device path such as /dev/loop3", dev)
	}
	return nil
}

// ValidSnapshotName accepts device-mapper names for banger's snapshots:
// "banger-" then up to 49 lower-case letters and digits. No dashes, so the
// "<name>-origin" device the backend may add can never be another
// snapshot's name.
func ValidSnapshotName(name string) error {
	id, ok := strings.CutPrefix(name, disk.NamePrefix)
	if !ok || id == "" || len(id) > maxSnapshotID {
		return invalid("device-mapper name %q is not banger's: it must be %q then 1 to %d of a-z and 0-9", name, disk.NamePrefix, maxSnapshotID)
	}
	for _, r := range id {
		if !isLowerAlnum(r) {
			return invalid("device-mapper name %q is not banger's: it must be %q then 1 to %d of a-z and 0-9", name, disk.NamePrefix, maxSnapshotID)
		}
	}
	return nil
}

func validIDs(uid, gid int) error {
	if uid < 0 || uid > maxID || gid < 0 || gid > maxID {
		return invalid("uid %d / gid %d out of range", uid, gid)
	}
	return nil
}

// validPathShape checks a runtime path lexically: absolute, clean, and made
// of plain names. Where it leads is decided by resolving it beneath the
// runtime dir (resolveBeneath); this only stops junk early and keeps logs
// free of control characters.
func validPathShape(p string) error {
	if p == "" || len(p) > maxPathLen {
		return invalid("path must be 1 to %d bytes", maxPathLen)
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return invalid("path %q must be absolute and clean (no \"..\", \"//\" or trailing \"/\")", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > maxComponentLen {
			return invalid("path %q has a component longer than %d bytes", p, maxComponentLen)
		}
		for _, r := range c {
			if !isLowerAlnum(r) && (r < 'A' || r > 'Z') && r != '-' && r != '_' && r != '.' {
				return invalid("path %q may contain only letters, digits, '-', '_', '.' and '/'", p)
			}
		}
	}
	return nil
}

func isLowerAlnum(r rune) bool { return (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
