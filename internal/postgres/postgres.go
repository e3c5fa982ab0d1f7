// Package postgres implements keyward.Store on PostgreSQL, with the same
// behaviour as the SQLite store: both pass the suite in internal/storetest.
//
// It uses pgx directly, through a pgxpool.Pool, rather than database/sql:
// the store's contract is keyward.Store, not database/sql, so the standard
// interface would buy nothing, while pgx natively maps text[], bytea, json
// and timestamptz, sends a batch of statements in one round trip
// (FlushUsage), reports errors as *pgconn.PgError with the constraint that
// failed, and gives a connection LISTEN/NOTIFY, which a cache-coherence
// listener needs.
//
// # Schema and migrations
//
// The schema is migrated from the numbered files embedded under migrations/,
// in one transaction that first takes a transaction-level advisory lock
// (migrateLockKey), so that any number of nodes may start at once against an
// empty database. Applied files are recorded in schema_migrations. Open
// migrates; Migrate does it alone, for a "keyward migrate" command. Tables
// are created unqualified, so a search_path in the URL
// (postgres://...?search_path=keyward) puts keyward in a schema of its own.
//
// # Ordering and notification of changes
//
// Every token write appends to the changes feed, which nodes read with a
// cursor (Changes(after)). A sequence hands out numbers in the order
// transactions ask for them, not the order they commit, so a reader could
// see change 8 committed before change 7 and step past 7 for good. The store
// therefore appends to changes and audit_events only under one
// transaction-level advisory lock (lockLogs), taken as the last step of a
// write transaction and held until it commits; readers are not blocked.
// Sequence numbers thus become visible in order, and audit_events.seq
// records the commit order, as on SQLite. Token writes thus commit one at
// a time, each holding the lock only from its last statements to its
// commit, which their rate (people and programs managing tokens) allows.
//
// The audit chain (keyward.AuditMAC) relies on the same lock: an event
// is linked to its workspace's head, which is read and moved under
// lockLogs, so that the links follow the commit order and two writers never
// chain onto the same event.
//
// Every insert into changes also sends, at commit, a NOTIFY on the channel
// NotifyChannel ("keyward_changes") with the change's sequence number as
// payload (a trigger, see migrations/0001_init.sql), so that a node that
// LISTENs can read the feed at once instead of at its next poll. The
// channel is database-wide: deployments in several schemas of one database
// wake each other's listeners, which costs a poll and nothing else.
//
// # Limits
//
// The pool is bounded (defaultMaxConns) and every connection is opened
// with a connect timeout and runs with statement_timeout and
// idle_in_transaction_session_timeout, so that neither a network call nor
// a lock wait can hang forever; every method also bounds its whole run with
// opTimeout on the client side. The standard URL parameters (pool_max_conns,
// pool_max_conn_lifetime, connect_timeout, statement_timeout, ...) override
// these defaults.
//
// # Broken connections
//
// A statement that meets a pooled connection the server has ended is run
// once more, on a connection the pool has checked, when that cannot apply
// anything twice: a read, or a transaction whose BEGIN failed. See
// retryable, DB.begin and rerun.
//
// # Text PostgreSQL cannot hold
//
// PostgreSQL text cannot hold NUL bytes or invalid UTF-8, which a Go string
// (such as a User-Agent header copied into an audit event) may carry and
// SQLite stores. Rather than fail the write, the store writes such text
// with U+FFFD in place of each offending byte, as encoding/json decodes
// invalid bytes. A lookup by such a string (an id or a filter from a URL)
// finds nothing, since nothing stored holds it, and a cursor compares byte
// by byte, as on SQLite.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/keyward/keyward"
)

//go:embed migrations/*.sql
var migrations embed.FS

// NotifyChannel is the channel on which every change added to the feed is
// announced at commit, with its sequence number as payload.
const NotifyChannel = "keyward_changes"

