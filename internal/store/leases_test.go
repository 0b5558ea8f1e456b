package store

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hosts yields the host addresses of prefix after the gateway (.1), like
// the network package's IPAM does.
func hosts(prefix string) iter.Seq[netip.Addr] {
	p := netip.MustParsePrefix(prefix).Masked()
	return func(yield func(netip.Addr) bool) {
		for a := p.Addr().Next().Next(); p.Contains(a); a = a.Next() {
			if !p.Contains(a.Next()) { // broadcast
				return
			}
			if !yield(a) {
				return
			}
		}
	}
}

func createVMs(t *testing.T, s *Store, n int) []VM {
	t.Helper()
	var vms []VM
	for i := range n {
		vm := testVM(fmt.Sprintf("vm%02d", i))
		if err := s.CreateVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
		vms = append(vms, vm)
	}
	return vms
}

func TestLeaseLifecycle(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vms := createVMs(t, s, 2)

	l, err := s.AllocateLease(ctx, vms[0].ID, "02:00:00:00:00:01", hosts("172.30.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if l.IP != netip.MustParseAddr("172.30.0.2") || l.VMID != vms[0].ID || l.MAC != "02:00:00:00:00:01" || l.CreatedAt.IsZero() {
		t.Errorf("first lease = %+v", l)
	}
	got, err := s.GetLease(ctx, vms[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.IP != l.IP || got.MAC != l.MAC || !got.CreatedAt.Equal(l.CreatedAt) {
		t.Errorf("GetLease = %+v, want %+v", got, l)
	}

	// A second lease for the same VM is refused, naming the one it holds.
	_, err = s.AllocateLease(ctx, vms[0].ID, "", hosts("172.30.0.0/24"))
	if !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), "172.30.0.2") {
		t.Errorf("second lease for one vm: %v, want ErrAlreadyExists naming 172.30.0.2", err)
	}
	// Two VMs may not share a MAC.
	if _, err := s.AllocateLease(ctx, vms[1].ID, "02:00:00:00:00:01", hosts("172.30.0.0/24")); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("duplicate mac: %v, want ErrAlreadyExists", err)
	}

	l2, err := s.AllocateLease(ctx, vms[1].ID, "02:00:00:00:00:02", hosts("172.30.0.0/24"))
	if err != nil || l2.IP != netip.MustParseAddr("172.30.0.3") {
		t.Fatalf("second vm's lease = %+v, %v; want 172.30.0.3", l2, err)
	}

	if err := s.ReleaseLease(ctx, vms[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLease(ctx, vms[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetLease after release: %v, want ErrNotFound", err)
	}
	if err := s.ReleaseLease(ctx, vms[0].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second release: %v, want ErrNotFound", err)
	}
	// The released address is handed out again, first.
	l3, err := s.AllocateLease(ctx, vms[0].ID, "", hosts("172.30.0.0/24"))
	if err != nil || l3.IP != netip.MustParseAddr("172.30.0.2") {
		t.Errorf("re-allocation = %+v, %v; want 172.30.0.2", l3, err)
	}

	// Deleting the VM releases its lease.
	if err := s.DeleteVM(ctx, vms[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLease(ctx, vms[1].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("lease survived its VM: %v", err)
	}
}

func TestAllocateLeaseForUnknownVM(t *testing.T) {
	s, _ := openTestStore(t)
	_, err := s.AllocateLease(context.Background(), "0000000000000000", "", hosts("10.0.0.0/30"))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("AllocateLease: %v, want ErrNotFound", err)
	}
}

func TestAllocateLeaseExhausted(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	// A /29 has six hosts; minus the gateway, five candidates.
	vms := createVMs(t, s, 6)
	for _, vm := range vms[:5] {
		if _, err := s.AllocateLease(ctx, vm.ID, "", hosts("10.9.0.0/29")); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.AllocateLease(ctx, vms[5].ID, "", hosts("10.9.0.0/29"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("AllocateLease on a full subnet: %v, want ErrExhausted", err)
	}
	if want := "all 5 candidate addresses are leased"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := s.GetLease(ctx, vms[5].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed allocation left a lease: %v", err)
	}
	// No candidates at all is exhaustion too.
	if _, err := s.AllocateLease(ctx, vms[5].ID, "", slices.Values([]netip.Addr(nil))); !errors.Is(err, ErrExhausted) {
		t.Errorf("empty candidates: %v, want ErrExhausted", err)
	}
}

func TestAllocateLeaseConcurrentGetsDistinctAddresses(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	const n = 50
	vms := createVMs(t, s, n)

	leases := make([]Lease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Go(func() {
			leases[i], errs[i] = s.AllocateLease(ctx, vm.ID, fmt.Sprintf("02:00:00:00:00:%02x", i), hosts("172.30.0.0/24"))
		})
	}
	wg.Wait()

	seen := map[netip.Addr]string{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatalf("AllocateLease %d: %v", i, errs[i])
		}
		if other, dup := seen[l.IP]; dup {
			t.Errorf("%s given to both %s and %s", l.IP, other, l.VMID)
		}
		seen[l.IP] = l.VMID
	}
	// The pool is filled densely from the start.
	all, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("ListLeases has %d leases, want %d", len(all), n)
	}
	want := netip.MustParseAddr("172.30.0.2")
	for _, l := range all {
		if l.IP != want {
			t.Errorf("ListLeases: got %s, want %s (dense and in address order)", l.IP, want)
		}
		want = want.Next()
	}
}

func TestAllocateLeaseNormalizesMappedAddresses(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	vms := createVMs(t, s, 2)
	v4 := netip.MustParseAddr("10.0.0.2")
	mapped := netip.AddrFrom16(v4.As16())
	if _, err := s.AllocateLease(ctx, vms[0].ID, "", slices.Values([]netip.Addr{v4})); err != nil {
		t.Fatal(err)
	}
	// The same address written as IPv4-in-IPv6 is the same address.
	if _, err := s.AllocateLease(ctx, vms[1].ID, "", slices.Values([]netip.Addr{mapped})); !errors.Is(err, ErrExhausted) {
		t.Errorf("mapped duplicate: %v, want ErrExhausted", err)
	}
	if _, err := s.AllocateLease(ctx, vms[1].ID, "", slices.Values([]netip.Addr{{}})); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero address: %v, want ErrInvalid", err)
	}
	if _, err := s.AllocateLease(ctx, vms[1].ID, "", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil candidates: %v, want ErrInvalid", err)
	}
}
