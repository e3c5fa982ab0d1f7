package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/storetest"
)

// logged keeps the records of a logger.
type logged struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logged) Enabled(context.Context, slog.Level) bool { return true }
func (l *logged) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logged) WithGroup(string) slog.Handler            { return l }
func (l *logged) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r)
	return nil
}

// take returns the records logged since the last take.
func (l *logged) take() []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.records
	l.records = nil
	return r
}

// attr returns the value of r's attribute key, as text.
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

// openKillable opens a DB on a new schema whose connections carry an
// application_name of their own, so that killBackends ends them and no
// other test's, and returns what the DB logs.
func openKillable(t *testing.T, params ...string) (*DB, string, *logged) {
	t.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	app := "keyward_kill_" + hex.EncodeToString(b)
	u := withParam(t, newSchema(t), "application_name", app)
	for i := 0; i+1 < len(params); i += 2 {
		u = withParam(t, u, params[i], params[i+1])
	}
	log := &logged{}
	db, err := Open(t.Context(), u, WithAuditKey(storetest.AuditKey), WithLogger(slog.New(log)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, app, log
}

// fillPool makes the pool hold n idle connections.
func fillPool(t *testing.T, db *DB, n int) {
	t.Helper()
	var wg sync.WaitGroup
	hold := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			c, err := db.pool.Acquire(t.Context())
			if err != nil {
				errs <- err
				return
			}
			<-hold
			c.Release()
		})
	}
	for db.pool.Stat().AcquiredConns() < int32(n) && len(errs) == 0 {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("acquire: %v", err)
	}
}

