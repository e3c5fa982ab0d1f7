package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/usage"
)

// defineServeFlags defines the flags of keyward serve on fs, each with its
// environment variable, and returns the configuration they fill.
func defineServeFlags(fs *flagSet) *serveConfig {
	cfg := &serveConfig{}
	fs.String(&cfg.Addr, "addr", "KEYWARD_ADDR", "127.0.0.1:8080", "`ADDRESS` (host:port) to listen on")
	defineStoreFlags(fs, &cfg.storeConfig)
	fs.String(&cfg.PublicURL, "public-url", "KEYWARD_PUBLIC_URL", "http://localhost:8080", "`URL` people reach the server at: the dashboard's origin and passkey relying party; when not given, localhost at the port of --addr, https:// with --tls-cert")
	fs.Check(func() error {
		// The default follows the address served, so that a dashboard on
		// another port, or on TLS, is its own origin (cross-origin checks,
		// passkeys) without a --public-url that only repeats --addr.
		if !fs.Changed("public-url") && fs.envValue("KEYWARD_PUBLIC_URL") == "" {
			cfg.PublicURL = defaultPublicURL(cfg.Addr, cfg.TLSCert != "")
		}
		return nil
	})
	fs.String(&cfg.TLSCert, "tls-cert", "KEYWARD_TLS_CERT", "", "serve TLS with the certificate chain in `FILE` (PEM)")
	fs.String(&cfg.TLSKey, "tls-key", "KEYWARD_TLS_KEY", "", "serve TLS with the private key in `FILE` (PEM)")
	fs.String(&cfg.TrustedProxies, "trusted-proxies", "KEYWARD_TRUSTED_PROXIES", "", "comma-separated `CIDRS` of the proxies in front of the API and dashboard, whose X-Forwarded-For names the client (sign-in throttling, sessions, audit records, logs, and the allowed_cidrs of management tokens: name only the proxies' own addresses); without it the connection's address is the client's")
	fs.String(&cfg.LogFormat, "log-format", "KEYWARD_LOG_FORMAT", "text", "log `FORMAT`: text or json")
	fs.String(&cfg.LogLevel, "log-level", "KEYWARD_LOG_LEVEL", "info", "log `LEVEL`: debug, info, warn or error")
	fs.Int(&cfg.LookupBudget, "lookup-budget", "KEYWARD_LOOKUP_BUDGET", 200, "at most `N` store lookups per second for tokens this node does not know; beyond it they answer NOT_FOUND")
	fs.Duration(&cfg.FlushInterval, "flush-interval", "KEYWARD_FLUSH_INTERVAL", time.Second, "write usage (quota, last use) to the store every `DURATION`")
	fs.String(&cfg.GatewayConfig, "gateway-config", "KEYWARD_GATEWAY_CONFIG", "", "run the enforcing gateway with the routes in `FILE` (YAML; reloaded on SIGHUP)")
	fs.String(&cfg.RedisURL, "redis-url", "", "", "`URL` of Redis (redis://... or rediss://), for rate limits and quotas enforced across all nodes; "+
		"it may hold a password, which a flag shows to every user of the machine: prefer the variable (env KEYWARD_REDIS_URL or KEYWARD_REDIS_URL_FILE)")
	fs.String(&cfg.RedisFallback, "redis-fallback", "KEYWARD_REDIS_FALLBACK", "closed", "while Redis is unreachable: `MODE` closed (refuse limited tokens) or local (each node enforces limit/--nodes)")
	fs.Int(&cfg.Nodes, "nodes", "KEYWARD_NODES", 1, "the number `N` of nodes, by which --redis-fallback local divides each limit")
	fs.Duration(&cfg.StaleGrace, "stale-grace", "KEYWARD_STALE_GRACE", 5*time.Minute, "while the store is unreachable, cached tokens keep verifying for `DURATION` (at least 1s); then every verification fails closed")
	fs.Duration(&cfg.StoreWait, "store-wait", "KEYWARD_STORE_WAIT", time.Minute, "at start, wait up to `DURATION` for a PostgreSQL store that does not accept connections yet (it is starting, say), trying again meanwhile; 0 fails at once")
	fs.Duration(&cfg.ShutdownTimeout, "shutdown-timeout", "KEYWARD_SHUTDOWN_TIMEOUT", 30*time.Second, "on shutdown, let in-flight requests finish for up to `DURATION`; those still open then (long streams) are cut")
	fs.Bool(&cfg.Usage, "usage", "KEYWARD_USAGE", true, "count every verification for usage analytics (rollups by minute and hour, raw events)")
	fs.Int(&cfg.UsageSample, "usage-sample", "KEYWARD_USAGE_SAMPLE", usage.DefaultSampleEvery, "keep one successful verification in `N` as a raw usage event (1 keeps all, 0 none)")
	fs.Int(&cfg.UsageFailureEvents, "usage-failure-events", "KEYWARD_USAGE_FAILURE_EVENTS", 0, "keep every failed verification as a raw usage event (0), or at most `N` a minute of each token, route, outcome and status on each node (16 times N in all for those that name no token); the rest are only counted, in the rollups and in keyward_usage_events_skipped_total")
	fs.String(&cfg.UsageSpoolDir, "usage-spool-dir", "KEYWARD_USAGE_SPOOL_DIR", "", "keep the quota use, last use and rate windows that the store could not take (it is unreachable) in a file in `DIR`, written back at the next start, so that a restart meanwhile forgets none of it; default: the data dir on SQLite, none on PostgreSQL (give each node a directory that outlives it); off: in memory only")
	fs.Duration(&cfg.UsageFlushInterval, "usage-flush-interval", "KEYWARD_USAGE_FLUSH_INTERVAL", usage.DefaultFlushInterval, "write usage rollups and events to the store every `DURATION`")
	fs.Int(&cfg.UsageEventBuffer, "usage-event-buffer", "KEYWARD_USAGE_EVENT_BUFFER", usage.DefaultMaxEvents, "hold at most `N` raw usage events between writes (half of it full starts a write at once); beyond, they are dropped, counted in keyward_usage_events_dropped_total and logged")
	fs.Duration(&cfg.UsageMinuteRetention, "usage-minute-retention", "KEYWARD_USAGE_MINUTE_RETENTION", usage.DefaultMinuteRetention, "keep minute rollups for `DURATION` (0 keeps them forever)")
	fs.Duration(&cfg.UsageHourRetention, "usage-hour-retention", "KEYWARD_USAGE_HOUR_RETENTION", usage.DefaultHourRetention, "keep hour rollups for `DURATION` (0 keeps them forever)")
	fs.Duration(&cfg.UsageEventRetention, "usage-event-retention", "KEYWARD_USAGE_EVENT_RETENTION", usage.DefaultEventRetention, "keep raw usage events for `DURATION` (0 keeps them forever)")
	fs.Duration(&cfg.SessionIdle, "session-idle-timeout", "KEYWARD_SESSION_IDLE_TIMEOUT", time.Hour, "end a dashboard session unused for `DURATION`")
	fs.Duration(&cfg.SessionLifetime, "session-lifetime", "KEYWARD_SESSION_LIFETIME", 24*time.Hour, "end any dashboard session `DURATION` after sign-in")
	var maxBody int
	fs.Int(&maxBody, "max-body", "KEYWARD_MAX_BODY", 1<<20, "largest request body in `BYTES`")
	fs.Check(func() error {
		cfg.MaxBody = int64(maxBody)
		return nil
	})
	defineServerSecrets(fs, &cfg.storeConfig)
	fs.Env("KEYWARD_REDIS_URL", "redis://... for rate limits and quotas enforced across all nodes, as --redis-url (also _FILE; it may hold a password)")
	fs.Check(func() error {
		// --redis-url overrides KEYWARD_REDIS_URL (or its _FILE), as
		// flags override variables.
		if fs.Changed("redis-url") {
			fs.e.addSecret(cfg.RedisURL)
			return nil
		}
		u, err := fs.e.secretEnv("KEYWARD_REDIS_URL")
		if err != nil {
			return workOrUsage(err)
		}
		cfg.RedisURL = u
		return nil
	})
	// Last: it looks at what the checks above filled in.
	fs.Check(cfg.validate)
	return cfg
}

