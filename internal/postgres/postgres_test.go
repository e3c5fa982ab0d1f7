package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest"
)

// The tests need a PostgreSQL server: KEYWARD_TEST_POSTGRES_URL names a
// database in which they may create and drop schemas, for example
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. Each test gets
// a schema of its own, named keyward_test_<random>, through the URL's
// search_path, and drops it when it ends.
const urlEnv = "KEYWARD_TEST_POSTGRES_URL"

var t0 = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)

// baseURL returns the server's URL. Without one the test is skipped, but
// in CI (CI=true) it fails: a missing service must not pass as green.
func baseURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(urlEnv)
	if u == "" {
		msg := urlEnv + " is not set: set it to a PostgreSQL URL, such as " +
			"postgres://postgres@127.0.0.1:5432/test?sslmode=disable, to run the PostgreSQL tests"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return u
}

// adminPool is shared by the tests to create and drop schemas, so that
// each test does not pay for two more connections.
var adminPool struct {
	once sync.Once
	pool *pgxpool.Pool
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if adminPool.pool != nil {
		adminPool.pool.Close()
	}
	os.Exit(code)
}

// admin runs one statement on the server outside any test schema.
func admin(t *testing.T, sql string) {
	t.Helper()
	u := baseURL(t)
	adminPool.once.Do(func() {
		adminPool.pool, adminPool.err = pgxpool.New(context.Background(), withParam(t, u, "pool_max_conns", "2"))
	})
	if adminPool.err != nil {
		t.Fatalf("connect to %s: %v", urlEnv, adminPool.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adminPool.pool.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newSchema creates an empty schema, dropped when the test ends, and
// returns a URL whose connections use it.
func newSchema(t *testing.T) string {
	t.Helper()
	base := baseURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "keyward_test_" + hex.EncodeToString(b)
	admin(t, `CREATE SCHEMA `+name)
	t.Cleanup(func() { admin(t, `DROP SCHEMA `+name+` CASCADE`) })
	return withParam(t, base, "search_path", name)
}

// searchPath returns the search_path of the URL u (newSchema's).
func searchPath(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return p.Query().Get("search_path")
}

// withParam returns the connection string u with one more parameter.
func withParam(t *testing.T, u, key, value string) string {
	t.Helper()
	if !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		return u + " " + key + "=" + value // key=value form
	}
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("parse %s: %v", urlEnv, err)
	}
	q := p.Query()
	q.Set(key, value)
	p.RawQuery = q.Encode()
	return p.String()
}

// openTemp opens a DB on a new, empty schema; the DB is closed before the
// schema is dropped.
func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	u := newSchema(t)
	db, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, u
}

func TestStore(t *testing.T) {
	baseURL(t)
	storetest.Run(t, func(t *testing.T) keyward.Store {
		u := newSchema(t)
		db, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db // the suite closes it, before the schema is dropped
	})
}

func randomDigest() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func newEvent(action string, at time.Time) *keyward.AuditEvent {
	return &keyward.AuditEvent{Time: at, Action: action, Actor: keyward.Actor{Type: keyward.ActorSystem}}
}

// seed creates a workspace and a token with its secret and event.
func seed(t *testing.T, db *DB, name string) (*keyward.Workspace, *keyward.Token, *keyward.Secret) {
	t.Helper()
	ctx := t.Context()
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: name, TokenPrefix: "kw", CreatedAt: t0}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); err != nil {
		t.Fatalf("CreateWorkspace: %v", err)
	}
	tok := &keyward.Token{
		ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "t",
		Scopes: []string{"orders:read"}, CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0,
	}
	sec := &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok.ID, CreatedAt: t0}
	if err := db.CreateToken(ctx, tok, sec, newEvent("token.create", t0)); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return ws, tok, sec
}

// rootToken returns an unsaved root token of the workspace and its secret.
func rootToken(wsID string) (*keyward.Token, *keyward.Secret) {
	tok := &keyward.Token{
		ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: wsID, Name: "root",
		Scopes: []string{keyward.ScopeAdmin, keyward.ScopeInstance}, CreatedAt: t0, UpdatedAt: t0,
	}
	return tok, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}
}

// appliedMigrations returns the names recorded in schema_migrations.
func appliedMigrations(t *testing.T, db *DB) []string {
	t.Helper()
	rows, err := db.pool.Query(t.Context(), `SELECT name FROM schema_migrations ORDER BY name`)
	if err != nil {
		t.Fatalf("query schema_migrations: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("query schema_migrations: %v", err)
	}
	return names
}

// embeddedMigrations returns the base names of the embedded migrations.
func embeddedMigrations(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("embedded migrations = %v, %v", names, err)
	}
	for i, n := range names {
		names[i] = path.Base(n)
	}
	return names
}

