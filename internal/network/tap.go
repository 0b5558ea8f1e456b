package network

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CreateTap makes a persistent tap device owned by ownerUID/ownerGID, so
// an unprivileged VMM running as that user can attach to it with
// TUNSETIFF, joins it to bridge and sets it up. It is idempotent: an
// existing tap of that name with the same owner is re-attached and set up.
// A missing bridge is ErrNoBridge; an existing interface of that name that
// is not a single-queue tap with this owner is ErrInterfaceConflict, and so
// is a tap marked as another banger instance's (*OwnedError).
//
// The tap is marked with the bridge's owner (its alias, see Owner), so the
// daemon that made it, and only that one, later recognises it as its own
// whichever bridge it ends up on.
//
// The tap is created single-queue and without a fixed header mode: the
// VMM chooses IFF_NO_PI/IFF_VNET_HDR when it opens it (Firecracker and
// QEMU both do), and only the multi-queue flag must match at open time.
func CreateTap(ctx context.Context, name, bridge string, ownerUID, ownerGID int) error {
	if err := createTap(ctx, name, bridge, ownerUID, ownerGID); err != nil {
		return fmt.Errorf("create tap %s on %s: %w", name, bridge, err)
	}
	return nil
}

func createTap(ctx context.Context, name, bridge string, uid, gid int) error {
	if err := ValidateTapName(name); err != nil {
		return err
	}
	if err := ValidateBridgeName(bridge); err != nil {
		return err
	}
	// -1 (and so MaxUint32) means "no owner" to the kernel: refuse it, or
	// the tap would be open to root only and the VMM would fail later.
	if uid < 0 || uid >= math.MaxUint32 || gid < 0 || gid >= math.MaxUint32 {
		return fmt.Errorf("%w: owner %d:%d is not a valid uid:gid", ErrInvalid, uid, gid)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	br, err := bridgeByName(bridge)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("%w: %s (ensure the bridge first)", ErrNoBridge, bridge)
	}
	if err != nil {
		return err
	}

	tap, err := tapByName(name)
	created := false
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		attrs.MasterIndex = br.Attrs().Index
		err = netlink.LinkAdd(&netlink.Tuntap{
			LinkAttrs: attrs,
			Mode:      netlink.TUNTAP_MODE_TAP,
			// A non-zero Flags keeps the library from adding its
			// defaults; IFF_TUN_EXCL makes a concurrent create fail
			// instead of silently sharing the device.
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_TUN_EXCL,
			Owner: uint32(uid),
			Group: uint32(gid),
		})
		created = err == nil
		if err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create: %w", err)
		}
		tap, err = tapByName(name)
	}
	if err != nil {
		return err
	}
	if int64(tap.Owner) != int64(uid) || int64(tap.Group) != int64(gid) {
		return fmt.Errorf("%w: tap %s exists and belongs to %s (group %d), not %d:%d", ErrInterfaceConflict, name, tapOwner(tap), int32(tap.Group), uid, gid)
	}

	undo := func(err error) error {
		if created {
			_ = netlink.LinkDel(tap)
		}
		return err
	}
	if o, ok := ParseOwnerAlias(br.Attrs().Alias); ok {
		if err := checkOwner("tap", tap, o); err != nil {
			return err
		}
		if err := mark(tap, o.Alias()); err != nil {
			return undo(err)
		}
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMasterByIndex(tap, br.Attrs().Index); err != nil {
			return undo(fmt.Errorf("attach to bridge: %w", err))
		}
	}
	if err := netlink.LinkSetUp(tap); err != nil {
		return undo(fmt.Errorf("set up: %w", err))
	}
	return nil
}

// DeleteTap removes the tap if ownerUID owns it. A missing tap is not an
// error; an interface of that name that is not a tap, or a tap of another
// owner (or of none), is refused (ErrInterfaceConflict): the name alone does
// not make a tap banger's, and deleting another user's tap would let the
// caller re-create it as its own. A VMM still attached keeps its file
// descriptor but the interface is gone.
func DeleteTap(ctx context.Context, name string, ownerUID int) error {
	if err := deleteTap(ctx, name, ownerUID); err != nil {
		return fmt.Errorf("delete tap %s: %w", name, err)
	}
	return nil
}

func deleteTap(ctx context.Context, name string, uid int) error {
	if err := ValidateTapName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tap, err := tapByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return err
	}
	if int64(tap.Owner) != int64(uid) {
		return fmt.Errorf("%w: tap %s belongs to %s, not uid %d; banger deletes only its owner's taps", ErrInterfaceConflict, name, tapOwner(tap), uid)
	}
	if err := netlink.LinkDel(tap); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// tapOwner names the uid that may attach to tap. The kernel omits the owner
// of a tap anyone with CAP_NET_ADMIN may use, which then reads as uid 0:
// such a tap is never the (unprivileged) owner's either.
func tapOwner(tap *netlink.Tuntap) string { return fmt.Sprintf("uid %d", tap.Owner) }

// TapInfo is one banger tap as ListTapInfo sees it.
type TapInfo struct {
	Name string
	// Master is the bridge the tap is a port of, "" if none.
	Master string
	// Owner is the instance marked on the tap; Marked is false for a tap
	// without a mark (made by a banger that did not mark them).
	Owner  Owner
	Marked bool
}

// BelongsTo reports whether the tap is the banger instance's whose bridge
// is bridge and whose state directory is stateDir: a marked tap when its
// mark names that state directory, an unmarked one (left by a banger that
// did not mark taps) when it is a port of that bridge. Anything else is
// another banger's, whose VMs may be using it.
func (t TapInfo) BelongsTo(bridge, stateDir string) bool {
	if t.Marked {
		return t.Owner.StateDir == stateDir
	}
	return t.Master == bridge
}

// ListTapInfo returns the banger taps (TapPrefix, tuntap in tap mode) in
// the current namespace with their bridge and owner, sorted by name. It
// needs no privilege.
func ListTapInfo(ctx context.Context) ([]TapInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list taps: %w", err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list taps: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []TapInfo
	for _, l := range links {
		t, ok := l.(*netlink.Tuntap)
		if !ok || t.Mode != netlink.TUNTAP_MODE_TAP || !strings.HasPrefix(t.Name, TapPrefix) {
			continue
		}
		info := TapInfo{Name: t.Name}
		if t.MasterIndex != 0 {
			info.Master = names[t.MasterIndex]
		}
		info.Owner, info.Marked = ParseOwnerAlias(t.Alias)
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b TapInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// tapByName returns the named link if it is a single-queue tap, a
// netlink.LinkNotFoundError if absent, or ErrInterfaceConflict.
func tapByName(name string) (*netlink.Tuntap, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	t, ok := link.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, fmt.Errorf("%w: interface %s exists and is a %s, not a tap", ErrInterfaceConflict, name, link.Type())
	}
	if t.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		return nil, fmt.Errorf("%w: tap %s is multi-queue, which banger's VMMs cannot open", ErrInterfaceConflict, name)
	}
	return t, nil
}
