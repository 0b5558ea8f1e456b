package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// TTL actions: what the daemon does to a VM whose lifetime ends.
const (
	TTLDelete = "delete"
	TTLStop   = "stop"
)

// Lifetime is when the daemon ends a VM on its own: at ExpiresAt (zero:
// never) or once it has been idle for IdleTTL (0: never), by Action.
// It lives in its own columns, apart from the VM row the lifecycle
// writes, so setting it never races a state change.
type Lifetime struct {
	ExpiresAt time.Time
	IdleTTL   time.Duration
	Action    string
}

// Limited reports whether the lifetime ends at all.
func (l Lifetime) Limited() bool { return !l.ExpiresAt.IsZero() || l.IdleTTL > 0 }

// SetVMLifetime replaces a VM's lifetime; an empty Action means
// TTLDelete. Unknown ID gives ErrNotFound, a bad action or negative idle
// time ErrInvalid.
func (s *Store) SetVMLifetime(ctx context.Context, id string, l Lifetime) error {
	if l.Action == "" {
		l.Action = TTLDelete
	}
	if (l.Action != TTLDelete && l.Action != TTLStop) || l.IdleTTL < 0 {
		return fmt.Errorf("store: set lifetime of vm %q: %w: action %q, idle %v", id, ErrInvalid, l.Action, l.IdleTTL)
	}
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE vms SET expires_at = ?, idle_ttl_seconds = ?, ttl_action = ?, updated_at = ? WHERE id = ?`,
			nullTime(l.ExpiresAt), int64(l.IdleTTL/time.Second), l.Action, formatTime(s.nowUTC()), id))
	})
	if err != nil {
		return fmt.Errorf("store: set lifetime of vm %q: %w", id, err)
	}
	return nil
}

// VMLifetimes returns the lifetime of every VM whose lifetime is limited,
// by VM ID.
func (s *Store) VMLifetimes(ctx context.Context) (map[string]Lifetime, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, expires_at, idle_ttl_seconds, ttl_action FROM vms
		WHERE expires_at IS NOT NULL OR idle_ttl_seconds > 0`)
	if err != nil {
		return nil, fmt.Errorf("store: list vm lifetimes: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]Lifetime{}
	for rows.Next() {
		var (
			id      string
			expires sql.NullString
			idle    int64
			l       Lifetime
		)
		if err := rows.Scan(&id, &expires, &idle, &l.Action); err != nil {
			return nil, fmt.Errorf("store: list vm lifetimes: %w", err)
		}
		if expires.Valid {
			if l.ExpiresAt, err = parseTime(expires.String); err != nil {
				return nil, fmt.Errorf("store: vm %q: expires_at: %w", id, err)
			}
		}
		l.IdleTTL = time.Duration(idle) * time.Second
		out[id] = l
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list vm lifetimes: %w", err)
	}
	return out, nil
}
