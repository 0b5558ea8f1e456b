package network_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/banger-dev/banger/internal/network"
	"github.com/banger-dev/banger/internal/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func createVMs(t *testing.T, s *store.Store, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = store.NewID()
		vm := store.VM{ID: ids[i], Name: fmt.Sprintf("vm%03d", i), VCPUs: 1, MemoryMiB: 128, VMM: "firecracker"}
		if err := s.CreateVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// TestParallelLeases allocates 100 leases at once through the real store
// with the network package's candidates and MACs: no address or MAC may be
// handed out twice, and none may be the network, gateway or broadcast.
func TestParallelLeases(t *testing.T) {
	s := openStore(t)
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	ids := createVMs(t, s, 100)

	leases := make([]store.Lease, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			leases[i], errs[i] = s.AllocateLease(context.Background(), id, network.MACAddress(id).String(), network.Candidates(subnet))
		})
	}
	wg.Wait()

	ips := map[netip.Addr]string{}
	macs := map[string]string{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("lease for %s: %v", ids[i], errs[i])
		}
		if prev, dup := ips[l.IP]; dup {
			t.Errorf("%s handed to both %s and %s", l.IP, prev, l.VMID)
		}
		if prev, dup := macs[l.MAC]; dup {
			t.Errorf("MAC %s handed to both %s and %s", l.MAC, prev, l.VMID)
		}
		ips[l.IP], macs[l.MAC] = l.VMID, l.VMID
		if !subnet.Contains(l.IP) || l.IP == network.Gateway(subnet) || l.IP == subnet.Addr() || l.IP == netip.MustParseAddr("172.30.0.255") {
			t.Errorf("lease %s is not a guest address of %s", l.IP, subnet)
		}
	}
	if len(ips) != 100 {
		t.Errorf("%d distinct addresses, want 100", len(ips))
	}

	// A lease is stable: asking again finds the same address.
	got, err := s.GetLease(context.Background(), ids[0])
	if err != nil || got.IP != leases[0].IP {
		t.Errorf("GetLease = %v, %v; want %v", got.IP, err, leases[0].IP)
	}
}

func TestLeasesExhausted(t *testing.T) {
	s := openStore(t)
	subnet := netip.MustParsePrefix("192.168.50.0/29") // five guest addresses
	ids := createVMs(t, s, 6)
	for _, id := range ids[:5] {
		if _, err := s.AllocateLease(context.Background(), id, network.MACAddress(id).String(), network.Candidates(subnet)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.AllocateLease(context.Background(), ids[5], network.MACAddress(ids[5]).String(), network.Candidates(subnet))
	if !errors.Is(err, store.ErrExhausted) {
		t.Errorf("sixth lease in a /29: %v, want ErrExhausted", err)
	}
}