func TestOpen(t *testing.T) {
	baseURL(t)
	t.Run("OKReopen", func(t *testing.T) {
		ctx := t.Context()
		db, u := openTemp(t)
		ws, tok, sec := seed(t, db, "acme")
		root, rootSec := rootToken(ws.ID)
		if err := db.CreateRootToken(ctx, root, rootSec, nil, false); err != nil {
			t.Fatalf("CreateRootToken: %v", err)
		}
		last, err := db.LastChange(ctx)
		if err != nil {
			t.Fatalf("LastChange: %v", err)
		}
		db.Close()

		db, err = Open(ctx, u)
		if err != nil {
			t.Fatalf("Open again: %v", err)
		}
		defer db.Close()
		if _, got, err := db.LookupSecret(ctx, sec.Digest); err != nil || got.ID != tok.ID {
			t.Errorf("LookupSecret after reopen = %v, %v; want token %s", got, err, tok.ID)
		}
		if got, err := db.LastChange(ctx); err != nil || got != last {
			t.Errorf("LastChange after reopen = %d, %v; want %d", got, err, last)
		}
		root, rootSec = rootToken(ws.ID)
		if err := db.CreateRootToken(ctx, root, rootSec, nil, false); keyward.ErrorCode(err) != keyward.ECONFLICT {
			t.Errorf("CreateRootToken after reopen = %v, want ECONFLICT", err)
		}
	})

	t.Run("OKNameKeysOfEarlierRelease", func(t *testing.T) {
		// Workspaces a node of the previous release made during a rolling
		// upgrade (no name key) get theirs when a node starts: a name
		// differing from another's in case only is kept apart from it,
		// and a new workspace cannot take a name of theirs in another case.
		ctx := t.Context()
		db, u := openTemp(t)
		seed(t, db, "Acme")
		if _, err := db.pool.Exec(ctx, `INSERT INTO workspaces (id, name, token_prefix, created_at) VALUES ('ws_old1', 'ACME', 'kw', now()), ('ws_old2', 'Beta', 'kw', now())`); err != nil {
			t.Fatal(err)
		}
		again, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer again.Close()
		if err := again.NameKeyError(); err != nil {
			t.Errorf("NameKeyError = %v", err)
		}
		var nulls int
		db.pool.QueryRow(ctx, `SELECT COUNT(*) FROM workspaces WHERE name_key IS NULL`).Scan(&nulls)
		if nulls != 0 {
			t.Errorf("%d workspaces without a name key", nulls)
		}
		ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, time.Now()), Name: "BETA", TokenPrefix: "kw", CreatedAt: time.Now()}
		if err := again.CreateWorkspace(ctx, ws, nil, nil); keyward.ErrorCode(err) != keyward.ECONFLICT {
			t.Errorf("CreateWorkspace(BETA) = %v, want ECONFLICT", err)
		}
	})

	t.Run("NewerStore", func(t *testing.T) {
		// A newer keyward migrated the store: Migrate refuses it, with
		// nothing applied; Open serves it and names what it does not know.
		ctx := t.Context()
		db, u := openTemp(t)
		if _, err := db.pool.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ('0999_future.sql'), ('0998_next.sql')`); err != nil {
			t.Fatal(err)
		}
		var newer *keyward.NewerStoreError
		if _, err := Migrate(ctx, u); !errors.As(err, &newer) || !slices.Equal(newer.Migrations, []string{"0998_next.sql", "0999_future.sql"}) {
			t.Errorf("Migrate = %v, want a NewerStoreError naming both", err)
		}
		again, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer again.Close()
		if got := again.NewerMigrations(); !slices.Equal(got, []string{"0998_next.sql", "0999_future.sql"}) {
			t.Errorf("NewerMigrations = %v", got)
		}
		if got := db.NewerMigrations(); got != nil {
			t.Errorf("NewerMigrations of a store of this build = %v", got)
		}
	})

	t.Run("OKMigrationsIdempotent", func(t *testing.T) {
		ctx := t.Context()
		db, u := openTemp(t)
		seed(t, db, "acme")
		for range 2 {
			again, err := Open(ctx, u)
			if err != nil {
				t.Fatalf("Open again: %v", err)
			}
			again.Close()
		}
		if _, err := Migrate(ctx, u); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if got, want := appliedMigrations(t, db), embeddedMigrations(t); !slices.Equal(got, want) {
			t.Errorf("schema_migrations = %v, want %v (each once)", got, want)
		}
		if _, err := db.FindWorkspaceByName(ctx, "acme"); err != nil {
			t.Errorf("FindWorkspaceByName after re-migrating: %v", err)
		}
	})

	t.Run("OKMigrate", func(t *testing.T) {
		// Migrate alone, as "keyward migrate" runs it, then Open finds
		// nothing to do.
		ctx := t.Context()
		u := newSchema(t)
		applied, err := Migrate(ctx, u)
		if err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if want := embeddedMigrations(t); !slices.Equal(applied, want) {
			t.Errorf("Migrate applied %v, want %v", applied, want)
		}
		if again, err := Migrate(ctx, u); err != nil || len(again) != 0 {
			t.Errorf("Migrate again applied %v, %v; want nothing", again, err)
		}
		db, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		if got, want := appliedMigrations(t, db), embeddedMigrations(t); !slices.Equal(got, want) {
			t.Errorf("schema_migrations = %v, want %v", got, want)
		}
		if got := db.AppliedMigrations(); len(got) != 0 {
			t.Errorf("Open applied %v after Migrate", got)
		}
	})

	t.Run("OKConcurrentOnEmptyDatabase", func(t *testing.T) {
		// Nodes starting at once against an empty database all start: the
		// advisory lock makes all but one wait and find the schema done.
		ctx := t.Context()
		u := newSchema(t)
		const nodes = 6
		dbs := make([]*DB, nodes)
		errs := make([]error, nodes)
		var wg sync.WaitGroup
		for i := range nodes {
			wg.Go(func() { dbs[i], errs[i] = Open(ctx, u) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Open #%d: %v", i+1, err)
				continue
			}
			defer dbs[i].Close()
		}
		if t.Failed() {
			return
		}
		if got, want := appliedMigrations(t, dbs[0]), embeddedMigrations(t); !slices.Equal(got, want) {
			t.Errorf("schema_migrations = %v, want %v (each once)", got, want)
		}
		seed(t, dbs[nodes-1], "acme")
	})

	t.Run("OKSessionSettings", func(t *testing.T) {
		db, _ := openTemp(t)
		show := func(name string) string {
			t.Helper()
			var v string
			if err := db.pool.QueryRow(t.Context(), `SHOW `+name).Scan(&v); err != nil {
				t.Fatalf("SHOW %s: %v", name, err)
			}
			return v
		}
		if v := show("statement_timeout"); v != defaultStatementTimeout {
			t.Errorf("statement_timeout = %q, want %q", v, defaultStatementTimeout)
		}
		if v := show("idle_in_transaction_session_timeout"); v != "1min" {
			t.Errorf("idle_in_transaction_session_timeout = %q, want 1min", v)
		}
		cfg := db.pool.Config()
		if cfg.MaxConns != defaultMaxConns {
			t.Errorf("MaxConns = %d, want %d", cfg.MaxConns, defaultMaxConns)
		}
		if cfg.ConnConfig.ConnectTimeout != defaultConnectTimeout {
			t.Errorf("ConnectTimeout = %v, want %v", cfg.ConnConfig.ConnectTimeout, defaultConnectTimeout)
		}
	})

	t.Run("OKURLOverridesDefaults", func(t *testing.T) {
		u := newSchema(t)
		u = withParam(t, u, "statement_timeout", "2500ms")
		u = withParam(t, u, "pool_max_conns", "3")
		u = withParam(t, u, "connect_timeout", "7")
		db, err := Open(t.Context(), u)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer db.Close()
		var v string
		if err := db.pool.QueryRow(t.Context(), `SHOW statement_timeout`).Scan(&v); err != nil {
			t.Fatalf("SHOW statement_timeout: %v", err)
		}
		if v != "2500ms" {
			t.Errorf("statement_timeout = %q, want 2500ms", v)
		}
		cfg := db.pool.Config()
		if cfg.MaxConns != 3 || cfg.ConnConfig.ConnectTimeout != 7*time.Second {
			t.Errorf("MaxConns, ConnectTimeout = %d, %v; want 3, 7s", cfg.MaxConns, cfg.ConnConfig.ConnectTimeout)
		}
	})

	t.Run("ErrEncoding", func(t *testing.T) {
		p, err := url.Parse(baseURL(t))
		if err != nil || p.Scheme == "" {
			t.Skip("needs a postgres:// URL to name another database")
		}
		b := make([]byte, 8)
		rand.Read(b)
		name := "keyward_test_" + hex.EncodeToString(b)
		admin(t, `CREATE DATABASE `+name+` ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`)
		t.Cleanup(func() { admin(t, `DROP DATABASE `+name+` WITH (FORCE)`) })
		p.Path = "/" + name
		db, err := Open(t.Context(), p.String())
		if err == nil {
			db.Close()
			t.Fatalf("Open on a SQL_ASCII database succeeded")
		}
		if !strings.Contains(err.Error(), "UTF8") {
			t.Errorf("Open error = %v, want one that names UTF8", err)
		}
	})

	t.Run("ErrUnreachable", func(t *testing.T) {
		baseURL(t)
		db, err := Open(t.Context(), "postgres://postgres@127.0.0.1:1/test?sslmode=disable")
		if err == nil {
			db.Close()
			t.Fatalf("Open on a closed port succeeded")
		}
	})

	t.Run("ErrURL", func(t *testing.T) {
		if db, err := Open(t.Context(), "postgres://x@127.0.0.1:5432/test?pool_max_conns=zero"); err == nil {
			db.Close()
			t.Fatalf("Open with an invalid pool_max_conns succeeded")
		}
	})
}

func TestTimes(t *testing.T) {
	baseURL(t)
	update := func(t *testing.T, db *DB, ws, id string, fn func(*keyward.Token)) *keyward.Token {
		t.Helper()
		got, err := db.UpdateToken(t.Context(), ws, id, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			fn(t)
			return &keyward.TokenWrite{Event: newEvent("token.update", t0), Now: t0}, nil
		})
		if err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		return got
	}

	t.Run("OKMicroseconds", func(t *testing.T) {
		db, _ := openTemp(t)
		ws, tok, _ := seed(t, db, "acme")
		at := t0.Add(123456789 * time.Nanosecond).In(time.FixedZone("X", -3*3600-1800))
		got := update(t, db, ws.ID, tok.ID, func(t *keyward.Token) { t.ExpiresAt = &at })
		want := at.Truncate(time.Microsecond)
		if !got.ExpiresAt.Equal(want) || got.ExpiresAt.Location() != time.UTC {
			t.Errorf("ExpiresAt = %v, want %v in UTC", got.ExpiresAt, want.UTC())
		}
	})

	t.Run("OKFarFuture", func(t *testing.T) {
		db, _ := openTemp(t)
		ws, tok, _ := seed(t, db, "acme")
		never := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		got := update(t, db, ws.ID, tok.ID, func(t *keyward.Token) { t.ExpiresAt = &never })
		if !got.ExpiresAt.Equal(never) {
			t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, never)
		}
		ts, err := db.FindTokens(t.Context(), keyward.TokenFilter{WorkspaceID: ws.ID, State: keyward.StateActive, Now: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil || len(ts) != 1 {
			t.Errorf("FindTokens(active in 2200) = %d tokens, %v; want 1", len(ts), err)
		}
	})
}

func TestFindTokensUnicodeName(t *testing.T) {
	baseURL(t)
	// Names fold with Go's Unicode rules, as on SQLite, whatever the
	// database's LC_CTYPE.
	db, _ := openTemp(t)
	ws, tok, _ := seed(t, db, "acme")
	if _, err := db.UpdateToken(t.Context(), ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
		t.Name = "Déploiement ÉTÉ İstanbul"
		return &keyward.TokenWrite{Event: newEvent("token.update", t0), Now: t0}, nil
	}); err != nil {
		t.Fatalf("UpdateToken: %v", err)
	}
	for _, q := range []string{"DÉPLOIEMENT", "été", "t é", strings.ToLower("İstanbul")} {
		got, err := db.FindTokens(t.Context(), keyward.TokenFilter{WorkspaceID: ws.ID, Name: q})
		if err != nil {
			t.Fatalf("FindTokens: %v", err)
		}
		if len(got) != 1 {
			t.Errorf("FindTokens(name %q) found %d tokens, want 1", q, len(got))
		}
	}
}

func TestUnstorableText(t *testing.T) {
	baseURL(t)
	// PostgreSQL text holds neither NUL nor invalid UTF-8, which Go strings
	// from headers and query strings may carry. Writes store U+FFFD in
	// their place; lookups by them find what SQLite would.
	ctx := t.Context()
	db, _ := openTemp(t)
	ws, tok, _ := seed(t, db, "acme")

	t.Run("OKEventUserAgent", func(t *testing.T) {
		ev := newEvent("token.revoke", t0.Add(time.Second)) // the newest
		ev.UserAgent = "curl/8 \xff\xfe\x00 end"
		ev.Changes = json.RawMessage(`{"reason": {"from": "", "to": "bad ` + "\xff" + `"}}`)
		if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Revoked, t.RevokedAt, t.RevokeReason = true, &t0, "leaked \x00"
			return &keyward.TokenWrite{Event: ev, Now: t0}, nil
		}); err != nil {
			t.Fatalf("UpdateToken with unstorable text: %v", err)
		}
		evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Limit: 1})
		if err != nil || len(evs) != 1 {
			t.Fatalf("FindAuditEvents = %d, %v", len(evs), err)
		}
		if want := "curl/8 \uFFFD\uFFFD\uFFFD end"; evs[0].UserAgent != want {
			t.Errorf("UserAgent = %q, want %q", evs[0].UserAgent, want)
		}
		var got, want any
		json.Unmarshal(evs[0].Changes, &got)
		json.Unmarshal(ev.Changes, &want) // encoding/json reads \xff as U+FFFD too
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Changes = %s, want the value of %s", evs[0].Changes, ev.Changes)
		}
		if got, err := db.FindToken(ctx, ws.ID, tok.ID); err != nil || got.RevokeReason != "leaked \uFFFD" {
			t.Errorf("FindToken = %+v, %v; want reason %q", got, err, "leaked \uFFFD")
		}
	})

	t.Run("OKLookups", func(t *testing.T) {
		for _, bad := range []string{"\xff", "a\x00b", tok.ID + "\x00"} {
			if _, err := db.FindToken(ctx, ws.ID, bad); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Errorf("FindToken(%q) = %v, want ENOTFOUND", bad, err)
			}
			if _, err := db.TokenByID(ctx, bad); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Errorf("TokenByID(%q) = %v, want ENOTFOUND", bad, err)
			}
			if _, err := db.FindWorkspace(ctx, bad); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Errorf("FindWorkspace(%q) = %v, want ENOTFOUND", bad, err)
			}
			if _, err := db.FindWorkspaceByName(ctx, bad); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Errorf("FindWorkspaceByName(%q) = %v, want ENOTFOUND", bad, err)
			}
			if _, err := db.TokenSecrets(ctx, bad); keyward.ErrorCode(err) != keyward.ENOTFOUND {
				t.Errorf("TokenSecrets(%q) = %v, want ENOTFOUND", bad, err)
			}
			if n, err := db.QuotaUsed(ctx, bad, "total"); err != nil || n != 0 {
				t.Errorf("QuotaUsed(%q) = %d, %v; want 0", bad, n, err)
			}
			for _, f := range []keyward.TokenFilter{{Subject: bad}, {Scope: bad}, {Name: bad}} {
				f.WorkspaceID = ws.ID
				if ts, err := db.FindTokens(ctx, f); err != nil || len(ts) != 0 {
					t.Errorf("FindTokens(%+v) = %d tokens, %v; want none", f, len(ts), err)
				}
			}
			if err := db.FlushUsage(ctx, keyward.FlushID{}, []keyward.UsageFlush{{TokenID: bad, LastUsedAt: t0, Period: "total", QuotaDelta: 1}}); err != nil {
				t.Errorf("FlushUsage(%q) = %v, want nil (skipped)", bad, err)
			}
		}
	})

	t.Run("OKCursorsInByteOrder", func(t *testing.T) {
		other := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0.Add(time.Second)), WorkspaceID: ws.ID, Name: "later", CreatedAt: t0, UpdatedAt: t0}
		if err := db.CreateToken(ctx, other, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, nil); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		tests := []struct {
			after string
			want  []string
		}{
			{"\xff", nil},                            // after every id
			{"tok_\x00", []string{tok.ID, other.ID}}, // "tok_" < "tok_\x00" < every id
			{tok.ID + "\x00", []string{other.ID}},
			{tok.ID[:6] + "\xff", nil},
		}
		for _, tt := range tests {
			ts, err := db.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID, After: tt.after})
			if err != nil {
				t.Fatalf("FindTokens(after %q): %v", tt.after, err)
			}
			if got := tokenIDs(ts); !slices.Equal(got, tt.want) {
				t.Errorf("FindTokens(after %q) = %v, want %v", tt.after, got, tt.want)
			}
		}
		// A cursor that names no event of the workspace selects none
		// (see FindAuditEvents), and one that no text column can hold is
		// no error either.
		evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Before: "\xff"})
		if err != nil || len(evs) != 0 {
			t.Errorf("FindAuditEvents(before \\xff) = %d events, %v; want none", len(evs), err)
		}
		if evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID}); err != nil || len(evs) != 2 {
			t.Errorf("FindAuditEvents() = %d events, %v; want 2", len(evs), err)
		}
		wss, err := db.FindWorkspaces(ctx, keyward.WorkspaceFilter{After: "ws_\x00"})
		if err != nil || len(wss) != 1 {
			t.Errorf("FindWorkspaces(after ws_\\x00) = %d, %v; want 1", len(wss), err)
		}
	})
}

func tokenIDs(ts []*keyward.Token) []string {
	var ids []string
	for _, t := range ts {
		ids = append(ids, t.ID)
	}
	return ids
}

func TestConcurrent(t *testing.T) {
	baseURL(t)
	t.Run("OKCreateRootTokenOnce", func(t *testing.T) {
		// Of concurrent first root tokens, exactly one is issued.
		ctx := t.Context()
		a, u := openTemp(t)
		b, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open second handle: %v", err)
		}
		defer b.Close()
		ws, _, _ := seed(t, a, keyward.DefaultWorkspace)
		const callers = 8
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			db := []*DB{a, b}[i%2]
			wg.Go(func() {
				tok, sec := rootToken(ws.ID)
				errs[i] = db.CreateRootToken(ctx, tok, sec, newEvent("token.create", t0), false)
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch keyward.ErrorCode(err) {
			case "":
				ok++
			case keyward.ECONFLICT:
			default:
				t.Errorf("CreateRootToken = %v, want nil or ECONFLICT", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d of %d concurrent CreateRootToken succeeded, want exactly 1", ok, callers)
		}
		roots, err := a.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID, Name: "root"})
		if err != nil || len(roots) != 1 {
			t.Errorf("root tokens stored = %d, %v; want 1", len(roots), err)
		}
		if cs, err := a.Changes(ctx, 0, 0); err != nil || len(cs) != 2 {
			t.Errorf("changes = %v, %v; want 2 (seed and root)", cs, err)
		}
	})

	t.Run("OKUpdateTokenNoLostUpdate", func(t *testing.T) {
		// Read-modify-write callbacks on one token through two handles:
		// each sees the last one's result.
		ctx := t.Context()
		a, u := openTemp(t)
		b, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open second handle: %v", err)
		}
		defer b.Close()
		ws, tok, _ := seed(t, a, "acme")
		const workers, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			db := []*DB{a, b}[w%2]
			wg.Go(func() {
				for range each {
					_, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
						var m struct{ N int }
						if t.Metadata != nil {
							if err := json.Unmarshal(t.Metadata, &m); err != nil {
								return nil, err
							}
						}
						m.N++
						t.Metadata = json.RawMessage(`{"N": ` + strconv.Itoa(m.N) + `}`)
						return &keyward.TokenWrite{Event: newEvent("token.update", t0), Now: t0}, nil
					})
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("UpdateToken: %v", err)
		}
		got, err := a.FindToken(ctx, ws.ID, tok.ID)
		if err != nil {
			t.Fatalf("FindToken: %v", err)
		}
		if want := fmt.Sprintf(`{"N": %d}`, workers*each); string(got.Metadata) != want {
			t.Errorf("Metadata = %s, want %s (no lost update)", got.Metadata, want)
		}
		if cs, err := a.Changes(ctx, 0, 0); err != nil || len(cs) != 1+workers*each {
			t.Errorf("%d changes, %v; want %d", len(cs), err, 1+workers*each)
		}
		if evs, err := a.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID}); err != nil || len(evs) != 1+workers*each {
			t.Errorf("%d audit events, %v; want %d", len(evs), err, 1+workers*each)
		}
	})

	t.Run("OKChangesFeedHasNoGaps", func(t *testing.T) {
		// A reader following the feed with a cursor while many
		// transactions write never steps past a change that commits
		// later: sequence numbers become visible in order.
		ctx := t.Context()
		db, _ := openTemp(t)
		ws, _, _ := seed(t, db, "acme")
		const writers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					now := t0.Add(time.Duration(w*each+i) * time.Millisecond)
					nt := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: ws.ID, Name: "n", CreatedAt: now, UpdatedAt: now}
					if err := db.CreateToken(ctx, nt, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, newEvent("token.create", now)); err != nil {
						errs <- err
					}
				}
			})
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()

		seen := map[int64]bool{}
		var cursor int64
		follow := func() {
			cs, err := db.Changes(ctx, cursor, 0)
			if err != nil {
				t.Fatalf("Changes: %v", err)
			}
			for _, c := range cs {
				seen[c.Seq] = true
				cursor = c.Seq
			}
		}
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
			}
			follow()
		}
		follow()
		close(errs)
		for err := range errs {
			t.Errorf("CreateToken: %v", err)
		}
		all, err := db.Changes(ctx, 0, 0)
		if err != nil {
			t.Fatalf("Changes: %v", err)
		}
		if len(all) != 1+writers*each {
			t.Fatalf("%d changes, want %d", len(all), 1+writers*each)
		}
		for _, c := range all {
			if !seen[c.Seq] {
				t.Errorf("the reader missed change %d: it committed after a later one was read", c.Seq)
			}
		}
	})

	t.Run("OKManyWriters", func(t *testing.T) {
		// Creates, updates and reads from many goroutines through two
		// handles: every write is there, seen through either.
		ctx := t.Context()
		a, u := openTemp(t)
		b, err := Open(ctx, u)
		if err != nil {
			t.Fatalf("Open second handle: %v", err)
		}
		defer b.Close()
		ws, tok, _ := seed(t, a, "acme")
		const workers, each = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, workers*each*4)
		for w := range workers {
			db := []*DB{a, b}[w%2]
			wg.Go(func() {
				for i := range each {
					now := t0.Add(time.Duration(w*each+i) * time.Millisecond)
					id := keyward.NewID(keyward.PrefixToken, now)
					nt := &keyward.Token{ID: id, WorkspaceID: ws.ID, Name: fmt.Sprintf("w%d-%d", w, i), CreatedAt: now, UpdatedAt: now,
						Quota: &keyward.Quota{Limit: 10, Period: keyward.PeriodNone}}
					if err := db.CreateToken(ctx, nt, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, nil); err != nil {
						errs <- err
					}
					if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
						t.Name += "."
						return &keyward.TokenWrite{Event: newEvent("token.update", now), Now: now}, nil
					}); err != nil {
						errs <- err
					}
					// Flushes touch the shared token and this one, in
					// either order, without deadlocking.
					batch := []keyward.UsageFlush{
						{TokenID: tok.ID, LastUsedAt: now, LastUsedIP: "192.0.2.1", Period: "total", QuotaDelta: 1},
						{TokenID: id, LastUsedAt: now, Period: "total", QuotaDelta: 1},
					}
					if i%2 == 1 {
						slices.Reverse(batch)
					}
					if err := db.FlushUsage(ctx, keyward.FlushID{}, batch); err != nil {
						errs <- fmt.Errorf("FlushUsage: %w", err)
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
			if n, err := db.QuotaUsed(ctx, tok.ID, "total"); err != nil || n != workers*each {
				t.Errorf("QuotaUsed = %d, %v; want %d", n, err, workers*each)
			}
			cs, err := db.Changes(ctx, 0, 0)
			if err != nil {
				t.Fatalf("Changes: %v", err)
			}
			if len(cs) != 1+2*workers*each {
				t.Errorf("%d changes, want %d", len(cs), 1+2*workers*each)
			}
		}
	})
}

func TestNotify(t *testing.T) {
	baseURL(t)
	ctx := t.Context()
	db, u := openTemp(t)
	ws, tok, _ := seed(t, db, "acme")

	listener, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect listener: %v", err)
	}
	defer listener.Close(context.Background())
	if _, err := listener.Exec(ctx, `LISTEN `+NotifyChannel); err != nil {
		t.Fatalf("LISTEN: %v", err)
	}

	// wait returns once a notification with the given payload arrives.
	// The channel is database-wide, so others may come first.
	wait := func(t *testing.T, seq int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		for {
			n, err := listener.WaitForNotification(ctx)
			if err != nil {
				t.Fatalf("no notification with payload %d: %v", seq, err)
			}
			if n.Channel == NotifyChannel && n.Payload == strconv.FormatInt(seq, 10) {
				return
			}
		}
	}
	last := func(t *testing.T) int64 {
		t.Helper()
		seq, err := db.LastChange(ctx)
		if err != nil {
			t.Fatalf("LastChange: %v", err)
		}
		return seq
	}

	t.Run("OKCreateToken", func(t *testing.T) {
		now := t0.Add(time.Second)
		nt := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, now), WorkspaceID: ws.ID, Name: "n", CreatedAt: now, UpdatedAt: now}
		if err := db.CreateToken(ctx, nt, &keyward.Secret{Digest: randomDigest(), KeyID: "k1"}, newEvent("token.create", now)); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		wait(t, last(t))
	})

	t.Run("OKUpdateToken", func(t *testing.T) {
		if _, err := db.UpdateToken(ctx, ws.ID, tok.ID, func(t *keyward.Token) (*keyward.TokenWrite, error) {
			t.Revoked, t.RevokedAt = true, &t0
			return &keyward.TokenWrite{Event: newEvent("token.revoke", t0), Now: t0}, nil
		}); err != nil {
			t.Fatalf("UpdateToken: %v", err)
		}
		wait(t, last(t))
	})
}

// TestLoginRefusedIsUnavailable: a server that refuses the login itself
// (a database not accepting connections, too many clients) is a store
// that cannot be reached: EUNAVAILABLE, which the API answers 503 with
// Retry-After, not an internal error.
func TestLoginRefusedIsUnavailable(t *testing.T) {
	base := baseURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "keyward_refuse_" + hex.EncodeToString(b)
	admin(t, `CREATE DATABASE `+name)
	t.Cleanup(func() {
		admin(t, `ALTER DATABASE `+name+` ALLOW_CONNECTIONS true`)
		admin(t, `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	p, err := url.Parse(base)
	if err != nil {
		t.Skipf("%s is not a URL: %v", urlEnv, err)
	}
	p.Path = "/" + name
	db, err := Open(t.Context(), p.String(), WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	admin(t, `ALTER DATABASE `+name+` ALLOW_CONNECTIONS false`)
	admin(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '`+name+`' AND pid <> pg_backend_pid()`)
	// The first calls may meet the pool's connections that were ended;
	// then every call needs a new one, whose login is refused.
	for i := range 3 {
		_, err = db.FindWorkspaces(t.Context(), keyward.WorkspaceFilter{Limit: 1})
		if keyward.ErrorCode(err) != keyward.EUNAVAILABLE {
			t.Fatalf("call %d with logins refused: %v (code %q), want %s", i, err, keyward.ErrorCode(err), keyward.EUNAVAILABLE)
		}
	}
	if !strings.Contains(err.Error(), "not currently accepting connections") {
		t.Fatalf("the last call did not reach the login: %v", err)
	}
}

// TestReadOnlyIsUnavailable: a server that takes no writes for now (a
// standby left behind by a failover, or one made read-only while its
// disk fills) refuses a write with EUNAVAILABLE, which the API answers
// 503 with Retry-After, not an internal error.
func TestReadOnlyIsUnavailable(t *testing.T) {
	base := baseURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "keyward_readonly_" + hex.EncodeToString(b)
	admin(t, `CREATE DATABASE `+name)
	t.Cleanup(func() { admin(t, `DROP DATABASE `+name+` WITH (FORCE)`) })
	p, err := url.Parse(base)
	if err != nil {
		t.Skipf("%s is not a URL: %v", urlEnv, err)
	}
	p.Path = "/" + name
	db, err := Open(t.Context(), p.String(), WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	admin(t, `ALTER DATABASE `+name+` SET default_transaction_read_only = on`)
	admin(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '`+name+`' AND pid <> pg_backend_pid()`)
	// The first calls may meet the pool's connections that were ended;
	// then every call has a new one, read-only.
	for i := range 3 {
		ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0), Name: fmt.Sprintf("ro%d", i), TokenPrefix: "kw", CreatedAt: t0}
		err = db.CreateWorkspace(t.Context(), ws, nil, nil)
		if keyward.ErrorCode(err) != keyward.EUNAVAILABLE {
			t.Fatalf("write %d to a read-only server: %v (code %q), want %s", i, err, keyward.ErrorCode(err), keyward.EUNAVAILABLE)
		}
	}
	if !strings.Contains(err.Error(), "read-only transaction") {
		t.Fatalf("the last write did not reach the server: %v", err)
	}
}

