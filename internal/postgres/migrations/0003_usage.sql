-- 0003_usage adds the usage rollups and the raw usage events (PRODUCT §6),
-- the same as the SQLite store's.
--
-- Rollup rows are added to, never rewritten: every node adds its counts to
-- the same buckets. token_id is '' for credentials that identified no
-- token. No foreign keys: rollups outlive nothing they point to, and
-- flushes must not fail on a token that another node just created.

CREATE TABLE usage_minute (
	workspace_id text COLLATE "C" NOT NULL,
	token_id     text COLLATE "C" NOT NULL,
	bucket       timestamptz      NOT NULL,
	route        text             NOT NULL,
	outcome      text             NOT NULL,
	status       integer          NOT NULL,
	count        bigint           NOT NULL,
	CONSTRAINT usage_minute_pkey PRIMARY KEY (workspace_id, token_id, bucket, route, outcome, status)
);

CREATE INDEX usage_minute_bucket ON usage_minute (bucket);
CREATE INDEX usage_minute_workspace_bucket ON usage_minute (workspace_id, bucket);

CREATE TABLE usage_hour (
	workspace_id text COLLATE "C" NOT NULL,
	token_id     text COLLATE "C" NOT NULL,
	bucket       timestamptz      NOT NULL,
	route        text             NOT NULL,
	outcome      text             NOT NULL,
	status       integer          NOT NULL,
	count        bigint           NOT NULL,
	CONSTRAINT usage_hour_pkey PRIMARY KEY (workspace_id, token_id, bucket, route, outcome, status)
);

CREATE INDEX usage_hour_bucket ON usage_hour (bucket);
CREATE INDEX usage_hour_workspace_bucket ON usage_hour (workspace_id, bucket);

CREATE TABLE usage_events (
	id           text COLLATE "C" NOT NULL,
	workspace_id text COLLATE "C" NOT NULL,
	token_id     text COLLATE "C" NOT NULL,
	time         timestamptz      NOT NULL,
	ip           text             NOT NULL,
	method       text             NOT NULL,
	route        text             NOT NULL,
	path         text             NOT NULL,
	outcome      text             NOT NULL,
	status       integer          NOT NULL,
	latency_ns   bigint           NOT NULL,
	CONSTRAINT usage_events_pkey PRIMARY KEY (id)
);

CREATE INDEX usage_events_workspace ON usage_events (workspace_id, id);
CREATE INDEX usage_events_token ON usage_events (workspace_id, token_id, id);
CREATE INDEX usage_events_time ON usage_events (time);
