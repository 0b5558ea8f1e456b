package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Event is one entry in the daemon's durable event log (VM lifecycle steps,
// failures, reconcile findings). Events outlive the VM they name.
type Event struct {
	// ID increases with every append; use it as a cursor.
	ID int64
	// At is set from the store's clock when zero.
	At time.Time
	// Kind is a short dotted name, e.g. "vm.started", "vm.failed".
	Kind string
	// VMID and VMName identify the VM, if the event is about one.
	VMID    string
	VMName  string
	Message string
	// Data is free-form JSON; empty means {}.
	Data json.RawMessage
}

// EventQuery selects events for ListEvents.
type EventQuery struct {
	// VMID, when set, keeps only that VM's events.
	VMID string
	// AfterID, when positive, returns events with a larger ID, oldest
	// first (follow a log by passing the last ID seen).
	AfterID int64
	// Limit caps the number of events; 0 means no cap. With AfterID zero,
	// the newest Limit events are returned (a tail), still oldest first.
	Limit int
}

// AppendEvent records e and returns it with ID (and At, if zero) set.
func (s *Store) AppendEvent(ctx context.Context, e Event) (Event, error) {
	if e.Kind == "" {
		return Event{}, fmt.Errorf("store: append event: %w: kind is required", ErrInvalid)
	}
	data, err := jsonText("data", e.Data)
	if err != nil {
		return Event{}, fmt.Errorf("store: append event %s: %w", e.Kind, err)
	}
	if e.At.IsZero() {
		e.At = s.nowUTC()
	}
	e.At = e.At.UTC()
	e.Data = json.RawMessage(data)
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO events (at, kind, vm_id, vm_name, message, data) VALUES (?, ?, ?, ?, ?, ?)`,
			formatTime(e.At), e.Kind, e.VMID, e.VMName, e.Message, data)
		if err != nil {
			return err
		}
		e.ID, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return Event{}, fmt.Errorf("store: append event %s: %w", e.Kind, err)
	}
	return e, nil
}

// ListEvents returns the events q selects, oldest first.
func (s *Store) ListEvents(ctx context.Context, q EventQuery) ([]Event, error) {
	where, args := "WHERE id > ?", []any{q.AfterID}
	if q.VMID != "" {
		where += " AND vm_id = ?"
		args = append(args, q.VMID)
	}
	query := `SELECT id, at, kind, vm_id, vm_name, message, data FROM events ` + where + ` ORDER BY id`
	if q.Limit > 0 {
		if q.AfterID <= 0 {
			// Tail: the newest Limit, put back in ascending order.
			query = `SELECT * FROM (SELECT id, at, kind, vm_id, vm_name, message, data FROM events ` +
				where + ` ORDER BY id DESC LIMIT ?) ORDER BY id`
		} else {
			query += ` LIMIT ?`
		}
		args = append(args, q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at, data string
		if err := rows.Scan(&e.ID, &at, &e.Kind, &e.VMID, &e.VMName, &e.Message, &data); err != nil {
			return nil, fmt.Errorf("store: list events: %w", err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("store: list events: %w", err)
		}
		e.Data = json.RawMessage(data)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list events: %w", err)
	}
	return out, nil
}

// PruneEvents deletes events recorded before cutoff and reports how many,
// so the log does not grow without bound.
func (s *Store) PruneEvents(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE at < ?`, formatTime(cutoff))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune events before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}
