-- 0005_webauthn_challenges keeps each passkey ceremony's challenge, by
-- digest, until it is used or expires, as on SQLite, so that a signed
-- assertion cannot be replayed: the sealed ceremony state the browser
-- carries back is only good while its challenge is here, and finishing
-- deletes it.
CREATE TABLE webauthn_challenges (
	digest     bytea       NOT NULL PRIMARY KEY,
	expires_at timestamptz NOT NULL
);

CREATE INDEX webauthn_challenges_expires_at ON webauthn_challenges (expires_at);