// defaultPublicURL is the public URL of a server listening on addr when
// none is given: localhost at addr's port (none written for the scheme's
// own; a service name's, such as "http", as its number), over https with
// TLS. An address without a fixed port (":0") keeps port 8080, the default
// address's.
func defaultPublicURL(addr string, tls bool) string {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	// The number as browsers write it: "08080" and "http" are ports
	// 8080 and 80 to net.Listen, and an origin that kept them as given
	// would be another one.
	port := "8080"
	if n, err := listenPort(addr); err == nil && n > 0 {
		port = strconv.Itoa(n)
	}
	if scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		// The origin browsers give, which passkeys compare as text.
		return scheme + "://localhost"
	}
	return scheme + "://localhost:" + port
}

// defineStoreFlags defines --data-dir and --database-url, which every
// command that opens the store takes.
func defineStoreFlags(fs *flagSet, c *storeConfig) {
	fs.String(&c.DataDir, "data-dir", "KEYWARD_DATA_DIR", "./keyward-data", "`DIR` of the embedded SQLite store")
	fs.String(&c.DatabaseURL, "database-url", "KEYWARD_DATABASE_URL", "", "`URL` of a PostgreSQL store (postgres://...), instead of --data-dir")
	fs.Check(func() error {
		// Given empty, as --database-url "$DB_URL" with DB_URL unset: a
		// store of its own in the working directory would be made unseen.
		if fs.Changed("database-url") && strings.TrimSpace(c.DatabaseURL) == "" {
			return errors.New("--database-url is empty: give a PostgreSQL URL, or leave the flag out for the embedded store (--data-dir)")
		}
		if fs.Changed("data-dir") && strings.TrimSpace(c.DataDir) == "" {
			return errors.New("--data-dir is empty: give a directory, or leave the flag out for ./keyward-data")
		}
		// --data-dir given while a database URL is too (flag or
		// KEYWARD_DATABASE_URL): the URL would win unseen. (A
		// KEYWARD_DATA_DIR in the environment with --database-url is the
		// flag overriding it, as flags do.)
		if fs.Changed("data-dir") && (fs.Changed("database-url") || fs.envValue("KEYWARD_DATABASE_URL") != "") {
			return errors.New("give --data-dir or --database-url (KEYWARD_DATABASE_URL), not both: they name two different stores")
		}
		// Both in the environment, neither flag given: the same, and no
		// flag says which one is meant.
		if !fs.Changed("data-dir") && !fs.Changed("database-url") && fs.envValue("KEYWARD_DATA_DIR") != "" && fs.envValue("KEYWARD_DATABASE_URL") != "" {
			return errors.New("KEYWARD_DATA_DIR and KEYWARD_DATABASE_URL are both set: they name two different stores; unset one, or give --data-dir or --database-url")
		}
		// The URL may hold a password: like the other secrets, it may come
		// from a file, and then as if from KEYWARD_DATABASE_URL.
		// --database-url overrides it, as flags override variables.
		file := fs.envValue("KEYWARD_DATABASE_URL_FILE")
		if file == "" || fs.Changed("database-url") {
			return nil
		}
		switch {
		case fs.envValue("KEYWARD_DATABASE_URL") != "":
			return errors.New("KEYWARD_DATABASE_URL_FILE and KEYWARD_DATABASE_URL are both set: give the URL once")
		case fs.Changed("data-dir"):
			return errors.New("give --data-dir or a database URL (KEYWARD_DATABASE_URL_FILE), not both: they name two different stores")
		case fs.envValue("KEYWARD_DATA_DIR") != "":
			return errors.New("KEYWARD_DATA_DIR and KEYWARD_DATABASE_URL_FILE are both set: they name two different stores; unset one")
		}
		u, err := fs.e.secretEnv("KEYWARD_DATABASE_URL")
		if err != nil {
			// A file that cannot be read, or is empty: exit 1, as for
			// KEYWARD_SECRET_FILE and KEYWARD_REDIS_URL_FILE.
			return &workError{err}
		}
		c.DatabaseURL = u
		return nil
	})
	fs.Check(func() error {
		// Whichever way it came: a URL of another kind is a usage error
		// before anything is read or made, not a failure to open.
		if c.DatabaseURL != "" {
			return checkDatabaseURL(c.DatabaseURL)
		}
		return nil
	})
	fs.Env("KEYWARD_DATABASE_URL_FILE", "file holding the database URL (it may hold a password), instead of KEYWARD_DATABASE_URL")
}

