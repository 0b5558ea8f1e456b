package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// Migration is one numbered schema change. IDs start at 1, increase by one
// and are never renumbered or edited once released: a database records the
// IDs it has applied, and a binary that meets an ID it does not know refuses
// the database. To change the schema, append a migration.
type Migration struct {
	ID   int
	Name string
	SQL  string
}

// migrations is the schema, oldest first.
//
// Conventions: STRICT tables; times are TEXT in RFC 3339 UTC with nine
// fraction digits (see timeLayout), NULL for "never"; JSON columns are TEXT
// checked with json_valid. Enumerations such as vms.state are validated in
// Go, not with CHECK, because SQLite cannot alter a CHECK without rebuilding
// the table.
var migrations = []Migration{
	{
		ID:   1,
		Name: "images and vms",
		SQL: `
CREATE TABLE images (
	id                TEXT PRIMARY KEY,
	name              TEXT NOT NULL UNIQUE,
	kernel_path       TEXT NOT NULL,
	initrd_path       TEXT NOT NULL DEFAULT '',
	rootfs_path       TEXT NOT NULL,
	rootfs_size_bytes INTEGER NOT NULL DEFAULT 0 CHECK (rootfs_size_bytes >= 0),
	source            TEXT NOT NULL,
	created_at        TEXT NOT NULL,
	meta              TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta))
) STRICT;

CREATE TABLE vms (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL UNIQUE,
	image_id        TEXT REFERENCES images(id) ON DELETE RESTRICT,
	image_name      TEXT NOT NULL DEFAULT '',
	vcpus           INTEGER NOT NULL CHECK (vcpus > 0),
	memory_mib      INTEGER NOT NULL CHECK (memory_mib > 0),
	disk_size_bytes INTEGER NOT NULL DEFAULT 0 CHECK (disk_size_bytes >= 0),
	network         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(network)),
	autostart       INTEGER NOT NULL DEFAULT 0 CHECK (autostart IN (0, 1)),
	created_at      TEXT NOT NULL,

	-- Observed state, rewritten by UpdateVMState.
	state       TEXT NOT NULL,
	vmm         TEXT NOT NULL DEFAULT '',
	pid         INTEGER NOT NULL DEFAULT 0,
	api_socket  TEXT NOT NULL DEFAULT '',
	run_dir     TEXT NOT NULL DEFAULT '',
	started_at  TEXT,
	stopped_at  TEXT,
	updated_at  TEXT NOT NULL,
	last_error  TEXT NOT NULL DEFAULT '',
	exit_status TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX vms_image_id ON vms(image_id);
`,
	},
	{
		ID:   2,
		Name: "leases",
		SQL: `
CREATE TABLE leases (
	vm_id      TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
	ip         TEXT NOT NULL UNIQUE,
	mac        TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL
) STRICT;

-- Two guests on one bridge must not share a MAC; '' means "not chosen".
CREATE UNIQUE INDEX leases_mac ON leases(mac) WHERE mac <> '';
`,
	},
	{
		ID:   3,
		Name: "events",
		SQL: `
-- The daemon's event log. No foreign key to vms: events outlive the VM
-- they describe, which is when they are most wanted.
CREATE TABLE events (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	at      TEXT NOT NULL,
	kind    TEXT NOT NULL,
	vm_id   TEXT NOT NULL DEFAULT '',
	vm_name TEXT NOT NULL DEFAULT '',
	message TEXT NOT NULL DEFAULT '',
	data    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(data))
) STRICT;

CREATE INDEX events_vm_id ON events(vm_id, id);
CREATE INDEX events_at ON events(at);
`,
	},
	{
		ID:   4,
		Name: "vmm start time",
		SQL: `
-- With pid, names the VMM process for good: a reused pid starts later.
-- Clock ticks after boot (/proc/PID/stat field 22); 0 when unknown.
ALTER TABLE vms ADD COLUMN pid_start_time INTEGER NOT NULL DEFAULT 0 CHECK (pid_start_time >= 0);
`,
	},
	{
		ID:   5,
		Name: "drop events",
		SQL: `
-- Migration 3's event log was never written: the daemon's events go to
-- subscribers as they happen and to its log. Its indexes go with it.
DROP TABLE events;
`,
	},
	{
		ID:   6,
		Name: "snapshots",
		SQL: `
-- Saved VM states. No foreign keys: a snapshot outlives the VM it was taken
-- of (a golden snapshot's throwaway VM is deleted at once) and names its VM
-- and image for display; restoring checks the image still exists.
CREATE TABLE snapshots (
	id              TEXT PRIMARY KEY,
	name            TEXT NOT NULL UNIQUE,
	vm_id           TEXT NOT NULL DEFAULT '',
	vm_name         TEXT NOT NULL DEFAULT '',
	image_id        TEXT NOT NULL DEFAULT '',
	image_name      TEXT NOT NULL DEFAULT '',
	vmm             TEXT NOT NULL,
	vcpus           INTEGER NOT NULL CHECK (vcpus > 0),
	memory_mib      INTEGER NOT NULL CHECK (memory_mib > 0),
	disk_size_bytes INTEGER NOT NULL DEFAULT 0 CHECK (disk_size_bytes >= 0),
	golden          INTEGER NOT NULL DEFAULT 0 CHECK (golden IN (0, 1)),
	key             TEXT NOT NULL DEFAULT '',
	network         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(network)),
	state           TEXT NOT NULL,
	size_bytes      INTEGER NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
	created_at      TEXT NOT NULL
) STRICT;

CREATE INDEX snapshots_vm_id ON snapshots(vm_id);
-- Warm create looks up an image's golden snapshot by key.
CREATE INDEX snapshots_golden_key ON snapshots(key) WHERE golden = 1;
`,
	},
	{
		ID:   7,
		Name: "vm egress and lifetime",
		SQL: `
-- When the daemon ends a VM on its own (lifetime.go): at expires_at (NULL:
-- never), or after idle_ttl_seconds without activity (0: never), by
-- ttl_action. The egress policy lives in the network JSON beside isolation.
ALTER TABLE vms ADD COLUMN expires_at TEXT;
ALTER TABLE vms ADD COLUMN idle_ttl_seconds INTEGER NOT NULL DEFAULT 0 CHECK (idle_ttl_seconds >= 0);
ALTER TABLE vms ADD COLUMN ttl_action TEXT NOT NULL DEFAULT 'delete' CHECK (ttl_action IN ('delete', 'stop'));
`,
	},
	{
		ID:   8,
		Name: "vm labels",
		SQL: `
-- The user's key=value tags on a VM (JSON object of strings); the MCP
-- server records the agent that created a VM as "creator".
ALTER TABLE vms ADD COLUMN labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels));
`,
	},
	{
		ID:   9,
		Name: "image source",
		SQL: `
-- Where an image made from a container image came from (the reference as
-- given, its manifest digest, the platform picked) and its config, whose
-- Env, WorkingDir and User are the defaults of vm exec in its VMs.
ALTER TABLE images ADD COLUMN source_ref TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN source_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN source_platform TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN config TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config));
-- The cached blobs the image was made from, as a JSON array of digests:
-- image prune keeps these.
ALTER TABLE images ADD COLUMN blobs TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(blobs));
`,
	},
	{
		ID:   10,
		Name: "snapshot last use",
		SQL: `
-- When a warm create last restored a golden snapshot (NULL: never since it
-- was made): an image keeps its most recently used golden snapshots and
-- the least recently used goes when the count passes image.golden_snapshots.
ALTER TABLE snapshots ADD COLUMN last_used_at TEXT;
`,
	},
}

