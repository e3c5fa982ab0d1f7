package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward/client"
)

// ownPostgres is a PostgreSQL server of the test's own, which it may stop
// and start.
type ownPostgres struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	URL  string
}

// startOwnPostgres initialises and starts a PostgreSQL cluster on a free
// loopback port, run as the postgres user (initdb refuses root) in a
// directory that user owns. Without the PostgreSQL binaries the test is
// skipped, or fails under CI=true.
func startOwnPostgres(t *testing.T) *ownPostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb), and CI=true")
		}
		t.Skip("the PostgreSQL server binaries are not installed (apt-get install postgresql)")
	}
	if os.Geteuid() != 0 {
		t.Skip("starting a PostgreSQL cluster as the postgres user needs root")
	}
	pg := &ownPostgres{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "keyward-pg-")
	if err != nil {
		t.Fatal(err)
	}
	pg.dir = dir
	t.Cleanup(func() {
		pg.run("pg_ctl", "-D", pg.dir+"/data", "-m", "immediate", "stop")
		os.RemoveAll(dir)
	})
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v\n%s", err, out)
	}
	pg.mustRun("initdb", "-D", dir+"/data", "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pg.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	pg.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	pg.start()
	return pg
}

// run runs one of the PostgreSQL binaries as the postgres user.
func (pg *ownPostgres) run(name string, args ...string) ([]byte, error) {
	return exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(pg.bin, name)}, args...)...).CombinedOutput()
}

func (pg *ownPostgres) mustRun(name string, args ...string) {
	pg.t.Helper()
	if out, err := pg.run(name, args...); err != nil {
		pg.t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

// store is the keyward store on pg, with a server secret of its own.
func (pg *ownPostgres) store() *store {
	return &store{
		args: []string{"--database-url", pg.URL},
		env:  []string{"KEYWARD_SECRET=" + strings.Repeat("own-postgres-test-secret-", 2)},
		dump: func(testing.TB) string { return "" },
	}
}

func (pg *ownPostgres) start() {
	pg.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off", pg.port, pg.dir)
	pg.mustRun("pg_ctl", "-D", pg.dir+"/data", "-o", opts, "-l", pg.dir+"/log", "-w", "-t", "60", "start")
}

func (pg *ownPostgres) stop() {
	pg.t.Helper()
	pg.mustRun("pg_ctl", "-D", pg.dir+"/data", "-m", "fast", "-w", "stop")
}

// TestPostgresOutage stops the PostgreSQL server under a running node:
// cached tokens keep verifying, unknown tokens are refused, writes answer
// 503 with Retry-After, /readyz says so; when the server returns, writes
// work again without a restart and nothing acknowledged was lost.
func TestPostgresOutage(t *testing.T) {
	ctx := ctxT(t)
	pg := startOwnPostgres(t)
	st := pg.store()
	srv := startServer(t, st, "--stale-grace", "10m")
	root := initRoot(t, st)
	admin := newClient(t, srv.URL, root)
	before, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "made before the outage", Scopes: []string{"orders:read"}})
	if err != nil {
		t.Fatal(err)
	}
	expectCode(t, admin, client.VerifyRequest{Token: before.Secret}, "VALID")

	pg.stop()

	t.Run("CachedTokensVerify", func(t *testing.T) {
		expectCode(t, admin, client.VerifyRequest{Token: before.Secret, Scopes: []string{"orders:read"}}, "VALID")
	})
	t.Run("UnknownTokensFailClosed", func(t *testing.T) {
		_, err := admin.Verify(ctx, client.VerifyRequest{Token: "kw_AbCdEfGhIjKlMnOpQrStUvWxYz0123452ZGy5c"})
		if client.StatusCode(err) != http.StatusServiceUnavailable {
			t.Fatalf("verify of an unknown token during the outage: %v, want 503", err)
		}
	})
	t.Run("WritesAnswer503", func(t *testing.T) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/tokens", strings.NewReader(`{"name":"during the outage"}`))
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("create during the outage: %d, Retry-After %q, %s", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"))
		}
	})
	t.Run("NotReady", func(t *testing.T) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]string
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		// The store being down says more than the cache going stale with
		// it: the status stays unavailable.
		if resp.StatusCode != http.StatusServiceUnavailable || v["status"] != "unavailable" || v["store"] != "unreachable" {
			t.Fatalf("/readyz during the outage: %d %v", resp.StatusCode, v)
		}
	})

	pg.start()

	t.Run("Recovers", func(t *testing.T) {
		deadline := time.Now().Add(30 * time.Second)
		var after *client.IssuedToken
		for {
			after, err = admin.CreateToken(ctx, client.CreateTokenRequest{Name: "made after the outage"})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("no write succeeded within 30s of the server's return: %v", err)
		}
		expectCode(t, admin, client.VerifyRequest{Token: after.Secret}, "VALID")
		got, err := admin.GetToken(ctx, before.ID)
		if err != nil || got.Name != "made before the outage" {
			t.Fatalf("the token made before the outage: %+v, %v", got, err)
		}
		for time.Now().Before(deadline) {
			if admin.Ready(context.Background()) == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatal("/readyz did not recover")
	})
}