// defineServerSecrets documents the server secret variables and has fs
// read them into c with loadSecrets when it parses, after the store
// flags' checks (define those first). A secret that is too short, or none
// with a database URL, is a usage error found before anything is done, as
// is a variable set with its _FILE; a _FILE that cannot be read exits 1.
func defineServerSecrets(fs *flagSet, c *storeConfig) {
	addServerSecretEnvHelp(fs)
	fs.Check(func() error {
		if err := loadSecrets(fs.e, c); err != nil {
			return workOrUsage(err)
		}
		switch {
		case c.Secret != "":
			return secretsError(c.Secret, *c)
		case c.DatabaseURL != "":
			return errSecretRequired
		}
		// The data dir's secret is to be used, or made: long enough.
		// The previous ones are checked against a stand-in for it.
		return secretsError(strings.Repeat("-", secret.MinServerSecretLen), *c)
	})
}

// addServerSecretEnvHelp documents the server secret variables that
// loadSecrets reads.
func addServerSecretEnvHelp(fs *flagSet) {
	fs.Env("KEYWARD_SECRET", "server secret (at least 32 bytes; white space at its ends ignored) that keys token digests and the audit chain; on SQLite generated into the data dir when unset")
	fs.Env("KEYWARD_SECRET_FILE", "file holding the server secret, instead of KEYWARD_SECRET")
	fs.Env("KEYWARD_SECRET_PREVIOUS", "earlier server secrets, comma-separated or one a line (one that holds a comma or line break: alone), while rotating it (also _FILE)")
}

