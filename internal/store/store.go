// Package store is bangerd's durable state: images, VMs, address leases and
// the event log, kept in one SQLite database (modernc.org/sqlite, no cgo).
//
// The schema evolves only through the numbered migrations in migrations.go,
// recorded in schema_migrations. Open applies the pending ones; a database
// that holds migrations this binary does not know (written by a newer banger)
// is refused untouched, and InspectSchemaState classifies a database without
// ever writing to it, so an updater can ask a staged binary whether it may
// take over.
//
// Every method takes a context first and returns errors that wrap one of the
// sentinels below, so callers branch with errors.Is and show the message.
package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Sentinel errors callers branch on. Returned errors wrap them with context
// (`store: create vm "dev": already exists: ...`).
var (
	// ErrNotFound means no row matched the name or ID given.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a unique name, ID, address or MAC is taken.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInUse means the row is still referenced (an image used by VMs);
	// errors.As with *InUseError gives the referencing names.
	ErrInUse = errors.New("in use")
	// ErrExhausted means AllocateLease found no free address among the
	// candidates.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrStateConflict means a conditional UpdateVMState found the VM in a
	// state other than the ones it required.
	ErrStateConflict = errors.New("state conflict")
	// ErrInvalid means the caller passed a value the store refuses to store
	// (missing name, malformed JSON, unknown state).
	ErrInvalid = errors.New("invalid value")
	// ErrIncompatibleSchema means the database holds migrations this binary
	// does not know: it was written by a newer banger.
	ErrIncompatibleSchema = errors.New("incompatible database schema")
)

// InUseError lists what still references a row a caller tried to delete.
// It unwraps to ErrInUse.
type InUseError struct {
	// What is the kind of row being deleted, e.g. "image".
	What string
	// Name is the row's name.
	Name string
	// UsedBy are the names of the referencing rows, sorted (VM names).
	UsedBy []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("%s %q is in use by vm %s", e.What, e.Name, strings.Join(quoteAll(e.UsedBy), ", "))
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// Store is an open state database. It is safe for concurrent use; writes
// from one process are serialized in Go so they never spin on SQLite's lock,
// and writes from other processes wait up to the busy timeout.
type Store struct {
	db   *sql.DB
	path string
	now  func() time.Time
	// writeSem is a one-slot semaphore held for every write transaction.
	writeSem chan struct{}
}

// Option configures Open.
type Option func(*options)

type options struct {
	now func() time.Time
}

// WithClock sets the clock used for created_at, updated_at, applied_at and
// event times, so tests get deterministic timestamps. Times are stored in
// UTC. A nil clock means time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

// busyTimeout is how long a write waits for another process's transaction
// before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Open opens (creating if needed) the database at path and applies pending
// migrations, each in its own transaction together with its
// schema_migrations row. The parent directory is created 0700 and a new
// database file 0600. Every pooled connection runs in WAL mode with
// foreign keys on and a 5s busy timeout.
//
// If the database holds migrations this binary does not know, Open returns
// an error wrapping ErrIncompatibleSchema and leaves the files exactly as
// they were (the check is made read-only before anything is opened for
// writing).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	// busy_timeout makes statements wait for another connection's lock,
	// but not every step of opening does: switching a new database to WAL
	// while another process converts or migrates it can answer
	// SQLITE_BUSY at once. Opening has no effect until it succeeds, so it
	// is simply tried again, for as long as a statement would wait.
	deadline := time.Now().Add(busyTimeout)
	for {
		s, err := open(ctx, path, o)
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// oneRow is the outcome of a statement that must touch exactly the row it
// names: err as is, or ErrNotFound when it touched none.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// isBusy reports SQLITE_BUSY (any extended code of it).
func isBusy(err error) bool {
	return sqliteCode(err)&0xff == sqlite3.SQLITE_BUSY
}

func open(ctx context.Context, path string, o options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	// Refuse a newer database before opening it read-write: a read-write
	// open would already switch journal mode and create -wal/-shm files.
	// A database that needs WAL recovery cannot be checked read-only; the
	// same check runs again inside the first migration transaction.
	state, err := inspectSchema(ctx, abs, migrations)
	if err != nil && !errors.Is(err, errNeedsRecovery) {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	if err == nil && state.Kind == SchemaIncompatible {
		return nil, fmt.Errorf("store: open %s: %w", abs, incompatibleError(state.Unknown))
	}

	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: create directory: %w", abs, err)
	}
	if err := createFile(abs); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}

	params := url.Values{}
	params.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	params.Add("_pragma", "foreign_keys(1)")
	params.Add("_pragma", "journal_mode(WAL)")
	// In WAL mode NORMAL never corrupts the database; a power loss can only
	// drop the last commits, which reconcile repairs like any crash. FULL
	// would fsync on every commit, a few ms on each state change of a create.
	params.Add("_pragma", "synchronous(NORMAL)")
	// BEGIN IMMEDIATE takes the write lock up front, so a transaction that
	// reads then writes never fails halfway with SQLITE_BUSY (a deferred
	// transaction cannot wait to upgrade its read lock).
	params.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", fileURI(abs, params))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	s := &Store{db: db, path: abs, now: o.now, writeSem: make(chan struct{}, 1)}
	if err := migrate(ctx, db, migrations, s.nowUTC); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open %s: %w", abs, err)
	}
	return s, nil
}

