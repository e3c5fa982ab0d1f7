package sqlite

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest"
)

var t0 = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)

// openTemp opens a new database file in a temporary directory.
func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyward.db")
	db, err := Open(context.Background(), path, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db, path
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keyward.Store {
		db, _ := openTemp(t)
		return db
	})
}

// seed creates a workspace and a token with its secret and event.
func seed(t *testing.T, db *DB, name string) (*keyward.Workspace, *keyward.Token, *keyward.Secret) {
	t.Helper()
	ctx := context.Background()
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: name, TokenPrefix: "kw", CreatedAt: t0}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); err != nil {
		t.Fatalf("CreateWorkspace: %v", err)
	}
	tok := &keyward.Token{
		ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "t",
		Scopes: []string{"orders:read"}, CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0,
	}
	sec := &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok.ID, CreatedAt: t0}
	ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, t0), Time: t0, Action: "token.create",
		Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID}
	if err := db.CreateToken(ctx, tok, sec, ev); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return ws, tok, sec
}

func randomDigest() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func TestOpen(t *testing.T) {
	t.Run("OKNameKeysOfEarlierRelease", func(t *testing.T) {
		// Workspaces an earlier release's node made (no name key) get
		// theirs at the next open: a name differing from another's in
		// case only is kept apart from it, and a new workspace cannot
		// take a name of theirs in another case.
		db, path := openTemp(t)
		seed(t, db, "Acme")
		db.Close()
		raw := rawOpen(t, path)
		if _, err := raw.Exec(`INSERT INTO workspaces (id, name, token_prefix, created_at) VALUES ('ws_old1', 'ACME', 'kw', 2), ('ws_old2', 'Beta', 'kw', 3)`); err != nil {
			t.Fatal(err)
		}
		again, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer again.Close()
		var nulls int
		raw.QueryRow(`SELECT COUNT(*) FROM workspaces WHERE name_key IS NULL`).Scan(&nulls)
		if nulls != 0 {
			t.Errorf("%d workspaces without a name key", nulls)
		}
		ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: "BETA", TokenPrefix: "kw", CreatedAt: t0}
		if err := again.CreateWorkspace(context.Background(), ws, nil, nil); keyward.ErrorCode(err) != keyward.ECONFLICT {
			t.Errorf("CreateWorkspace(BETA) = %v, want ECONFLICT", err)
		}
		if w, err := again.FindWorkspaceByName(context.Background(), "ACME"); err != nil || w.ID != "ws_old1" {
			t.Errorf("FindWorkspaceByName(ACME) = %v, %v", w, err)
		}
	})
	t.Run("ErrStrayLog", func(t *testing.T) {
		// The database was moved away without its log: no new database
		// is made beside the log, which would lose or take its changes.
		dir := t.TempDir()
		path := filepath.Join(dir, "keyward.db")
		if err := os.WriteFile(path+"-wal", []byte("frames"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(context.Background(), path); err == nil || !strings.Contains(err.Error(), "keyward.db-wal is there without") {
			t.Errorf("Open = %v, want the stray log refused", err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("a database was made")
		}
		if b, _ := os.ReadFile(path + "-wal"); string(b) != "frames" {
			t.Errorf("the log is now %q", b)
		}
		// An empty log and a -shm hold nothing: a new store is made.
		empty := filepath.Join(t.TempDir(), "keyward.db")
		os.WriteFile(empty+"-wal", nil, 0o600)
		os.WriteFile(empty+"-shm", []byte("index"), 0o600)
		db, err := Open(context.Background(), empty)
		if err != nil {
			t.Fatalf("Open beside an empty log: %v", err)
		}
		db.Close()
	})
	t.Run("NewerStore", func(t *testing.T) {
		// A newer keyward migrated the store: Open serves it and names
		// what it does not know.
		db, path := openTemp(t)
		if got := db.NewerMigrations(); got != nil {
			t.Errorf("NewerMigrations of a store of this build = %v", got)
		}
		if _, err := rawOpen(t, path).Exec(`INSERT INTO schema_migrations (name, applied_at) VALUES ('0999_future.sql', 1)`); err != nil {
			t.Fatal(err)
		}
		again, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer again.Close()
		if got := again.NewerMigrations(); !slices.Equal(got, []string{"0999_future.sql"}) {
			t.Errorf("NewerMigrations = %v", got)
		}
	})
	t.Run("OKReopen", func(t *testing.T) {
		ctx := context.Background()
		db, path := openTemp(t)
		ws, tok, sec := seed(t, db, "acme")
		if err := db.CreateRootToken(ctx, &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "root", CreatedAt: t0, UpdatedAt: t0},
			&keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, nil, false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		last, err := db.LastChange(ctx)
		if err != nil {
			t.Fatalf("LastChange: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		db, err = Open(ctx, path)
		if err != nil {
			t.Fatalf("Open again: %v", err)
		}
		defer db.Close()
		if _, err := db.FindWorkspaceByName(ctx, "acme"); err != nil {
			t.Errorf("FindWorkspaceByName after reopen: %v", err)
		}
		if _, got, err := db.LookupSecret(ctx, sec.Digest); err != nil || got.ID != tok.ID {
			t.Errorf("LookupSecret after reopen = %v, %v; want token %s", got, err, tok.ID)
		}
		if evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID}); err != nil || len(evs) != 1 {
			t.Errorf("FindAuditEvents after reopen = %d events, %v; want 1", len(evs), err)
		}
		if got, err := db.LastChange(ctx); err != nil || got != last {
			t.Errorf("LastChange after reopen = %d, %v; want %d", got, err, last)
		}
		// The root token flag survives too.
		err = db.CreateRootToken(ctx, &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "root", CreatedAt: t0, UpdatedAt: t0},
			&keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, nil, false)
		if keyward.ErrorCode(err) != keyward.ECONFLICT {
			t.Errorf("CreateRootToken after reopen = %v, want ECONFLICT", err)
		}
	})

	t.Run("OKMigrationsIdempotent", func(t *testing.T) {
		ctx := context.Background()
		db, path := openTemp(t)
		seed(t, db, "acme")
		db.Close()
		for range 2 {
			db, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("Open again: %v", err)
			}
			db.Close()
		}
		names, err := fs.Glob(migrations, "migrations/*.sql")
		if err != nil || len(names) == 0 {
			t.Fatalf("embedded migrations = %v, %v", names, err)
		}
		want := make([]string, len(names))
		for i, n := range names {
			want[i] = filepath.Base(n)
		}
		raw := rawOpen(t, path)
		rows, err := raw.Query(`SELECT name FROM schema_migrations ORDER BY name`)
		if err != nil {
			t.Fatalf("query schema_migrations: %v", err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var n string
			rows.Scan(&n)
			got = append(got, n)
		}
		if !slices.Equal(got, want) {
			t.Errorf("schema_migrations = %v, want %v (each once)", got, want)
		}
	})

	t.Run("OKWAL", func(t *testing.T) {
		db, path := openTemp(t)
		defer db.Close()
		var mode string
		if err := rawOpen(t, path).QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatalf("PRAGMA journal_mode: %v", err)
		}
		if mode != "wal" {
			t.Errorf("journal_mode = %q, want wal", mode)
		}
		// Bytes 18 and 19 of the header are 2 in a WAL database.
		hdr := make([]byte, 20)
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.ReadAt(hdr, 0); err != nil {
			t.Fatalf("read header: %v", err)
		}
		if hdr[18] != 2 || hdr[19] != 2 {
			t.Errorf("header read/write versions = %d, %d; want 2, 2 (WAL)", hdr[18], hdr[19])
		}
	})

	t.Run("OKPragmas", func(t *testing.T) {
		db, _ := openTemp(t)
		defer db.Close()
		pragma := func(p *sql.DB, name string) int {
			t.Helper()
			var v int
			if err := p.QueryRow(`PRAGMA ` + name).Scan(&v); err != nil {
				t.Fatalf("PRAGMA %s: %v", name, err)
			}
			return v
		}
		if v := pragma(db.write, "synchronous"); v != 2 {
			t.Errorf("writer synchronous = %d, want 2 (FULL)", v)
		}
		if v := pragma(db.write, "foreign_keys"); v != 1 {
			t.Errorf("writer foreign_keys = %d, want 1", v)
		}
		if v := pragma(db.write, "busy_timeout"); v != int(busyTimeout.Milliseconds()) {
			t.Errorf("writer busy_timeout = %d, want %d", v, busyTimeout.Milliseconds())
		}
		if v := pragma(db.read, "query_only"); v != 1 {
			t.Errorf("reader query_only = %d, want 1", v)
		}
		if v := pragma(db.read, "busy_timeout"); v != int(busyTimeout.Milliseconds()) {
			t.Errorf("reader busy_timeout = %d, want %d", v, busyTimeout.Milliseconds())
		}
		if _, err := db.read.Exec(`DELETE FROM workspaces`); err == nil {
			t.Errorf("a write through the read pool succeeded")
		}
		if n := db.write.Stats().MaxOpenConnections; n != 1 {
			t.Errorf("writer max open connections = %d, want 1", n)
		}
	})

	t.Run("OKFileMode", func(t *testing.T) {
		_, path := openTemp(t)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("database file mode = %v, want 0600", perm)
		}
	})

	for _, path := range []string{"", ":memory:", "file:x.db", "x.db?mode=ro"} {
		t.Run("ErrPath"+path, func(t *testing.T) {
			if db, err := Open(context.Background(), path); err == nil {
				db.Close()
				t.Errorf("Open(%q) succeeded, want an error", path)
			}
		})
	}

	t.Run("ErrNoDirectory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing", "keyward.db")
		if db, err := Open(context.Background(), path); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	})
}