// Defaults of the pool and of each connection; the URL may override each.
const (
	defaultMaxConns          = 16
	defaultMinConns          = 0
	defaultMaxConnLifetime   = time.Hour
	defaultMaxConnIdleTime   = 5 * time.Minute
	defaultHealthCheckPeriod = 30 * time.Second
	defaultPingTimeout       = 5 * time.Second
	defaultConnectTimeout    = 5 * time.Second
	// defaultStatementTimeout bounds every statement, lock waits included.
	defaultStatementTimeout = "10s"
	// defaultIdleInTxTimeout ends the session of a client that stalls in an
	// open transaction, so that it cannot hold the locks that order writes.
	defaultIdleInTxTimeout = "60s"
)

// opTimeout bounds each method on the client side: a connection whose
// peer vanished fails after it rather than waiting for TCP to notice.
const opTimeout = 30 * time.Second

// migrateTimeout replaces statement_timeout in the migration transaction,
// which may wait for another node's migration and build indexes.
const migrateTimeout = "5min"

// logsLockClass is the first key of the advisory lock that orders appends
// to the logs; the second is the oid of the changes table, so that
// deployments in separate schemas of one database do not contend.
const logsLockClass int32 = 0x6b77 // "kw"

// migrateLockKey is the advisory lock that serialises migrations across
// nodes ("keyward\x01" as a big-endian int64).
const migrateLockKey int64 = 0x6b65797761726401

// DB is a keyward.Store on a PostgreSQL database. It is safe for
// concurrent use.
type DB struct {
	pool     *pgxpool.Pool
	auditKey []byte   // keys the audit chain; see WithAuditKey
	newer    []string // see NewerMigrations
	applied  []string // see AppliedMigrations

	nameKeyErr error // see NameKeyError

	log   *slog.Logger // see WithLogger
	rerun rerun        // the pool, for statements that may run twice
}

// NameKeyError returns why Open could not give the workspaces an earlier
// release made their name keys (keyNames), nil when it did or there were
// none; the next start tries again.
func (db *DB) NameKeyError() error { return db.nameKeyErr }

// AppliedMigrations returns the migrations Open applied, in order (none
// when another node had, or the store was up to date).
func (db *DB) AppliedMigrations() []string { return db.applied }

// NewerMigrations returns the migrations recorded in the store that this
// build does not know, sorted: a newer keyward migrated the store, and
// this one serves it without their changes (a rollback of a rolling
// upgrade does so on purpose; elsewhere it is most likely a mistake).
func (db *DB) NewerMigrations() []string { return db.newer }

var _ keyward.Store = (*DB)(nil)

// Option configures Open and Migrate.
type Option func(*options)

type options struct {
	auditKey      []byte
	linkUnchained bool
	linkKeys      []string // see WithLinkUnchainedAudit
	refuseNewer   bool     // fail on migrations this build does not know
	onLockWait    func()   // see WithLockWait
	log           *slog.Logger
}

// WithLogger sets the logger of the store, which logs at debug level a
// statement run again because its connection broke (see retryable). The
// default discards.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithLockWait has the store call wait, once, when migrations are to be
// applied but another process (a node starting, keyward migrate) holds the
// migration lock: the store then waits for it, which a long migration
// makes last, and the caller can say so.
func WithLockWait(wait func()) Option {
	return func(o *options) { o.onLockWait = wait }
}

// WithAuditKey sets the key under which the store links the audit events
// it writes into each workspace's chain (keyward.AuditMAC), and under which
// migrating to the chain links the events written before it. It must be the
// same for every node and every start, and secret: whoever holds it can
// rewrite the audit log undetected. Without it the chain is linked under
// an empty key, which catches accidents but not tampering.
func WithAuditKey(key []byte) Option {
	return func(o *options) { o.auditKey = append([]byte(nil), key...) }
}

// WithLinkUnchainedAudit lets the migration that adds the audit chain
// link audit events a store already holds (see keyward.UnchainedAuditError).
//
// keyIDs, when given, are the ids of the server secrets the caller has
// (keyward.CheckLinkKeys): the link is refused when the store's token
// secrets were all made under others.
func WithLinkUnchainedAudit(keyIDs ...string) Option {
	return func(o *options) { o.linkUnchained, o.linkKeys = true, keyIDs }
}

