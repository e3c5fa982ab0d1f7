package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/dashboard"
	"github.com/keyward/keyward/internal/gateway"
	"github.com/keyward/keyward/internal/logfmt"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/realip"
	"github.com/keyward/keyward/internal/redislimit"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/usage"
	"github.com/keyward/keyward/internal/verify"
)

// storeConfig says where the store is; every command that opens the store
// takes it.
type storeConfig struct {
	DataDir     string // embedded SQLite store, default ./keyward-data
	DatabaseURL string // postgres://... (a later release)

	Secret         string   // KEYWARD_SECRET, or read from KEYWARD_SECRET_FILE
	SecretPrevious []string // from KEYWARD_SECRET_PREVIOUS (see loadSecrets)

	// LinkUnchainedAudit lets the migration to the audit chain link the
	// events already stored (keyward migrate --link-unchained-audit).
	LinkUnchainedAudit bool
	// lockWait, when set, is called when PostgreSQL migrations wait for
	// another process's (postgres.WithLockWait).
	lockWait func()
	// log, when set, is the PostgreSQL store's logger (postgres.WithLogger).
	log *slog.Logger
	// secretVar and previousVar name where Secret and SecretPrevious came
	// from, for errors, when not KEYWARD_SECRET and KEYWARD_SECRET_PREVIOUS.
	secretVar, previousVar string
}

// serveConfig is the configuration of keyward serve, built from flags and
// environment and validated by validate.
type serveConfig struct {
	storeConfig
	Addr            string
	PublicURL       string
	TLSCert         string
	TLSKey          string
	LogFormat       string // text or json
	LogLevel        string // debug, info, warn, error
	LookupBudget    int
	FlushInterval   time.Duration
	StaleGrace      time.Duration
	GatewayConfig   string // YAML routes of the gateway; "" for none
	RedisURL        string // KEYWARD_REDIS_URL or _FILE: global limits
	RedisFallback   string // closed or local
	Nodes           int
	ShutdownTimeout time.Duration
	StoreWait       time.Duration // how long to wait at start for PostgreSQL to accept connections
	MaxBody         int64
	// TrustedProxies: comma-separated CIDRs whose X-Forwarded-For names
	// the client of the API and dashboard; Proxies, parsed by validate.
	TrustedProxies string
	Proxies        realip.Proxies
	// UsageSpoolDir keeps usage the store could not take (see
	// verify.Config.SpoolDir); "" is the data dir, "off" none.
	UsageSpoolDir string

	Usage                bool
	UsageSample          int
	UsageFailureEvents   int
	UsageFlushInterval   time.Duration
	UsageEventBuffer     int
	UsageMinuteRetention time.Duration
	UsageHourRetention   time.Duration
	UsageEventRetention  time.Duration
	SessionIdle          time.Duration // dashboard session idle timeout
	SessionLifetime      time.Duration // dashboard session absolute lifetime
}

// usageConfig returns the usage recorder's configuration, whose zero and
// negative values mean what the flags' do not.
func (c *serveConfig) usageConfig() usage.Config {
	forever := func(d time.Duration) time.Duration {
		if d == 0 {
			return -1
		}
		return d
	}
	sample := c.UsageSample
	if sample == 0 {
		sample = -1
	}
	failures := c.UsageFailureEvents
	if failures == 0 {
		failures = -1
	}
	return usage.Config{
		FlushInterval:   c.UsageFlushInterval,
		SampleEvery:     sample,
		FailureEvents:   failures,
		MaxEvents:       c.UsageEventBuffer,
		MinuteRetention: forever(c.UsageMinuteRetention),
		HourRetention:   forever(c.UsageHourRetention),
		EventRetention:  forever(c.UsageEventRetention),
	}
}

