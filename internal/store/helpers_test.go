package store

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testClock is a deterministic clock: each call returns a time one second
// after the previous one.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock {
	return &testClock{t: time.Date(2026, 4, 28, 20, 45, 50, 123456789, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openTestStore opens a fresh store in a temporary directory, closed at the
// end of the test.
func openTestStore(t *testing.T) (*Store, *testClock) {
	t.Helper()
	clock := newTestClock()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state", "banger.db"), WithClock(clock.Now))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, clock
}

// openRaw opens path read-write with no migrations, for building databases
// in particular states.
func openRaw(t *testing.T, path string) *sql.DB {
	t.Helper()
	params := url.Values{}
	params.Add("_pragma", "journal_mode(WAL)")
	params.Add("_pragma", "foreign_keys(1)")
	db, err := sql.Open("sqlite", fileURI(path, params))
	if err != nil {
		t.Fatalf("open raw %s: %v", path, err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("open raw %s: %v", path, err)
	}
	return db
}

// buildDB creates a database at path with the first n known migrations
// applied (n = 0: an SQLite file with an unrelated table and no
// schema_migrations), then runs extra SQL, and closes it cleanly.
func buildDB(t *testing.T, path string, n int, extra ...string) {
	t.Helper()
	db := openRaw(t, path)
	defer func() { _ = db.Close() }()
	ctx := context.Background()
	if n == 0 {
		if _, err := db.ExecContext(ctx, `CREATE TABLE unrelated (x INTEGER)`); err != nil {
			t.Fatal(err)
		}
	} else if err := migrate(ctx, db, migrations[:n], newTestClock().Now); err != nil {
		t.Fatalf("migrate %d: %v", n, err)
	}
	for _, q := range extra {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// fileState is what "unchanged" means for one file.
type fileState struct {
	exists bool
	size   int64
	mode   fs.FileMode
	mtime  time.Time
}

// snapshot records the database file and its -wal, -shm and -journal side
// files.
func snapshot(t *testing.T, path string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			out[p] = fileState{}
		case err != nil:
			t.Fatal(err)
		default:
			out[p] = fileState{exists: true, size: fi.Size(), mode: fi.Mode(), mtime: fi.ModTime()}
		}
	}
	return out
}

func assertUnchanged(t *testing.T, before, after map[string]fileState) {
	t.Helper()
	for p, b := range before {
		if a := after[p]; a != b {
			t.Errorf("%s changed: before %+v, after %+v", filepath.Base(p), b, a)
		}
	}
}

func allIDs() []int {
	ids := make([]int, len(migrations))
	for i, m := range migrations {
		ids[i] = m.ID
	}
	return ids
}
