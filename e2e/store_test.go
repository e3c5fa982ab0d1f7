package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward/client"
)

// store is where a test's keyward processes keep their data: the flags
// and environment that name it, a directory to scan for secrets, and a dump
// of everything stored as text.
type store struct {
	args []string
	env  []string
	dir  string // "" when nothing is on local disk
	// name is the PostgreSQL schema, also the application_name of the
	// nodes' connections; "" on SQLite.
	name string
	dump func(t testing.TB) string
}

// sqliteStore is an embedded store in a fresh data dir.
func sqliteStore(t testing.TB) *store {
	dir := t.TempDir()
	return &store{args: []string{"--data-dir", dir}, dir: dir, dump: func(testing.TB) string { return "" }}
}

// postgresURL returns the test server's URL from KEYWARD_TEST_POSTGRES_URL.
// Without it the test is skipped, or fails under CI=true, where a missing
// service must not pass unnoticed.
func postgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KEYWARD_TEST_POSTGRES_URL is not set, and CI=true: PostgreSQL tests must run in CI")
		}
		t.Skip("set KEYWARD_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test?sslmode=disable to run the PostgreSQL tests")
	}
	return u
}

// postgresStore is a PostgreSQL store in a schema of its own, dropped at
// the end of the test. Nodes share a server secret, as in production.
func postgresStore(t testing.TB) *store {
	t.Helper()
	base := postgresURL(t)
	var raw [6]byte
	rand.Read(raw[:])
	schema := "keyward_e2e_" + hex.EncodeToString(raw[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL at KEYWARD_TEST_POSTGRES_URL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, base); err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema) // so a test can find its own connections
	u.RawQuery = q.Encode()
	dbURL := u.String()
	rand.Read(raw[:])
	secret := strings.Repeat(hex.EncodeToString(raw[:]), 6)
	return &store{
		name: schema,
		args: []string{"--database-url", dbURL},
		env:  []string{"KEYWARD_SECRET=" + secret},
		dump: func(t testing.TB) string { return dumpSchema(t, base, schema) },
	}
}

// dumpSchema returns every row of every table of the schema as JSON text.
func dumpSchema(t testing.TB, base, schema string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = $1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) < 5 {
		t.Fatalf("schema %s has only tables %v", schema, tables)
	}
	var b strings.Builder
	for _, table := range tables {
		rows, err := conn.Query(ctx, `SELECT row_to_json(x)::text FROM `+pgx.Identifier{schema, table}.Sanitize()+` x`)
		if err != nil {
			t.Fatal(err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// redisURL returns the test Redis server's URL from KEYWARD_TEST_REDIS_URL,
// skipping (or failing under CI=true) without it.
func redisURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("KEYWARD_TEST_REDIS_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KEYWARD_TEST_REDIS_URL is not set, and CI=true: Redis tests must run in CI")
		}
		t.Skip("set KEYWARD_TEST_REDIS_URL=redis://127.0.0.1:6379/0 to run the Redis tests")
	}
	return u
}

// TestSQLiteOneServe: a second keyward serve on the data dir of a running
// one refuses to start (each would count limits apart), while other
// commands still work beside it; once the first stops, a serve starts.
func TestSQLiteOneServe(t *testing.T) {
	st := sqliteStore(t)
	root := initRoot(t, st)
	first := startServer(t, st)
	cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, st.args...)...)
	cmd.Env = append(baseEnv(), st.env...)
	dieWithTest(cmd)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("a second serve on the data dir: %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "another keyward serve is running on the data dir") {
		t.Errorf("the second serve said:\n%s", out)
	}
	// The first one goes on serving.
	c := newClient(t, first.URL, root)
	if _, err := c.ListTokens(context.Background(), client.TokenFilter{}); err != nil {
		t.Fatalf("the first serve after the second failed: %v", err)
	}
	first.stop()
	startServer(t, st)
}