func (c *serveConfig) validate() error {
	// First: --public-url's default follows it.
	if _, err := listenPort(c.Addr); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if err := choose("--log-format", &c.LogFormat, "text", "json"); err != nil {
		return err
	}
	if err := choose("--log-level", &c.LogLevel, logLevels...); err != nil {
		return err
	}
	if c.LookupBudget < 1 {
		return errors.New("--lookup-budget must be at least 1")
	}
	if c.FlushInterval < 10*time.Millisecond || c.FlushInterval > time.Minute {
		return errors.New("--flush-interval must be between 10ms and 1m")
	}
	if err := choose("--redis-fallback", &c.RedisFallback, verify.FallbackClosed, verify.FallbackLocal); err != nil {
		return err
	}
	if c.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if c.StoreWait < 0 {
		return errors.New("--store-wait must not be negative")
	}
	if c.TrustedProxies != "" {
		p, err := realip.Parse(strings.Split(c.TrustedProxies, ","))
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %w", err)
		}
		c.Proxies = p
	}
	if c.RedisURL != "" && !strings.HasPrefix(c.RedisURL, "redis://") && !strings.HasPrefix(c.RedisURL, "rediss://") {
		return errors.New("--redis-url (KEYWARD_REDIS_URL) must be a redis:// or rediss:// URL")
	}
	if c.RedisURL != "" {
		// Found now, not once the store is opened and migrated. The
		// error quotes no part of the URL, which may hold a password.
		if err := redislimit.CheckURL(c.RedisURL); err != nil {
			return fmt.Errorf("--redis-url (KEYWARD_REDIS_URL): %w", err)
		}
	}
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--public-url must be an http:// or https:// URL with a host, not %q", c.PublicURL)
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("--shutdown-timeout must be positive: in-flight requests need time to finish")
	}
	if c.StaleGrace < time.Second {
		// Zero is no "fail closed at once": the engine takes it for no
		// bound at all, and PRODUCT §6 wants one. Below a second, a
		// healthy node would fail closed between two reads of the feed.
		return fmt.Errorf("--stale-grace must be at least 1s, not %v: cached tokens keep verifying that long while the store is unreachable, then fail closed", c.StaleGrace)
	}
	if c.MaxBody < 1024 {
		return errors.New("--max-body must be at least 1024 bytes")
	}
	if c.SessionIdle < time.Minute || c.SessionLifetime < c.SessionIdle {
		return errors.New("--session-idle-timeout must be at least 1m, and --session-lifetime at least as long")
	}
	if c.UsageSample < 0 {
		return errors.New("--usage-sample must be 0 (keep no success) or more")
	}
	if c.UsageFailureEvents < 0 {
		return errors.New("--usage-failure-events must be 0 (keep every failure) or more")
	}
	if c.UsageFlushInterval < 10*time.Millisecond || c.UsageFlushInterval > 10*time.Minute {
		return errors.New("--usage-flush-interval must be between 10ms and 10m")
	}
	if c.UsageEventBuffer < 1 {
		return errors.New("--usage-event-buffer must be at least 1")
	}
	for _, r := range []struct {
		name string
		d    time.Duration
	}{{"--usage-minute-retention", c.UsageMinuteRetention}, {"--usage-hour-retention", c.UsageHourRetention}, {"--usage-event-retention", c.UsageEventRetention}} {
		if r.d < 0 || (r.d > 0 && r.d < time.Hour) {
			return fmt.Errorf("%s must be 0 (forever) or at least 1h", r.name)
		}
	}
	return nil
}

// retentionWarning returns what is odd about the usage retentions, or "":
// hour rollups kept for less time than minute ones. Hour and day series
// are read from the hour rollups, so they come back empty for ranges the
// minute ones still cover. A warning, not an error: a deployment that ran
// so before must still start after an upgrade.
func retentionWarning(c *serveConfig) string {
	h, m := c.UsageHourRetention, c.UsageMinuteRetention
	if h == 0 || (m != 0 && h >= m) {
		return ""
	}
	minute := "0 (forever)"
	if m != 0 {
		minute = fmtDuration(m)
	}
	return fmt.Sprintf("--usage-hour-retention (%s) is shorter than --usage-minute-retention (%s): hour and day series, read from the hour rollups, come back empty for ranges the minute rollups still cover", fmtDuration(h), minute)
}

// listenPort returns the port that net.Listen would listen on for addr,
// HOST:PORT (0: any free one), or what is wrong with addr's form. What only
// listening finds (a host name that does not resolve, a port in use or
// not allowed) is not looked at.
func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		why := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			why = ae.Err
		}
		return 0, fmt.Errorf("--addr must be HOST:PORT, such as 127.0.0.1:8080 or :8080, not %q: %s", addr, why)
	}
	if port == "" {
		// net.Listen takes it for 0, any free port: more likely a
		// "127.0.0.1:$PORT" whose variable is unset than a wish.
		return 0, fmt.Errorf("--addr %q: the port is empty: give one, or 0 for any free one", addr)
	}
	if strings.Trim(port, "0123456789") == "" {
		n, err := strconv.Atoi(port)
		if err != nil || n > 65535 {
			return 0, fmt.Errorf("--addr %q: the port must be from 0 (any free one) to 65535", addr)
		}
		return n, nil
	}
	// A service name, as net.Listen takes ("http"), from the services
	// database: no network is asked. A name starts with a letter: a
	// signed number ("+80"), which net.Listen takes too, would make an
	// odd --public-url default; "-0" and "-", which it takes for 0, are
	// no port either, nor, with the C resolver, " -0" or " +80".
	n, err := net.LookupPort("tcp", port)
	if err != nil || !serviceName(port) {
		return 0, fmt.Errorf("--addr %q: the port must be a number from 0 to 65535 or a service name, not %q", addr, port)
	}
	return n, nil
}

// serviceName reports whether port has the form of a service name: an
// ASCII letter, then letters, digits, '-', '_' or '.'.
func serviceName(port string) bool {
	for i, r := range port {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && ('0' <= r && r <= '9' || r == '-' || r == '_' || r == '.'):
		default:
			return false
		}
	}
	return port != ""
}

// logLevels are the values of --log-level, which validate takes in any
// case (as it does the values of every fixed-choice flag) and stores as
// written here.
var logLevels = []string{"debug", "info", "warn", "error"}

