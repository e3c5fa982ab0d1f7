//go:build unix

package main

import (
	"bufio"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLinkUnchainedAuditOpenElsewhere: linking the audit log of a store
// from before the chain is refused while another process has the store
// open, as a serve of that earlier release (which takes no lock) does: it
// would go on writing events without a link, which audit verify would
// then report as changed, with no way back.
func TestLinkUnchainedAuditOpenElsewhere(t *testing.T) {
	dir, _ := newAuditDir(t)
	for _, q := range []string{
		`DROP TABLE audit_heads`,
		`DROP INDEX audit_events_workspace_seq`,
		`ALTER TABLE audit_events DROP COLUMN mac`,
		`ALTER TABLE audit_events DROP COLUMN prev_mac`,
		`DELETE FROM schema_migrations WHERE name = '0002_audit_chain.sql'`,
	} {
		execSQL(t, dir, q)
	}
	// Another process holds the store open, until its standard input
	// closes.
	holder := exec.Command(os.Args[0], "-test.run=^TestHelperHoldStoreOpen$")
	holder.Env = append(os.Environ(), "KEYWARD_TEST_HOLD_OPEN="+filepath.Join(dir, "keyward.db"))
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Wait()
	defer stdin.Close()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "open\n" {
		t.Fatalf("the helper process: %q, %v", line, err)
	}

	r := cli(t, nil, nil, "", "migrate", "--data-dir", dir, "--link-unchained-audit")
	r.want(t, 1)
	if want := "another process has the store open, such as a keyward serve of the earlier release: stop it, then link the audit log"; !strings.Contains(r.stderr, want) || r.stdout != "" {
		t.Errorf("migrate --link-unchained-audit beside another process: stdout %q, stderr %q, want it to say %q", r.stdout, r.stderr, want)
	}
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Fatalf("the helper process: %v", err)
	}
	cli(t, nil, nil, "", "migrate", "--data-dir", dir, "--link-unchained-audit").want(t, 0)
	r = cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
	r.want(t, 0)
	if !strings.Contains(r.stdout, "OK, 4 events") {
		t.Errorf("audit verify once linked: stdout %q", r.stdout)
	}
}

// TestHelperHoldStoreOpen is TestLinkUnchainedAuditOpenElsewhere's other
// process, not a test: it opens the store named by its environment, says
// so, and holds it open until its standard input closes.
func TestHelperHoldStoreOpen(t *testing.T) {
	p := os.Getenv("KEYWARD_TEST_HOLD_OPEN")
	if p == "" {
		t.Skip("the helper process of TestLinkUnchainedAuditOpenElsewhere")
	}
	db, err := sql.Open("sqlite", p+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	fmt.Println("open")
	io.Copy(io.Discard, os.Stdin)
}