// schemaMigrationsDDL creates the bookkeeping table. It is not a numbered
// migration: it must exist before any migration can be recorded.
const schemaMigrationsDDL = `CREATE TABLE IF NOT EXISTS schema_migrations (
	id         INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`

// validateMigrations checks the invariant migrate relies on: IDs 1..n in
// order.
func validateMigrations(known []Migration) error {
	for i, m := range known {
		if m.ID != i+1 {
			return fmt.Errorf("migration list is broken: entry %d has id %d, want %d", i, m.ID, i+1)
		}
	}
	return nil
}

// migrate applies the migrations in known that db has not applied, each in
// its own write transaction with its schema_migrations row, so a crash
// leaves the database at a migration boundary. Every transaction re-reads
// the applied IDs under the write lock, so two processes opening the same
// database never apply a migration twice, and a database that (meanwhile)
// holds unknown IDs is refused without change.
func migrate(ctx context.Context, db *sql.DB, known []Migration, now func() time.Time) error {
	if err := validateMigrations(known); err != nil {
		return err
	}
	for _, m := range known {
		if err := applyMigration(ctx, db, known, m, now); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, known []Migration, m Migration, now func() time.Time) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %d (%s): begin: %w", m.ID, m.Name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()

	if _, err := tx.ExecContext(ctx, schemaMigrationsDDL); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := appliedIDs(ctx, tx)
	if err != nil {
		return err
	}
	if unknown := unknownIDs(applied, known); len(unknown) > 0 {
		return incompatibleError(unknown)
	}
	if slices.Contains(applied, m.ID) {
		// Nothing to do; rolling back also undoes a schema_migrations
		// creation that turned out to be needless.
		return tx.Rollback()
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migration %d (%s): %w", m.ID, m.Name, err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)`,
		m.ID, m.Name, formatTime(now())); err != nil {
		return fmt.Errorf("migration %d (%s): record: %w", m.ID, m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %d (%s): commit: %w", m.ID, m.Name, err)
	}
	return nil
}

// appliedIDs reads schema_migrations, ascending. The table must exist.
func appliedIDs(ctx context.Context, q queryer) ([]int, error) {
	rows, err := q.QueryContext(ctx, `SELECT id FROM schema_migrations ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	var ids []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return ids, nil
}

// unknownIDs returns the applied IDs that known does not contain.
func unknownIDs(applied []int, known []Migration) []int {
	var out []int
	for _, id := range applied {
		if !slices.ContainsFunc(known, func(m Migration) bool { return m.ID == id }) {
			out = append(out, id)
		}
	}
	return out
}

// pendingIDs returns the known IDs not in applied.
func pendingIDs(applied []int, known []Migration) []int {
	var out []int
	for _, m := range known {
		if !slices.Contains(applied, m.ID) {
			out = append(out, m.ID)
		}
	}
	return out
}

func incompatibleError(unknown []int) error {
	return fmt.Errorf("%w: database has migrations %v that this banger does not know; "+
		"this database was written by a newer banger; upgrade banger or restore a backup",
		ErrIncompatibleSchema, unknown)
}
