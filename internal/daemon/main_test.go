package daemon

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/banger-dev/banger/internal/store"
)

// checkMigrations runs `bangerd --check-migrations` in-process against a
// user layout under dir and returns its line and exit code.
func checkMigrations(t *testing.T, dir string) (string, int) {
	t.Helper()
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"--check-migrations"}, &out, &errOut)
	return strings.TrimSpace(out.String() + errOut.String()), code
}

func TestCheckMigrationsClassesAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state", "banger", "banger.db")

	line, code := checkMigrations(t, dir)
	if code != 1 || !strings.HasPrefix(line, "migrations needed: pending [1 2") {
		t.Fatalf("missing file: %q exit %d", line, code)
	}

	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	line, code = checkMigrations(t, dir)
	if code != 0 || !strings.HasPrefix(line, "compatible") {
		t.Fatalf("fully migrated: %q exit %d", line, code)
	}

	raw, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = raw.Close() }()
	if _, err := raw.Exec(`DELETE FROM schema_migrations WHERE id > 1`); err != nil {
		t.Fatal(err)
	}
	line, code = checkMigrations(t, dir)
	if code != 1 || !strings.Contains(line, "pending [2") || !strings.Contains(line, "(binary will apply on first Open)") {
		t.Fatalf("only first applied: %q exit %d", line, code)
	}

	if _, err := raw.Exec(`DROP TABLE schema_migrations`); err != nil {
		t.Fatal(err)
	}
	line, code = checkMigrations(t, dir)
	if code != 1 || !strings.HasPrefix(line, "migrations needed: pending [1 2") {
		t.Fatalf("missing table: %q exit %d", line, code)
	}

	if _, err := raw.Exec(`CREATE TABLE schema_migrations (id INTEGER PRIMARY KEY, name TEXT, applied_at TEXT); INSERT INTO schema_migrations VALUES (1,'a','x'),(99,'future','x')`); err != nil {
		t.Fatal(err)
	}
	line, code = checkMigrations(t, dir)
	if code != 2 || !strings.HasPrefix(line, "incompatible") || !strings.Contains(line, "[99]") {
		t.Fatalf("future id: %q exit %d", line, code)
	}
}
