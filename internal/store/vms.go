package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/banger-dev/banger/internal/lifecycle"
)

// VM is one persistent virtual machine: its spec (what the user asked for)
// and its observed state (what the daemon last saw).
type VM struct {
	// ID is a unique identifier (NewID); Name is what users type.
	ID   string
	Name string
	// ImageID references the image the VM was cloned from; "" means none
	// (stored as NULL). ImageName is kept for display after renames.
	ImageID   string
	ImageName string

	VCPUs         int
	MemoryMiB     int
	DiskSizeBytes int64
	// Network is JSON owned by the daemon/network packages (tap name,
	// DNS name, forwards, ...). Empty means {}. The address itself lives
	// in the VM's Lease.
	Network   json.RawMessage
	Autostart bool
	// Labels are the user's key=value tags; nil and empty both mean none.
	Labels map[string]string
	// CreatedAt is set from the store's clock when zero.
	CreatedAt time.Time

	// Observed state, replaced as a whole by UpdateVMState.
	State      lifecycle.State
	VMM        string // driver name: "firecracker", "qemu"
	PID        int    // VMM process ID; 0 when not running
	PIDStart   uint64 // start time of PID (/proc/PID/stat field 22); 0 when unknown
	APISocket  string
	RunDir     string
	StartedAt  time.Time // zero: never started
	StoppedAt  time.Time // zero: never stopped
	UpdatedAt  time.Time // set by the store on every write
	LastError  string
	ExitStatus string
}

// Observed returns the VM's current observed state as an update, so a
// caller changes only the fields it means to:
//
//	upd := vm.Observed()
//	upd.State, upd.PID = store.lifecycle.Running, pid
func (vm VM) Observed() VMStateUpdate {
	return VMStateUpdate{
		State:      vm.State,
		VMM:        vm.VMM,
		PID:        vm.PID,
		PIDStart:   vm.PIDStart,
		APISocket:  vm.APISocket,
		RunDir:     vm.RunDir,
		StartedAt:  vm.StartedAt,
		StoppedAt:  vm.StoppedAt,
		LastError:  vm.LastError,
		ExitStatus: vm.ExitStatus,
	}
}

// VMStateUpdate is a VM's complete observed state. UpdateVMState writes
// every field, so zero values clear (a zero PID or time means "none"):
// start from VM.Observed to keep the rest.
type VMStateUpdate struct {
	State      lifecycle.State
	VMM        string
	PID        int
	PIDStart   uint64
	APISocket  string
	RunDir     string
	StartedAt  time.Time
	StoppedAt  time.Time
	LastError  string
	ExitStatus string

	// IfStateIn, when not empty, makes the update conditional: it applies
	// only if the VM's current state is one of these, otherwise
	// UpdateVMState returns ErrStateConflict and changes nothing. This lets
	// concurrent operations (stop vs. reconcile) not overwrite each other.
	IfStateIn []lifecycle.State
}

const vmColumns = `id, name, image_id, image_name, vcpus, memory_mib, disk_size_bytes, network, autostart, created_at,
	state, vmm, pid, api_socket, run_dir, started_at, stopped_at, updated_at, last_error, exit_status, pid_start_time,
	labels`

func scanVM(sc interface{ Scan(...any) error }) (VM, error) {
	var (
		vm               VM
		imageID          sql.NullString
		network, state   string
		created, updated string
		started, stopped sql.NullString
		autostart        int
		labels           string
	)
	if err := sc.Scan(&vm.ID, &vm.Name, &imageID, &vm.ImageName, &vm.VCPUs, &vm.MemoryMiB,
		&vm.DiskSizeBytes, &network, &autostart, &created,
		&state, &vm.VMM, &vm.PID, &vm.APISocket, &vm.RunDir, &started, &stopped, &updated,
		&vm.LastError, &vm.ExitStatus, &vm.PIDStart, &labels); err != nil {
		return VM{}, err
	}
	if err := json.Unmarshal([]byte(labels), &vm.Labels); err != nil {
		return VM{}, fmt.Errorf("vm %q: labels: %w", vm.Name, err)
	}
	if len(vm.Labels) == 0 {
		vm.Labels = nil
	}
	vm.ImageID = imageID.String
	vm.Network = json.RawMessage(network)
	vm.Autostart = autostart != 0
	vm.State = lifecycle.State(state)
	var err error
	if vm.CreatedAt, err = parseTime(created); err != nil {
		return VM{}, err
	}
	if vm.UpdatedAt, err = parseTime(updated); err != nil {
		return VM{}, err
	}
	if vm.StartedAt, err = parseNullTime(started); err != nil {
		return VM{}, err
	}
	if vm.StoppedAt, err = parseNullTime(stopped); err != nil {
		return VM{}, err
	}
	return vm, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CreateVM stores a new VM. ID, Name, positive VCPUs and MemoryMiB are
// required; an empty State means lifecycle.Creating. A taken ID or name gives
// ErrAlreadyExists; an ImageID that matches no image gives ErrNotFound.
// UpdatedAt is set from the store's clock.
func (s *Store) CreateVM(ctx context.Context, vm VM) error {
	if err := s.createVM(ctx, vm); err != nil {
		return fmt.Errorf("store: create vm %q: %w", vm.Name, err)
	}
	return nil
}

func (s *Store) createVM(ctx context.Context, vm VM) error {
	if vm.State == "" {
		vm.State = lifecycle.Creating
	}
	switch {
	case vm.ID == "":
		return fmt.Errorf("%w: id is required", ErrInvalid)
	case vm.Name == "":
		return fmt.Errorf("%w: name is required", ErrInvalid)
	case vm.VCPUs <= 0:
		return fmt.Errorf("%w: vcpus must be positive, got %d", ErrInvalid, vm.VCPUs)
	case vm.MemoryMiB <= 0:
		return fmt.Errorf("%w: memory must be positive, got %d MiB", ErrInvalid, vm.MemoryMiB)
	case vm.DiskSizeBytes < 0:
		return fmt.Errorf("%w: disk size %d is negative", ErrInvalid, vm.DiskSizeBytes)
	case !vm.State.Valid():
		return fmt.Errorf("%w: unknown state %q", ErrInvalid, vm.State)
	}
	network, err := jsonText("network", vm.Network)
	if err != nil {
		return err
	}
	labels, err := labelsText(vm.Labels)
	if err != nil {
		return err
	}
	now := s.nowUTC()
	created := vm.CreatedAt
	if created.IsZero() {
		created = now
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			vm.ID, vm.Name, nullString(vm.ImageID), vm.ImageName, vm.VCPUs, vm.MemoryMiB,
			vm.DiskSizeBytes, network, boolInt(vm.Autostart), formatTime(created),
			string(vm.State), vm.VMM, vm.PID, vm.APISocket, vm.RunDir,
			nullTime(vm.StartedAt), nullTime(vm.StoppedAt), formatTime(now),
			vm.LastError, vm.ExitStatus, int64(vm.PIDStart), labels)
		switch {
		case isUniqueViolation(err):
			return alreadyExists(err, "vm")
		case isForeignKeyViolation(err):
			return fmt.Errorf("image %q: %w", vm.ImageID, ErrNotFound)
		}
		return err
	})
}

