-- 0004_accounts adds dashboard accounts, as on SQLite: users, their
-- memberships of workspaces, sessions, recovery codes and workspace
-- settings. (0003 is another change's; migrations apply in name order, so
-- a gap is fine.)
--
-- No secret is stored in clear: passwords as argon2id hashes, session ids
-- and recovery codes as digests, TOTP secrets sealed under a key derived
-- from the server secret.

CREATE TABLE users (
	id             text COLLATE "C" NOT NULL PRIMARY KEY,
	email          text             NOT NULL UNIQUE,
	password_hash  text             NOT NULL,
	totp_secret    bytea,
	totp_last_step bigint           NOT NULL DEFAULT 0,
	created_at     timestamptz      NOT NULL,
	updated_at     timestamptz      NOT NULL
);

CREATE TABLE members (
	workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (id),
	user_id      text COLLATE "C" NOT NULL REFERENCES users (id),
	role         text             NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
	created_at   timestamptz      NOT NULL,
	PRIMARY KEY (workspace_id, user_id)
);

CREATE INDEX members_user_id ON members (user_id);

CREATE TABLE sessions (
	id           text COLLATE "C" NOT NULL PRIMARY KEY,
	digest       bytea            NOT NULL UNIQUE,
	user_id      text COLLATE "C" NOT NULL REFERENCES users (id),
	workspace_id text COLLATE "C" NOT NULL,
	verified     boolean          NOT NULL DEFAULT false,
	reauth_at    timestamptz,
	created_at   timestamptz      NOT NULL,
	last_seen_at timestamptz      NOT NULL,
	ip           text             NOT NULL DEFAULT '',
	user_agent   text             NOT NULL DEFAULT ''
);

CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE recovery_codes (
	user_id text COLLATE "C" NOT NULL REFERENCES users (id),
	digest  bytea            NOT NULL,
	PRIMARY KEY (user_id, digest)
);

CREATE TABLE workspace_settings (
	workspace_id       text COLLATE "C" NOT NULL PRIMARY KEY REFERENCES workspaces (id),
	mfa_required       boolean          NOT NULL DEFAULT false,
	max_token_lifetime bigint           NOT NULL DEFAULT 0,
	expiry_required    boolean          NOT NULL DEFAULT false,
	scopes             jsonb            NOT NULL DEFAULT '[]',
	updated_at         timestamptz      NOT NULL
);

-- An invitation is a link with a single-use code; only the code's digest is
-- kept. used_at is set when it is accepted.
CREATE TABLE invites (
	id           text COLLATE "C" NOT NULL PRIMARY KEY,
	digest       bytea            NOT NULL UNIQUE,
	workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (id),
	email        text             NOT NULL,
	role         text             NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
	created_by   text             NOT NULL,
	created_at   timestamptz      NOT NULL,
	expires_at   timestamptz      NOT NULL,
	used_at      timestamptz
);

CREATE INDEX invites_workspace_id ON invites (workspace_id);

-- A passkey is a WebAuthn credential: its public key and counters, as
-- go-webauthn's Credential in JSON. Nothing in it is secret.
CREATE TABLE passkeys (
	id            text COLLATE "C" NOT NULL PRIMARY KEY,
	user_id       text COLLATE "C" NOT NULL REFERENCES users (id),
	credential_id bytea            NOT NULL UNIQUE,
	credential    json             NOT NULL,
	name          text             NOT NULL DEFAULT '',
	created_at    timestamptz      NOT NULL,
	last_used_at  timestamptz
);

CREATE INDEX passkeys_user_id ON passkeys (user_id);
