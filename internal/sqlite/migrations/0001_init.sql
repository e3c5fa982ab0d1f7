-- 0001_init creates the core schema: workspaces, tokens and their secrets,
-- the changes feed, quota usage, instance metadata and the audit log.
--
-- Times are INTEGER unix nanoseconds in UTC; NULL where the Go field is a
-- pointer. JSON values are TEXT checked with json_valid.

CREATE TABLE workspaces (
	id           TEXT    PRIMARY KEY,
	name         TEXT    NOT NULL UNIQUE,
	token_prefix TEXT    NOT NULL,
	created_at   INTEGER NOT NULL
);

CREATE TABLE tokens (
	id             TEXT    PRIMARY KEY,
	workspace_id   TEXT    NOT NULL REFERENCES workspaces (id),
	name           TEXT    NOT NULL,
	hint           TEXT    NOT NULL DEFAULT '',
	scopes         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
	expires_at     INTEGER,
	allowed_cidrs  TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(allowed_cidrs)),
	rate_limit     TEXT    CHECK (rate_limit IS NULL OR json_valid(rate_limit)),
	quota          TEXT    CHECK (quota IS NULL OR json_valid(quota)),
	subject        TEXT    NOT NULL DEFAULT '',
	metadata       TEXT    CHECK (metadata IS NULL OR json_valid(metadata)),
	revoked        INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
	revoked_at     INTEGER,
	revoke_reason  TEXT    NOT NULL DEFAULT '',
	suspended      INTEGER NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
	suspended_at   INTEGER,
	suspend_reason TEXT    NOT NULL DEFAULT '',
	created_by     TEXT    NOT NULL DEFAULT '',
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	rotated_at     INTEGER,
	last_used_at   INTEGER,
	last_used_ip   TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX tokens_workspace_id ON tokens (workspace_id, id);
CREATE INDEX tokens_workspace_subject ON tokens (workspace_id, subject, id);

-- A token has one current secret (expires_at NULL) and the secrets it
-- replaced, each valid until the end of its grace period.
CREATE TABLE token_secrets (
	digest     BLOB    PRIMARY KEY,
	key_id     TEXT    NOT NULL,
	token_id   TEXT    NOT NULL REFERENCES tokens (id),
	created_at INTEGER NOT NULL,
	expires_at INTEGER
);

CREATE INDEX token_secrets_token_id ON token_secrets (token_id);
CREATE UNIQUE INDEX token_secrets_current ON token_secrets (token_id) WHERE expires_at IS NULL;

-- AUTOINCREMENT: a sequence number is never reused, even after pruning, so
-- that a node's cursor into the feed stays meaningful.
CREATE TABLE changes (
	seq      INTEGER PRIMARY KEY AUTOINCREMENT,
	token_id TEXT    NOT NULL,
	at       INTEGER NOT NULL
);

CREATE INDEX changes_at ON changes (at);

CREATE TABLE quota_usage (
	token_id TEXT    NOT NULL REFERENCES tokens (id),
	period   TEXT    NOT NULL,
	used     INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (token_id, period)
) WITHOUT ROWID;

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;

-- seq records the commit order of events, which ids (ordered only to the
-- millisecond) do not; a later migration chains events along it.
CREATE TABLE audit_events (
	seq          INTEGER PRIMARY KEY AUTOINCREMENT,
	id           TEXT    NOT NULL UNIQUE,
	workspace_id TEXT    NOT NULL,
	time         INTEGER NOT NULL,
	action       TEXT    NOT NULL,
	actor_type   TEXT    NOT NULL,
	actor_id     TEXT    NOT NULL DEFAULT '',
	target       TEXT    NOT NULL DEFAULT '',
	ip           TEXT    NOT NULL DEFAULT '',
	user_agent   TEXT    NOT NULL DEFAULT '',
	request_id   TEXT    NOT NULL DEFAULT '',
	changes      TEXT    CHECK (changes IS NULL OR json_valid(changes))
);

CREATE INDEX audit_events_workspace_id ON audit_events (workspace_id, id);
