package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMigrationsAreNumberedFromOne(t *testing.T) {
	if len(migrations) < 2 {
		t.Fatalf("want at least 2 migrations, have %d", len(migrations))
	}
	if err := validateMigrations(migrations); err != nil {
		t.Fatal(err)
	}
	for _, m := range migrations {
		if m.Name == "" || strings.TrimSpace(m.SQL) == "" {
			t.Errorf("migration %d has an empty name or SQL", m.ID)
		}
	}
	if err := validateMigrations([]Migration{{ID: 1}, {ID: 3}}); err == nil {
		t.Error("validateMigrations accepted a gap")
	}
}

func TestInspectSchemaState(t *testing.T) {
	n := len(migrations)
	tests := []struct {
		name        string
		setup       func(t *testing.T, path string)
		wantKind    SchemaKind
		wantApplied []int
		wantPending []int
		wantUnknown []int
		wantLine    string
		wantExit    int
	}{
		{
			name:        "missing file",
			setup:       func(*testing.T, string) {},
			wantKind:    SchemaMigrationsNeeded,
			wantPending: allIDs(),
			wantLine:    fmt.Sprintf("migrations needed: pending %v (binary will apply on first Open)", allIDs()),
			wantExit:    1,
		},
		{
			name: "empty file",
			setup: func(t *testing.T, path string) {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantKind:    SchemaMigrationsNeeded,
			wantPending: allIDs(),
			wantLine:    fmt.Sprintf("migrations needed: pending %v (binary will apply on first Open)", allIDs()),
			wantExit:    1,
		},
		{
			name:        "sqlite database without schema_migrations",
			setup:       func(t *testing.T, path string) { buildDB(t, path, 0) },
			wantKind:    SchemaMigrationsNeeded,
			wantPending: allIDs(),
			wantLine:    fmt.Sprintf("migrations needed: pending %v (binary will apply on first Open)", allIDs()),
			wantExit:    1,
		},
		{
			name:        "only the first migration applied",
			setup:       func(t *testing.T, path string) { buildDB(t, path, 1) },
			wantKind:    SchemaMigrationsNeeded,
			wantApplied: []int{1},
			wantPending: allIDs()[1:],
			wantLine:    fmt.Sprintf("migrations needed: pending %v (binary will apply on first Open)", allIDs()[1:]),
			wantExit:    1,
		},
		{
			name:        "fully migrated",
			setup:       func(t *testing.T, path string) { buildDB(t, path, n) },
			wantKind:    SchemaCompatible,
			wantApplied: allIDs(),
			wantLine:    fmt.Sprintf("compatible: %d migrations applied", n),
			wantExit:    0,
		},
		{
			name: "written by a newer banger",
			setup: func(t *testing.T, path string) {
				buildDB(t, path, n, `INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, 'future', '2030-01-01T00:00:00Z')`)
			},
			wantKind:    SchemaIncompatible,
			wantApplied: append(allIDs(), 99),
			wantUnknown: []int{99},
			wantLine:    "incompatible: database has unknown migrations [99] (written by a newer banger)",
			wantExit:    2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "banger.db")
			tt.setup(t, path)
			before := snapshot(t, path)

			st, err := InspectSchemaState(path)
			if err != nil {
				t.Fatalf("InspectSchemaState: %v", err)
			}
			assertUnchanged(t, before, snapshot(t, path))

			if st.Kind != tt.wantKind {
				t.Errorf("Kind = %v, want %v", st.Kind, tt.wantKind)
			}
			if !slices.Equal(st.Applied, tt.wantApplied) {
				t.Errorf("Applied = %v, want %v", st.Applied, tt.wantApplied)
			}
			if !slices.Equal(st.Pending, tt.wantPending) {
				t.Errorf("Pending = %v, want %v", st.Pending, tt.wantPending)
			}
			if !slices.Equal(st.Unknown, tt.wantUnknown) {
				t.Errorf("Unknown = %v, want %v", st.Unknown, tt.wantUnknown)
			}
			if got := st.Line(); got != tt.wantLine {
				t.Errorf("Line() = %q, want %q", got, tt.wantLine)
			}
			if got := st.ExitCode(); got != tt.wantExit {
				t.Errorf("ExitCode() = %d, want %d", got, tt.wantExit)
			}
		})
	}
}