// newLogger returns the logger of serve, with format and level as
// validate left them.
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // one of logLevels
	opts := &slog.HandlerOptions{Level: l}
	// logfmt writes the lines slog's handlers would, for less: the API and
	// the gateway log a line per request.
	if format == "json" {
		return slog.New(logfmt.NewJSON(w, opts))
	}
	return slog.New(logfmt.NewText(w, opts))
}

// auditKeyPurpose names the key, derived from the server secret, that
// links the audit chain (keyward.AuditMAC).
const auditKeyPurpose = "audit-chain/v1"

// auditKeys returns the audit chain key of the current server secret and
// those of the previous ones, under which events written before a rotation
// are linked.
func auditKeys(keys *secret.Keyring) (current []byte, previous [][]byte) {
	for _, k := range keys.Previous {
		previous = append(previous, k.Derive(auditKeyPurpose))
	}
	return keys.Current.Derive(auditKeyPurpose), previous
}

// keyIDs returns the ids of the server secrets in keys, current first.
func keyIDs(keys *secret.Keyring) []string {
	ids := []string{keys.Current.ID}
	for _, k := range keys.Previous {
		ids = append(ids, k.ID)
	}
	return ids
}

// openStore opens the store the configuration names, creating its schema,
// with the audit chain key derived from the current server key in keys.
func openStore(ctx context.Context, c storeConfig, keys *secret.Keyring) (keyward.Store, error) {
	key, _ := auditKeys(keys)
	if c.DatabaseURL != "" {
		if err := checkDatabaseURL(c.DatabaseURL); err != nil {
			return nil, err
		}
		opts := []postgres.Option{postgres.WithAuditKey(key)}
		if c.LinkUnchainedAudit {
			opts = append(opts, postgres.WithLinkUnchainedAudit(keyIDs(keys)...))
		}
		if c.lockWait != nil {
			opts = append(opts, postgres.WithLockWait(c.lockWait))
		}
		if c.log != nil {
			opts = append(opts, postgres.WithLogger(c.log))
		}
		db, err := postgres.Open(ctx, c.DatabaseURL, opts...)
		if err != nil {
			return nil, fmt.Errorf("open the PostgreSQL store: %w", err)
		}
		return db, nil
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	opts := []sqlite.Option{sqlite.WithAuditKey(key)}
	if c.LinkUnchainedAudit {
		opts = append(opts, sqlite.WithLinkUnchainedAudit(keyIDs(keys)...))
	}
	db, err := sqlite.Open(ctx, filepath.Join(c.DataDir, "keyward.db"), opts...)
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", c.DataDir, err)
	}
	return db, nil
}

// errStopped ends a serve asked to stop before it served: it exits as a
// serve that was asked to stop while serving does.
var errStopped = errors.New("stopped before serving")

// openStoreWaiting opens the store as openStore does, but waits up to
// cfg.StoreWait for a PostgreSQL server that does not accept connections
// yet, as when keyward starts before its database (postgres.NotUpYet),
// trying again with a growing pause and saying so in the log.
func openStoreWaiting(ctx context.Context, cfg serveConfig, keys *secret.Keyring, log *slog.Logger) (keyward.Store, error) {
	cfg.log = log
	cfg.lockWait = func() {
		log.Info("another keyward is applying migrations to the store (a node starting, or keyward migrate): waiting for it to finish")
	}
	st, err := openStore(ctx, cfg.storeConfig, keys)
	if err == nil || cfg.DatabaseURL == "" || cfg.StoreWait <= 0 || !postgres.NotUpYet(err) {
		return st, err
	}
	start := time.Now()
	deadline := start.Add(cfg.StoreWait)
	log.Warn("the PostgreSQL store does not accept connections yet: waiting for it", "err", err, "store_wait", cfg.StoreWait)
	pause, said := 250*time.Millisecond, start
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w (waited %s for the store to accept connections: --store-wait)", err, cfg.StoreWait)
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			// Asked to stop (SIGTERM, say): a stop as any other.
			t.Stop()
			log.Info("stopped while waiting for the PostgreSQL store")
			return nil, errStopped
		case <-t.C:
		}
		pause = min(2*pause, 5*time.Second)
		if st, err = openStore(ctx, cfg.storeConfig, keys); err == nil {
			log.Info("the PostgreSQL store accepts connections", "waited", time.Since(start).Round(time.Millisecond))
			return st, nil
		}
		if !postgres.NotUpYet(err) {
			return nil, err
		}
		if time.Since(said) >= 10*time.Second {
			said = time.Now()
			log.Warn("still waiting for the PostgreSQL store", "err", err, "waited", time.Since(start).Round(time.Second))
		}
	}
}

// appliedMigrations returns the migrations opening the store applied.
func appliedMigrations(st keyward.Store) []string {
	if a, ok := st.(interface{ AppliedMigrations() []string }); ok {
		return a.AppliedMigrations()
	}
	return nil
}

