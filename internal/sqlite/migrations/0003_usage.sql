-- 0003_usage adds the usage rollups and the raw usage events (PRODUCT §6).
--
-- Rollup rows are added to, never rewritten: every node adds its counts to
-- the same buckets. bucket is the bucket's start in unix nanoseconds, like
-- every time here. token_id is '' for credentials that identified no
-- token. No foreign keys: rollups outlive nothing they point to, and
-- flushes must not fail on a token that another node just created.

CREATE TABLE usage_minute (
	workspace_id TEXT    NOT NULL,
	token_id     TEXT    NOT NULL,
	bucket       INTEGER NOT NULL,
	route        TEXT    NOT NULL,
	outcome      TEXT    NOT NULL,
	status       INTEGER NOT NULL,
	count        INTEGER NOT NULL,
	PRIMARY KEY (workspace_id, token_id, bucket, route, outcome, status)
) WITHOUT ROWID;

CREATE INDEX usage_minute_bucket ON usage_minute (bucket);
CREATE INDEX usage_minute_workspace_bucket ON usage_minute (workspace_id, bucket);

CREATE TABLE usage_hour (
	workspace_id TEXT    NOT NULL,
	token_id     TEXT    NOT NULL,
	bucket       INTEGER NOT NULL,
	route        TEXT    NOT NULL,
	outcome      TEXT    NOT NULL,
	status       INTEGER NOT NULL,
	count        INTEGER NOT NULL,
	PRIMARY KEY (workspace_id, token_id, bucket, route, outcome, status)
) WITHOUT ROWID;

CREATE INDEX usage_hour_bucket ON usage_hour (bucket);
CREATE INDEX usage_hour_workspace_bucket ON usage_hour (workspace_id, bucket);

CREATE TABLE usage_events (
	id           TEXT    PRIMARY KEY,
	workspace_id TEXT    NOT NULL,
	token_id     TEXT    NOT NULL,
	time         INTEGER NOT NULL,
	ip           TEXT    NOT NULL,
	method       TEXT    NOT NULL,
	route        TEXT    NOT NULL,
	path         TEXT    NOT NULL,
	outcome      TEXT    NOT NULL,
	status       INTEGER NOT NULL,
	latency_ns   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX usage_events_workspace ON usage_events (workspace_id, id);
CREATE INDEX usage_events_token ON usage_events (workspace_id, token_id, id);
CREATE INDEX usage_events_time ON usage_events (time);
