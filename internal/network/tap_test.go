package network_test

import (
	"context"
	"errors"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/nstest"
	"github.com/vishvananda/netlink"
)

// Another user's tap with a banger name is not banger's: deleting it (and
// re-creating it as the owner's) must be refused, and so must adopting it.
func TestTapOfAnotherOwnerIsLeftAlone(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	if err := network.EnsureBridge(ctx, testBridge, testOwner); err != nil {
		t.Fatal(err)
	}
	const owner, other = 65534, 1000
	// uid 0: the library sets no owner then, and a tap without one reads as
	// uid 0 (any process with CAP_NET_ADMIN may attach).
	for _, foreignUID := range []uint32{other, 0} {
		const tap = "bgt-foreign"
		attrs := netlink.NewLinkAttrs()
		attrs.Name = tap
		if err := netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: attrs, Mode: netlink.TUNTAP_MODE_TAP,
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR, Owner: foreignUID, Group: foreignUID}); err != nil {
			t.Fatalf("create a tap owned by uid %d: %v", foreignUID, err)
		}
		if err := network.DeleteTap(ctx, tap, owner); !errors.Is(err, network.ErrInterfaceConflict) {
			t.Errorf("deleting uid %d's tap as uid %d: %v, want ErrInterfaceConflict", foreignUID, owner, err)
		}
		if err := network.CreateTap(ctx, tap, testBridge.Name, owner, owner); !errors.Is(err, network.ErrInterfaceConflict) {
			t.Errorf("creating over uid %d's tap as uid %d: %v, want ErrInterfaceConflict", foreignUID, owner, err)
		}
		l := mustLink(t, tap)
		if tt, ok := l.(*netlink.Tuntap); !ok || tt.Owner != foreignUID {
			t.Fatalf("after refusals the tap is %#v, want uid %d's tap untouched", l, foreignUID)
		}
		// Its owner may delete it.
		if err := network.DeleteTap(ctx, tap, int(foreignUID)); err != nil {
			t.Fatalf("deleting uid %d's tap as its owner: %v", foreignUID, err)
		}
		if _, err := netlink.LinkByName(tap); err == nil {
			t.Fatalf("uid %d's tap survived its owner's delete", foreignUID)
		}
	}
}