// newerMigrations returns the migrations the store records that this
// build does not know (keyward.NewerStoreError).
func newerMigrations(st keyward.Store) []string {
	if n, ok := st.(interface{ NewerMigrations() []string }); ok {
		return n.NewerMigrations()
	}
	return nil
}

// newSQLiteStore reports whether cfg names a SQLite store that does not
// exist yet, which opening it creates: a command that is not meant to
// create one (user create, migrate) says so, in case the data dir was
// mistyped.
func newSQLiteStore(cfg storeConfig) bool {
	if cfg.DatabaseURL != "" {
		return false
	}
	_, err := os.Stat(filepath.Join(cfg.DataDir, "keyward.db"))
	return errors.Is(err, fs.ErrNotExist)
}

// noteNewStore tells the user that the command created a new store.
func noteNewStore(e *env, cfg storeConfig) {
	fmt.Fprintf(e.stderr, "keyward: note: there was no store in %s: a new one was created there (check --data-dir if you meant an existing one)\n", cfg.DataDir)
}

// checkDatabaseURL accepts postgres:// and postgresql:// URLs that parse
// as the store would parse them. A URL that does not is a usage error whose
// message quotes no part of it that may be the password
// (postgres.CheckURL); a file the URL names that cannot be read
// (sslrootcert, say) is a *workError.
func checkDatabaseURL(u string) error {
	if !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		return errors.New("--database-url (KEYWARD_DATABASE_URL) must be a postgres:// URL")
	}
	err := postgres.CheckURL(u)
	var fe *postgres.URLFileError
	if errors.As(err, &fe) {
		return &workError{fmt.Errorf("--database-url (KEYWARD_DATABASE_URL): %w", err)}
	}
	if err != nil {
		return fmt.Errorf("--database-url (KEYWARD_DATABASE_URL): %w", err)
	}
	return nil
}

// keyring returns the server keys: the secret given, or on the embedded
// store one kept in the data dir (generated on first start, mode 0600).
func keyring(c storeConfig) (*secret.Keyring, error) {
	current := c.Secret
	if current == "" {
		if c.DatabaseURL != "" {
			return nil, errSecretRequired
		}
		path := filepath.Join(c.DataDir, "server.secret")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(filepath.Join(c.DataDir, "keyward.db")); err == nil {
				// A new secret for an existing store would make every
				// stored token answer NOT_FOUND, and leave a file that later
				// commands would silently pick up.
				return nil, fmt.Errorf("%s holds a store but no server secret (server.secret): give the secret that made the store as KEYWARD_SECRET or KEYWARD_SECRET_FILE, or put its server.secret back", c.DataDir)
			}
		}
		var err error
		if current, err = secret.LoadOrCreateFile(path); err != nil {
			return nil, err
		}
	}
	if err := secretsError(current, c); err != nil {
		return nil, err
	}
	return secret.NewKeyring(current, c.SecretPrevious...)
}

// errSecretRequired is the error of a PostgreSQL store without a server
// secret: none is kept in the database, and one made here would be this
// node's alone.
var errSecretRequired = errors.New("KEYWARD_SECRET (or KEYWARD_SECRET_FILE) is required with --database-url: every node must share it")

// secretsError returns what secret.NewKeyring refuses of the current
// server secret and the previous ones of c, naming the variable it came
// from, or nil. The error shows no secret.
func secretsError(current string, c storeConfig) error {
	if _, err := secret.NewKeyring(current); err != nil {
		return fmt.Errorf("%s: %w", cmp.Or(c.secretVar, "KEYWARD_SECRET"), err)
	}
	if _, err := secret.NewKeyring(current, c.SecretPrevious...); err != nil {
		return fmt.Errorf("%s: %w", cmp.Or(c.previousVar, "KEYWARD_SECRET_PREVIOUS"), err)
	}
	return nil
}

// storedKeys counts the stored token secrets by the kind of server key
// that made them. Those under a key that is neither the current one nor a
// previous one (unknown) answer NOT_FOUND, which would otherwise look as if
// every token had been lost (a wrong KEYWARD_SECRET, or a rotation that
// left out KEYWARD_SECRET_PREVIOUS). Key ids are not secret.
type storedKeys struct {
	of       int64    // every stored secret
	unknown  int64    // under an unknown key
	previous int64    // under a previous key: still to move to the current one
	ids      []string // the unknown key ids, sorted
	current  string   // the current key's id
}

// allUnknown reports whether every stored secret, there being some, is
// under an unknown key: most likely the wrong server secret.
func (u *storedKeys) allUnknown() bool { return u.unknown > 0 && u.unknown == u.of }

// advice says what to do about the unknown keys.
const unknownKeysAdvice = "start with the secret that made them as KEYWARD_SECRET, or, after a rotation, name it in KEYWARD_SECRET_PREVIOUS"

// checkKeys counts the stored secrets by key (one store query); nil when
// they cannot be counted (warned of in log).
func checkKeys(ctx context.Context, st keyward.Store, keys *secret.Keyring, log *slog.Logger) *storedKeys {
	counts, err := st.SecretKeys(ctx)
	if err != nil {
		log.Warn("could not check the server keys of the stored tokens", "err", err)
		return nil
	}
	return countKeys(counts, keys)
}

