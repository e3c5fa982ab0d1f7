-- 0011_session_epoch ties sessions to the credentials their sign-in
-- checked. users.credential_epoch counts the endings of all a user's
-- sessions (but one), which every change of its credentials and "sign out
-- everywhere" is followed by: DeleteSessions bumps it in the step that
-- ends them, and moves the one kept to the new epoch. sessions.epoch is
-- the epoch the sign-in read with the credentials it checked:
-- CreateSession refuses a session whose epoch is no longer the user's, so
-- that a sign-in under way cannot make one after the ending. Existing
-- users and sessions start at 0, so none ends by the migration.
ALTER TABLE users ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
