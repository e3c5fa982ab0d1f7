// Package stores opens new, empty stores of every kind for the tests of
// packages that run against a store (the verification engine, the usage
// recorder): SQLite always, PostgreSQL when KEYWARD_TEST_POSTGRES_URL
// names a server. It is apart from storetest, which the stores' own
// tests import.
package stores

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/sqlite"
)

// Openers returns, by name ("SQLite", "PostgreSQL"), a function that
// opens a new, empty store of that kind for a test and closes it (and
// drops its PostgreSQL schema) when the test ends. Without
// KEYWARD_TEST_POSTGRES_URL the PostgreSQL kind is left out, with a
// line in t's log, or, with CI=true, t fails: CI must run it.
func Openers(t testing.TB) map[string]func(t *testing.T) keyward.Store {
	t.Helper()
	openers := map[string]func(t *testing.T) keyward.Store{
		"SQLite": func(t *testing.T) keyward.Store {
			db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keyward.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
	}
	base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if base == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KEYWARD_TEST_POSTGRES_URL is not set, and CI=true: PostgreSQL tests must run in CI")
		}
		t.Log("KEYWARD_TEST_POSTGRES_URL is not set: the PostgreSQL cases are skipped (set it to a database URL to run them)")
		return openers
	}
	openers["PostgreSQL"] = func(t *testing.T) keyward.Store {
		ctx := context.Background()
		b := make([]byte, 8)
		rand.Read(b)
		name := "keyward_test_" + hex.EncodeToString(b)
		admin := func(sql string) {
			conn, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		admin(`CREATE SCHEMA ` + name)
		t.Cleanup(func() { admin(`DROP SCHEMA ` + name + ` CASCADE`) })
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", name)
		u.RawQuery = q.Encode()
		db, err := postgres.Open(ctx, u.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() }) // before the schema is dropped
		return db
	}
	return openers
}