// countKeys sorts counts, the stored secrets by key id, by the kind of key
// of keys that made them.
func countKeys(counts map[string]int64, keys *secret.Keyring) *storedKeys {
	previous := map[string]bool{}
	for _, k := range keys.Previous {
		previous[k.ID] = true
	}
	u := &storedKeys{current: keys.Current.ID}
	for id, n := range counts {
		u.of += n
		switch {
		case id == keys.Current.ID:
		case previous[id]:
			u.previous += n
		default:
			u.unknown += n
			u.ids = append(u.ids, id)
		}
	}
	slices.Sort(u.ids)
	return u
}

// logKeys logs at start what the stored secrets' keys say: those under
// an unknown key (an error when that is all of them, most likely the
// wrong secret; a warning when some, which is also what a finished
// rotation leaves: the tokens nobody used while both secrets were given),
// and, while previous secrets are given, how many are still under them:
// each moves to the current secret when its token is next verified, and
// once none is left (or the rest will not be used), they can go.
func logKeys(ctx context.Context, st keyward.Store, keys *secret.Keyring, log *slog.Logger) {
	u := checkKeys(ctx, st, keys, log)
	if u == nil {
		return
	}
	if u.unknown > 0 {
		level := slog.LevelWarn
		if u.allUnknown() {
			level = slog.LevelError
		}
		log.Log(ctx, level, "stored token secrets were made under a server secret this node does not have, so their tokens answer NOT_FOUND: "+unknownKeysAdvice,
			"secrets", u.unknown, "of", u.of, "their_key_ids", strings.Join(u.ids, ","), "current_key_id", u.current)
	}
	if len(keys.Previous) > 0 {
		log.Info("server secret rotation: stored token secrets still under a previous secret, each moved to the current one when its token is next verified",
			"secrets", u.previous, "of", u.of, "current_key_id", u.current)
	}
}

// newSecretFlag is the flag with which init and user create write under a
// server secret that made none of the stored tokens.
const newSecretFlag = "new-server-secret"

// defineNewSecretFlag defines newSecretFlag on fs.
func defineNewSecretFlag(fs *flagSet, v *bool) {
	fs.Bool(v, newSecretFlag, "", false, "write even though the server secret made none of the stored tokens (the one that did is lost): "+
		"the new token or user is keyed with this one, and the audit chains no longer verify across the change. "+
		"No environment variable on purpose: a decision for one run, which a deployment's environment would repeat")
}

// checkKeysCLI refuses a command that writes to the store (init, user
// create) under a server secret that made none of the stored tokens, most
// likely the wrong one: what it writes (a token, audit events) would be
// keyed with it, so the token would answer NOT_FOUND once the right secret
// is back, and the audit chains would read as tampered with for good.
// With force (the old secret is lost), it warns instead.
func checkKeysCLI(ctx context.Context, e *env, st keyward.Store, keys *secret.Keyring, force bool) error {
	u := checkKeys(ctx, st, keys, slog.New(slog.DiscardHandler))
	if u == nil || !u.allUnknown() {
		return nil
	}
	what := fmt.Sprintf("every stored token secret (%d) was made under a server secret other than this one (key ids %s; this one is %s)",
		u.of, strings.Join(u.ids, ","), u.current)
	if !force {
		return fmt.Errorf("%s: nothing written, since what this command writes would be keyed with it "+
			"and the audit chains would no longer verify; %s; if that secret is lost, --%s writes under this one", what, unknownKeysAdvice, newSecretFlag)
	}
	fmt.Fprintf(e.stderr, "keyward: warning: %s: their tokens answer NOT_FOUND under it, and what this command writes is keyed with it (--%s)\n",
		what, newSecretFlag)
	return nil
}

// server is one running keyward: store, engine and HTTP listener.
type server struct {
	cfg    serveConfig
	log    *slog.Logger
	store  keyward.Store
	engine *verify.Engine
	usage  *usage.Recorder // nil with --usage=false
	// retention deletes stored usage past its retention with
	// --usage=false (nil otherwise: usage does it).
	retention *usage.Recorder
	limits    *redislimit.Limiter // nil without --redis-url
	http      *http.Server
	ln        net.Listener
	gw        *gatewayServer // nil without --gateway-config
	dash      *dashboard.Server
	lock      *os.File // the SQLite data dir's, held while serving
}

// secureCookies reports whether the dashboard's cookies are Secure (and
// named __Host-): the browser reaches it over TLS (served here or by a
// proxy named by an https:// public URL), or on loopback, where browsers
// treat http:// as a secure context. Loopback is either the listen address
// or the public URL's host (localhost, *.localhost, a loopback IP), as in
// a container listening on 0.0.0.0 with --public-url http://localhost:8080.
func secureCookies(cfg serveConfig, public *url.URL) bool {
	host := strings.ToLower(public.Hostname())
	return cfg.TLSCert != "" || public.Scheme == "https" || dashboard.IsLoopback(cfg.Addr) ||
		dashboard.IsLoopback(host) || strings.HasSuffix(host, ".localhost")
}