// TestPostgresRestoredUnderNodes puts back, under two running nodes, a
// copy of the PostgreSQL cluster taken before the latest writes (a restore
// from a backup, or the promotion of a replica that lacks them). The feed
// then numbers its next changes from before those the nodes read: a
// revocation made on one node is still seen by the other, and a token the
// store no longer holds stops verifying from the cache.
func TestPostgresRestoredUnderNodes(t *testing.T) {
	ctx := ctxT(t)
	pg := startOwnPostgres(t)
	st := pg.store()
	root := initRoot(t, st)
	var nodes []*client.Client
	var srvs []*server
	for range 2 {
		s := startServer(t, st, "--stale-grace", "10m")
		srvs = append(srvs, s)
		nodes = append(nodes, newClient(t, s.URL, root))
	}
	old, err := nodes[0].CreateToken(ctx, client.CreateTokenRequest{Name: "in the backup"})
	if err != nil {
		t.Fatal(err)
	}

	pg.stop()
	if out, err := exec.Command("cp", "-a", pg.dir+"/data", pg.dir+"/backup").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	pg.start()
	var gone *client.IssuedToken
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if gone, err = nodes[0].CreateToken(ctx, client.CreateTokenRequest{Name: "not in the backup"}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("no write within 30s of the server's return: %v", err)
	}
	// Each node learns of a write of the other's from the change feed,
	// so that both have read it past what the copy holds.
	if _, err := nodes[1].SuspendToken(ctx, gone.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitCode(t, nodes[0], gone.Secret, "SUSPENDED", 5*time.Second)
	if _, err := nodes[0].ResumeToken(ctx, gone.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitCode(t, nodes[1], gone.Secret, "VALID", 5*time.Second)
	expectCode(t, nodes[1], client.VerifyRequest{Token: old.Secret}, "VALID")

	pg.stop()
	if out, err := exec.Command("sh", "-c", `rm -rf "$1/data" && mv "$1/backup" "$1/data"`, "sh", pg.dir).CombinedOutput(); err != nil {
		t.Fatalf("restoring the copy: %v\n%s", err, out)
	}
	pg.start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err = nodes[0].RevokeToken(ctx, old.ID, "after the restore"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("no revocation within 30s of the server's return: %v", err)
	}
	waitCode(t, nodes[1], old.Secret, "REVOKED", 5*time.Second)
	for _, c := range nodes {
		waitCode(t, c, gone.Secret, "NOT_FOUND", 5*time.Second)
	}
	for i, s := range srvs {
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(s.log.String(), "the change feed no longer holds the last change read"); {
			if time.Now().After(deadline) {
				t.Fatalf("node %d did not say that the feed went back:\n%s", i+1, s.log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestPostgresNotUpAtStart starts nodes before their PostgreSQL server:
// a node waits for it (--store-wait), says so, and serves once it is up;
// one whose wait runs out exits with the cause; one asked to stop while
// waiting stops as cleanly as a serving one.
func TestPostgresNotUpAtStart(t *testing.T) {
	pg := startOwnPostgres(t)
	st := pg.store()
	pg.stop()

	waiting := func(t *testing.T, s *server) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s.log.String(), "does not accept connections yet: waiting for it"); {
			if time.Now().After(deadline) {
				t.Fatalf("the node did not say it waits for the store:\n%s", s.log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Run("GivesUp", func(t *testing.T) {
		_, stderr, code := cli(t, "", st.env, append([]string{"serve", "--addr", "127.0.0.1:0", "--store-wait", "1s"}, st.args...)...)
		if code != 1 || !strings.Contains(stderr, "connection refused") || !strings.Contains(stderr, "waited 1s for the store to accept connections: --store-wait") {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
	})
	t.Run("StopsWhileWaiting", func(t *testing.T) {
		s := launchServer(t, st)
		waiting(t, s)
		s.stop() // fails the test unless it exits 0
		if !strings.Contains(s.log.String(), "stopped while waiting for the PostgreSQL store") {
			t.Fatalf("log:\n%s", s.log)
		}
	})
	t.Run("WaitsForIt", func(t *testing.T) {
		s := launchServer(t, st)
		waiting(t, s)
		pg.start()
		s.waitListening()
		if !strings.Contains(s.log.String(), "the PostgreSQL store accepts connections") {
			t.Errorf("log:\n%s", s.log)
		}
		root := initRoot(t, st)
		admin := newClient(t, s.URL, root)
		tok, err := admin.CreateToken(ctxT(t), client.CreateTokenRequest{Name: "after the wait"})
		if err != nil {
			t.Fatal(err)
		}
		expectCode(t, admin, client.VerifyRequest{Token: tok.Secret}, "VALID")
	})
	t.Run("WrongDatabaseFailsAtOnce", func(t *testing.T) {
		// A configuration the server refuses stays refused: no wait.
		u := strings.Replace(pg.URL, "/postgres?", "/no_such_database?", 1)
		_, stderr, code := cli(t, "", st.env, "serve", "--addr", "127.0.0.1:0", "--database-url", u, "--store-wait", "10m")
		if code != 1 || !strings.Contains(stderr, `database "no_such_database" does not exist`) || strings.Contains(stderr, "waiting") {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
	})
}

// TestUsageSpoolAcrossRestart: a node stopped while PostgreSQL is down
// keeps the quota use it could not write in its spool (--usage-spool-dir),
// exits cleanly saying so, and the next start writes it back: the quota
// counts every VALID verification made during the outage.
func TestUsageSpoolAcrossRestart(t *testing.T) {
	ctx := ctxT(t)
	pg := startOwnPostgres(t)
	st := pg.store()
	spool := t.TempDir()
	// Usage analytics off: their rollups are not spooled, and a stop that
	// loses some exits with an error, which srv.stop would report.
	srv := startServer(t, st, "--usage-spool-dir", spool, "--stale-grace", "10m", "--usage=false")
	root := initRoot(t, st)
	admin := newClient(t, srv.URL, root)
	tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "metered", Quota: &client.Quota{Limit: 1000, Period: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	verifyN := func(c *client.Client, n int) *client.VerifyResponse {
		t.Helper()
		var res *client.VerifyResponse
		for range n {
			res = expectCode(t, c, client.VerifyRequest{Token: tok.Secret}, "VALID")
		}
		return res
	}
	verifyN(admin, 5)
	time.Sleep(300 * time.Millisecond) // flushed (--flush-interval 50ms)

	pg.stop()
	if res := verifyN(admin, 7); res.Quota == nil || res.Quota.Remaining != 1000-12 {
		t.Fatalf("during the outage: quota %+v, want %d remaining", res.Quota, 1000-12)
	}
	srv.stop() // fails the test unless it exits cleanly
	if !strings.Contains(srv.log.String(), "kept in the spool") {
		t.Errorf("no word of the spool at shutdown:\n%s", srv.log)
	}
	spools, _ := filepath.Glob(filepath.Join(spool, "usage-*.spool"))
	if len(spools) != 1 {
		t.Fatalf("spool files %v, want one", spools)
	}

	pg.start()
	srv = startServer(t, st, "--usage-spool-dir", spool)
	if !strings.Contains(srv.log.String(), "written back") {
		t.Errorf("no word of the spool written back:\n%s", srv.log)
	}
	admin = newClient(t, srv.URL, root)
	if res := verifyN(admin, 1); res.Quota == nil || res.Quota.Remaining != 1000-13 {
		t.Fatalf("after the restart: quota %+v, want %d remaining (the outage's 7 uses counted)", res.Quota, 1000-13)
	}
	if left, _ := filepath.Glob(filepath.Join(spool, "usage-*")); len(left) != 0 {
		t.Errorf("left in the spool directory: %v", left)
	}
}

// TestUsageSpoolDirChecked: a spool directory that cannot be used stops
// serve at start, saying so, rather than in the outage it is for.
func TestUsageSpoolDirChecked(t *testing.T) {
	st := sqliteStore(t)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := cli(t, "", st.env, append([]string{"serve", "--addr", "127.0.0.1:0", "--usage-spool-dir", filepath.Join(file, "spool")}, st.args...)...)
	if code != 1 || !strings.Contains(errOut, "--usage-spool-dir: ") || !strings.Contains(errOut, "not a directory") {
		t.Errorf("serve with an unusable spool dir: exit %d, %s", code, errOut)
	}
}

// TestPostgresSessionsEnded ends every server session of a running node,
// as a restart of PostgreSQL or a failover behind a proxy does: its next
// reads answer from a new connection, not 503, and each retry is a debug
// line in the node's log that holds no secret.
func TestPostgresSessionsEnded(t *testing.T) {
	ctx := ctxT(t)
	st := postgresStore(t)
	srv := startServer(t, st, "--log-level", "debug")
	root := initRoot(t, st)
	admin := newClient(t, srv.URL, root)
	tok, err := admin.CreateToken(ctx, client.CreateTokenRequest{Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.GetToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}

	conn, err := pgx.Connect(ctx, postgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1`, st.name).Scan(&n); err != nil || n == 0 {
		t.Fatalf("terminated %d sessions of the node: %v", n, err)
	}

	got, err := admin.GetToken(ctx, tok.ID)
	if err != nil || got.Name != "kept" {
		t.Fatalf("GetToken after the sessions ended = %+v, %v; want the token", got, err)
	}
	const retry = `level=DEBUG msg="postgres: connection broken; retrying on a checked connection"`
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(srv.log.String(), retry) {
		if time.Now().After(deadline) {
			t.Fatalf("the node logged no retry:\n%s", srv.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range []string{root, tok.Secret} {
		if strings.Contains(srv.log.String(), s) {
			t.Fatal("the node's log holds a token secret")
		}
	}
}