// GetVM returns the VM whose ID or name is nameOrID. An ID match wins over
// a name match, so the daemon's lookups by ID are never hijacked by a VM
// named like another's ID.
func (s *Store) GetVM(ctx context.Context, nameOrID string) (VM, error) {
	vm, err := getVM(ctx, s.db, nameOrID)
	if err != nil {
		return VM{}, fmt.Errorf("store: get vm %q: %w", nameOrID, err)
	}
	return vm, nil
}

func getVM(ctx context.Context, q queryer, nameOrID string) (VM, error) {
	row := q.QueryRowContext(ctx,
		`SELECT `+vmColumns+` FROM vms WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1`, nameOrID)
	vm, err := scanVM(row)
	if errors.Is(err, sql.ErrNoRows) {
		return VM{}, ErrNotFound
	}
	return vm, err
}

// ListVMs returns every VM, ordered by name.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("store: list vms: %w", err)
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list vms: %w", err)
		}
		out = append(out, vm)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list vms: %w", err)
	}
	return out, nil
}

// UpdateVMState replaces the observed state of the VM with this ID by upd
// (every field, see VMStateUpdate) and sets updated_at from the store's
// clock. Unknown ID gives ErrNotFound; a failed IfStateIn condition gives
// ErrStateConflict.
func (s *Store) UpdateVMState(ctx context.Context, id string, upd VMStateUpdate) error {
	if err := s.updateVMState(ctx, id, upd); err != nil {
		return fmt.Errorf("store: update state of vm %q: %w", id, err)
	}
	return nil
}

func (s *Store) updateVMState(ctx context.Context, id string, upd VMStateUpdate) error {
	if !upd.State.Valid() {
		return fmt.Errorf("%w: unknown state %q", ErrInvalid, upd.State)
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, `SELECT state FROM vms WHERE id = ?`, id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if len(upd.IfStateIn) > 0 && !slices.Contains(upd.IfStateIn, lifecycle.State(cur)) {
			return fmt.Errorf("%w: vm is %s, not %v", ErrStateConflict, cur, upd.IfStateIn)
		}
		_, err = tx.ExecContext(ctx, `UPDATE vms SET
			state = ?, vmm = ?, pid = ?, api_socket = ?, run_dir = ?,
			started_at = ?, stopped_at = ?, updated_at = ?, last_error = ?, exit_status = ?,
			pid_start_time = ?
			WHERE id = ?`,
			string(upd.State), upd.VMM, upd.PID, upd.APISocket, upd.RunDir,
			nullTime(upd.StartedAt), nullTime(upd.StoppedAt), formatTime(s.nowUTC()),
			upd.LastError, upd.ExitStatus, int64(upd.PIDStart), id)
		return err
	})
}

// DeleteVM removes the VM with this ID; its lease goes with it (ON DELETE
// CASCADE). Unknown ID gives ErrNotFound.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id))
	})
	if err != nil {
		return fmt.Errorf("store: delete vm %q: %w", id, err)
	}
	return nil
}

// UpdateVMNetwork replaces a VM's network settings JSON (forwards,
// isolation), which the daemon owns. Unknown ID gives ErrNotFound.
func (s *Store) UpdateVMNetwork(ctx context.Context, id string, network json.RawMessage) error {
	text, err := jsonText("network", network)
	if err != nil {
		return fmt.Errorf("store: update network of vm %q: %w", id, err)
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE vms SET network = ?, updated_at = ? WHERE id = ?`, text, formatTime(s.nowUTC()), id))
	})
	if err != nil {
		return fmt.Errorf("store: update network of vm %q: %w", id, err)
	}
	return nil
}

// labelsText is a VM's labels as the JSON object the labels column holds.
func labelsText(labels map[string]string) (string, error) {
	if len(labels) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(labels)
	if err != nil {
		return "", fmt.Errorf("%w: labels: %v", ErrInvalid, err)
	}
	return string(b), nil
}