// cookieWarning says what keeps the dashboard's cookies from working with
// cfg and its public URL, "" when nothing does.
func cookieWarning(cfg serveConfig, public *url.URL) string {
	host := strings.ToLower(public.Hostname())
	switch {
	case !secureCookies(cfg, public):
		return "dashboard cookies are not Secure: serve TLS, listen on loopback, or name a TLS proxy with --public-url https://..."
	case public.Scheme == "http" && cfg.TLSCert == "" && !dashboard.IsLoopback(host) && !strings.HasSuffix(host, ".localhost"):
		// Secure because the listener is on loopback (a proxy's
		// upstream), but named plain http elsewhere: browsers keep no
		// Secure cookie from such a page, and sign-in fails.
		return "--public-url is plain http at a host other than this machine, but the dashboard's cookies are Secure (the listener is on loopback): browsers will not keep them there and sign-in fails; name the TLS proxy's https:// URL"
	}
	return ""
}

// spoolDir returns where usage the store could not take is spooled: the
// flag's directory; by default the data dir on SQLite, none on
// PostgreSQL, whose nodes have no directory of their own to assume (the
// working directory may be / or shared), which serve says at start.
func (c serveConfig) spoolDir(log *slog.Logger) string {
	switch {
	case c.UsageSpoolDir == "off":
		return ""
	case c.UsageSpoolDir != "":
		return c.UsageSpoolDir
	case c.DatabaseURL == "":
		return c.DataDir
	}
	log.Info("no --usage-spool-dir: quota use, last use and rate windows that PostgreSQL cannot take are kept in memory only, and a stop before it returns loses them")
	return ""
}

