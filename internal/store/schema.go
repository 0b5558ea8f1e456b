package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// SchemaKind classifies a database against the migrations this binary knows.
// The zero value is not a valid kind, so an unset SchemaState never reads as
// compatible.
type SchemaKind int

const (
	// SchemaCompatible: the database has applied exactly the known
	// migrations.
	SchemaCompatible SchemaKind = iota + 1
	// SchemaMigrationsNeeded: the binary is newer; Open will apply Pending.
	// A missing database or one without schema_migrations is this kind,
	// with every migration pending.
	SchemaMigrationsNeeded
	// SchemaIncompatible: the database has applied migrations (Unknown) this
	// binary does not know; it was written by a newer banger and Open will
	// refuse it.
	SchemaIncompatible
)

// SchemaState is the result of InspectSchemaState.
type SchemaState struct {
	Kind SchemaKind
	// Applied are the migration IDs recorded in the database, ascending.
	Applied []int
	// Pending are known migration IDs the database has not applied.
	Pending []int
	// Unknown are applied IDs this binary does not know.
	Unknown []int
}

// Line is the one-line human classification `bangerd --check-migrations`
// prints, e.g. "compatible: 3 migrations applied".
func (s SchemaState) Line() string {
	switch s.Kind {
	case SchemaCompatible:
		noun := "migrations"
		if len(s.Applied) == 1 {
			noun = "migration"
		}
		return fmt.Sprintf("compatible: %d %s applied", len(s.Applied), noun)
	case SchemaMigrationsNeeded:
		return fmt.Sprintf("migrations needed: pending %v (binary will apply on first Open)", s.Pending)
	case SchemaIncompatible:
		return fmt.Sprintf("incompatible: database has unknown migrations %v (written by a newer banger)", s.Unknown)
	}
	return fmt.Sprintf("unknown schema state %d", int(s.Kind))
}

// ExitCode is the `bangerd --check-migrations` exit status: 0 compatible,
// 1 migrations needed (safe to swap binaries), 2 incompatible. An invalid
// state also gives 2, so an updater never proceeds on garbage.
func (s SchemaState) ExitCode() int {
	switch s.Kind {
	case SchemaCompatible:
		return 0
	case SchemaMigrationsNeeded:
		return 1
	}
	return 2
}

// InspectSchemaState classifies the database at path against the
// migrations this binary knows, without creating or writing anything: a
// missing file is reported as "all migrations pending" (a fresh install),
// as is a database without a schema_migrations table. It is safe to run
// against a database a running daemon has open, which is how an updater
// checks a staged binary before swapping it in.
func InspectSchemaState(path string) (SchemaState, error) {
	st, err := inspectSchema(context.Background(), path, migrations)
	if err != nil {
		return SchemaState{}, fmt.Errorf("store: inspect schema of %s: %w", path, err)
	}
	return st, nil
}

func inspectSchema(ctx context.Context, path string, known []Migration) (SchemaState, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return SchemaState{}, err
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return classify(nil, known), nil
	}
	if err != nil {
		return SchemaState{}, err
	}
	if !fi.Mode().IsRegular() {
		return SchemaState{}, fmt.Errorf("%s is not a regular file", abs)
	}
	applied, err := readAppliedReadOnly(ctx, abs)
	if err != nil {
		return SchemaState{}, err
	}
	return classify(applied, known), nil
}

func classify(applied []int, known []Migration) SchemaState {
	st := SchemaState{
		Applied: applied,
		Pending: pendingIDs(applied, known),
		Unknown: unknownIDs(applied, known),
	}
	switch {
	case len(st.Unknown) > 0:
		st.Kind = SchemaIncompatible
	case len(st.Pending) > 0:
		st.Kind = SchemaMigrationsNeeded
	default:
		st.Kind = SchemaCompatible
	}
	return st
}

// errNeedsRecovery marks a database only a read-write open can read (it
// must rebuild the WAL index); Open goes ahead, InspectSchemaState reports it.
var errNeedsRecovery = errors.New("database needs recovery")

// readAppliedReadOnly reads schema_migrations without writing a byte.
//
// A plain read-only connection to a WAL database is not enough: with no
// -wal file present SQLite creates -wal and -shm (owned by whoever runs the
// check, which could lock a daemon out of its own database). So:
//   - no -wal file: everything is in the main file; read it as immutable,
//     which takes no locks and opens no side files;
//   - a -wal file (a daemon has the database open, or crashed): read through
//     it so recently committed migrations count, with the shared-memory file
//     opened read-only so nothing is created or modified.
func readAppliedReadOnly(ctx context.Context, abs string) ([]int, error) {
	params := url.Values{}
	params.Set("mode", "ro")
	switch hasWAL, hasSHM := exists(abs+"-wal"), exists(abs+"-shm"); {
	case !hasWAL:
		params.Set("immutable", "1")
	case hasSHM:
		params.Set("readonly_shm", "1")
	default:
		// Reading the WAL needs its index; building one would create the
		// -shm file. Only a hand-deleted -shm gets here.
		return nil, fmt.Errorf("%w: %s-wal exists without %s-shm; start bangerd once to recover the database, then check again",
			errNeedsRecovery, filepath.Base(abs), filepath.Base(abs))
	}
	db, err := sql.Open("sqlite", fileURI(abs, params))
	if err != nil {
		return nil, err
	}
	defer func() { _ = db.Close() }() // read only: nothing to lose
	db.SetMaxOpenConns(1)

	var n int
	err = db.QueryRowContext(ctx,
		`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n)
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	return appliedIDs(ctx, db)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