// rawOpen opens the database file without the package, for inspection.
func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

// rewind runs stmts on the closed store at path, which take its schema
// back to before a migration, and opens it again, which migrates it; the
// store is closed when the test ends.
func rewind(t *testing.T, path string, stmts ...string) *DB {
	t.Helper()
	raw := rawOpen(t, path)
	for _, q := range stmts {
		if _, err := raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	raw.Close()
	db, err := Open(context.Background(), path, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestTimes(t *testing.T) {
	t.Run("OKNanoseconds", func(t *testing.T) {
		ctx := context.Background()
		db, _ := openTemp(t)
		defer db.Close()
		ws, tok, _ := seed(t, db, "acme")
		at := t0.Add(123456789 * time.Nanosecond).In(time.FixedZone("X", -3*3600-1800))
		got, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.ExpiresAt = &at
			t.UpdatedAt = at
			return &keyward.TokenWrite{Event: &keyward.AuditEvent{Time: at, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorSystem}}, Now: at}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		if !got.ExpiresAt.Equal(at) || got.ExpiresAt.Nanosecond() != 123456789 || got.ExpiresAt.Location() != time.UTC {
			t.Errorf("ExpiresAt = %v, want %v in UTC", got.ExpiresAt, at.UTC())
		}
		if !got.UpdatedAt.Equal(at) {
			t.Errorf("UpdatedAt = %v, want %v", got.UpdatedAt, at)
		}
	})

	t.Run("OKFarFuture", func(t *testing.T) {
		// An expiry beyond 2262 is stored as the latest time there is: it
		// keeps its order, so the token stays active.
		ctx := context.Background()
		db, _ := openTemp(t)
		defer db.Close()
		ws, tok, _ := seed(t, db, "acme")
		never := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		got, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.ExpiresAt = &never
			return &keyward.TokenWrite{Event: &keyward.AuditEvent{Time: t0, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorSystem}}, Now: t0}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		if !got.ExpiresAt.Equal(maxTime) {
			t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, maxTime)
		}
		ts, err := db.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID, State: keyward.StateActive, Now: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil || len(ts) != 1 {
			t.Errorf("FindTokens(active in 2200) = %d tokens, %v; want 1", len(ts), err)
		}
	})

	t.Run("OKPruneChangesByWriteTime", func(t *testing.T) {
		// A change is recorded at the time of its write: CreatedAt for a
		// new token, TokenWrite.Now for an update.
		ctx := context.Background()
		db, _ := openTemp(t)
		defer db.Close()
		ws, tok, _ := seed(t, db, "acme") // change at t0
		for _, h := range []int{1, 2} {
			now := t0.Add(time.Duration(h) * time.Hour)
			if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
				return &keyward.TokenWrite{Event: &keyward.AuditEvent{Time: t0, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorSystem}}, Now: now}, nil
			}); err != nil {
				t.Fatalf("UpdateToken: %v", err)
			}
		}
		all, _ := db.Changes(ctx, 0, 0)
		if len(all) != 3 {
			t.Fatalf("%d changes, want 3", len(all))
		}
		if err := db.PruneChanges(ctx, t0.Add(time.Hour)); err != nil {
			t.Fatalf("PruneChanges: %v", err)
		}
		got, _ := db.Changes(ctx, 0, 0)
		if !slices.Equal(got, all[1:]) {
			t.Errorf("changes after prune = %v, want %v", got, all[1:])
		}
	})
}