// writableDir makes dir if need be and checks that files can be made in
// it; "" is no directory, and fine.
func writableDir(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// requestTimeout bounds the work for one request of the API or the
// dashboard, below the server's WriteTimeout (30 s), after which no answer
// can be written: a store that hangs rather than refuses then still gets
// its caller a 503 instead of a closed connection.
const requestTimeout = 20 * time.Second

// withDeadline gives each request's context a deadline d from its start,
// but POST /v1/verify's: a verification's only store work, the lookup of a
// token the cache lacks, has its own bound (the engine's LookupTimeout,
// 2 s), and the deadline's timer and context cost it about a tenth of its
// throughput (PRODUCT §8 wants it within 0.7x of a bare handler).
func withDeadline(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/verify" && r.Method == http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// openServer opens the store, makes sure the default workspace exists,
// starts the verification engine and binds the listener.
func openServer(ctx context.Context, cfg serveConfig, log *slog.Logger) (_ *server, err error) {
	s := &server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			if s.ln != nil {
				s.ln.Close()
			}
			s.close(context.Background())
		}
	}()
	// What the settings alone refuse is refused before the store (or its
	// server secret) is created or touched: unreadable TLS files, a
	// gateway config with errors, a bad address or a port in use.
	var cert tls.Certificate
	if cfg.TLSCert != "" {
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return nil, fmt.Errorf("TLS (--tls-cert, --tls-key): %w", err)
		}
	}
	if cfg.GatewayConfig != "" {
		gc, err := gateway.Check(cfg.GatewayConfig)
		if err != nil {
			return nil, fmt.Errorf("--gateway-config: %w", err)
		}
		// An embedded store yet to be made will hold the default
		// workspace alone: a config naming another is refused before
		// the data dir, its secret and its store are made for nothing.
		// A store that is there is looked in once open (openGateway);
		// so is a PostgreSQL database, whose open waits for it to answer.
		if cfg.DatabaseURL == "" && gc.Workspace != keyward.DefaultWorkspace {
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "keyward.db")); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("--gateway-config: %w", workspaceMissing(cfg.GatewayConfig, gc))
			}
		}
	}
	// A trial bind finds a bad address or a port in use now; the real one
	// comes once the node is ready, so that no connection waits on a
	// node still migrating or reading its tokens.
	trial, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	trial.Close()
	keys, err := keyring(cfg.storeConfig)
	if err != nil {
		return nil, err
	}
	if cfg.DatabaseURL == "" {
		if s.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		// Holding the data dir, no restore runs: what a killed one left
		// goes (its hidden copy may be as large as the store).
		for _, p := range sqlite.SweepPartials(cfg.DataDir) {
			log.Warn("removed the partial copy of a restore that did not finish", "file", p)
		}
	}
	if s.store, err = openStoreWaiting(ctx, cfg, keys, log); err != nil {
		return nil, err
	}
	if applied := appliedMigrations(s.store); len(applied) > 0 {
		log.Info("store migrated", "migrations", strings.Join(applied, ","))
	}
	if k, ok := s.store.(interface{ NameKeyError() error }); ok && k.NameKeyError() != nil {
		log.Warn("workspaces made by an earlier release could not be given their case-folded name keys; the next start tries again", "err", k.NameKeyError())
	}
	if newer := newerMigrations(s.store); len(newer) > 0 {
		// Served all the same: a rollback of an upgrade does this, and
		// the migrations keep older releases working.
		log.Error("a newer keyward migrated this store: this release serves it without that release's changes; run that release", "migrations", strings.Join(newer, ","))
	}
	logKeys(ctx, s.store, keys, log)
	svc := &manage.Service{Store: s.store, Keys: keys, Log: log}
	ws, err := svc.EnsureDefaultWorkspace(ctx)
	if err != nil {
		return nil, fmt.Errorf("create the default workspace: %w", err)
	}
	// The default workspace's id names the store in usage spools: it
	// stays when the database's URL changes.
	spoolDir := cfg.spoolDir(log)
	if err := writableDir(spoolDir); err != nil {
		// Found now, not in the outage the spool is for.
		return nil, fmt.Errorf("--usage-spool-dir: %w", err)
	}
	vcfg := verify.Config{
		SpoolDir:       spoolDir,
		SpoolStore:     ws.ID,
		Store:          s.store,
		Keys:           keys,
		Log:            log,
		LookupBudget:   cfg.LookupBudget,
		FlushInterval:  cfg.FlushInterval,
		StaleGrace:     cfg.StaleGrace,
		GlobalFallback: cfg.RedisFallback,
		Nodes:          cfg.Nodes,
	}
	var probes []api.Probe
	if cfg.RedisURL != "" {
		// A node starts even while Redis is down: the fallback applies
		// until it answers.
		if s.limits, err = redislimit.New(ctx, cfg.RedisURL, redislimit.Options{Log: log}); err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		vcfg.Global = s.limits
		probes = append(probes, api.Probe{Name: "redis", Check: s.limits.Ping, Fallback: "limits fall back to " + cfg.RedisFallback})
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.limits.Ping(pctx); err != nil {
			log.Warn("Redis does not answer: rate limits and quotas fall back to --redis-fallback until it does", "redis_fallback", cfg.RedisFallback, "err", err)
		}
		cancel()
	}
	if cfg.RedisURL == "" && cfg.DatabaseURL != "" {
		// Nodes may share this database: say where the bound stops.
		msg := "rate limits and quotas are enforced by each node alone: nodes sharing this database each admit a token's whole limit; give every node --redis-url to enforce them across all"
		if cfg.Nodes > 1 {
			log.Warn(msg, "nodes", cfg.Nodes)
		} else {
			log.Info(msg)
		}
	}
	s.engine = verify.New(vcfg)
	svc.Engine = s.engine
	if err := s.engine.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the verification engine: %w", err)
	}
	ucfg := cfg.usageConfig()
	ucfg.Store, ucfg.Log = s.store, log
	if msg := retentionWarning(&cfg); msg != "" {
		log.Warn(msg)
	}
	if cfg.Usage {
		s.usage = usage.New(ucfg)
		s.usage.Start()
	} else {
		// Nothing counted here, but what is stored still goes when its
		// retention says: raw events hold client addresses.
		s.retention = usage.New(ucfg)
		s.retention.StartRetention()
	}
	a := api.New(api.Config{Service: svc, Engine: s.engine, Store: s.store, Log: log, MaxBody: cfg.MaxBody, Version: version, Probes: probes, Usage: s.usage})
	handler := a.Handler()
	if accounts, ok := s.store.(keyward.AccountStore); ok {
		public, _ := url.Parse(cfg.PublicURL) // validated
		secure := secureCookies(cfg, public)
		if msg := cookieWarning(cfg, public); msg != "" {
			log.Warn(msg, "public_url", cfg.PublicURL)
		}
		dash, err := dashboard.New(dashboard.Config{
			Service: svc, Store: s.store, Accounts: accounts, Keys: keys, Log: log, PublicURL: public, Secure: secure,
			IdleTimeout: cfg.SessionIdle, AbsoluteTimeout: cfg.SessionLifetime, Observer: a,
		})
		if err != nil {
			return nil, err
		}
		s.dash = dash
		// One listener: the API's paths go to the API, every other path
		// (GET / included) to the dashboard.
		api, browser := a.Handler(), dash.Handler()
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if a.Owns(r.URL.Path) {
				api.ServeHTTP(w, r)
				return
			}
			browser.ServeHTTP(w, r)
		})
	}
	s.http = &http.Server{
		Handler:           cfg.Proxies.Handler(withDeadline(handler, requestTimeout)),
		ReadHeaderTimeout: apiHeaderTimeout,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		// ReadHeaderTimeout bounds HTTP/1 only: on the TLS listener, which
		// speaks HTTP/2 too, a client that sends the preface and then no
		// request would hold its connection until IdleTimeout.
		s.http.ConnState = gateway.HTTP2HeaderTimeout(apiHeaderTimeout)
	}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	if cfg.GatewayConfig != "" {
		if s.gw, err = openGateway(ctx, cfg.GatewayConfig, s.store, s.engine, a, s.usage, log); err != nil {
			return nil, err
		}
	}
	if cfg.TLSCert != "" {
		// HTTP/2 where the client offers it (browsers, gRPC-less API
		// clients alike), HTTP/1.1 otherwise: net/http's server serves
		// whichever the handshake chose.
		s.ln = tls.NewListener(s.ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	}
	return s, nil
}

