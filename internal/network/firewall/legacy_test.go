package firewall_test

import (
	"context"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/network/firewall"
	"github.com/banger-dev/banger/internal/network/nstest"
)

// addLegacyTables makes the host-wide tables an older banger left for
// bridge: "ip banger" with a forward rule naming the bridge, and "bridge
// banger" whose guests set admits guest A.
func addLegacyTables(t *testing.T, bridge string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	ipT := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: firewall.LegacyTableName})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: ipT, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, bridge)
	c.AddRule(&nftables.Rule{Table: ipT, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	brT := c.AddTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: firewall.LegacyTableName})
	keyType, err := nftables.ConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, unix.IFNAMSIZ)
	copy(key, "bgt-ga")
	key = append(key, macA...)
	key = append(key, 0, 0)
	a := addrA.As4()
	key = append(key, a[:]...)
	if err := c.AddSet(&nftables.Set{Table: brT, Name: "guests", KeyType: keyType, Concatenation: true}, []nftables.SetElement{{Key: key}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("add legacy tables: %v", err)
	}
}

func legacyTablesLeft(t *testing.T) int {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyBridge} {
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == firewall.LegacyTableName {
				n++
			}
		}
	}
	return n
}

// TestLegacyTablesReplacedOnlyForTheirBridge: the first Ensure after an
// upgrade replaces the host-wide tables an older banger made for the same
// bridge, keeping the VMs they admitted, and leaves another bridge's alone.
func TestLegacyTablesReplacedOnlyForTheirBridge(t *testing.T) {
	t.Parallel()
	if nstest.Sandbox(t) {
		return
	}
	ctx := context.Background()
	if err := network.EnsureBridge(ctx, network.Bridge{Name: cfg.Bridge, Subnet: subnet}, testOwner); err != nil {
		t.Fatal(err)
	}
	addLegacyTables(t, "banger7")
	if err := firewall.Ensure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if n := legacyTablesLeft(t); n != 2 {
		t.Fatalf("Ensure for %s left %d of another bridge's legacy tables, want both", cfg.Bridge, n)
	}
	if err := firewall.Remove(ctx, cfg.Bridge); err != nil {
		t.Fatal(err)
	}
	if n := legacyTablesLeft(t); n != 2 {
		t.Fatalf("Remove for %s left %d of another bridge's legacy tables, want both", cfg.Bridge, n)
	}

	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: firewall.LegacyTableName})
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyBridge, Name: firewall.LegacyTableName})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	addLegacyTables(t, cfg.Bridge)
	if err := firewall.Ensure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if n := legacyTablesLeft(t); n != 0 {
		t.Errorf("Ensure for %s left %d of its own legacy tables, want none", cfg.Bridge, n)
	}
	st, err := firewall.Inspect(ctx, cfg.Bridge)
	if err != nil || len(st.Missing) != 0 || !st.Admitted("bgt-ga", macA, addrA) {
		t.Errorf("after adopting the legacy tables: %+v, %v; want complete tables with guest A still admitted", st, err)
	}
	// And its port is filtered: listed among the bridge's ports.
	brT := &nftables.Table{Family: nftables.TableFamilyBridge, Name: firewall.TableName(cfg.Bridge)}
	ports, err := c.GetSetElements(&nftables.Set{Table: brT, Name: "ports", KeyType: nftables.TypeIFName})
	if err != nil || len(ports) != 1 || string(ports[0].Key[:len("bgt-ga")]) != "bgt-ga" {
		t.Errorf("ports after adopting the legacy tables: %v, %v; want bgt-ga", ports, err)
	}
	if err := firewall.Remove(ctx, cfg.Bridge); err != nil {
		t.Fatal(err)
	}
}
