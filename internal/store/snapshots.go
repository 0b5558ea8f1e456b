package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/banger-dev/banger/internal/lifecycle"
)

// Snapshot is one saved VM state (memory, device state, disk). The
// lifecycle package owns the type; the store keeps it.
type Snapshot = lifecycle.Snapshot

// SnapshotState is a snapshot's state: saving or ready.
type SnapshotState = lifecycle.SnapshotState

// The snapshot states, under the names the store's callers use.
const (
	SnapshotSaving = lifecycle.SnapshotSaving
	SnapshotReady  = lifecycle.SnapshotReady
)

func validSnapshotState(s SnapshotState) bool {
	return s == SnapshotSaving || s == SnapshotReady
}

const snapshotColumns = `id, name, vm_id, vm_name, image_id, image_name, vmm, vcpus, memory_mib,
	disk_size_bytes, golden, key, network, state, size_bytes, created_at, last_used_at`

func scanSnapshot(sc interface{ Scan(...any) error }) (Snapshot, error) {
	var (
		sn             Snapshot
		golden         int
		network, state string
		created        string
		lastUsed       sql.NullString
	)
	if err := sc.Scan(&sn.ID, &sn.Name, &sn.VMID, &sn.VMName, &sn.ImageID, &sn.ImageName, &sn.VMM,
		&sn.VCPUs, &sn.MemoryMiB, &sn.DiskSizeBytes, &golden, &sn.Key, &network, &state,
		&sn.SizeBytes, &created, &lastUsed); err != nil {
		return Snapshot{}, err
	}
	sn.Golden = golden != 0
	sn.Network = []byte(network)
	sn.State = SnapshotState(state)
	var err error
	if sn.CreatedAt, err = parseTime(created); err != nil {
		return Snapshot{}, err
	}
	if sn.LastUsedAt, err = parseNullTime(lastUsed); err != nil {
		return Snapshot{}, err
	}
	return sn, nil
}

// checkSnapshot refuses a snapshot the store would not keep.
func checkSnapshot(sn Snapshot) error {
	switch {
	case sn.ID == "":
		return fmt.Errorf("%w: id is required", ErrInvalid)
	case sn.Name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case sn.VMM == "":
		return fmt.Errorf("%w: vmm is required", ErrInvalid)
	case sn.VCPUs <= 0:
		return fmt.Errorf("%w: vcpus must be positive, got %d", ErrInvalid, sn.VCPUs)
	case sn.MemoryMiB <= 0:
		return fmt.Errorf("%w: memory must be positive, got %d MiB", ErrInvalid, sn.MemoryMiB)
	case sn.DiskSizeBytes < 0:
		return fmt.Errorf("%w: disk size %d is negative", ErrInvalid, sn.DiskSizeBytes)
	case sn.SizeBytes < 0:
		return fmt.Errorf("%w: size %d is negative", ErrInvalid, sn.SizeBytes)
	case !validSnapshotState(sn.State):
		return fmt.Errorf("%w: unknown snapshot state %q", ErrInvalid, sn.State)
	}
	return nil
}

// CreateSnapshot stores a new snapshot. A taken ID or name gives
// ErrAlreadyExists. CreatedAt is set from the store's clock when zero.
func (s *Store) CreateSnapshot(ctx context.Context, sn Snapshot) error {
	if err := s.createSnapshot(ctx, sn); err != nil {
		return fmt.Errorf("store: create snapshot %q: %w", sn.Name, err)
	}
	return nil
}

func (s *Store) createSnapshot(ctx context.Context, sn Snapshot) error {
	if err := checkSnapshot(sn); err != nil {
		return err
	}
	network, err := jsonText("network", sn.Network)
	if err != nil {
		return err
	}
	created := sn.CreatedAt
	if created.IsZero() {
		created = s.nowUTC()
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO snapshots (`+snapshotColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sn.ID, sn.Name, sn.VMID, sn.VMName, sn.ImageID, sn.ImageName, sn.VMM,
			sn.VCPUs, sn.MemoryMiB, sn.DiskSizeBytes, boolInt(sn.Golden), sn.Key, network,
			string(sn.State), sn.SizeBytes, formatTime(created), nullTime(sn.LastUsedAt))
		if isUniqueViolation(err) {
			return alreadyExists(err, "snapshot")
		}
		return err
	})
}

// UpdateSnapshot rewrites the snapshot with sn's ID: every field but the
// ID and the creation time. Unknown ID gives ErrNotFound; a name another
// snapshot has gives ErrAlreadyExists.
func (s *Store) UpdateSnapshot(ctx context.Context, sn Snapshot) error {
	if err := s.updateSnapshot(ctx, sn); err != nil {
		return fmt.Errorf("store: update snapshot %q: %w", sn.Name, err)
	}
	return nil
}

func (s *Store) updateSnapshot(ctx context.Context, sn Snapshot) error {
	if err := checkSnapshot(sn); err != nil {
		return err
	}
	network, err := jsonText("network", sn.Network)
	if err != nil {
		return err
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE snapshots SET
			name = ?, vm_id = ?, vm_name = ?, image_id = ?, image_name = ?, vmm = ?, vcpus = ?,
			memory_mib = ?, disk_size_bytes = ?, golden = ?, key = ?, network = ?, state = ?, size_bytes = ?,
			last_used_at = ?
			WHERE id = ?`,
			sn.Name, sn.VMID, sn.VMName, sn.ImageID, sn.ImageName, sn.VMM, sn.VCPUs,
			sn.MemoryMiB, sn.DiskSizeBytes, boolInt(sn.Golden), sn.Key, network, string(sn.State), sn.SizeBytes,
			nullTime(sn.LastUsedAt), sn.ID)
		if isUniqueViolation(err) {
			return alreadyExists(err, "snapshot")
		}
		return oneRow(res, err)
	})
}

// GetSnapshot returns the snapshot whose ID or name is nameOrID; an ID
// match wins over a name match, as for VMs.
func (s *Store) GetSnapshot(ctx context.Context, nameOrID string) (Snapshot, error) {
	row := s.db.QueryRowContext(ctx,
		`SELECT `+snapshotColumns+` FROM snapshots WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1`, nameOrID)
	sn, err := scanSnapshot(row)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("store: get snapshot %q: %w", nameOrID, err)
	}
	return sn, nil
}

// ListSnapshots returns every snapshot, oldest first (by name among
// snapshots of the same instant).
func (s *Store) ListSnapshots(ctx context.Context) ([]Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("store: list snapshots: %w", err)
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list snapshots: %w", err)
		}
		out = append(out, sn)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list snapshots: %w", err)
	}
	return out, nil
}

// DeleteSnapshot removes the snapshot with this ID. Unknown ID gives
// ErrNotFound.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id))
	})
	if err != nil {
		return fmt.Errorf("store: delete snapshot %q: %w", id, err)
	}
	return nil
}