// TestNameKeyMigration: a store from before migration 0007 whose workspace
// names differ only in case (made before the key existed, by nodes racing)
// keeps them all; afterwards no further such name is taken.
func TestNameKeyMigration(t *testing.T) {
	ctx := t.Context()
	u := newSchema(t)
	db, err := Open(ctx, u)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	seed(t, db, "Acme")
	// Back to the schema before 0007, with a second "acme" in it.
	for _, q := range []string{
		`ALTER TABLE workspaces DROP COLUMN name_key`,
		`DELETE FROM schema_migrations WHERE name = '0007_workspace_name_key.sql'`,
		`INSERT INTO workspaces (id, name, token_prefix, created_at) VALUES ('ws_later', 'ACME', 'kw', now())`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	db, err = Open(ctx, u)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	for _, name := range []string{"Acme", "ACME"} {
		if _, err := db.FindWorkspaceByName(ctx, name); err != nil {
			t.Errorf("FindWorkspaceByName(%q) after the migration: %v", name, err)
		}
	}
	ws := &keyward.Workspace{ID: keyward.NewID(keyward.PrefixWorkspace, t0.Add(time.Second)), Name: "acme", TokenPrefix: "kw", CreatedAt: t0}
	if err := db.CreateWorkspace(ctx, ws, nil, nil); keyward.ErrorCode(err) != keyward.ECONFLICT {
		t.Errorf("CreateWorkspace(acme) = %v, want ECONFLICT", err)
	}
	// A node of the previous version, not yet upgraded, still creates
	// workspaces (without the key).
	if _, err := db.pool.Exec(ctx, `INSERT INTO workspaces (id, name, token_prefix, created_at) VALUES ('ws_old_node', 'made by an old node', 'kw', now())`); err != nil {
		t.Errorf("an insert of the previous version failed: %v", err)
	}
}

// TestOpenReadOnlyRole: a role that may only read (an auditor's, running
// keyward audit verify) opens a store whose migrations are all applied:
// opening it then takes no lock and makes no DDL.
func TestOpenReadOnlyRole(t *testing.T) {
	u := newSchema(t)
	owner, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	owner.Close()
	p, err := url.Parse(u)
	if err != nil {
		t.Skipf("%s is not a URL: %v", urlEnv, err)
	}
	schema := p.Query().Get("search_path")
	b := make([]byte, 6)
	rand.Read(b)
	role := "keyward_ro_" + hex.EncodeToString(b)
	admin(t, `CREATE ROLE `+role+` LOGIN`)
	t.Cleanup(func() {
		admin(t, `DROP OWNED BY `+role)
		admin(t, `DROP ROLE `+role)
	})
	admin(t, `GRANT USAGE ON SCHEMA `+schema+` TO `+role)
	admin(t, `GRANT SELECT ON ALL TABLES IN SCHEMA `+schema+` TO `+role)
	p.User = url.User(role)
	conn, err := pgx.Connect(t.Context(), p.String())
	if err != nil {
		t.Skipf("the server does not let a new role log in without a password here: %v", err)
	}
	conn.Close(t.Context())

	db, err := Open(t.Context(), p.String(), WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open as a role that may only read: %v", err)
	}
	defer db.Close()
	if _, err := db.FindWorkspaces(t.Context(), keyward.WorkspaceFilter{Limit: 1}); err != nil {
		t.Fatalf("FindWorkspaces: %v", err)
	}
}

// TestOpenSchemaNotKeywards: a schema that is missing, or holds another
// tool's migration table or tables of keyward's names, is refused with
// what to do, and left as it was.
func TestOpenSchemaNotKeywards(t *testing.T) {
	t.Run("NoSuchSchema", func(t *testing.T) {
		u := withParam(t, baseURL(t), "search_path", "keyward_test_no_such_schema")
		_, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
		if err == nil || !strings.Contains(err.Error(), "no schema of the search_path (keyward_test_no_such_schema) exists: create it first") {
			t.Fatalf("Open: %v", err)
		}
	})
	t.Run("OtherToolsMigrations", func(t *testing.T) {
		u := newSchema(t)
		schema := searchPath(t, u)
		admin(t, `CREATE TABLE `+schema+`.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)`)
		_, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
		if err == nil || !strings.Contains(err.Error(), schema+".schema_migrations is another tool's") {
			t.Fatalf("Open: %v", err)
		}
		if _, err := Migrate(t.Context(), u, WithAuditKey(storetest.AuditKey)); err == nil || !strings.Contains(err.Error(), "give keyward a database of its own") {
			t.Fatalf("Migrate: %v", err)
		}
	})
	t.Run("OtherApplicationsTables", func(t *testing.T) {
		u := newSchema(t)
		schema := searchPath(t, u)
		admin(t, `CREATE TABLE `+schema+`.tokens (id int)`)
		_, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey))
		if err == nil || !strings.Contains(err.Error(), "schema "+schema+" already has tables of the names keyward uses (tokens)") {
			t.Fatalf("Open: %v", err)
		}
	})
	t.Run("OtherApplicationsTablesElsewhereInThePath", func(t *testing.T) {
		// Tables of another schema later in the search_path are not in
		// the way: keyward's are made in the first.
		other := newSchema(t)
		otherName := searchPath(t, other)
		admin(t, `CREATE TABLE `+otherName+`.tokens (id int)`)
		u := newSchema(t)
		schema := searchPath(t, u)
		db, err := Open(t.Context(), withParam(t, u, "search_path", schema+","+otherName), WithAuditKey(storetest.AuditKey))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		db.Close()
	})
}