func TestFindTokensUnicodeName(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	defer db.Close()
	ws, tok, _ := seed(t, db, "acme")
	if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.Name = "Déploiement ÉTÉ"
		return &keyward.TokenWrite{Event: &keyward.AuditEvent{Time: t0, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorSystem}}, Now: t0}, nil
	}); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	for _, q := range []string{"DÉPLOIEMENT", "été", "t é"} {
		got, err := db.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID, Name: q})
		if err != nil {
			t.Fatalf("FindTokens: %v", err)
		}
		if len(got) != 1 {
			t.Errorf("FindTokens(name %q) found %d tokens, want 1", q, len(got))
		}
	}
}

func TestConcurrent(t *testing.T) {
	t.Run("OKOneHandle", func(t *testing.T) {
		db, _ := openTemp(t)
		defer db.Close()
		testConcurrent(t, db, db)
	})
	t.Run("OKTwoHandles", func(t *testing.T) {
		// Like "keyward init" writing next to a running "keyward serve".
		a, path := openTemp(t)
		defer a.Close()
		b, err := Open(context.Background(), path)
		if err != nil {
			t.Fatalf("Open second handle: %v", err)
		}
		defer b.Close()
		testConcurrent(t, a, b)
	})
}

// testConcurrent writes and reads tokens from many goroutines through a
// and b, then checks that every write is there, seen through either.
func testConcurrent(t *testing.T, a, b *DB) {
	ctx := context.Background()
	ws, tok, _ := seed(t, a, "acme")
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*3)
	for w := range workers {
		db := a
		if w%2 == 1 {
			db = b
		}
		wg.Go(func() {
			for i := range each {
				now := t0.Add(time.Duration(w*each+i) * time.Millisecond)
				id := keyward.NewID(keyward.PrefixToken, now)
				nt := &keyward.Token{ID: id, WorkspaceID: ws.ID, Name: fmt.Sprintf("w%d-%d", w, i), CreatedAt: now, UpdatedAt: now}
				if err := db.CreateToken(ctx, nt, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, nil); err != nil {
					errs <- err
				}
				if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
					t.Name += "."
					return &keyward.TokenWrite{Event: &keyward.AuditEvent{Time: now, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorSystem}}, Now: now}, nil
				}); err != nil {
					errs <- err
				}
				if _, err := db.FindToken(ctx, ws.ID, id); err != nil {
					errs <- fmt.Errorf("read own write: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, db := range []*DB{a, b} {
		ts, err := db.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID})
		if err != nil {
			t.Fatalf("FindTokens: %v", err)
		}
		if len(ts) != 1+workers*each {
			t.Errorf("%d tokens, want %d", len(ts), 1+workers*each)
		}
		got, err := db.FindToken(ctx, ws.ID, tok.ID)
		if err != nil {
			t.Fatalf("FindToken: %v", err)
		}
		if want := len("t") + workers*each; len(got.Name) != want {
			t.Errorf("name has %d characters after %d updates, want %d (no lost update)", len(got.Name), workers*each, want)
		}
		cs, err := db.Changes(ctx, 0, 0)
		if err != nil {
			t.Fatalf("Changes: %v", err)
		}
		if len(cs) != 1+2*workers*each {
			t.Errorf("%d changes, want %d", len(cs), 1+2*workers*each)
		}
	}
}