func applyOptions(opts []Option) options {
	var o options
	for _, fn := range opts {
		fn(&o)
	}
	return o
}

// Open connects to the PostgreSQL database at url (a postgres:// URL or a
// key=value connection string, as libpq takes), migrates its schema to the
// newest version and returns a DB with a bounded pool of connections. It
// fails when the database cannot be reached or migrated, or its encoding
// is not UTF8. The caller must Close the DB.
func Open(ctx context.Context, url string, opts ...Option) (*DB, error) {
	o := applyOptions(opts)
	cfg, err := poolConfig(url)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	m, err := migrate(ctx, pool, o)
	if err != nil {
		pool.Close()
		return nil, refusedParam(url, err)
	}
	keyErr := keyNames(ctx, pool)
	db := &DB{pool: pool, auditKey: o.auditKey, newer: m.newer, applied: m.applied, nameKeyErr: keyErr, log: o.log}
	if db.log == nil {
		db.log = slog.New(slog.DiscardHandler)
	}
	db.rerun = rerun{db}
	return db, nil
}

// Migrate connects to the database at url, applies every embedded
// migration not yet applied, and disconnects. It is safe to run while
// nodes start or run. Give it the audit key that the nodes use
// (WithAuditKey): the migration that adds the audit chain links the events
// already stored under it. It returns the migrations it applied, in
// order. A store a newer keyward migrated is refused
// (keyward.NewerStoreError), nothing applied.
func Migrate(ctx context.Context, url string, opts ...Option) ([]string, error) {
	o := applyOptions(opts)
	cfg, err := poolConfig(url)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, refusedParam(url, fmt.Errorf("postgres: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	o.refuseNewer = true
	m, err := migrate(ctx, conn, o)
	return m.applied, err
}

// refusedParam returns err, a failure to connect to the database at url,
// without the server's message when the server refused a parameter of
// url's query that follows a password there (see queryPasswordRunsOn): an
// unencoded & in the password would have made the rest of it that
// parameter, whose name or value the message quotes (unrecognized
// configuration parameter "...", invalid value for parameter ...).
func refusedParam(url string, err error) error {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if !errors.As(err, &ce) || !errors.As(err, &pe) || pe.Code != "42704" && pe.Code != "22023" || !queryPasswordRunsOn(url) {
		return err
	}
	return fmt.Errorf("postgres: the server refused a parameter in the URL's query (SQLSTATE %s); "+
		"a password in the query that holds an & must write it as %%26", pe.Code)
}

// poolConfig parses url and fills in every limit the url does not set.
func poolConfig(url string) (*pgxpool.Config, error) {
	// pgx.ParseConfig keeps the pool_* settings among the runtime
	// parameters, which tells which ones the url sets.
	given, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	has := func(key string) bool { _, ok := given.RuntimeParams[key]; return ok }
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !has("pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if !has("pool_min_conns") {
		cfg.MinConns = defaultMinConns
	}
	if !has("pool_max_conn_lifetime") {
		cfg.MaxConnLifetime = defaultMaxConnLifetime
	}
	if !has("pool_max_conn_idle_time") {
		cfg.MaxConnIdleTime = defaultMaxConnIdleTime
	}
	if !has("pool_health_check_period") {
		cfg.HealthCheckPeriod = defaultHealthCheckPeriod
	}
	if !has("pool_ping_timeout") {
		cfg.PingTimeout = defaultPingTimeout
	}
	cfg.ShouldPing = shouldPing
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = defaultConnectTimeout
	}
	params := map[string]string{
		"statement_timeout":                   defaultStatementTimeout,
		"idle_in_transaction_session_timeout": defaultIdleInTxTimeout,
		"application_name":                    "keyward",
	}
	for k, v := range params {
		if _, ok := cc.RuntimeParams[k]; !ok {
			cc.RuntimeParams[k] = v
		}
	}
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		// Times come back in UTC, as the store contract wants.
		conn.TypeMap().RegisterType(&pgtype.Type{
			Name: "timestamptz", OID: pgtype.TimestamptzOID,
			Codec: &pgtype.TimestamptzCodec{ScanLocation: time.UTC},
		})
		return nil
	}
	return cfg, nil
}