// TestOpenWaitsForMigrationLock: a store to migrate while another process
// holds the migration lock says so (WithLockWait), waits, and migrates
// once the lock is free.
func TestOpenWaitsForMigrationLock(t *testing.T) {
	u := newSchema(t)
	ctx := t.Context()
	holder, err := pgx.Connect(ctx, baseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{}, 1)
	opened := make(chan error, 1)
	go func() {
		db, err := Open(ctx, u, WithAuditKey(storetest.AuditKey), WithLockWait(func() { waiting <- struct{}{} }))
		if err == nil {
			db.Close()
		}
		opened <- err
	}()
	select {
	case <-waiting:
	case err := <-opened:
		t.Fatalf("Open returned while the lock was held: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Open did not say it waits for the lock")
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1)`, migrateLockKey); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("Open after the lock was freed: %v", err)
	}
	// Migrated: another open has nothing to apply, and takes no lock.
	db, err := Open(ctx, u, WithAuditKey(storetest.AuditKey), WithLockWait(func() { t.Error("waited on a migrated store") }))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

// TestBusy: a write that waited out statement_timeout behind another
// transaction's lock fails as EUNAVAILABLE (the API's 503 with
// Retry-After, not an internal error), having written nothing.
func TestBusy(t *testing.T) {
	u := newSchema(t)
	db, err := Open(t.Context(), withParam(t, u, "statement_timeout", "200"), WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ws, _, _ := seed(t, db, "acme")
	ctx := t.Context()
	holder, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT * FROM audit_heads FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	tok := &keyward.Token{ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "blocked", CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0}
	ev := &keyward.AuditEvent{ID: keyward.NewID(keyward.PrefixEvent, t0), Time: t0, Action: "token.create", Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: tok.ID}
	err = db.CreateToken(ctx, tok, &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok.ID, CreatedAt: t0}, ev)
	if code := keyward.ErrorCode(err); code != keyward.EUNAVAILABLE {
		t.Fatalf("a write behind another's lock: code %q (%v), want %q", code, err, keyward.EUNAVAILABLE)
	}
	tx.Rollback(ctx)
	if _, err := db.TokenByID(ctx, tok.ID); keyward.ErrorCode(err) != keyward.ENOTFOUND {
		t.Fatalf("the refused write was stored: %v", err)
	}
}

// TestStoreCollation runs the store suite in a database whose collation
// skips punctuation when comparing, as en_US.UTF-8 (the default of many
// installs) does and the C collation of the test database does not: a
// range or an order on text must not rely on the database's collation.
func TestStoreCollation(t *testing.T) {
	base := baseURL(t)
	b := make([]byte, 8)
	rand.Read(b)
	name := "keyward_test_" + hex.EncodeToString(b)
	ctx := t.Context()
	admin(t, "SELECT 1") // connects the shared pool
	if _, err := adminPool.pool.Exec(ctx, `CREATE DATABASE `+name+` LOCALE_PROVIDER icu ICU_LOCALE 'en-US-u-ka-shifted' LOCALE 'C.UTF-8' TEMPLATE template0`); err != nil {
		msg := "this PostgreSQL cannot make a database with an ICU collation: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	u := withParam(t, base, "dbname", name)
	pool, err := pgxpool.New(ctx, withParam(t, u, "pool_max_conns", "2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		admin(t, `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	storetest.Run(t, func(t *testing.T) keyward.Store {
		b := make([]byte, 8)
		rand.Read(b)
		schema := "s_" + hex.EncodeToString(b)
		if _, err := pool.Exec(context.Background(), `CREATE SCHEMA `+schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pool.Exec(context.Background(), `DROP SCHEMA `+schema+` CASCADE`) })
		db, err := Open(t.Context(), withParam(t, u, "search_path", schema), WithAuditKey(storetest.AuditKey))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db // the suite closes it, before the schema is dropped
	})
}

