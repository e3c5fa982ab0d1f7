//go:build unix

package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/storetest"
)

// TestLinkUnchainedKeepsLocks: linking a pre-chain audit log looks whether
// another process has the store open. That look must leave this process's
// own locks on the -shm file in place (closing any descriptor of a file
// drops them all): without them, another process opening the store would
// take itself for the first and reset the shared memory under this one.
func TestLinkUnchainedKeepsLocks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "keyward.db")
	db, err := Open(ctx, path, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	seed(t, db, "default")
	db.Close()
	// The store as a release before the audit chain left it.
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP TABLE audit_heads`,
		`DROP INDEX audit_events_workspace_seq`,
		`ALTER TABLE audit_events DROP COLUMN mac`,
		`ALTER TABLE audit_events DROP COLUMN prev_mac`,
		`DELETE FROM schema_migrations WHERE name = '0002_audit_chain.sql'`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()

	db, err = Open(ctx, path, WithAuditKey(storetest.AuditKey), WithLinkUnchainedAudit())
	if err != nil {
		t.Fatalf("linking the audit log: %v", err)
	}
	defer db.Close()
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("the linked store: %d events, %v", n, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOpenElsewhere$", "-test.v")
	cmd.Env = append(os.Environ(), "KEYWARD_TEST_OPEN_ELSEWHERE="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the helper process: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "open elsewhere: true") {
		t.Fatalf("another process does not see the store open while this one serves it:\n%s", out)
	}
}

// TestHelperOpenElsewhere is TestLinkUnchainedKeepsLocks's other process,
// not a test: it says whether a process other than itself has the store
// named by its environment open.
func TestHelperOpenElsewhere(t *testing.T) {
	p := os.Getenv("KEYWARD_TEST_OPEN_ELSEWHERE")
	if p == "" {
		t.Skip("the helper process of TestLinkUnchainedKeepsLocks")
	}
	open, err := openElsewhere(p)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("open elsewhere: %v\n", open)
}