// createFile creates path with mode 0600 if it does not exist, so SQLite
// (which would create it 0644 minus umask) finds a private file; the -wal
// and -shm files SQLite creates copy the database file's mode.
func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database file: %w", err)
	}
	return f.Close()
}

// fileURI builds an SQLite URI filename for an absolute path, escaping the
// characters ('?', '#', '%') SQLite would otherwise read as URI syntax.
func fileURI(absPath string, params url.Values) string {
	u := url.URL{Scheme: "file", Path: absPath, RawQuery: params.Encode()}
	return u.String()
}

// Close closes the database. The last connection checkpoints the WAL into
// the main file and removes the -wal and -shm files.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

func (s *Store) nowUTC() time.Time { return s.now().UTC() }

// writeTx runs fn in a write transaction (BEGIN IMMEDIATE), committing if fn
// returns nil. Writers in this process queue on writeSem, which honours ctx.
func (s *Store) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	select {
	case s.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writeSem }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// NewID returns a random 16-hex-digit identifier, the form banger uses for
// VM and image IDs.
func NewID() string {
	var b [8]byte
	// crypto/rand.Read never returns an error (it aborts the program if the
	// kernel cannot supply randomness).
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// timeLayout is RFC 3339 with fixed nine-digit fractions, so stored times
// sort as text in time order and parse with time.RFC3339Nano.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// nullTime stores the zero time as NULL.
func nullTime(t time.Time) sql.NullString {
	if t.IsZero() {
		return sql.NullString{}
	}
	return sql.NullString{String: formatTime(t), Valid: true}
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}

func parseNullTime(ns sql.NullString) (time.Time, error) {
	if !ns.Valid || ns.String == "" {
		return time.Time{}, nil
	}
	return parseTime(ns.String)
}

// sqliteCode returns the extended SQLite result code in err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isUniqueViolation reports a UNIQUE or PRIMARY KEY constraint failure.
func isUniqueViolation(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// isForeignKeyViolation reports a FOREIGN KEY constraint failure. SQLite
// implements ON DELETE RESTRICT as a trigger, so that case arrives as
// SQLITE_CONSTRAINT_TRIGGER with the foreign key message.
func isForeignKeyViolation(err error) bool {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return true
	case sqlite3.SQLITE_CONSTRAINT_TRIGGER:
		return strings.Contains(err.Error(), "FOREIGN KEY constraint failed")
	}
	return false
}

// conflictColumns extracts "vms.name" from SQLite's
// "UNIQUE constraint failed: vms.name" message, for error text.
func conflictColumns(err error) string {
	// The driver's text is "constraint failed: UNIQUE constraint failed:
	// vms.name (2067)"; the columns follow the last marker.
	msg := err.Error()
	const marker = "constraint failed: "
	i := strings.LastIndex(msg, marker)
	if i < 0 {
		return ""
	}
	cols := msg[i+len(marker):]
	if j := strings.Index(cols, " ("); j >= 0 {
		cols = cols[:j]
	}
	return cols
}

// alreadyExists turns a unique violation into an ErrAlreadyExists error
// naming the column that clashed.
func alreadyExists(err error, what string) error {
	cols := conflictColumns(err)
	if cols == "" {
		return fmt.Errorf("%w: another %s has the same key", ErrAlreadyExists, what)
	}
	// "leases.vm_id, leases.ip" -> "vm_id and ip"
	var fields []string
	for _, c := range strings.Split(cols, ", ") {
		if i := strings.LastIndexByte(c, '.'); i >= 0 {
			c = c[i+1:]
		}
		fields = append(fields, c)
	}
	return fmt.Errorf("%w: another %s has the same %s", ErrAlreadyExists, what, strings.Join(fields, " and "))
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// queryer is what *sql.DB and *sql.Tx share, so reads work in and out of a
// transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}
