// Package sqlite implements keyward.Store on an embedded SQLite database
// file, through the pure-Go driver modernc.org/sqlite.
//
// The file runs in WAL mode with synchronous=FULL, so that an acknowledged
// write survives a crash. One connection does every write, so writers never
// contend inside the process; a separate read-only pool serves plain reads
// while a write is in progress. The schema is migrated at Open from the
// numbered files embedded under migrations/.
//
// Each audit event is linked into its workspace's chain (keyward.AuditMAC)
// in the write transaction that records it; since every write transaction
// takes the database's write lock at its start (BEGIN IMMEDIATE), in this
// process or another, links follow the commit order.
package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/*.sql
var migrations embed.FS

// readConns is the size of the read pool.
const readConns = 4

// busyTimeout is how long a statement waits for a lock held by another
// process (such as "keyward init" next to "keyward serve") before failing.
const busyTimeout = 5 * time.Second

// foldFunc is the SQL function that lower-cases text with Go's Unicode
// rules; SQLite's own lower() and LIKE fold ASCII only.
const foldFunc = "keyward_fold"

func init() {
	sqlite.MustRegisterDeterministicScalarFunction(foldFunc, 1, func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		switch v := args[0].(type) {
		case string:
			return strings.ToLower(v), nil
		case []byte:
			return strings.ToLower(string(v)), nil
		}
		return args[0], nil
	})
}

// DB is a keyward.Store on one SQLite database file. It is safe for
// concurrent use.
type DB struct {
	path     string
	write    *sql.DB // one connection: every write transaction
	read     *sql.DB // query_only connections for plain reads
	auditKey []byte  // keys the audit chain; see WithAuditKey

	linkUnchained bool     // see WithLinkUnchainedAudit
	openElsewhere bool     // with linkUnchained: another process had the store open (see Open)
	linkKeys      []string // see WithLinkUnchainedAudit
	newer         []string // see NewerMigrations
	applied       []string // see AppliedMigrations

	closeOnce sync.Once
	closeErr  error
}

var _ keyward.Store = (*DB)(nil)

// Option configures a DB at Open.
type Option func(*DB)

// WithAuditKey sets the key under which the DB links the audit events it
// writes into each workspace's chain (keyward.AuditMAC). It must be the
// same every time the database is opened, and secret: whoever holds it can
// rewrite the audit log undetected. Without it the chain is linked under
// an empty key, which catches accidents but not tampering.
func WithAuditKey(key []byte) Option {
	return func(db *DB) { db.auditKey = append([]byte(nil), key...) }
}

// WithLinkUnchainedAudit lets the migration that adds the audit chain
// link audit events a store already holds (see keyward.UnchainedAuditError).
//
// keyIDs, when given, are the ids of the server secrets the caller has
// (keyward.CheckLinkKeys): the link is refused when the store's token
// secrets were all made under others.
func WithLinkUnchainedAudit(keyIDs ...string) Option {
	return func(db *DB) { db.linkUnchained, db.linkKeys = true, keyIDs }
}

// Open opens the SQLite database file at path, creating it (mode 0600) when
// it does not exist, and migrates its schema to the newest version. The
// directory must exist. path names a file: in-memory databases are not
// supported, since the writer and the read pool must share one database.
// The caller must Close the DB.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlite: %q is not a database file path", path)
	}
	// A new database beside its own -wal would be given that log's
	// changes, or have SQLite remove it: the database it belongs to was
	// moved or removed without it.
	if err := strayLogs(path); err != nil {
		return nil, err
	}
	// SQLite creates the -wal and -shm files with the mode of the database
	// file, so creating it private keeps them private too.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	f.Close()

	db := &DB{path: path}
	for _, o := range opts {
		o(db)
	}
	if db.linkUnchained {
		// Asked before this process opens the store: the look opens and
		// closes a file descriptor of the -shm file, and closing one drops
		// every POSIX lock the process holds on the file, SQLite's own
		// included, which would let another process reset the shared
		// memory under this one's connections.
		if db.openElsewhere, err = openElsewhere(path); err != nil {
			return nil, fmt.Errorf("sqlite: %w", err)
		}
	}
	pragmas := func(ps ...string) string {
		q := url.Values{}
		// busy_timeout first, so that no other pragma fails on a lock.
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
		for _, p := range ps {
			q.Add("_pragma", p)
		}
		return path + "?" + q.Encode()
	}

	// BEGIN IMMEDIATE takes the write lock at the start of a transaction,
	// so that a read-then-write transaction never fails to upgrade its lock
	// when another process writes.
	db.write, err = sql.Open("sqlite", pragmas("journal_mode(WAL)", "foreign_keys(1)", "synchronous(FULL)")+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	db.write.SetMaxOpenConns(1)
	db.write.SetMaxIdleConns(1)
	db.write.SetConnMaxLifetime(0)
	db.write.SetConnMaxIdleTime(0)
	if err := db.migrate(ctx); err != nil {
		db.write.Close()
		return nil, err
	}

	// The readers open after the writer has put the file in WAL mode.
	db.read, err = sql.Open("sqlite", pragmas("foreign_keys(1)", "query_only(1)"))
	if err != nil {
		db.write.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	db.read.SetMaxOpenConns(readConns)
	db.read.SetMaxIdleConns(readConns)
	db.read.SetConnMaxLifetime(0)
	db.read.SetConnMaxIdleTime(0)
	if err := db.read.PingContext(ctx); err != nil {
		db.read.Close()
		db.write.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return db, nil
}

// Close closes the database. Calls after the first return the first's result.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		rerr := db.read.Close()
		werr := db.write.Close()
		db.closeErr = errors.Join(rerr, werr)
	})
	return db.closeErr
}

// Ping reports whether the database file can be read and written.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.write.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	var one int
	if err := db.read.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// recordedMigrations returns the names of the migrations the store
// records as applied.
func recordedMigrations(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM schema_migrations`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, rows.Err()
}

// AppliedMigrations returns the migrations Open applied, in order (none
// when the store was up to date).
func (db *DB) AppliedMigrations() []string { return db.applied }

// NewerMigrations returns the migrations recorded in the store that this
// build does not know, sorted: a newer keyward migrated the store, and
// this one serves it without their changes (see keyward.NewerStoreError).
func (db *DB) NewerMigrations() []string { return db.newer }

// migrate applies, in name order and in one transaction, every embedded
// migration not yet recorded in schema_migrations, each followed by its
// step in Go, if it has one; then it keys the workspaces an earlier
// release made (fillNameKeys).
func (db *DB) migrate(ctx context.Context) error {
	steps := map[string]func(context.Context, *sql.Tx) error{
		"0002_audit_chain.sql":        db.chainExisting,
		"0007_workspace_name_key.sql": nameKeys,
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	sort.Strings(names)
	var applied []string // kept only once committed
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			name       TEXT    PRIMARY KEY,
			applied_at INTEGER NOT NULL
		)`); err != nil {
			return err
		}
		recorded, err := recordedMigrations(ctx, tx)
		if err != nil {
			return err
		}
		_, db.newer = keyward.Migrations(names, recorded)
		for _, name := range names {
			base := path.Base(name)
			if slices.Contains(recorded, base) {
				continue // the transaction holds the write lock: none since
			}
			script, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(script)); err != nil {
				return fmt.Errorf("%s: %w", base, err)
			}
			if step := steps[base]; step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("%s: %w", base, err)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`,
				base, time.Now().UnixNano()); err != nil {
				return err
			}
			applied = append(applied, base)
		}
		// Workspaces an earlier release made since (a rollback) lack
		// their name key.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE name_key IS NULL`).Scan(&n); err != nil || n == 0 {
			return err
		}
		return fillNameKeys(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	db.applied = applied
	return nil
}

// writeTx runs fn in a transaction on the writer connection and commits it
// when fn returns nil. It returns fn's error unchanged.
func (db *DB) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// readTx runs fn in a read-only transaction from the read pool, so that
// the queries it makes see one snapshot.
func (db *DB) readTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
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
	if se := (*sqlite.Error)(nil); errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL:
			// The disk (or the database's size limit) is full: nothing
			// was written, and the caller may try again once space is
			// freed.
			return &unavailableError{op: op, why: "disk full", err: err, msg: "the store's disk is full; try again once space is freed"}
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			// Another process (a backup, an operator's sqlite3) held the
			// database past the busy timeout: nothing was written.
			return &unavailableError{op: op, why: "busy", err: err, msg: "the store is busy; try again shortly"}
		}
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

// unavailableError is a keyward EUNAVAILABLE error, with msg for the
// client, that keeps its cause for the log.
type unavailableError struct {
	op, why, msg string
	err          error
}

func (e *unavailableError) Error() string {
	return "sqlite: " + e.op + ": " + e.why + ": " + e.err.Error()
}
func (e *unavailableError) Unwrap() []error {
	return []error{e.err, keyward.Errorf(keyward.EUNAVAILABLE, "%s", e.msg)}
}

// isUnique reports whether err is a violation of a primary key or unique
// constraint.
func isUnique(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// sqlLimit converts a page size to SQL: zero or less means no limit.
func sqlLimit(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// Unix nanoseconds in an int64 span the years 1678 to 2262.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// encodeTime returns t as unix nanoseconds. The zero time is stored as 0;
// a time beyond the years 1678 to 2262 is clamped to the nearest end, which
// keeps its order against every other time (such as an expiry in the year
// 9999, meaning "never").
func encodeTime(t time.Time) int64 {
	switch {
	case t.IsZero():
		return 0
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// encodeTimePtr returns t as unix nanoseconds, or nil (SQL NULL) for nil.
func encodeTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return encodeTime(*t)
}

// decodeTime returns unix nanoseconds as a UTC time, 0 as the zero time.
func decodeTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// decodeTimePtr returns a nullable column of unix nanoseconds as a pointer.
func decodeTimePtr(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := decodeTime(n.Int64)
	return &t
}

// encodeJSON returns raw JSON as TEXT, or nil (SQL NULL) when it is empty.
func encodeJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}
