package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A pooled connection that the server has closed (its backend terminated,
// the server restarted, a proxy failed over) looks alive until a statement
// is sent on it, which then fails: the pool pings only connections that
// sat idle for over a second. A new connection would have worked, so the
// store runs such a statement once more, on a connection the pool has
// checked, where that cannot apply anything twice:
//
//   - a read (rerun, which the store's lookups, lists and gets use) after
//     any failure of its connection;
//   - a transaction (DB.begin) whose BEGIN failed so: nothing of it was
//     sent, and a session that broke holds nothing it began.
//
// A write that failed after its BEGIN is not run again: its COMMIT may
// have reached the server, and most writes (tokens, members) would apply
// twice. It fails as EUNAVAILABLE, which the caller may retry, as it would
// any 503.
//
// One retry at most, within the caller's context: when every pooled
// connection is dead, the pinging acquire of the retry discards them and
// makes a new one.

// pingKey marks a context whose acquire must ping whatever idle
// connection the pool hands out (see poolConfig's ShouldPing).
type pingKey struct{}

// checked returns ctx marked so that the pool pings the connection it
// hands out, whatever its idle time, and discards it if the ping fails.
func checked(ctx context.Context) context.Context {
	return context.WithValue(ctx, pingKey{}, true)
}

// shouldPing is the pool's ShouldPing: pgxpool's default (a connection
// idle for over a second), and every connection for a retry.
func shouldPing(ctx context.Context, p pgxpool.ShouldPingParams) bool {
	return ctx.Value(pingKey{}) != nil || p.IdleDuration > time.Second
}

// retryable reports whether an operation that failed with err may run once
// more on another connection. It never may when ctx is done, or when err
// is a new connection that could not be made (the server is down: trying
// again only doubles the wait). Otherwise it may when nothing of it was
// sent (pgconn.SafeToRetry), and, when idempotent (the operation reads, or
// its effect is the same when applied twice), when its connection broke:
// the server ended the session (SQLSTATE 57P01, 57P02, 57P03, class 08),
// or the connection was closed, reset or cut short. A timeout is not
// retried: a server that does not answer would have the caller wait twice.
func retryable(ctx context.Context, err error, idempotent bool) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	if !idempotent {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || strings.HasPrefix(pe.Code, "08")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

const retryMessage = "postgres: connection broken; retrying on a checked connection"

// retrying logs that an operation failed as retryable allows and is run
// again; it is a debug line, since a restart of the server makes one per
// request in flight.
func (db *DB) retrying(ctx context.Context, what string, err error) {
	db.log.DebugContext(ctx, retryMessage, "op", what, "err", err)
}

// begin starts a transaction with opts, and starts it again, once, on a
// checked connection when the first BEGIN failed because its connection
// broke (see retryable): BEGIN writes nothing, whatever the transaction
// would.
func (db *DB) begin(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	tx, err := db.pool.BeginTx(ctx, opts)
	if !retryable(ctx, err, true) {
		return tx, err
	}
	db.retrying(ctx, "begin", err)
	return db.pool.BeginTx(checked(ctx), opts)
}

// rerun is the pool for statements that may run twice: reads, and writes
// whose second application changes nothing. A statement that fails because
// its connection broke is run once more on a checked connection (see
// retryable). Rows are retried only before the first one is returned.
type rerun struct{ db *DB }

// QueryRow returns a row whose Scan runs the query, and runs it again when
// its connection broke.
func (r rerun) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return rerunRow{r: r, ctx: ctx, sql: sql, args: args}
}

type rerunRow struct {
	r    rerun
	ctx  context.Context
	sql  string
	args []any
}

func (row rerunRow) Scan(dest ...any) error {
	pool := row.r.db.pool
	err := pool.QueryRow(row.ctx, row.sql, row.args...).Scan(dest...)
	if !retryable(row.ctx, err, true) {
		return err
	}
	row.r.db.retrying(row.ctx, "row", err)
	return pool.QueryRow(checked(row.ctx), row.sql, row.args...).Scan(dest...)
}

// Query runs a query whose rows, until the first is returned, are read
// again from a checked connection when the connection broke.
func (r rerun) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := r.db.pool.Query(ctx, sql, args...)
	if retryable(ctx, err, true) {
		r.db.retrying(ctx, "query", err)
		return r.db.pool.Query(checked(ctx), sql, args...)
	}
	if err != nil {
		return rows, err
	}
	return &rerunRows{Rows: rows, again: func(ctx context.Context) (pgx.Rows, error) {
		return r.db.pool.Query(ctx, sql, args...)
	}, ctx: ctx, db: r.db}, nil
}

// Exec runs a statement, and runs it again when its connection broke. The
// statement must leave the store as it was when applied a second time.
func (r rerun) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := r.db.pool.Exec(ctx, sql, args...)
	if !retryable(ctx, err, true) {
		return tag, err
	}
	r.db.retrying(ctx, "exec", err)
	return r.db.pool.Exec(checked(ctx), sql, args...)
}

// rerunRows are pgx.Rows that, when they end in error before their first
// row, are replaced once by those of the query run again.
type rerunRows struct {
	pgx.Rows
	again func(ctx context.Context) (pgx.Rows, error) // nil once used or a row was read
	ctx   context.Context
	db    *DB
	err   error // of again
}

func (r *rerunRows) Next() bool {
	if r.err != nil {
		return false
	}
	if r.Rows.Next() {
		r.again = nil
		return true
	}
	again := r.again
	r.again = nil
	if again == nil || !retryable(r.ctx, r.Rows.Err(), true) {
		return false
	}
	r.db.retrying(r.ctx, "rows", r.Rows.Err())
	r.Rows.Close()
	rows, err := again(checked(r.ctx))
	if err != nil {
		r.err = err
		return false
	}
	r.Rows = rows
	return r.Rows.Next()
}

func (r *rerunRows) Err() error {
	if r.err != nil {
		return r.err
	}
	return r.Rows.Err()
}