// Close closes every connection of the pool, waiting for those in use to
// be released. Calls after the first do nothing.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping reports whether the database answers a query.
func (db *DB) Ping(ctx context.Context) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	var one int
	if err := db.rerun.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// beginner is a pool or a single connection.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// migrate applies, in name order and in one transaction, every embedded
// migration not yet recorded in schema_migrations, each followed by its
// step in Go, if it has one; o.auditKey keys the audit chain. The advisory
// lock, released at commit, makes a concurrent migrate wait and then find
// the work done. It returns the migrations it applied and the recorded
// ones this build does not know (see DB.NewerMigrations; an error with
// o.refuseNewer).
func migrate(ctx context.Context, db beginner, o options) (m migrated, err error) {
	steps := map[string]func(context.Context, pgx.Tx) error{
		"0002_audit_chain.sql": func(ctx context.Context, tx pgx.Tx) error {
			return chainExisting(ctx, tx, o)
		},
		"0007_workspace_name_key.sql": nameKeys,
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return m, fmt.Errorf("postgres: migrate: %w", err)
	}
	sort.Strings(names)
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// Text and the byte-order cursors assume UTF-8; another encoding
		// would fail on the first character it lacks.
		var enc string
		if err := tx.QueryRow(ctx, `SELECT current_setting('server_encoding')`).Scan(&enc); err != nil {
			return err
		}
		if enc != "UTF8" {
			return fmt.Errorf("the database's encoding is %s; keyward needs UTF8 (CREATE DATABASE ... ENCODING 'UTF8')", enc)
		}
		// Nothing to apply (every start but the first after an upgrade):
		// no lock and no DDL, so that a role that may only read (an
		// auditor's, for keyward audit verify) can open the store.
		done, unknown, err := applied(ctx, tx, names)
		if err != nil {
			return err
		}
		if m.newer = unknown; len(m.newer) > 0 && o.refuseNewer {
			return &keyward.NewerStoreError{Migrations: m.newer}
		}
		if done {
			return nil
		}
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = '`+migrateTimeout+`'`); err != nil {
			return err
		}
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, migrateLockKey).Scan(&got); err != nil {
			return err
		}
		if !got {
			if o.onLockWait != nil {
				o.onLockWait()
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
				return err
			}
		}
		if err := checkFirstStart(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			name       text        PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		for _, name := range names {
			base := path.Base(name)
			var applied bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)`, base).Scan(&applied); err != nil {
				return err
			}
			if applied {
				continue
			}
			script, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			// Without arguments, pgx sends the script with the simple
			// protocol, which runs several statements.
			if _, err := tx.Exec(ctx, string(script)); err != nil {
				return fmt.Errorf("%s: %w", base, err)
			}
			if step := steps[base]; step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("%s: %w", base, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, base); err != nil {
				return err
			}
			m.applied = append(m.applied, base)
		}
		return nil
	})
	if err != nil {
		return migrated{}, fmt.Errorf("postgres: migrate: %w", err)
	}
	return m, nil
}