// TestNameKeyMigration: a store from before migration 0007 whose workspace
// names differ only in case (made before the key existed) keeps them all;
// afterwards no further such name is taken.
func TestNameKeyMigration(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	seed(t, db, "Acme")
	db.Close()
	// Back to the schema before 0007, with a second "acme" in it.
	db = rewind(t, path,
		`DROP INDEX workspaces_name_fold`,
		`ALTER TABLE workspaces DROP COLUMN name_key`,
		`DELETE FROM schema_migrations WHERE name = '0007_workspace_name_key.sql'`,
		`INSERT INTO workspaces (id, name, token_prefix, created_at) VALUES ('ws_later', 'ACME', 'kw', 1)`,
	)
	for _, name := range []string{"Acme", "ACME"} {
		if _, err := db.FindWorkspaceByName(ctx, name); err != nil {
			t.Errorf("FindWorkspaceByName(%q) after the migration: %v", name, err)
		}
	}
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0.Add(time.Second)), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); keyward.ErrorCode(err) != keyward.ECONFLICT {
		t.Errorf("CreateWorkspace(acme) = %v, want ECONFLICT", err)
	}
}

// TestDiskFull: a write that finds the disk full fails as EUNAVAILABLE
// (the API's 503 with Retry-After, not an internal error), and the store
// takes writes again once there is room.
func TestDiskFull(t *testing.T) {
	db, _ := openTemp(t)
	defer db.Close()
	ws, _, _ := seed(t, db, "acme")
	ctx := context.Background()
	var pages int
	if err := db.write.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
	create := func(i int) error {
		tok := &keyward.Token{
			ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: fmt.Sprintf("filler %d %x", i, randomDigest()),
			CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0,
		}
		ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, t0), Time: t0, Action: "token.create", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID}
		return db.CreateToken(ctx, tok, &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok.ID, CreatedAt: t0}, ev)
	}
	var err error
	for i := 0; i < 10000 && err == nil; i++ {
		err = create(i)
	}
	if err == nil {
		t.Fatal("no write failed at the size limit")
	}
	if code := keyward.ErrorCode(err); code != keyward.EUNAVAILABLE {
		t.Fatalf("a write to a full disk: code %q (%v), want %q", code, err, keyward.EUNAVAILABLE)
	}
	if _, err := db.write.ExecContext(ctx, "PRAGMA max_page_count = 1000000"); err != nil {
		t.Fatal(err)
	}
	if err := create(-1); err != nil {
		t.Fatalf("after room was made: %v", err)
	}
}

