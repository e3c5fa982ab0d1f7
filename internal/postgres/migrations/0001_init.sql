-- 0001_init creates the core schema, the same as the SQLite store's: workspaces,
-- tokens and their secrets, the changes feed, quota usage, instance metadata
-- and the audit log.
--
-- Times are timestamptz (microseconds, the precision keyward promises); NULL
-- where the Go field is a pointer. Ids are COLLATE "C", so that they order
-- byte by byte as on SQLite whatever the database's collation, and their
-- indexes serve the cursor scans (id > $1). JSON that clients write
-- (token metadata, audit changes) is json, kept byte for byte: jsonb would
-- reorder keys and refuse "\u0000", which SQLite stores. rate_limit and quota,
-- which the store itself marshals, are jsonb.

CREATE TABLE workspaces (
	id           text COLLATE "C" NOT NULL,
	name         text             NOT NULL,
	token_prefix text             NOT NULL,
	created_at   timestamptz      NOT NULL,
	CONSTRAINT workspaces_pkey PRIMARY KEY (id),
	CONSTRAINT workspaces_name_key UNIQUE (name)
);

CREATE TABLE tokens (
	id             text COLLATE "C" NOT NULL,
	workspace_id   text COLLATE "C" NOT NULL REFERENCES workspaces (id),
	name           text             NOT NULL,
	-- name_folded is name lower-cased by the store with Go's Unicode rules
	-- (strings.ToLower), as SQLite's name filter folds it: lower() would
	-- depend on the database's LC_CTYPE (ASCII only under "C").
	name_folded    text             NOT NULL,
	hint           text             NOT NULL DEFAULT '',
	scopes         text[]           NOT NULL DEFAULT '{}',
	expires_at     timestamptz,
	allowed_cidrs  text[]           NOT NULL DEFAULT '{}',
	rate_limit     jsonb,
	quota          jsonb,
	subject        text             NOT NULL DEFAULT '',
	metadata       json,
	revoked        boolean          NOT NULL DEFAULT false,
	revoked_at     timestamptz,
	revoke_reason  text             NOT NULL DEFAULT '',
	suspended      boolean          NOT NULL DEFAULT false,
	suspended_at   timestamptz,
	suspend_reason text             NOT NULL DEFAULT '',
	created_by     text             NOT NULL DEFAULT '',
	created_at     timestamptz      NOT NULL,
	updated_at     timestamptz      NOT NULL,
	rotated_at     timestamptz,
	last_used_at   timestamptz,
	last_used_ip   text             NOT NULL DEFAULT '',
	CONSTRAINT tokens_pkey PRIMARY KEY (id)
);

CREATE INDEX tokens_workspace_id ON tokens (workspace_id, id);
CREATE INDEX tokens_workspace_subject ON tokens (workspace_id, subject, id);

-- A token has one current secret (expires_at NULL) and the secrets it
-- replaced, each valid until the end of its grace period.
CREATE TABLE token_secrets (
	digest     bytea            NOT NULL,
	key_id     text             NOT NULL,
	token_id   text COLLATE "C" NOT NULL REFERENCES tokens (id),
	created_at timestamptz      NOT NULL,
	expires_at timestamptz,
	CONSTRAINT token_secrets_pkey PRIMARY KEY (digest)
);

CREATE INDEX token_secrets_token_id ON token_secrets (token_id);
CREATE UNIQUE INDEX token_secrets_current ON token_secrets (token_id) WHERE expires_at IS NULL;

-- A sequence never hands a number out twice, even after pruning, so that a
-- node's cursor into the feed stays meaningful. The store inserts into
-- changes only under an advisory lock held until commit, so that numbers
-- become visible in order (see lockLogs in postgres.go).
CREATE TABLE changes (
	seq      bigserial        NOT NULL,
	token_id text COLLATE "C" NOT NULL,
	at       timestamptz      NOT NULL,
	CONSTRAINT changes_pkey PRIMARY KEY (seq)
);

CREATE INDEX changes_at ON changes (at);

-- Every change wakes the listeners of the channel keyward_changes at
-- commit, with the change's sequence number as payload, so that caches on
-- other nodes need not wait for their next poll. A trigger, so that no
-- path that adds a change can forget it.
CREATE FUNCTION keyward_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('keyward_changes', NEW.seq::text);
	RETURN NULL;
END
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
	FOR EACH ROW EXECUTE FUNCTION keyward_notify_change();

CREATE TABLE quota_usage (
	token_id text COLLATE "C" NOT NULL REFERENCES tokens (id),
	period   text             NOT NULL,
	used     bigint           NOT NULL DEFAULT 0,
	CONSTRAINT quota_usage_pkey PRIMARY KEY (token_id, period)
);

CREATE TABLE meta (
	key   text NOT NULL,
	value text NOT NULL,
	CONSTRAINT meta_pkey PRIMARY KEY (key)
);

-- seq records the commit order of events, which ids (ordered only to the
-- millisecond) do not: events, like changes, are inserted under the lock
-- that orders commits. A later migration chains events along it.
CREATE TABLE audit_events (
	seq          bigserial        NOT NULL,
	id           text COLLATE "C" NOT NULL,
	workspace_id text COLLATE "C" NOT NULL,
	time         timestamptz      NOT NULL,
	action       text             NOT NULL,
	actor_type   text             NOT NULL,
	actor_id     text             NOT NULL DEFAULT '',
	target       text             NOT NULL DEFAULT '',
	ip           text             NOT NULL DEFAULT '',
	user_agent   text             NOT NULL DEFAULT '',
	request_id   text             NOT NULL DEFAULT '',
	changes      json,
	CONSTRAINT audit_events_pkey PRIMARY KEY (seq),
	CONSTRAINT audit_events_id_key UNIQUE (id)
);

CREATE INDEX audit_events_workspace_id ON audit_events (workspace_id, id);