// loadSecrets fills the secrets of c from KEYWARD_SECRET and
// KEYWARD_SECRET_PREVIOUS or their _FILE variants; see env.secretEnv.
//
// The current secret is used without white space at its ends, as a _FILE's
// always was; when KEYWARD_SECRET had some, the value as given is a previous
// secret too, so that what it made still verifies (and moves to the trimmed
// key on use). For the previous secrets, see previousSecrets.
func loadSecrets(e *env, c *storeConfig) error {
	cur, err := e.secretEnv("KEYWARD_SECRET")
	if err != nil {
		return err
	}
	c.Secret = strings.TrimSpace(cur)
	if f := e.getenv("KEYWARD_SECRET_FILE"); f != "" {
		c.secretVar = "KEYWARD_SECRET_FILE (" + f + ")"
	}
	if f := e.getenv("KEYWARD_SECRET_PREVIOUS_FILE"); f != "" {
		c.previousVar = "KEYWARD_SECRET_PREVIOUS_FILE (" + f + ")"
	}
	if len(c.Secret) < secret.MinServerSecretLen {
		c.Secret = cur // too short trimmed: as given, as it always was
	}
	e.addSecret(c.Secret)
	prev, raw, err := e.secretEnvRaw("KEYWARD_SECRET_PREVIOUS")
	if err != nil {
		return err
	}
	var seen []string // every piece, for redaction
	c.SecretPrevious, seen = previousSecrets(prev, raw)
	if cur != c.Secret && len(cur) >= secret.MinServerSecretLen {
		c.SecretPrevious = append(c.SecretPrevious, cur)
	}
	for _, s := range seen {
		e.addSecret(s)
	}
	return nil
}

// previousSecrets returns the previous server secrets that KEYWARD_SECRET_
// PREVIOUS names, trimmed v and as given raw: comma-separated or one a line,
// each trimmed, those shorter than a secret left out. A value that holds a
// comma or line break is also tried whole (a secret that holds one,
// openssl's wrapped base64 say, is rotated away by giving it alone), and a
// value as given with white space at its ends is tried as it is (a secret
// used so before this release, the newline of its file included). pieces
// are all the parts, short ones too, for redaction.
func previousSecrets(v, raw string) (secrets, pieces []string) {
	add := func(s string) {
		if len(s) >= secret.MinServerSecretLen && !slices.Contains(secrets, s) {
			secrets = append(secrets, s)
		}
	}
	t := strings.TrimSpace(v)
	for s := range strings.FieldsFuncSeq(t, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if s = strings.TrimSpace(s); s != "" {
			pieces = append(pieces, s)
			add(s)
		}
	}
	for _, whole := range []string{t, v, raw} {
		if whole != "" && (whole != t || strings.ContainsAny(t, ",\r\n")) {
			add(whole)
			pieces = append(pieces, whole)
		}
	}
	if len(secrets) == 0 && len(pieces) > 0 {
		// Nothing long enough: the keyring says which is too short.
		secrets = pieces[:1]
	}
	return secrets, pieces
}

// cmdServe runs the server until interrupted (SIGINT, SIGTERM), then shuts
// down gracefully.
func cmdServe(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "serve", help{
		summary: "Run keyward in one process: the management API, the verify API, the OAuth\n" +
			"endpoints, the operational endpoints (/healthz, /readyz, /metrics,\n" +
			"/openapi.json) and the dashboard (every other path, from GET /) on --addr,\n" +
			"and the gateway on its own listener when --gateway-config is given. On an\n" +
			"empty store it creates the schema and the default workspace; it prints no\n" +
			"secret (run 'keyward init' for the first management token). Any number of\n" +
			"nodes may serve one PostgreSQL store.",
		examples: []string{
			"keyward serve",
			"keyward serve --addr 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem --public-url https://keyward.example.com",
			"KEYWARD_SECRET_FILE=/run/secrets/keyward keyward serve --log-format json",
		},
	})
	cfg := defineServeFlags(fs)
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	out := newLogWriter(e.stderr, 100*time.Millisecond)
	defer out.Close()
	log := newLogger(out, cfg.LogFormat, cfg.LogLevel)
	srv, err := openServer(ctx, *cfg, log)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	return srv.run(ctx)
}
