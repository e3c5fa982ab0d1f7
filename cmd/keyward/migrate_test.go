package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateNewerStore: keyward migrate on a store a newer keyward
// migrated says so and fails, where it used to print "migrated".
func TestMigrateNewerStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cli(t, nil, nil, "", "init", "--data-dir", dir).want(t, 0)
	r := cli(t, nil, nil, "", "migrate", "--data-dir", dir)
	r.want(t, 0)
	if want := "SQLite store in " + dir + " migrated: it was up to date, nothing applied.\n"; r.stdout != want {
		t.Errorf("migrate of a store up to date: %q, want %q", r.stdout, want)
	}
	// A store of an earlier release: migrate says what it applied.
	execSQL(t, dir, `DROP INDEX audit_events_workspace_actor`)
	execSQL(t, dir, `DELETE FROM schema_migrations WHERE name = '0008_audit_actor_index.sql'`)
	r = cli(t, nil, nil, "", "migrate", "--data-dir", dir)
	r.want(t, 0)
	if want := "SQLite store in " + dir + " migrated: applied 0008_audit_actor_index.sql.\n"; r.stdout != want {
		t.Errorf("migrate of an earlier store: %q, want %q", r.stdout, want)
	}
	execSQL(t, dir, `INSERT INTO schema_migrations (name, applied_at) VALUES ('0999_future.sql', 1)`)
	// Nothing is written to it either: a workspace without its name key,
	// as an earlier release leaves, keeps it so.
	execSQL(t, dir, `UPDATE workspaces SET name_key = NULL`)
	r = cli(t, nil, nil, "", "migrate", "--data-dir", dir)
	r.want(t, 1)
	if !strings.Contains(r.stderr, "the store is of a newer keyward (migrations 0999_future.sql): this release cannot migrate it; run that release") || r.stdout != "" {
		t.Errorf("migrate of a newer store: stdout %q, stderr %q", r.stdout, r.stderr)
	}
	var keyed int
	if err := openDB(t, dir).QueryRow(`SELECT COUNT(*) FROM workspaces WHERE name_key IS NOT NULL`).Scan(&keyed); err != nil || keyed != 0 {
		t.Errorf("migrate wrote to the newer store: %d workspaces keyed, %v", keyed, err)
	}
}

// openDB opens the data dir's database for the test's own queries.
func openDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "keyward.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestMigrateNotADatabase: migrate names the file it cannot read, as
// every other command that opens the store does.
func TestMigrateNotADatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cli(t, nil, nil, "", "init", "--data-dir", dir).want(t, 0)
	db := filepath.Join(dir, "keyward.db")
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database ", 512)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := cli(t, nil, nil, "", "migrate", "--data-dir", dir)
	r.want(t, 1)
	if want := "keyward: sqlite: reading " + db + ": file is not a database (26)\n"; r.stderr != want {
		t.Errorf("migrate of a file that is no database: stderr %q, want %q", r.stderr, want)
	}
}
