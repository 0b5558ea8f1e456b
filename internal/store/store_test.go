package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestOpenCreatesPrivateDirectoryAndFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "banger.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	for p, want := range map[string]os.FileMode{
		dir:           os.ModeDir | 0o700,
		path:          0o600,
		path + "-wal": 0o600,
		path + "-shm": 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestOpenSetsPragmasOnEveryConnection(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	// Hold several connections at once so the pool must open new ones.
	for i := range 4 {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		var journal string
		var fk, busy int
		if err := conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&journal); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if journal != "wal" || fk != 1 || busy != 5000 {
			t.Errorf("connection %d: journal_mode=%s foreign_keys=%d busy_timeout=%d, want wal 1 5000", i, journal, fk, busy)
		}
	}
}

func TestOpenAppliesPendingMigrationsAndKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	buildDB(t, path, 1, `INSERT INTO images (id, name, kernel_path, rootfs_path, source, created_at)
		VALUES ('0123456789abcdef', 'base', '/k', '/r', 'import', '2026-01-02T03:04:05.000000000Z')`)

	clock := newTestClock()
	s, err := Open(context.Background(), path, WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()

	st, err := InspectSchemaState(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != SchemaCompatible {
		t.Errorf("after Open: %s", st.Line())
	}
	im, err := s.GetImage(context.Background(), "base")
	if err != nil {
		t.Fatalf("image written before the upgrade: %v", err)
	}
	if im.RootfsPath != "/r" {
		t.Errorf("image = %+v", im)
	}

	rows, err := s.db.Query(`SELECT id, name, applied_at FROM schema_migrations ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		var name, at string
		if err := rows.Scan(&id, &name, &at); err != nil {
			t.Fatal(err)
		}
		if name != migrations[id-1].Name {
			t.Errorf("migration %d recorded as %q", id, name)
		}
		if _, err := parseTime(at); err != nil {
			t.Errorf("migration %d applied_at: %v", id, err)
		}
		ids = append(ids, id)
	}
	if !slices.Equal(ids, allIDs()) {
		t.Errorf("schema_migrations = %v, want %v", ids, allIDs())
	}
}

func TestOpenIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	for range 3 {
		s, err := Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := InspectSchemaState(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind != SchemaCompatible {
		t.Error(st.Line())
	}
	// A clean close leaves no side files behind.
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after Close", suffix)
		}
	}
}

// Two processes (here: two Stores) opening a fresh database at once must
// both succeed and apply each migration once.
func TestConcurrentOpenAppliesMigrationsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	var wg sync.WaitGroup
	errs := make([]error, 4)
	stores := make([]*Store, 4)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = Open(context.Background(), path) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer func() { _ = stores[i].Close() }()
	}
	var n int
	if err := stores[0].db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(migrations) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(migrations))
	}
}

func TestOpenRefusesNewerDatabaseAndChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	buildDB(t, path, len(migrations),
		`INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, 'future', '2030-01-01T00:00:00Z')`)
	before := snapshot(t, path)

	s, err := Open(context.Background(), path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open accepted a database with an unknown migration")
	}
	if !errors.Is(err, ErrIncompatibleSchema) {
		t.Errorf("err = %v, want ErrIncompatibleSchema", err)
	}
	for _, want := range []string{"[99]", "this database was written by a newer banger; upgrade banger or restore a backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	assertUnchanged(t, before, snapshot(t, path))
}

// The in-transaction check guards against a newer banger writing the
// database between Open's read-only check and its migrations.
func TestMigrateRefusesUnknownIDsWithoutChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	buildDB(t, path, 1,
		`INSERT INTO schema_migrations (id, name, applied_at) VALUES (99, 'future', '2030-01-01T00:00:00Z')`)
	db := openRaw(t, path)
	defer func() { _ = db.Close() }()

	err := migrate(context.Background(), db, migrations, newTestClock().Now)
	if !errors.Is(err, ErrIncompatibleSchema) {
		t.Fatalf("migrate: %v, want ErrIncompatibleSchema", err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'leases'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("migration 2 ran on an incompatible database")
	}
}

func TestOpenRejectsNonDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("garbage ", 200)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(context.Background(), path); err == nil {
		_ = s.Close()
		t.Fatal("Open accepted garbage")
	}
}

func TestPathWithURISyntaxCharacters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "odd ?#% dir", "banger.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the path given: %v", err)
	}
	st, err := InspectSchemaState(path)
	if err != nil || st.Kind != SchemaCompatible {
		t.Errorf("InspectSchemaState = %s, %v", st.Line(), err)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("NewID() = %q, want 16 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

// TestOpenDropsTheUnusedEventsTable: a database from before migration 5,
// holding an events row, opens with the table and its indexes gone.
func TestOpenDropsTheUnusedEventsTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	buildDB(t, path, 4, `INSERT INTO events (at, kind) VALUES ('2026-01-02T03:04:05.000000000Z', 'vm.started')`)
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	var left []string
	rows, err := s.db.Query(`SELECT name FROM sqlite_schema WHERE name LIKE 'events%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		left = append(left, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("after migrating, the schema still holds %v", left)
	}
}