// apiHeaderTimeout is how long a client of the API and dashboard listener
// has to send a request's header, over HTTP/1 and HTTP/2 alike.
const apiHeaderTimeout = 10 * time.Second

// run serves until ctx ends, then shuts down gracefully: in-flight requests
// finish (within the shutdown timeout) and batched usage is flushed.
func (s *server) run(ctx context.Context) error {
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	// The dashboard is to be opened at the public URL: passkeys are bound
	// to its host, and fail at any other (an IP address, say).
	s.log.Info("keyward listening", "addr", s.ln.Addr().String(), "url", scheme+"://"+s.ln.Addr().String(), "dashboard", s.cfg.PublicURL, "version", version)
	errc := make(chan error, 2)
	go func() { errc <- s.http.Serve(s.ln) }()
	if s.gw != nil {
		go func() { errc <- s.gw.run(ctx) }()
	} else {
		signal.Ignore(syscall.SIGHUP) // nothing to reload; do not die of it
	}
	if pg, ok := s.store.(*postgres.DB); ok {
		// Other nodes' changes reach this cache at once through NOTIFY; the
		// engine's poll catches whatever a lost connection missed.
		lctx, stop := context.WithCancel(ctx)
		defer stop()
		go pg.Listen(lctx, s.engine.Notify, s.engine.SetPush)
	}
	select {
	case err := <-errc:
		s.close(context.Background())
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	// Both listeners drain at once, within the shutdown timeout.
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	var apiErr, gwErr error
	wg.Go(func() { apiErr = s.http.Shutdown(sctx) })
	if s.gw != nil {
		wg.Go(func() { gwErr = s.gw.http.Shutdown(sctx) })
	}
	wg.Wait()
	var err error
	for _, e := range []error{apiErr, gwErr} {
		if e != nil && !errors.Is(e, context.DeadlineExceeded) && err == nil {
			err = e
		}
	}
	if errors.Is(apiErr, context.DeadlineExceeded) || errors.Is(gwErr, context.DeadlineExceeded) {
		// Long streams are cut here, as --shutdown-timeout says: not a
		// failure of the stop. The cut requests get time to end, so
		// that their access-log lines and usage are recorded before usage
		// is written: on the gateway's own server, closing a client's
		// connection closes the upstream one its handler waits on, which
		// ends it at once; on net/http's (TLS), a handler sees its
		// cancelled context within livenessInterval.
		s.http.Close()
		if s.gw != nil {
			s.gw.http.Close()
		}
		s.log.Warn("requests still in flight at the shutdown timeout were cut", "timeout", s.cfg.ShutdownTimeout)
		if s.gw != nil {
			gctx, gcancel := context.WithTimeout(context.Background(), cutGrace)
			s.gw.http.Shutdown(gctx)
			if n := s.gw.wait(gctx); n > 0 {
				s.log.Warn("gateway requests cut at the shutdown timeout did not end in time: their access-log lines and usage are lost", "requests", n, "waited", cutGrace)
			}
			gcancel()
		}
	}
	// Usage is written with time of its own: the drain may have used all
	// of the shutdown timeout.
	fctx, fcancel := context.WithTimeout(context.Background(), closeTimeout)
	defer fcancel()
	if cerr := s.close(fctx); err == nil {
		err = cerr
	}
	return err
}

// closeTimeout bounds the writing of usage at a stop, after the requests
// in flight were drained or cut.
const closeTimeout = 15 * time.Second

// cutGrace bounds the wait for the gateway requests cut at the shutdown
// timeout to end and be recorded. They end at once, or within a second on
// net/http's server (TLS): it is a bound for a handler held elsewhere,
// not a time the stop takes.
const cutGrace = 5 * time.Second

// close flushes usage and releases the store.
func (s *server) close(ctx context.Context) error {
	var errs []error
	if s.engine != nil {
		if err := s.engine.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush usage: %w", err))
		}
	}
	if s.usage != nil {
		if err := s.usage.Close(ctx); err != nil {
			// Enforcement lost nothing (the engine's usage is spooled),
			// but the analytics not yet written are gone: said plainly,
			// since the exit status alone does not tell what.
			s.log.Error("usage analytics not yet written were lost: the store did not take them before the stop", "err", err)
			errs = append(errs, fmt.Errorf("write usage analytics: %w", err))
		}
	}
	if s.retention != nil {
		errs = append(errs, s.retention.Close(ctx)) // nothing to flush
	}
	if s.limits != nil {
		errs = append(errs, s.limits.Close())
	}
	if s.dash != nil {
		s.dash.Wait() // its audit records go to the store
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.lock != nil {
		s.lock.Close() // the data dir is free for the next serve
	}
	return errors.Join(errs...)
}