// keyNames gives the workspaces that a node of the previous release made
// (during a rolling upgrade, or after a rollback) their name keys
// (fillNameKeys), under the migration lock, so that nodes starting at once
// do not race. Best effort: a role that may only read, or a key a node of
// this release gave meanwhile, leaves them to the next start; the error
// says why (DB.NameKeyError).
func keyNames(ctx context.Context, pool *pgxpool.Pool) error {
	var missing bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE name_key IS NULL)`).Scan(&missing); err != nil || !missing {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLockKey); err != nil {
			return err
		}
		return fillNameKeys(ctx, tx)
	})
}

// migrated is what migrate found and did.
type migrated struct {
	applied []string // applied now, in order
	newer   []string // recorded, unknown to this build
}

// applied reports whether every migration in names (paths) is recorded as
// applied, and which recorded ones are not in names (sorted), reading only.
func applied(ctx context.Context, tx pgx.Tx, names []string) (done bool, unknown []string, err error) {
	var schema *string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return false, nil, err
	}
	if schema == nil {
		var path string
		if err := tx.QueryRow(ctx, `SHOW search_path`).Scan(&path); err != nil {
			return false, nil, err
		}
		return false, nil, fmt.Errorf("no schema of the search_path (%s) exists: create it first (CREATE SCHEMA ...), or name another in the URL's search_path", path)
	}
	var where *string // the schema of the schema_migrations found, if any
	var ours bool     // and whether it is keyward's: it has a name column
	if err := tx.QueryRow(ctx, `SELECT n.nspname, EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'name' AND NOT a.attisdropped)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('schema_migrations')`).Scan(&where, &ours); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, nil, err
	}
	if where == nil {
		return false, nil, nil // a first start: see checkFirstStart
	}
	if !ours {
		return false, nil, fmt.Errorf("%s.schema_migrations is another tool's (keyward's has a name column): %s", *where, ownSchema)
	}
	rows, err := tx.Query(ctx, `SELECT name FROM schema_migrations ORDER BY name`)
	if err != nil {
		return false, nil, err
	}
	recorded, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, nil, err
	}
	done, unknown = keyward.Migrations(names, recorded)
	return done, unknown, nil
}

// ownSchema is the advice of a refusal of a schema that is not keyward's.
const ownSchema = "give keyward a database of its own, or a schema of its own (CREATE SCHEMA keyward, then search_path=keyward in the URL)"

// checkFirstStart refuses a schema without keyward's schema_migrations
// that holds tables of the names keyward's migrations create, which
// another application made. It runs under the migration lock: a keyward
// that migrated the schema meanwhile has committed schema_migrations with
// its tables, which READ COMMITTED then sees, and no half-made store is
// taken for a foreign one.
func checkFirstStart(ctx context.Context, tx pgx.Tx) error {
	var taken []string
	if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM unnest(ARRAY['workspaces', 'tokens', 'changes', 'audit_events']) t
		WHERE to_regclass(quote_ident(current_schema()) || '.schema_migrations') IS NULL
		AND to_regclass(quote_ident(current_schema()) || '.' || t) IS NOT NULL`).Scan(&taken); err != nil {
		return err
	}
	if len(taken) == 0 {
		return nil
	}
	var schema string
	if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return err
	}
	return fmt.Errorf("schema %s already has tables of the names keyward uses (%s), but no record of keyward's migrations: they are another application's; %s", schema, strings.Join(taken, ", "), ownSchema)
}

