package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"time"
)

// Lease is a VM's address on the bridge. A VM has at most one; deleting the
// VM releases it.
type Lease struct {
	VMID      string
	IP        netip.Addr
	MAC       string
	CreatedAt time.Time
}

// AllocateLease gives the VM the first address from candidates that no
// other VM holds, and records mac with it. The search and the insert run
// in one write transaction, so concurrent allocations never hand out the
// same address. candidates is typically the subnet's host addresses minus
// the gateway, in order (slices.Values turns a slice into one).
//
// It returns ErrExhausted when every candidate is taken, ErrNotFound when
// the VM does not exist, and ErrAlreadyExists when the VM already has a
// lease or another lease uses mac.
func (s *Store) AllocateLease(ctx context.Context, vmID, mac string, candidates iter.Seq[netip.Addr]) (Lease, error) {
	lease, err := s.allocateLease(ctx, vmID, mac, candidates)
	if err != nil {
		return Lease{}, fmt.Errorf("store: allocate lease for vm %q: %w", vmID, err)
	}
	return lease, nil
}

func (s *Store) allocateLease(ctx context.Context, vmID, mac string, candidates iter.Seq[netip.Addr]) (Lease, error) {
	if candidates == nil {
		return Lease{}, fmt.Errorf("%w: no candidate addresses", ErrInvalid)
	}
	lease := Lease{VMID: vmID, MAC: mac, CreatedAt: s.nowUTC()}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM vms WHERE id = ?`, vmID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		var held string
		err := tx.QueryRowContext(ctx, `SELECT ip FROM leases WHERE vm_id = ?`, vmID).Scan(&held)
		if err == nil {
			return fmt.Errorf("%w: vm already holds %s", ErrAlreadyExists, held)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}

		used, err := leasedAddrs(ctx, tx)
		if err != nil {
			return err
		}
		tried := 0
		for a := range candidates {
			if !a.IsValid() {
				return fmt.Errorf("%w: invalid candidate address", ErrInvalid)
			}
			a = a.Unmap()
			tried++
			if _, taken := used[a]; !taken {
				lease.IP = a
				break
			}
		}
		if !lease.IP.IsValid() {
			return fmt.Errorf("%w: all %d candidate addresses are leased", ErrExhausted, tried)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (vm_id, ip, mac, created_at) VALUES (?, ?, ?, ?)`,
			vmID, lease.IP.String(), mac, formatTime(lease.CreatedAt))
		if isUniqueViolation(err) {
			return alreadyExists(err, "lease")
		}
		return err
	})
	if err != nil {
		return Lease{}, err
	}
	return lease, nil
}

func leasedAddrs(ctx context.Context, q queryer) (map[netip.Addr]struct{}, error) {
	rows, err := q.QueryContext(ctx, `SELECT ip FROM leases`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := make(map[netip.Addr]struct{})
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("stored lease address %q: %w", s, err)
		}
		used[a] = struct{}{}
	}
	return used, rows.Err()
}

func scanLease(sc interface{ Scan(...any) error }) (Lease, error) {
	var l Lease
	var ip, created string
	if err := sc.Scan(&l.VMID, &ip, &l.MAC, &created); err != nil {
		return Lease{}, err
	}
	var err error
	if l.IP, err = netip.ParseAddr(ip); err != nil {
		return Lease{}, fmt.Errorf("stored lease address %q: %w", ip, err)
	}
	if l.CreatedAt, err = parseTime(created); err != nil {
		return Lease{}, err
	}
	return l, nil
}

// GetLease returns the VM's lease, or ErrNotFound if it has none.
func (s *Store) GetLease(ctx context.Context, vmID string) (Lease, error) {
	row := s.db.QueryRowContext(ctx, `SELECT vm_id, ip, mac, created_at FROM leases WHERE vm_id = ?`, vmID)
	l, err := scanLease(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("store: get lease of vm %q: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("store: get lease of vm %q: %w", vmID, err)
	}
	return l, nil
}

// ListLeases returns every lease, ordered by address, so the daemon can
// rebuild DNS records and NAT state after a restart.
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm_id, ip, mac, created_at FROM leases`)
	if err != nil {
		return nil, fmt.Errorf("store: list leases: %w", err)
	}
	defer rows.Close()
	var out []Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list leases: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list leases: %w", err)
	}
	// Text order is wrong for addresses (10.0.0.10 < 10.0.0.9).
	slices.SortFunc(out, func(a, b Lease) int { return a.IP.Compare(b.IP) })
	return out, nil
}

// ReleaseLease frees the VM's address. It returns ErrNotFound if the VM
// holds no lease, which undo paths may ignore with errors.Is.
func (s *Store) ReleaseLease(ctx context.Context, vmID string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `DELETE FROM leases WHERE vm_id = ?`, vmID))
	})
	if err != nil {
		return fmt.Errorf("store: release lease of vm %q: %w", vmID, err)
	}
	return nil
}