// TestBusy: a write that waited out the busy timeout behind another
// process's lock fails as EUNAVAILABLE (the API's 503 with Retry-After,
// not an internal error), having written nothing.
func TestBusy(t *testing.T) {
	db, path := openTemp(t)
	defer db.Close()
	ws, _, _ := seed(t, db, "acme")
	ctx := context.Background()
	if _, err := db.write.ExecContext(ctx, "PRAGMA busy_timeout = 50"); err != nil {
		t.Fatal(err)
	}
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	tok := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "blocked", CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0}
	ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, t0), Time: t0, Action: "token.create", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID}
	err = db.CreateToken(ctx, tok, &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok.ID, CreatedAt: t0}, ev)
	if code := keyward.ErrorCode(err); code != keyward.EUNAVAILABLE {
		t.Fatalf("a write behind another's lock: code %q (%v), want %q", code, err, keyward.EUNAVAILABLE)
	}
	if msg := keyward.ErrorMessage(err); msg != "the store is busy; try again shortly" {
		t.Errorf("message %q", msg)
	}
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.TokenByID(ctx, tok.ID); keyward.ErrorCode(err) != keyward.ENOTFOUND {
		t.Fatalf("the refused write was stored: %v", err)
	}
}

// TestAuditWriteOrderMigration: a store from before migration 0009 gets
// the indexes by actor and by target in sequence when it opens, and then lists the events
// it holds in the order they were written; every listing of a page after
// a cursor, filtered by actor or not, reads an index in that order,
// without a sort.
func TestAuditWriteOrderMigration(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	ws, tok, _ := seed(t, db, "acme")
	// Three events within one millisecond, written in the reverse of the
	// order their ids sort in.
	ids := []string{keyward.NewID(keyward.PrefixEvent, t0), keyward.NewID(keyward.PrefixEvent, t0), keyward.NewID(keyward.PrefixEvent, t0)}
	slices.Sort(ids)
	slices.Reverse(ids)
	for _, id := range ids {
		ev := &keyward.AuditEvent{ID: id, WorkspaceID: ws.ID, Time: t0, Action: "token.update", Actor: keyward.Actor{Type: keyward.ActorToken, ID: "tok_admin"}, Target: tok.ID}
		if err := db.AppendAudit(ctx, ev); err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
	}
	db.Close()
	db = rewind(t, path,
		`DROP INDEX audit_events_workspace_actor_seq`,
		`DROP INDEX audit_events_workspace_target_seq`,
		`DELETE FROM schema_migrations WHERE name = '0009_audit_write_order.sql'`,
	)
	raw := rawOpen(t, path) // one that reads the schema as migrated
	if got, want := db.AppliedMigrations(), []string{"0009_audit_write_order.sql"}; !slices.Equal(got, want) {
		t.Errorf("AppliedMigrations = %v, want %v", got, want)
	}
	for _, actor := range []string{"", "tok_admin"} {
		evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Actor: actor, Limit: 2})
		if err != nil {
			t.Fatalf("FindAuditEvents: %v", err)
		}
		if got, want := eventIDs(evs), []string{ids[2], ids[1]}; !slices.Equal(got, want) {
			t.Errorf("FindAuditEvents(actor %q) = %v, want %v", actor, got, want)
		}
	}

	for _, f := range []keyward.AuditFilter{
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51, Actor: "tok_admin"},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 21, Target: tok.ID},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51, Action: "token.*", Target: tok.ID, From: t0, To: t0.Add(time.Hour)},
	} {
		where, args := auditQuery(f)
		rows, err := raw.Query(`EXPLAIN QUERY PLAN SELECT `+eventColumns+` FROM audit_events `+where, args...)
		if err != nil {
			t.Fatalf("EXPLAIN: %v", err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatalf("EXPLAIN: %v", err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		want := "SEARCH audit_events USING INDEX audit_events_workspace_seq (workspace_id=? AND seq<?)"
		switch {
		case f.Actor != "":
			want = "SEARCH audit_events USING INDEX audit_events_workspace_actor_seq (workspace_id=? AND actor_id=? AND seq<?)"
		case f.Target != "":
			want = "SEARCH audit_events USING INDEX audit_events_workspace_target_seq (workspace_id=? AND target=? AND seq<?)"
		}
		// Then the cursor's lookup, by the unique index on id.
		wantPlan := []string{want, "SCALAR SUBQUERY 1", "SEARCH c USING INDEX sqlite_autoindex_audit_events_1 (id=?)"}
		if !slices.Equal(plan, wantPlan) {
			t.Errorf("plan of %s = %q, want %q", where, plan, wantPlan)
		}
	}
}

// eventIDs returns the ids of evs, in order.
func eventIDs(evs []*keyward.AuditEvent) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

// TestHasWorkspace: HasWorkspace finds a workspace by its exact name,
// reading only: a store no process has open is left without -wal or -shm
// files, and one that is open is read with what its log holds.
func TestHasWorkspace(t *testing.T) {
	ctx := t.Context()
	db, path := openTemp(t)
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Open: the workspace is in the write-ahead log.
	for name, want := range map[string]bool{"acme": true, "Acme": false, "other": false} {
		if got, err := HasWorkspace(ctx, path, name); err != nil || got != want {
			t.Errorf("open store: HasWorkspace(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s is there after Close: %v", f, err)
		}
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"acme": true, "other": false} {
		if got, err := HasWorkspace(ctx, path, name); err != nil || got != want {
			t.Errorf("closed store: HasWorkspace(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if _, err := os.Lstat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("HasWorkspace made %s (%v)", f, err)
		}
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(before, after) {
		t.Errorf("HasWorkspace changed the database file (%v)", err)
	}
	missing := filepath.Join(t.TempDir(), "keyward.db")
	if _, err := HasWorkspace(ctx, missing, "acme"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no file: %v, want it not to exist", err)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("HasWorkspace made %s (%v)", missing, err)
	}
}

// TestRateWindowLastMigration: a store from before migration 0010 keeps
// its rate windows, which come back without a latest admission (not
// known, so restored conservatively), and then keeps the latest
// admission of the windows flushed after it.
func TestRateWindowLastMigration(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	_, tok, _ := seed(t, db, "acme")
	counts := make([]int64, 21)
	counts[3] = 2
	until := t0.Add(time.Hour)
	w := &keyward.RateWindow{TokenID: tok.ID, Window: time.Hour, Width: int64(3 * time.Minute), Head: 9876543, Counts: counts, Until: until, Last: until.Add(-time.Hour)}
	if err := db.FlushUsage(ctx, keyward.FlushID{}, []keyward.UsageFlush{{TokenID: tok.ID, Rate: w}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = rewind(t, path,
		`ALTER TABLE rate_windows DROP COLUMN last_ns`,
		`DELETE FROM schema_migrations WHERE name = '0010_rate_window_last.sql'`,
	)
	if got, want := db.AppliedMigrations(), []string{"0010_rate_window_last.sql"}; !slices.Equal(got, want) {
		t.Errorf("AppliedMigrations = %v, want %v", got, want)
	}
	got, err := db.RateWindows(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Counts[3] != 2 || !got[0].Until.Equal(until) || !got[0].Last.IsZero() {
		t.Fatalf("RateWindows after the migration = %+v, want the window without Last", got)
	}
	w.Head++
	if err := db.FlushUsage(ctx, keyward.FlushID{}, []keyward.UsageFlush{{TokenID: tok.ID, Rate: w}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.RateWindows(ctx, t0); len(got) != 1 || !got[0].Last.Equal(w.Last) {
		t.Fatalf("RateWindows = %+v, want Last %v", got, w.Last)
	}
}