func TestSchemaStateLineAndExitCode(t *testing.T) {
	tests := []struct {
		st   SchemaState
		line string
		exit int
	}{
		{SchemaState{Kind: SchemaCompatible, Applied: []int{1, 2, 3}}, "compatible: 3 migrations applied", 0},
		{SchemaState{Kind: SchemaCompatible, Applied: []int{1}}, "compatible: 1 migration applied", 0},
		{SchemaState{Kind: SchemaMigrationsNeeded, Applied: []int{1, 2}, Pending: []int{3}},
			"migrations needed: pending [3] (binary will apply on first Open)", 1},
		{SchemaState{Kind: SchemaIncompatible, Unknown: []int{99}},
			"incompatible: database has unknown migrations [99] (written by a newer banger)", 2},
		// An unset state must never let an updater proceed.
		{SchemaState{}, "unknown schema state 0", 2},
	}
	for _, tt := range tests {
		if got := tt.st.Line(); got != tt.line {
			t.Errorf("Line() = %q, want %q", got, tt.line)
		}
		if got := tt.st.ExitCode(); got != tt.exit {
			t.Errorf("%q: ExitCode() = %d, want %d", tt.line, got, tt.exit)
		}
	}
}

func TestInspectSchemaStateDoesNotCreateTheFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet")
	path := filepath.Join(dir, "banger.db")
	if _, err := InspectSchemaState(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("InspectSchemaState created %s (stat err %v)", dir, err)
	}
}

// A running daemon keeps recent commits in the -wal file; the inspection
// must see them and leave the daemon's files alone.
func TestInspectSchemaStateWhileDatabaseIsOpen(t *testing.T) {
	s, _ := openTestStore(t)
	before := snapshot(t, s.path)
	if !before[s.path+"-wal"].exists {
		t.Fatal("expected an open store to have a -wal file")
	}

	st, err := InspectSchemaState(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != SchemaCompatible {
		t.Errorf("Kind = %v, want compatible (%s)", st.Kind, st.Line())
	}
	assertUnchanged(t, before, snapshot(t, s.path))

	// A commit that exists only in the WAL still counts.
	if _, err := s.db.Exec(`INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, 'future', 'x')`); err != nil {
		t.Fatal(err)
	}
	before = snapshot(t, s.path)
	st, err = InspectSchemaState(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != SchemaIncompatible || !slices.Equal(st.Unknown, []int{99}) {
		t.Errorf("got %s, want incompatible with unknown [99]", st.Line())
	}
	assertUnchanged(t, before, snapshot(t, s.path))
}

// After a crash the -wal and -shm files stay behind with no process
// holding them; the inspection must read through them without touching
// them.
func TestInspectSchemaStateAfterCrash(t *testing.T) {
	s, _ := openTestStore(t)
	if _, err := s.db.Exec(`INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, 'future', 'x')`); err != nil {
		t.Fatal(err)
	}
	// Copying the files of an open database is what a crash leaves.
	crashed := filepath.Join(t.TempDir(), "banger.db")
	for _, suffix := range []string{"", "-wal", "-shm"} {
		copyFile(t, s.path+suffix, crashed+suffix)
	}
	before := snapshot(t, crashed)

	st, err := InspectSchemaState(crashed)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != SchemaIncompatible {
		t.Errorf("got %s, want incompatible", st.Line())
	}
	assertUnchanged(t, before, snapshot(t, crashed))
}

func TestInspectSchemaStateRefusesWALWithoutIndex(t *testing.T) {
	s, _ := openTestStore(t)
	orphan := filepath.Join(t.TempDir(), "banger.db")
	copyFile(t, s.path, orphan)
	copyFile(t, s.path+"-wal", orphan+"-wal")
	before := snapshot(t, orphan)
	_, err := InspectSchemaState(orphan)
	if err == nil || !strings.Contains(err.Error(), "without banger.db-shm") {
		t.Errorf("err = %v, want a message about the missing -shm file", err)
	}
	assertUnchanged(t, before, snapshot(t, orphan))

	// Open can recover it, and keeps what the WAL held.
	vm := testVM("dev")
	if err := s.CreateVM(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	orphan = filepath.Join(t.TempDir(), "banger.db")
	copyFile(t, s.path, orphan)
	copyFile(t, s.path+"-wal", orphan+"-wal")
	recovered, err := Open(context.Background(), orphan)
	if err != nil {
		t.Fatalf("Open of a database needing recovery: %v", err)
	}
	defer func() { _ = recovered.Close() }()
	if _, err := recovered.GetVM(context.Background(), "dev"); err != nil {
		t.Errorf("VM committed to the WAL lost in recovery: %v", err)
	}
}

func TestInspectSchemaStateRejectsNonDatabase(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := InspectSchemaState(garbage); err == nil {
		t.Error("InspectSchemaState accepted a file that is not a database")
	}
	if _, err := InspectSchemaState(dir); err == nil {
		t.Error("InspectSchemaState accepted a directory")
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