// bound returns ctx limited to opTimeout. Each exported method bounds its
// context first, so that every statement it makes shares the limit.
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// writeTx runs fn in a transaction and commits it when fn returns nil. It
// returns fn's error unchanged. Only its BEGIN is tried again (DB.begin):
// fn runs at most once.
func (db *DB) writeTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := db.begin(ctx, pgx.TxOptions{})
	if err != nil {
		return err
	}
	// Ends the transaction when fn fails or panics; after a commit it
	// does nothing. fn's error says more than the rollback's.
	defer tx.Rollback(ctx)
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// lockLogs takes the lock under which changes and audit events are
// appended, held until the transaction ends; see the package comment for
// why it exists. A write transaction takes it last, after its row locks,
// and needs no other lock after it, so that it cannot deadlock. It is an
// advisory lock rather than LOCK TABLE, which would also wait for
// autovacuum (up to deadlock_timeout) or an operator's VACUUM.
func lockLogs(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 'changes'::regclass::oid::int)`, logsLockClass)
	return err
}

// wrap prefixes an internal error with the operation; a *keyward.Error
// passes unchanged.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *keyward.Error
	if errors.As(err, &e) {
		return err
	}
	if unreachable(err) || refusedForNow(err) {
		// The cause stays in the chain for the log; the client is told only
		// to come back later.
		return &unavailableError{op: op, err: err}
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// refusedForNow reports whether the server answered but refused the
// statement for a state of its own that passes, rather than for the
// statement: read_only_sql_transaction (a standby, as the server a
// failover left behind is, or default_transaction_read_only set while the
// disk fills) and the insufficient resources of class 53 (disk full, out
// of memory, too many connections). A client can only come back later,
// which a 503 with Retry-After tells it, where a 500 would say keyward
// failed.
func refusedForNow(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "25006" || strings.HasPrefix(pe.Code, "53"))
}

// unreachable reports whether err means the server could not be reached or
// the connection broke, rather than that the statement failed.
func unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &ce):
		// No connection could be made, whatever the server said to the
		// attempt (not accepting connections, too many, a login refused):
		// the store cannot be reached, and the caller may try again.
		return true
	case errors.As(err, &pe):
		return unavailableCode(pe.Code) || busyCode(pe.Code)
	case connBroken(err), errors.Is(err, syscall.EPIPE):
		return true
	}
	return pgconn.SafeToRetry(err)
}

// NotUpYet reports whether err, from Open or Migrate, means that the
// server does not accept connections yet (it is down, starting, shutting
// down, full, or its name does not resolve yet), as when keyward starts
// before its database, rather than that it refused this configuration: a
// login, a database name or a TLS setting that is wrong stays wrong, and
// waiting would only hide it. It is unreachable without the refusals of a
// connection attempt.
func NotUpYet(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return unavailableCode(pe.Code) || pe.Code == "53300" // too_many_connections
	}
	return connBroken(err)
}

// unavailableCode reports whether a server error code says the server
// takes no requests now: admin_shutdown, crash_shutdown,
// cannot_connect_now, and the connection exceptions of class 08.
func unavailableCode(code string) bool {
	return code == "57P01" || code == "57P02" || code == "57P03" || strings.HasPrefix(code, "08")
}

// busyCode reports whether a server error code says the statement waited
// too long and wrote nothing, so that trying again later is the answer:
// query_canceled (a statement_timeout, as behind another transaction's
// lock) and lock_not_available. A deadlock or a serialization failure
// would be keyward's own bug, and stays an internal error.
func busyCode(code string) bool {
	return code == "57014" || code == "55P03"
}

// connBroken reports whether err is the network's: no route, no answer in
// time, a connection refused, reset or cut short.
func connBroken(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// unavailableError is a keyward EUNAVAILABLE error that keeps its cause.
type unavailableError struct {
	op  string
	err error
}

func (e *unavailableError) Error() string {
	return "postgres: " + e.op + ": unavailable: " + e.err.Error()
}
func (e *unavailableError) Unwrap() []error {
	return []error{e.err, keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable; try again shortly")}
}

// uniqueViolation returns the name of the unique constraint or index that
// err violated, and whether it is such a violation.
func uniqueViolation(err error) (string, bool) {
	var e *pgconn.PgError
	if errors.As(err, &e) && e.Code == "23505" {
		return e.ConstraintName, true
	}
	return "", false
}

// sqlLimit converts a page size to SQL: zero or less is NULL, no limit.
func sqlLimit(n int) any {
	if n <= 0 {
		return nil
	}
	return n
}

// storable reports whether PostgreSQL text can hold s: valid UTF-8 without
// NUL. A string that is not cannot equal any stored one.
func storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// safeText returns s as PostgreSQL text can hold it: each byte of an invalid
// UTF-8 sequence and each NUL becomes U+FFFD, as encoding/json decodes
// invalid bytes. Valid text is returned as is.
func safeText(s string) string {
	if storable(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == 0 || r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// jsonText returns raw JSON for a json column: nil (SQL NULL) when it is
// empty, else the bytes made storable as safeText does. Invalid bytes can
// only sit inside JSON strings, where U+FFFD decodes as they would.
func jsonText(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return safeText(string(b))
}

// cursor returns the SQL condition that col compares to the cursor value
// v with op ("<" or ">"), appending v to args. Stored ids are COLLATE "C",
// which orders valid UTF-8 byte by byte; a v that is not storable is
// compared as bytes, which is SQLite's order.
func cursor(col, op, v string, args *[]any) string {
	if storable(v) {
		*args = append(*args, v)
		return fmt.Sprintf("%s %s $%d", col, op, len(*args))
	}
	*args = append(*args, []byte(v))
	return fmt.Sprintf("convert_to(%s, 'UTF8') %s $%d", col, op, len(*args))
}