// TestAuditWriteOrderMigration: a store from before migration 0009 gets
// the indexes by actor and by target in sequence when it opens, and then lists the events
// it holds in the order they were written; every listing of a page after
// a cursor, filtered by actor or not, can read an index backwards in that
// order, without a sort, however large the log.
func TestAuditWriteOrderMigration(t *testing.T) {
	ctx := t.Context()
	u := newSchema(t)
	db, err := Open(ctx, u, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
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
	for _, q := range []string{
		`DROP INDEX audit_events_workspace_actor_seq`,
		`DROP INDEX audit_events_workspace_target_seq`,
		`DELETE FROM schema_migrations WHERE name = '0009_audit_write_order.sql'`,
	} {
		if _, err := db.pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	db, err = Open(ctx, u, WithAuditKey(storetest.AuditKey))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if got, want := db.AppliedMigrations(), []string{"0009_audit_write_order.sql"}; !slices.Equal(got, want) {
		t.Errorf("AppliedMigrations = %v, want %v", got, want)
	}
	for _, actor := range []string{"", "tok_admin"} {
		evs, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID, Actor: actor, Limit: 2})
		if err != nil {
			t.Fatalf("FindAuditEvents: %v", err)
		}
		var got []string
		for _, e := range evs {
			got = append(got, e.ID)
		}
		if want := []string{ids[2], ids[1]}; !slices.Equal(got, want) {
			t.Errorf("FindAuditEvents(actor %q) = %v, want %v", actor, got, want)
		}
	}

	for _, f := range []keyward.AuditFilter{
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51, Actor: "tok_admin"},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 21, Target: tok.ID},
		{WorkspaceID: ws.ID, Before: ids[1], Limit: 51, Action: "token.*", Target: tok.ID, From: t0, To: t0.Add(time.Hour)},
	} {
		where, args, ok := auditQuery(f)
		if !ok {
			t.Fatalf("auditQuery(%+v) selects nothing", f)
		}
		// With a handful of rows a sequential scan is cheapest: the
		// planner is told to avoid it, and sorts, so that it shows the
		// plan of a large log.
		var plan []string
		err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
			for _, q := range []string{`SET LOCAL enable_seqscan = off`, `SET LOCAL enable_bitmapscan = off`, `SET LOCAL enable_sort = off`} {
				if _, err := tx.Exec(ctx, q); err != nil {
					return err
				}
			}
			rows, err := tx.Query(ctx, `EXPLAIN (COSTS OFF) SELECT `+eventColumns+` FROM audit_events `+where, args...)
			if err != nil {
				return err
			}
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatalf("EXPLAIN: %v", err)
		}
		want := "Index Scan Backward using audit_events_workspace_seq on audit_events"
		switch {
		case f.Actor != "":
			want = "Index Scan Backward using audit_events_workspace_actor_seq on audit_events"
		case f.Target != "":
			want = "Index Scan Backward using audit_events_workspace_target_seq on audit_events"
		}
		// The Limit's own child (its InitPlan, the cursor's lookup, is
		// indented further) is the page's scan.
		scan := ""
		for _, l := range plan[1:] {
			if strings.HasPrefix(l, "  ->  ") {
				scan = strings.TrimPrefix(l, "  ->  ")
			}
		}
		if len(plan) < 2 || plan[0] != "Limit" || scan != want || strings.Contains(strings.Join(plan, "\n"), "Sort") {
			t.Errorf("plan of %s:\n%s\nwant a Limit over a %s, without a sort", where, strings.Join(plan, "\n"), want)
		}
	}
}

// TestHasWorkspace: HasWorkspace finds a workspace by its exact name,
// reading only; a database keyward never migrated is ErrNoStore, and is
// left without keyward's tables.
func TestHasWorkspace(t *testing.T) {
	ctx := t.Context()
	db, u := openTemp(t)
	seed(t, db, "acme")
	for name, want := range map[string]bool{"acme": true, "Acme": false, "other": false, "bad\x00name": false} {
		if got, err := HasWorkspace(ctx, u, name); err != nil || got != want {
			t.Errorf("HasWorkspace(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	empty := newSchema(t)
	if _, err := HasWorkspace(ctx, empty, "acme"); err != ErrNoStore {
		t.Errorf("an empty schema: %v, want ErrNoStore", err)
	}
	var n int
	admin(t, `SELECT 1`) // the admin pool, for the count below
	if err := adminPool.pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = $1`, searchPath(t, empty)).Scan(&n); err != nil || n != 0 {
		t.Errorf("the empty schema holds %d tables (%v) after HasWorkspace", n, err)
	}
}
