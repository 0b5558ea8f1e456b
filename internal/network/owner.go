package network

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// Owner is one banger instance on the host: the state directory it keeps
// its VMs in (what makes it that instance) and, for messages, the uid it
// serves. Two daemons on one host — two users, or a system install next to
// a root user-mode daemon — are two owners, and each touches only the
// bridge and taps marked with its own state directory.
//
// The mark is the interface's alias (IFLA_IFALIAS, `ip link show` prints it
// as "alias"): "banger uid=1000 state=/var/lib/banger". The root helper
// sets it from its own policy, never from what a caller sends.
type Owner struct {
	UID      int
	StateDir string
}

const (
	aliasPrefix = "banger uid="
	aliasState  = " state="
	// maxAliasLen is IFALIASZ minus the terminating NUL.
	maxAliasLen = 255
)

// Validate checks that the owner can be written as an alias: a uid and an
// absolute, clean state directory short enough for IFALIASZ.
func (o Owner) Validate() error {
	switch {
	case o.UID < 0:
		return fmt.Errorf("%w: owner uid %d is negative", ErrInvalid, o.UID)
	case !filepath.IsAbs(o.StateDir) || filepath.Clean(o.StateDir) != o.StateDir:
		return fmt.Errorf("%w: owner state dir %q must be an absolute, clean path", ErrInvalid, o.StateDir)
	case strings.ContainsFunc(o.StateDir, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("%w: owner state dir %q contains control characters", ErrInvalid, o.StateDir)
	case len(o.Alias()) > maxAliasLen:
		return fmt.Errorf("%w: owner state dir %q is longer than an interface alias can record (%d bytes with its uid)", ErrInvalid, o.StateDir, maxAliasLen)
	}
	return nil
}

// Alias is the owner as recorded on its bridge and taps.
func (o Owner) Alias() string {
	return aliasPrefix + strconv.Itoa(o.UID) + aliasState + o.StateDir
}

// String names the owner for messages.
func (o Owner) String() string {
	return fmt.Sprintf("state dir %s, uid %d", o.StateDir, o.UID)
}

// Same reports whether o and other are the same instance: the state
// directory decides (an uninstall running as root tears down the owner's
// bridge).
func (o Owner) Same(other Owner) bool { return o.StateDir == other.StateDir }

// ParseOwnerAlias reads an alias written by Owner.Alias; ok is false for
// an empty alias (an interface made by a banger that did not mark them)
// or one banger did not write.
func ParseOwnerAlias(alias string) (Owner, bool) {
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok {
		return Owner{}, false
	}
	uid, dir, ok := strings.Cut(rest, aliasState)
	if !ok {
		return Owner{}, false
	}
	n, err := strconv.Atoi(uid)
	if err != nil || n < 0 || !filepath.IsAbs(dir) {
		return Owner{}, false
	}
	return Owner{UID: n, StateDir: dir}, true
}

// ErrOwnedElsewhere means an interface banger would use carries another
// banger instance's mark; errors.As with *OwnedError says whose.
var ErrOwnedElsewhere = errors.New("interface belongs to another banger")

// OwnedError is a bridge or tap of another banger instance.
type OwnedError struct {
	Kind, Name string
	Owner      Owner
}

func (e *OwnedError) Error() string {
	if e.Kind == "bridge" {
		return fmt.Sprintf("bridge %s belongs to another banger (%s); set network.bridge and network.subnet in your config to use another", e.Name, e.Owner)
	}
	return fmt.Sprintf("%s %s belongs to another banger (%s)", e.Kind, e.Name, e.Owner)
}

// Unwrap makes errors.Is(err, ErrOwnedElsewhere) and
// errors.Is(err, ErrInterfaceConflict) true.
func (e *OwnedError) Unwrap() []error { return []error{ErrOwnedElsewhere, ErrInterfaceConflict} }

// checkOwner refuses link when its alias names another instance than
// owner. An unmarked link (empty or foreign alias) passes: it is adopted.
func checkOwner(kind string, link netlink.Link, owner Owner) error {
	if o, ok := ParseOwnerAlias(link.Attrs().Alias); ok && !o.Same(owner) {
		return &OwnedError{Kind: kind, Name: link.Attrs().Name, Owner: o}
	}
	return nil
}

// mark records owner on link unless it already says so.
func mark(link netlink.Link, alias string) error {
	if link.Attrs().Alias == alias {
		return nil
	}
	if err := netlink.LinkSetAlias(link, alias); err != nil {
		return fmt.Errorf("mark %s as %q: %w", link.Attrs().Name, alias, err)
	}
	return nil
}

// LinkOwner returns the owner marked on the named interface; ok is false
// when it carries no banger mark. A missing interface is an error that
// wraps netlink.LinkNotFoundError. It needs no privilege.
func LinkOwner(name string) (Owner, bool, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return Owner{}, false, fmt.Errorf("look up %s: %w", name, err)
	}
	o, ok := ParseOwnerAlias(link.Attrs().Alias)
	return o, ok, nil
}

// CheckBridgeOwner refuses a bridge that exists and is marked as another
// instance's. A missing or unmarked bridge passes.
func CheckBridgeOwner(name string, owner Owner) error {
	if err := ValidateBridgeName(name); err != nil {
		return err
	}
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	return checkOwner("bridge", link, owner)
}