// killBackends ends every server session of application app, as a
// restart or a failover does, and waits until they are gone.
func killBackends(t *testing.T, app string) {
	t.Helper()
	admin(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '`+app+`'`)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		var n int
		if err := adminPool.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			t.Fatalf("count backends: %v", err)
		}
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBrokenConnection: pooled connections whose server sessions ended
// (a backend terminated, a restart, a failover) cost a read nothing, and a
// write whose BEGIN met one nothing either; a write whose connection broke
// later fails as EUNAVAILABLE and is not applied twice.
func TestBrokenConnection(t *testing.T) {
	baseURL(t)
	db, app, log := openKillable(t)
	ws, tok, sec := seed(t, db, "w")

	reads := []struct {
		name string
		call func(ctx context.Context) (string, error) // returns what it found
	}{
		{"LookupSecret", func(ctx context.Context) (string, error) {
			_, got, err := db.LookupSecret(ctx, sec.Digest)
			if err != nil {
				return "", err
			}
			return got.ID, nil
		}},
		{"FindToken", func(ctx context.Context) (string, error) {
			got, err := db.FindToken(ctx, ws.ID, tok.ID)
			if err != nil {
				return "", err
			}
			return got.ID, nil
		}},
		{"FindTokens", func(ctx context.Context) (string, error) {
			got, err := db.FindTokens(ctx, keyward.TokenFilter{WorkspaceID: ws.ID})
			if err != nil || len(got) != 1 {
				return fmt.Sprint(len(got), " tokens"), err
			}
			return got[0].ID, nil
		}},
		{"TokenSecrets", func(ctx context.Context) (string, error) {
			got, err := db.TokenSecrets(ctx, tok.ID)
			if err != nil || len(got) != 1 {
				return fmt.Sprint(len(got), " secrets"), err
			}
			return got[0].TokenID, nil
		}},
		{"FindWorkspaces", func(ctx context.Context) (string, error) {
			got, err := db.FindWorkspaces(ctx, keyward.WorkspaceFilter{})
			if err != nil || len(got) != 1 {
				return fmt.Sprint(len(got), " workspaces"), err
			}
			return got[0].ID, nil
		}},
		{"FindAuditEvents", func(ctx context.Context) (string, error) {
			got, err := db.FindAuditEvents(ctx, keyward.AuditFilter{WorkspaceID: ws.ID})
			if err != nil || len(got) != 1 {
				return fmt.Sprint(len(got), " events"), err
			}
			return got[0].Action, nil
		}},
		{"Ping", func(ctx context.Context) (string, error) { return "pong", db.Ping(ctx) }},
	}
	want := map[string]string{
		"LookupSecret": tok.ID, "FindToken": tok.ID, "FindTokens": tok.ID, "TokenSecrets": tok.ID,
		"FindWorkspaces": ws.ID, "FindAuditEvents": "token.create", "Ping": "pong",
	}
	for _, r := range reads {
		t.Run("OK"+r.name, func(t *testing.T) {
			// Several idle connections, all dead: the retry must not take
			// another dead one.
			fillPool(t, db, 4)
			killBackends(t, app)
			log.take()
			got, err := r.call(t.Context())
			if err != nil || got != want[r.name] {
				t.Fatalf("%s after the sessions ended = %q, %v; want %q, nil", r.name, got, err, want[r.name])
			}
			// One retry, said once, at debug level.
			recs := log.take()
			if len(recs) != 1 || recs[0].Level != slog.LevelDebug {
				t.Fatalf("logged %d records (%v); want 1 at debug level", len(recs), recs)
			}
			// What failed and why; never the statement's arguments (the
			// digest of a secret, an email).
			var keys []string
			recs[0].Attrs(func(a slog.Attr) bool {
				keys = append(keys, a.Key)
				return true
			})
			if fmt.Sprint(keys) != "[op err]" || strings.Contains(attr(recs[0], "err"), hex.EncodeToString(sec.Digest)) {
				t.Fatalf("logged %q with attributes %v; want op and err, no argument", recs[0].Message, keys)
			}
		})
	}

	t.Run("OKRowsOfPreparedStatement", func(t *testing.T) {
		// A query the connection has prepared before fails on its first
		// row rather than when sent: the rows are read again.
		db, app, log := openKillable(t, "pool_max_conns", "1")
		ws, tok, _ := seed(t, db, "w")
		f := keyward.TokenFilter{WorkspaceID: ws.ID}
		if _, err := db.FindTokens(t.Context(), f); err != nil {
			t.Fatal(err)
		}
		killBackends(t, app)
		log.take()
		got, err := db.FindTokens(t.Context(), f)
		if err != nil || len(got) != 1 || got[0].ID != tok.ID {
			t.Fatalf("FindTokens after the session ended = %v, %v; want [%s]", got, err, tok.ID)
		}
		recs := log.take()
		if len(recs) != 1 || recs[0].Message != retryMessage || attr(recs[0], "op") != "rows" {
			t.Fatalf("logged %v; want one retry of rows", recs)
		}
	})

	t.Run("OKConcurrentReads", func(t *testing.T) {
		// A restart under load: every request in flight meets a dead
		// connection at once.
		const n = 8
		fillPool(t, db, n)
		killBackends(t, app)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { _, _, errs[i] = db.LookupSecret(t.Context(), sec.Digest) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("lookup %d after the sessions ended: %v", i, err)
			}
		}
	})

	t.Run("OKWriteAfterKill", func(t *testing.T) {
		// The BEGIN meets the dead connection; nothing was written, and
		// the write runs once on a new one.
		fillPool(t, db, 4)
		killBackends(t, app)
		tok2 := &keyward.Token{
			ID: keyward.NewID(keyward.PrefixToken, t0), WorkspaceID: ws.ID, Name: "t2",
			CreatedBy: keyward.ActorSystem, CreatedAt: t0, UpdatedAt: t0,
		}
		sec2 := &keyward.Secret{Digest: randomDigest(), KeyID: "k1", TokenID: tok2.ID, CreatedAt: t0}
		if err := db.CreateToken(t.Context(), tok2, sec2, newEvent("token.create", t0)); err != nil {
			t.Fatalf("CreateToken after the sessions ended: %v", err)
		}
		fillPool(t, db, 4)
		killBackends(t, app)
		calls := 0
		_, err := db.UpdateToken(t.Context(), ws.ID, tok2.ID, func(c *keyward.Token) (*keyward.TokenWrite, error) {
			calls++
			c.Name = "renamed"
			return &keyward.TokenWrite{Event: newEvent("token.update", t0)}, nil
		})
		if err != nil || calls != 1 {
			t.Fatalf("UpdateToken after the sessions ended = %v, fn called %d times; want nil, 1", err, calls)
		}
		got, err := db.FindToken(t.Context(), ws.ID, tok2.ID)
		if err != nil || got.Name != "renamed" {
			t.Fatalf("token after update = %+v, %v; want name renamed", got, err)
		}
		cs, err := db.Changes(t.Context(), 0, 0)
		if err != nil || len(cs) != 3 {
			t.Fatalf("changes = %v, %v; want 3 (seed, create, update)", cs, err)
		}
	})

	t.Run("OKTouchSessionAfterKill", func(t *testing.T) {
		// TouchSession is a write run again as a read is: a second run
		// finds the session touched, and changes nothing.
		u := &keyward.User{ID: keyward.NewID(keyward.PrefixUser, t0), Email: "ann@example.com", PasswordHash: "$argon2id$test",
			CreatedAt: t0, UpdatedAt: t0}
		if err := db.CreateUser(t.Context(), u, []*keyward.Member{{WorkspaceID: ws.ID, Role: keyward.RoleOwner, CreatedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		ses := &keyward.Session{ID: keyward.NewID(keyward.PrefixSession, t0), Digest: randomDigest(), UserID: u.ID,
			WorkspaceID: ws.ID, CreatedAt: t0, LastSeenAt: t0}
		if err := db.CreateSession(t.Context(), ses); err != nil {
			t.Fatal(err)
		}
		fillPool(t, db, 4)
		killBackends(t, app)
		log.take()
		t1 := t0.Add(time.Minute)
		if err := db.TouchSession(t.Context(), ses.ID, ses.Digest, t1); err != nil {
			t.Fatalf("TouchSession after the sessions ended: %v", err)
		}
		if recs := log.take(); len(recs) != 1 || attr(recs[0], "op") != "exec" {
			t.Fatalf("logged %v; want one retry of exec", recs)
		}
		got, err := db.FindSession(t.Context(), ses.Digest)
		if err != nil || !got.LastSeenAt.Equal(t1) {
			t.Fatalf("session after the touch = %+v, %v; want last seen %s", got, err, t1)
		}
	})

	t.Run("ErrUnavailableWriteBrokenInTransaction", func(t *testing.T) {
		// The connection breaks after the transaction began: its COMMIT
		// could have been sent, so the write is not run again.
		db, app, _ := openKillable(t)
		ws, tok, _ := seed(t, db, "w")
		before, err := db.Changes(t.Context(), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		calls := 0
		_, err = db.UpdateToken(t.Context(), ws.ID, tok.ID, func(c *keyward.Token) (*keyward.TokenWrite, error) {
			calls++
			killBackends(t, app) // this transaction's session among them
			c.Name = "never"
			return &keyward.TokenWrite{Event: newEvent("token.update", t0)}, nil
		})
		if code := keyward.ErrorCode(err); code != keyward.EUNAVAILABLE || calls != 1 {
			t.Fatalf("UpdateToken broken in its transaction = %v (code %q), fn called %d times; want %s, 1",
				err, code, calls, keyward.EUNAVAILABLE)
		}
		got, err := db.FindToken(t.Context(), ws.ID, tok.ID)
		if err != nil || got.Name != tok.Name {
			t.Fatalf("token after the failed update = %+v, %v; want name %q", got, err, tok.Name)
		}
		after, err := db.Changes(t.Context(), 0, 0)
		if err != nil || len(after) != len(before) {
			t.Fatalf("changes = %d, %v; want %d", len(after), err, len(before))
		}
	})
}

// safeErr is an error that says whether it happened before anything was
// sent, as pgconn's do.
type safeErr bool

func (e safeErr) Error() string     { return "safe: " + strconv.FormatBool(bool(e)) }
func (e safeErr) SafeToRetry() bool { return bool(e) }

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestRetryable(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	shutdown := &pgconn.PgError{Code: "57P01"}
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		idempotent bool
		want       bool
	}{
		{"Nil", context.Background(), nil, true, false},
		{"SafeToRetryWrite", context.Background(), fmt.Errorf("x: %w", safeErr(true)), false, true},
		{"SentWrite", context.Background(), safeErr(false), false, false},
		{"ShutdownRead", context.Background(), fmt.Errorf("x: %w", shutdown), true, true},
		{"ShutdownWrite", context.Background(), shutdown, false, false},
		{"CrashShutdownRead", context.Background(), &pgconn.PgError{Code: "57P02"}, true, true},
		{"CannotConnectNowRead", context.Background(), &pgconn.PgError{Code: "57P03"}, true, true},
		{"ConnectionFailureRead", context.Background(), &pgconn.PgError{Code: "08006"}, true, true},
		{"UniqueViolationRead", context.Background(), &pgconn.PgError{Code: "23505"}, true, false},
		{"StatementTimeoutRead", context.Background(), &pgconn.PgError{Code: "57014"}, true, false},
		{"EOFRead", context.Background(), io.ErrUnexpectedEOF, true, true},
		{"EOFWrite", context.Background(), io.ErrUnexpectedEOF, false, false},
		{"ResetRead", context.Background(), &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true, true},
		{"TimeoutRead", context.Background(), &net.OpError{Op: "read", Err: timeoutErr{}}, true, false},
		{"DeadlineRead", context.Background(), context.DeadlineExceeded, true, false},
		{"ContextDone", done, safeErr(true), true, false},
		{"ConnectFailed", context.Background(), &pgconn.ConnectError{}, true, false},
		{"Other", context.Background(), errors.New("syntax"), true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.ctx, tt.err, tt.idempotent); got != tt.want {
				t.Errorf("retryable(%v, idempotent %v) = %v, want %v", tt.err, tt.idempotent, got, tt.want)
			}
		})
	}
}

// TestListenAfterKill: when the server ends every session (a restart), the
// listener's connection and the pooled ones at once, the listener takes a
// live connection for its LISTEN, rather than failing again on each dead
// one the pool holds, waiting longer each time.
func TestListenAfterKill(t *testing.T) {
	baseURL(t)
	db, app, _ := openKillable(t)
	ctx, cancel := context.WithCancel(t.Context())
	var (
		mu     sync.Mutex
		states []error
	)
	listening := make(chan struct{}, 10)
	notified := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() {
		done <- db.Listen(ctx, func() {
			select {
			case notified <- struct{}{}:
			default:
			}
		}, func(err error) {
			mu.Lock()
			states = append(states, err)
			mu.Unlock()
			if err == nil {
				listening <- struct{}{}
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Listen = %v; want context.Canceled", err)
		}
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-listening:
		case <-time.After(10 * time.Second):
			t.Fatalf("not listening %s", what)
		}
	}
	wait("at first")
	fillPool(t, db, 4)
	mu.Lock()
	states = nil
	mu.Unlock()
	killBackends(t, app)
	wait("after the sessions ended")
	mu.Lock()
	got := states
	mu.Unlock()
	// One failure, of the connection that was listening; then listening.
	if len(got) != 2 || got[0] == nil || got[1] != nil {
		t.Fatalf("states after the sessions ended = %v; want [the lost connection's error, nil]", got)
	}
	// Notifications arrive on the new connection.
	for len(notified) > 0 {
		<-notified
	}
	seed(t, db, "w")
	select {
	case <-notified:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification of a change after listening again")
	}
}

// TestRerunRowsBrokenAfterFirstRow: rows whose connection breaks after
// one was returned end in the error; they are not read again from the
// start, which would hand the caller its rows twice.
func TestRerunRowsBrokenAfterFirstRow(t *testing.T) {
	baseURL(t)
	db, app, log := openKillable(t)
	// Rows wider than the server's send buffer, so each reaches the
	// client as it is made, and slow, so the kill comes mid-stream.
	rows, err := db.rerun.Query(t.Context(), `SELECT g, repeat('x', 9000), pg_sleep(0.002)::text
		FROM generate_series(1, 2000) g`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []int
	for rows.Next() {
		var (
			g    int
			x, s string
		)
		if err := rows.Scan(&g, &x, &s); err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
		if len(got) == 1 {
			killBackends(t, app)
		}
	}
	var pe *pgconn.PgError
	if err := rows.Err(); !errors.As(err, &pe) || pe.Code != "57P01" {
		t.Fatalf("rows.Err() = %v; want SQLSTATE 57P01", err)
	}
	for i, g := range got {
		if g != i+1 {
			t.Fatalf("row %d is %d; want %d (rows read again?)", i, g, i+1)
		}
	}
	if len(got) >= 2000 {
		t.Fatalf("read all %d rows; want the kill to end them", len(got))
	}
	if recs := log.take(); len(recs) != 0 {
		t.Fatalf("logged %v; want no retry", recs)
	}
}

// TestRerunRowsReplaced: rows read again from a new connection answer
// for themselves: their command tag, their error, and Close.
func TestRerunRowsReplaced(t *testing.T) {
	baseURL(t)
	db, app, log := openKillable(t, "pool_max_conns", "1")
	const q = `SELECT g FROM generate_series(1, $1::int) g`
	read := func() (pgconn.CommandTag, []int, error) {
		rows, err := db.rerun.Query(t.Context(), q, 3)
		if err != nil {
			return pgconn.CommandTag{}, nil, err
		}
		defer rows.Close()
		var got []int
		for rows.Next() {
			var g int
			if err := rows.Scan(&g); err != nil {
				return pgconn.CommandTag{}, nil, err
			}
			got = append(got, g)
		}
		return rows.CommandTag(), got, rows.Err()
	}
	if _, _, err := read(); err != nil { // prepares the statement
		t.Fatal(err)
	}
	killBackends(t, app)
	log.take()
	tag, got, err := read()
	if err != nil || fmt.Sprint(got) != "[1 2 3]" || tag.String() != "SELECT 3" {
		t.Fatalf("rows after the session ended = %v, tag %q, %v; want [1 2 3], SELECT 3, nil", got, tag, err)
	}
	if recs := log.take(); len(recs) != 1 || attr(recs[0], "op") != "rows" {
		t.Fatalf("logged %v; want one retry of rows", recs)
	}
	// The connection went back to the pool: the only one it has.
	if _, _, err := read(); err != nil {
		t.Fatalf("read after: %v", err)
	}
}

// TestShouldPing: the pool pings a connection idle for over a second, as
// pgxpool does, and any connection for a retry; not one just used, which
// would cost every lookup a round trip.
func TestShouldPing(t *testing.T) {
	bg := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		idle time.Duration
		want bool
	}{
		{"JustUsed", bg, time.Millisecond, false},
		{"IdleASecond", bg, time.Second, false},
		{"IdleLonger", bg, time.Second + time.Millisecond, true},
		{"Retry", checked(bg), 0, true},
		{"RetryDerived", context.WithValue(checked(bg), struct{ k int }{1}, 1), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shouldPing(tt.ctx, pgxpool.ShouldPingParams{IdleDuration: tt.idle}); got != tt.want {
				t.Errorf("shouldPing(idle %s) = %v, want %v", tt.idle, got, tt.want)
			}
		})
	}
	cfg, err := poolConfig("postgres://u@127.0.0.1:5432/db")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ShouldPing == nil || cfg.ShouldPing(bg, pgxpool.ShouldPingParams{}) || !cfg.ShouldPing(checked(bg), pgxpool.ShouldPingParams{}) {
		t.Error("the pool's ShouldPing is not shouldPing")
	}
}
