package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
)

// newAuditDir prepares a SQLite data dir with a few audit events, written
// by keyward init, and returns it with the events' ids in the order written.
func newAuditDir(t *testing.T) (string, []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	cli(t, nil, nil, "", "init", "--data-dir", dir).want(t, 0)
	for range 2 {
		cli(t, nil, nil, "", "init", "--data-dir", dir, "--new-root-token").want(t, 0)
	}
	r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
	r.want(t, 0)
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e struct{ ID string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		ids = append(ids, e.ID)
	}
	if len(ids) != 4 {
		t.Fatalf("export = %d events, want 4 (workspace.create and three token.create):\n%s", len(ids), r.stdout)
	}
	return dir, ids
}

// tamper runs SQL on the data dir's database file, as someone who can
// write it but lacks the server secret, changing one row.
func tamper(t *testing.T, dir, query string, args ...any) {
	t.Helper()
	if n, _ := execSQL(t, dir, query, args...).RowsAffected(); n != 1 {
		t.Fatalf("%s: %d rows, want 1", query, n)
	}
}

// execSQL runs a statement on the data dir's database file.
func execSQL(t *testing.T, dir, query string, args ...any) sql.Result {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "keyward.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return res
}

func TestAuditVerify(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		dir, ids := newAuditDir(t)
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 0)
		if !strings.Contains(r.stdout, `workspace "default" (ws_`) || !strings.Contains(r.stdout, "OK, 4 events, head "+ids[3]) {
			t.Errorf("stdout = %q, want the default workspace OK with 4 events and its head", r.stdout)
		}
		r = cli(t, nil, map[string]string{"KEYWARD_DATA_DIR": dir}, "", "audit", "verify", "--workspace", "default")
		r.want(t, 0)
		if strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("stdout = %q, want one workspace", r.stdout)
		}
	})

	for _, tc := range []struct {
		name  string
		query string
		event int // index of the event tampered with
		want  string
		named int // index of the event the report must name
	}{
		{"ErrChanged", `UPDATE audit_events SET action = 'token.revoke' WHERE id = ?`, 1, "changed", 1},
		{"ErrChangedActor", `UPDATE audit_events SET actor_id = 'tok_someone' WHERE id = ?`, 2, "changed", 2},
		{"ErrRemoved", `DELETE FROM audit_events WHERE id = ?`, 1, "removed", 2},
		{"ErrNewestRemoved", `DELETE FROM audit_events WHERE id = ?`, 3, "newest_removed", 3},
		{"ErrReordered", `UPDATE audit_events SET seq = 1000 WHERE id = ?`, 1, "reordered", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, ids := newAuditDir(t)
			tamper(t, dir, tc.query, ids[tc.event])
			r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
			r.want(t, 1)
			if !strings.Contains(r.stdout, "FAILED, "+tc.want+": ") || !strings.Contains(r.stdout, ids[tc.named]) {
				t.Errorf("stdout = %q, want %s naming %s", r.stdout, tc.want, ids[tc.named])
			}
			if r.stderr != "keyward: the audit log of 1 of 1 workspaces failed verification\n" {
				t.Errorf("stderr = %q", r.stderr)
			}
		})
	}

	t.Run("ErrOlderHeadPutBack", func(t *testing.T) {
		// The newest event removed and an older copy of the head put back:
		// the chain alone looks intact; a head kept elsewhere does not.
		dir, ids := newAuditDir(t)
		execSQL(t, dir, `CREATE TABLE saved_heads AS SELECT * FROM audit_heads`)
		cli(t, nil, nil, "", "init", "--data-dir", dir, "--new-root-token").want(t, 0)
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 0)
		_, head, ok := strings.Cut(r.stdout, "head ")
		if !ok {
			t.Fatalf("stdout = %q", r.stdout)
		}
		head, _, _ = strings.Cut(head, " ")
		tamper(t, dir, `DELETE FROM audit_events WHERE id = ?`, head)
		execSQL(t, dir, `DELETE FROM audit_heads`)
		execSQL(t, dir, `INSERT INTO audit_heads SELECT * FROM saved_heads`)
		execSQL(t, dir, `DROP TABLE saved_heads`)
		cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir).want(t, 0)

		r = cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir, "--expect-head", ids[3], "--expect-head", head)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "expected head "+ids[3]+`: in the chain of workspace "default"`) ||
			!strings.Contains(r.stdout, "expected head "+head+": FAILED, in no chain") {
			t.Errorf("stdout = %q", r.stdout)
		}
		if r.stderr != "keyward: 1 of 2 expected heads were not found in the chains verified\n" {
			t.Errorf("stderr = %q", r.stderr)
		}
		r = cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir, "--workspace", "default", "--expect-head", head)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "expected head "+head+`: FAILED, not in the chain of workspace "default"`) {
			t.Errorf("with --workspace: stdout = %q", r.stdout)
		}
		cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir, "--expect-head", "tok_x").want(t, 2)
	})

	t.Run("ErrNewestRemovedHeadRelinked", func(t *testing.T) {
		// The newest event removed and the head's columns pointed at the
		// one before, without the key: the next write must not make the
		// chain whole again.
		dir, ids := newAuditDir(t)
		tamper(t, dir, `DELETE FROM audit_events WHERE id = ?`, ids[3])
		tamper(t, dir, `UPDATE audit_heads SET seq = (SELECT seq FROM audit_events WHERE id = ?), event_id = ?,
			mac = (SELECT mac FROM audit_events WHERE id = ?)`, ids[2], ids[2], ids[2])
		cli(t, nil, nil, "", "init", "--data-dir", dir, "--new-root-token").want(t, 0)
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "FAILED, newest_removed: ") || !strings.Contains(r.stdout, "the events written after event "+ids[2]) {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("ErrHeadMissing", func(t *testing.T) {
		dir, ids := newAuditDir(t)
		tamper(t, dir, `DELETE FROM audit_heads WHERE event_id = ?`, ids[3])
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "FAILED, head_missing: ") {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("ErrChainRemoved", func(t *testing.T) {
		// Someone who can write the database but lacks the server secret
		// rewrites the log and removes the chain with its migration
		// record, for the next start to link the log as it now stands.
		dir, ids := newAuditDir(t)
		tamper(t, dir, `DELETE FROM audit_events WHERE id = ?`, ids[2])
		for _, q := range []string{
			`DROP TABLE audit_heads`,
			`DROP INDEX audit_events_workspace_seq`,
			`ALTER TABLE audit_events DROP COLUMN mac`,
			`ALTER TABLE audit_events DROP COLUMN prev_mac`,
			`DELETE FROM schema_migrations WHERE name = '0002_audit_chain.sql'`,
		} {
			execSQL(t, dir, q)
		}
		for _, args := range [][]string{{"audit", "verify"}, {"migrate"}} {
			r := cli(t, nil, nil, "", append(args, "--data-dir", dir)...)
			r.want(t, 1)
			if !strings.Contains(r.stderr, "3 events written without the tamper-evident chain") || !strings.Contains(r.stderr, "--link-unchained-audit") {
				t.Errorf("%v: stderr = %q", args, r.stderr)
			}
		}
		// The operator of a store that truly predates the chain says so.
		cli(t, nil, nil, "", "migrate", "--data-dir", dir, "--link-unchained-audit").want(t, 0)
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 0)
		if !strings.Contains(r.stdout, "OK, 3 events") {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("ErrWorkspaceRemovedWhole", func(t *testing.T) {
		// A workspace removed from the database whole (its row, events and
		// head) is still named by the workspace.create event of its
		// creator's chain: its verification says its log was removed.
		dir, _ := newAuditDir(t)
		ctx := context.Background()
		cfg := storeConfig{DataDir: dir}
		keys, err := keyring(cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, err := openStore(ctx, cfg, keys)
		if err != nil {
			t.Fatal(err)
		}
		svc := &manage.Service{Store: st, Keys: keys}
		def, err := st.FindWorkspaceByName(ctx, keyward.DefaultWorkspace)
		if err != nil {
			t.Fatal(err)
		}
		ws, _, err := svc.CreateWorkspace(ctx, manage.SystemCaller(def.ID), &keyward.Workspace{Name: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir).want(t, 0)
		for _, q := range []string{
			`DELETE FROM audit_events WHERE workspace_id = '` + ws.ID + `'`,
			`DELETE FROM audit_heads WHERE workspace_id = '` + ws.ID + `'`,
			`DELETE FROM token_secrets WHERE token_id IN (SELECT id FROM tokens WHERE workspace_id = '` + ws.ID + `')`,
			`DELETE FROM tokens WHERE workspace_id = '` + ws.ID + `'`,
			`DELETE FROM workspaces WHERE id = '` + ws.ID + `'`,
		} {
			execSQL(t, dir, q)
		}
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "workspace "+ws.ID+" (no longer exists): FAILED, head_missing: ") || !strings.Contains(r.stdout, `workspace "default"`) {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("ErrEmptiedWhole", func(t *testing.T) {
		// Every workspace removed with its events and head: nothing is
		// left to verify, and only a head kept elsewhere shows it.
		dir, ids := newAuditDir(t)
		for _, q := range []string{
			`DELETE FROM audit_events`,
			`DELETE FROM audit_heads`,
			`DELETE FROM token_secrets`,
			`DELETE FROM tokens`,
			`DELETE FROM workspaces`,
		} {
			execSQL(t, dir, q)
		}
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 0)
		if r.stdout != "No workspaces: nothing to verify.\n" {
			t.Errorf("stdout = %q", r.stdout)
		}
		r = cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir, "--expect-head", ids[3])
		r.want(t, 1)
		if !strings.Contains(r.stdout, "expected head "+ids[3]+": FAILED, in no chain") {
			t.Errorf("stdout = %q", r.stdout)
		}
		if r.stderr != "keyward: 1 of 1 expected heads were not found in the chains verified\n" {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("ErrWrongSecret", func(t *testing.T) {
		dir, ids := newAuditDir(t)
		r := cli(t, nil, map[string]string{"KEYWARD_SECRET": strings.Repeat("x", 40)}, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if !strings.Contains(r.stdout, "FAILED, changed: event "+ids[0]) {
			t.Errorf("stdout = %q", r.stdout)
		}
		// Every stored token secret is under another key: most likely the
		// wrong secret, not tampering, and the output says so.
		if !strings.Contains(r.stdout, "The server secret given is likely not the one that made this store: every stored token secret (3) was made under another") ||
			!strings.Contains(r.stdout, "takes the place of the data dir's server.secret") {
			t.Errorf("stdout = %q, want the hint about the wrong secret", r.stdout)
		}
	})
	t.Run("ErrChangedRightSecret", func(t *testing.T) {
		// With the right secret, a change gets the rotation hint, not the
		// wrong-secret one.
		dir, ids := newAuditDir(t)
		tamper(t, dir, `UPDATE audit_events SET action = 'token.revoke' WHERE id = ?`, ids[1])
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if strings.Contains(r.stdout, "likely not the one") || !strings.Contains(r.stdout, "give the secret of that time as KEYWARD_SECRET_PREVIOUS") {
			t.Errorf("stdout = %q, want the rotation hint only", r.stdout)
		}
	})

	t.Run("ErrNoStore", func(t *testing.T) {
		dir := t.TempDir()
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "no keyward store in "+dir) {
			t.Errorf("stderr = %q", r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "server.secret")); err == nil {
			t.Errorf("verify created a server secret")
		}
	})

	t.Run("ErrUnknownWorkspace", func(t *testing.T) {
		dir, _ := newAuditDir(t)
		r := cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir, "--workspace", "nope")
		r.want(t, 1)
		if !strings.Contains(r.stderr, `no workspace is named "nope"`) {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("ErrUsage", func(t *testing.T) {
		cli(t, nil, nil, "", "audit", "verify", "extra").want(t, 2)
		cli(t, nil, nil, "", "audit", "export", "--format", "xml").want(t, 2)
		cli(t, nil, nil, "", "audit").want(t, 2)
	})
}

func TestAuditExport(t *testing.T) {
	dir, ids := newAuditDir(t)
	t.Run("OKCSV", func(t *testing.T) {
		r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir, "--format", "csv")
		r.want(t, 0)
		lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
		if lines[0] != "workspace_id,seq,id,time,action,actor_type,actor_id,target,ip,user_agent,request_id,changes,mac" {
			t.Errorf("header = %q", lines[0])
		}
		if len(lines) != 5 || !strings.Contains(lines[1], ","+ids[0]+",") || !strings.Contains(lines[4], ","+ids[3]+",") {
			t.Errorf("csv = %q, want the 4 events in order", r.stdout)
		}
		if !strings.Contains(lines[2], `,"{""hint"":`) {
			t.Errorf("row = %q, want changes as quoted JSON text", lines[2])
		}
	})
	t.Run("OKOutputFile", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "audit.jsonl")
		r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir, "--workspace", "default", "--output-file", out)
		r.want(t, 0)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "\n"); n != 4 {
			t.Errorf("file has %d lines, want 4", n)
		}
		if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
		}
		if want := "Wrote the audit log of 1 workspace to " + out + ".\n"; r.stdout != want {
			t.Errorf("stdout = %q, want %q", r.stdout, want)
		}
	})
	t.Run("OKOutputFileReplaced", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "audit.jsonl")
		if err := os.WriteFile(out, []byte("an earlier export, longer than this one would be if it were kept in part\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cli(t, nil, nil, "", "audit", "export", "--data-dir", dir, "--output-file", out).want(t, 0)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		want := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
		want.want(t, 0)
		if string(b) != want.stdout {
			t.Errorf("file = %q, want the export %q", b, want.stdout)
		}
		if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
			t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("ErrOutputFileKept", func(t *testing.T) {
		// An export that fails part way (here an event the store cannot
		// read back) leaves the file it was to replace as it was, and
		// no partial one beside it.
		dir, ids := newAuditDir(t)
		tamper(t, dir, `UPDATE audit_events SET time = 'not a time' WHERE id = ?`, ids[2])
		outDir := t.TempDir()
		out := filepath.Join(outDir, "audit.jsonl")
		const earlier = "an earlier export\n"
		if err := os.WriteFile(out, []byte(earlier), 0o600); err != nil {
			t.Fatal(err)
		}
		r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir, "--output-file", out)
		r.want(t, 1)
		if !strings.Contains(r.stderr, "export the audit log of ") {
			t.Errorf("stderr = %q", r.stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("the earlier export is gone: %v", err)
		}
		if string(b) != earlier {
			t.Errorf("file = %q, want the earlier export %q", b, earlier)
		}
		if ents, _ := os.ReadDir(outDir); len(ents) != 1 {
			t.Errorf("output dir holds %d files, want the export alone: %v", len(ents), ents)
		}
	})
	t.Run("ErrOutputDirMissing", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "nodir", "audit.jsonl")
		r := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir, "--output-file", out)
		r.want(t, 1)
		if want := "keyward: --output-file " + out + ": no such file or directory\n"; r.stderr != want {
			t.Errorf("stderr = %q, want %q", r.stderr, want)
		}
	})
}

func TestAuditPrune(t *testing.T) {
	t.Run("OKNothingThatOld", func(t *testing.T) {
		dir, _ := newAuditDir(t)
		r := cli(t, nil, nil, "", "audit", "prune", "--data-dir", dir, "--older-than", "24h")
		r.want(t, 0)
		if !strings.Contains(r.stdout, `workspace "default"`) || !strings.Contains(r.stdout, ": no event written before ") {
			t.Errorf("stdout = %q", r.stdout)
		}
		cli(t, nil, nil, "", "audit", "verify", "--data-dir", dir).want(t, 0)
	})

	t.Run("ErrBrokenChainLeftAlone", func(t *testing.T) {
		// Events made to look old by editing them: the chain no longer
		// verifies, and prune refuses to cut away the evidence.
		dir, ids := newAuditDir(t)
		tamper(t, dir, `UPDATE audit_events SET time = 0 WHERE id = ?`, ids[0])
		r := cli(t, nil, nil, "", "audit", "prune", "--data-dir", dir, "--older-than", "24h")
		r.want(t, 1)
		if !strings.Contains(r.stdout, "left alone, its chain does not verify (changed: ") {
			t.Errorf("stdout = %q", r.stdout)
		}
		export := cli(t, nil, nil, "", "audit", "export", "--data-dir", dir)
		export.want(t, 0)
		if n := strings.Count(export.stdout, "\n"); n != 4 {
			t.Errorf("prune removed events from a broken chain: %d left", n)
		}
	})

	t.Run("ErrUsage", func(t *testing.T) {
		dir, _ := newAuditDir(t)
		for _, args := range [][]string{{}, {"--older-than", "1h"}} {
			r := cli(t, nil, nil, "", append([]string{"audit", "prune", "--data-dir", dir}, args...)...)
			r.want(t, 2)
			if !strings.Contains(r.stderr, "--older-than is required and must be at least 24h") {
				t.Errorf("stderr = %q", r.stderr)
			}
		}
	})
}
