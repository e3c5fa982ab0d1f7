-- 0004_accounts adds dashboard accounts: users, their memberships of
-- workspaces, sessions, recovery codes and workspace settings. (0003 is
-- another change's; migrations apply in name order, so a gap is fine.)
--
-- No secret is stored in clear: passwords as argon2id hashes, session ids
-- and recovery codes as digests, TOTP secrets sealed under a key derived
-- from the server secret.

CREATE TABLE users (
	id             TEXT    PRIMARY KEY,
	email          TEXT    NOT NULL UNIQUE,
	password_hash  TEXT    NOT NULL,
	totp_secret    BLOB,
	totp_last_step INTEGER NOT NULL DEFAULT 0,
	created_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL
);

CREATE TABLE members (
	workspace_id TEXT    NOT NULL REFERENCES workspaces (id),
	user_id      TEXT    NOT NULL REFERENCES users (id),
	role         TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
	created_at   INTEGER NOT NULL,
	PRIMARY KEY (workspace_id, user_id)
) WITHOUT ROWID;

CREATE INDEX members_user_id ON members (user_id);

CREATE TABLE sessions (
	id           TEXT    PRIMARY KEY,
	digest       BLOB    NOT NULL UNIQUE,
	user_id      TEXT    NOT NULL REFERENCES users (id),
	workspace_id TEXT    NOT NULL,
	verified     INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
	reauth_at    INTEGER NOT NULL DEFAULT 0,
	created_at   INTEGER NOT NULL,
	last_seen_at INTEGER NOT NULL,
	ip           TEXT    NOT NULL DEFAULT '',
	user_agent   TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE recovery_codes (
	user_id TEXT NOT NULL REFERENCES users (id),
	digest  BLOB NOT NULL,
	PRIMARY KEY (user_id, digest)
) WITHOUT ROWID;

CREATE TABLE workspace_settings (
	workspace_id       TEXT    PRIMARY KEY REFERENCES workspaces (id),
	mfa_required       INTEGER NOT NULL DEFAULT 0 CHECK (mfa_required IN (0, 1)),
	max_token_lifetime INTEGER NOT NULL DEFAULT 0,
	expiry_required    INTEGER NOT NULL DEFAULT 0 CHECK (expiry_required IN (0, 1)),
	scopes             TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
	updated_at         INTEGER NOT NULL
) WITHOUT ROWID;

-- An invitation is a link with a single-use code; only the code's digest is
-- kept. used_at is set when it is accepted.
CREATE TABLE invites (
	id           TEXT    PRIMARY KEY,
	digest       BLOB    NOT NULL UNIQUE,
	workspace_id TEXT    NOT NULL REFERENCES workspaces (id),
	email        TEXT    NOT NULL,
	role         TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
	created_by   TEXT    NOT NULL,
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL,
	used_at      INTEGER
);

CREATE INDEX invites_workspace_id ON invites (workspace_id);

-- A passkey is a WebAuthn credential: its public key and counters, as
-- go-webauthn's Credential in JSON. Nothing in it is secret.
CREATE TABLE passkeys (
	id            TEXT    PRIMARY KEY,
	user_id       TEXT    NOT NULL REFERENCES users (id),
	credential_id BLOB    NOT NULL UNIQUE,
	credential    TEXT    NOT NULL CHECK (json_valid(credential)),
	name          TEXT    NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	last_used_at  INTEGER
);

CREATE INDEX passkeys_user_id ON passkeys (user_id);
