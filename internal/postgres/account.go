package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

var _ keyward.AccountStore = (*DB)(nil)

// accountEvents takes lockLogs and appends events; it is the last step of
// an account write that has events. One without a workspace is appended
// to each workspace its actor is a member of (see keyward.AccountStore),
// read after the lock: a removal from a workspace appends its own event
// under that lock, so each statement after it sees the removal committed
// or the removal waits, and the copy cannot follow the removal in the
// workspace's chain.
func (db *DB) accountEvents(ctx context.Context, tx pgx.Tx, events []*keyward.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	if err := lockLogs(ctx, tx); err != nil {
		return err
	}
	for _, ev := range events {
		if ev == nil {
			continue
		}
		if ev.WorkspaceID != "" {
			if err := db.insertEvent(ctx, tx, ev, ""); err != nil {
				return err
			}
			continue
		}
		if ev.Actor.Type != keyward.ActorMember || ev.Actor.ID == "" {
			return errors.New("an account audit event without a workspace needs a member as its actor")
		}
		rows, err := tx.Query(ctx, `SELECT workspace_id FROM members WHERE user_id = $1 ORDER BY workspace_id`, safeText(ev.Actor.ID))
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for i, id := range ids {
			e := *ev
			if i > 0 {
				e.ID = "" // a new one
			}
			if err := db.insertEvent(ctx, tx, &e, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// nullTime returns nil (SQL NULL) for the zero time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

type queryRower interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// HasOwner reports whether any workspace has an owner.
func (db *DB) HasOwner(ctx context.Context) (bool, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var ok bool
	err := db.rerun.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM members WHERE role = 'owner')`).Scan(&ok)
	return ok, wrap("has owner", err)
}

// CreateUser inserts u, its memberships and the events, all or nothing.
func (db *DB) CreateUser(ctx context.Context, u *keyward.User, members []*keyward.Member, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM users WHERE email = $1 OR id = $2`, safeText(u.Email), safeText(u.ID)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
		}
		_, err := tx.Exec(ctx, `INSERT INTO users (id, email, password_hash, totp_secret, totp_last_step, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, safeText(u.ID), safeText(u.Email), u.PasswordHash, nullBytes(u.TOTPSecret), u.TOTPLastStep, u.CreatedAt, u.UpdatedAt)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
		}
		if err != nil {
			return err
		}
		for _, m := range members {
			mm := *m
			mm.UserID = u.ID
			if err := putMember(ctx, tx, &mm); err != nil {
				return err
			}
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("create user", err)
}

const userColumns = `id, email, password_hash, totp_secret, totp_last_step, credential_epoch, created_at, updated_at`

func findUser(ctx context.Context, q queryRower, col, v string, forUpdate bool) (*keyward.User, error) {
	notFound := keyward.Errorf(keyward.ENOTFOUND, "user not found")
	if !storable(v) {
		return nil, notFound
	}
	lock := ""
	if forUpdate {
		lock = " FOR UPDATE"
	}
	var u keyward.User
	err := q.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE `+col+` = $1`+lock, v).
		Scan(&u.ID, &u.Email, &u.PasswordHash, &u.TOTPSecret, &u.TOTPLastStep, &u.CredentialEpoch, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if len(u.TOTPSecret) == 0 {
		u.TOTPSecret = nil
	}
	return &u, nil
}

// FindUser returns the user with the given id, or ENOTFOUND.
func (db *DB) FindUser(ctx context.Context, id string) (*keyward.User, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	u, err := findUser(ctx, db.rerun, "id", id, false)
	return u, wrap("find user", err)
}

// FindUserByEmail returns the user with the given email, or ENOTFOUND.
func (db *DB) FindUserByEmail(ctx context.Context, email string) (*keyward.User, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	u, err := findUser(ctx, db.rerun, "email", email, false)
	return u, wrap("find user", err)
}

// UpdateUser reads the user (locking its row), lets fn change a copy and
// writes it with the events fn returns.
func (db *DB) UpdateUser(ctx context.Context, id string, fn func(u *keyward.User) ([]*keyward.AuditEvent, error)) (*keyward.User, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var out *keyward.User
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		u, err := findUser(ctx, tx, "id", id, true)
		if err != nil {
			return err
		}
		events, err := fn(u)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE users SET email = $1, password_hash = $2, totp_secret = $3, totp_last_step = $4, updated_at = $5
			WHERE id = $6`, safeText(u.Email), u.PasswordHash, nullBytes(u.TOTPSecret), u.TOTPLastStep, u.UpdatedAt, id)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
		}
		if err != nil {
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, "id", id, false)
		return err
	})
	return out, wrap("update user", err)
}

// DisableTOTP clears the user's TOTP secret and recovery codes, unless
// the app is off already, or keepFactor holds and the user has no
// passkey (ECONFLICT). The user's row is locked first, as DeletePasskey
// locks it, so that the passkeys it counts cannot go meanwhile.
func (db *DB) DisableTOTP(ctx context.Context, userID string, keepFactor bool, at time.Time, events ...*keyward.AuditEvent) (*keyward.User, bool, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var out *keyward.User
	var changed bool
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		u, err := findUser(ctx, tx, "id", userID, true)
		if err != nil || !u.HasMFA() {
			out = u
			return err
		}
		if keepFactor {
			var keys bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)`, userID).Scan(&keys); err != nil {
				return err
			}
			if !keys {
				return keyward.Errorf(keyward.ECONFLICT, "the last second factor cannot be removed")
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET totp_secret = NULL, updated_at = $1 WHERE id = $2`, at, userID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, "id", userID, false)
		changed = err == nil
		return err
	})
	if err != nil {
		return nil, false, wrap("disable totp", err)
	}
	return out, changed, nil
}

// EnableTOTP writes the TOTP secret and the recovery codes at once, or
// returns ECONFLICT when the app is on already. The user's row is locked
// first, as DisableTOTP locks it.
func (db *DB) EnableTOTP(ctx context.Context, userID string, secret []byte, step int64, digests [][]byte, at time.Time, events ...*keyward.AuditEvent) (*keyward.User, error) {
	if len(secret) == 0 {
		return nil, errors.New("postgres: enable totp: no secret")
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	var out *keyward.User
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		u, err := findUser(ctx, tx, "id", userID, true)
		if err != nil {
			return err
		}
		if u.HasMFA() {
			return keyward.Errorf(keyward.ECONFLICT, "an authenticator app is already set up")
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET totp_secret = $1, totp_last_step = $2, updated_at = $3 WHERE id = $4`,
			secret, step, at, userID); err != nil {
			return err
		}
		if err := putRecoveryCodes(ctx, tx, userID, digests); err != nil {
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, "id", userID, false)
		return err
	})
	return out, wrap("enable totp", err)
}

// putRecoveryCodes replaces the user's recovery codes.
func putRecoveryCodes(ctx context.Context, tx pgx.Tx, userID string, digests [][]byte) error {
	if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
		return err
	}
	for _, d := range digests {
		if _, err := tx.Exec(ctx, `INSERT INTO recovery_codes (user_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, d); err != nil {
			return err
		}
	}
	return nil
}

// SetRecoveryCodes replaces the user's recovery codes, or returns
// ECONFLICT when the app is off. The user's row is locked first, as
// DisableTOTP locks it, so that the app cannot go meanwhile.
func (db *DB) SetRecoveryCodes(ctx context.Context, userID string, digests [][]byte, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		u, err := findUser(ctx, tx, "id", userID, true)
		if err != nil {
			return err
		}
		if !u.HasMFA() {
			return keyward.Errorf(keyward.ECONFLICT, "no authenticator app is set up")
		}
		if err := putRecoveryCodes(ctx, tx, userID, digests); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("set recovery codes", err)
}

// UseRecoveryCode deletes one recovery code, or returns ENOTFOUND.
func (db *DB) UseRecoveryCode(ctx context.Context, userID string, digest []byte, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) {
		return keyward.Errorf(keyward.ENOTFOUND, "no such recovery code")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1 AND digest = $2`, userID, digest)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "no such recovery code")
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("use recovery code", err)
}

// RecoveryCodesLeft returns how many recovery codes the user has.
func (db *DB) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) {
		return 0, nil
	}
	var n int
	err := db.rerun.QueryRow(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1`, userID).Scan(&n)
	return n, wrap("recovery codes left", err)
}

const memberQuery = `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM members m JOIN users u ON u.id = m.user_id`

func scanMember(row pgx.Row) (*keyward.Member, error) {
	var m keyward.Member
	if err := row.Scan(&m.WorkspaceID, &m.UserID, &m.Email, &m.Role, &m.CreatedAt); err != nil {
		return nil, err
	}
	return &m, nil
}

// FindMember returns a membership, or ENOTFOUND.
func (db *DB) FindMember(ctx context.Context, workspaceID, userID string) (*keyward.Member, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "member not found")
	if !storable(workspaceID) || !storable(userID) {
		return nil, notFound
	}
	m, err := scanMember(db.rerun.QueryRow(ctx, memberQuery+` WHERE m.workspace_id = $1 AND m.user_id = $2`, workspaceID, userID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	return m, wrap("find member", err)
}

// FindMembers returns a workspace's members or a user's memberships.
func (db *DB) FindMembers(ctx context.Context, workspaceID, userID string) ([]*keyward.Member, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(workspaceID) || !storable(userID) {
		return nil, nil
	}
	rows, err := db.rerun.Query(ctx, memberQuery+` WHERE ($1 = '' OR m.workspace_id = $1) AND ($2 = '' OR m.user_id = $2)
		ORDER BY u.email COLLATE "C", m.workspace_id`, workspaceID, userID)
	if err != nil {
		return nil, wrap("find members", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keyward.Member, error) { return scanMember(r) })
	return out, wrap("find members", err)
}

func putMember(ctx context.Context, tx pgx.Tx, m *keyward.Member) error {
	if !keyward.ValidRole(m.Role) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", m.Role)
	}
	if !storable(m.WorkspaceID) {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace not found")
	}
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, m.WorkspaceID).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", m.WorkspaceID)
	}
	if _, err := findUser(ctx, tx, "id", m.UserID, false); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO members (workspace_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role`, m.WorkspaceID, m.UserID, m.Role, m.CreatedAt)
	return err
}

// PutMember inserts the membership or changes its role.
func (db *DB) PutMember(ctx context.Context, m *keyward.Member, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := putMember(ctx, tx, m); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("put member", err)
}

// errLastOwner refuses a change that would leave a workspace without an
// owner.
var errLastOwner = keyward.Errorf(keyward.ECONFLICT, "the workspace needs at least one owner")

// lockMembers serializes the role changes and removals of a workspace by
// locking its row (NO KEY UPDATE: inserts that reference the workspace
// do not wait), so that the owner count each one checks is not stale.
func lockMembers(ctx context.Context, tx pgx.Tx, workspaceID string) error {
	var id string
	err := tx.QueryRow(ctx, `SELECT id FROM workspaces WHERE id = $1 FOR NO KEY UPDATE`, workspaceID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return keyward.Errorf(keyward.ENOTFOUND, "member not found")
	}
	return err
}

// settleMember ends a membership change, in tx: it refuses one that left
// the workspace without an owner, ends the member's sessions in the
// workspace, and records the events.
func (db *DB) settleMember(ctx context.Context, tx pgx.Tx, workspaceID, userID string, events []*keyward.AuditEvent) error {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM members WHERE workspace_id = $1 AND role = 'owner')`, workspaceID).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return errLastOwner
	}
	// The user's row first, as DeleteSessions locks it before the rows of
	// the sessions it keeps and deletes: in whatever order the two meet
	// the sessions, they would otherwise deadlock.
	if _, err := tx.Exec(ctx, `SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE`, userID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM sessions WHERE workspace_id = $1 AND user_id = $2`, workspaceID, userID); err != nil {
		return err
	}
	return db.accountEvents(ctx, tx, events)
}

// ChangeRole changes an existing member's role and ends its sessions in
// the workspace, under the workspace's member lock.
func (db *DB) ChangeRole(ctx context.Context, workspaceID, userID, from, to string, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !keyward.ValidRole(to) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", to)
	}
	if !storable(workspaceID) || !storable(userID) {
		return keyward.Errorf(keyward.ENOTFOUND, "member not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := lockMembers(ctx, tx, workspaceID); err != nil {
			return err
		}
		var role string
		err := tx.QueryRow(ctx, `SELECT role FROM members WHERE workspace_id = $1 AND user_id = $2`, workspaceID, userID).Scan(&role)
		if errors.Is(err, pgx.ErrNoRows) {
			return keyward.Errorf(keyward.ENOTFOUND, "member not found")
		}
		if err != nil {
			return err
		}
		if role != from {
			return keyward.Errorf(keyward.ECONFLICT, "the member's role changed meanwhile; reload and try again")
		}
		if _, err := tx.Exec(ctx, `UPDATE members SET role = $1 WHERE workspace_id = $2 AND user_id = $3`, to, workspaceID, userID); err != nil {
			return err
		}
		return db.settleMember(ctx, tx, workspaceID, userID, events)
	})
	return wrap("change role", err)
}

// RemoveMember deletes the membership and the user's sessions in the
// workspace, or returns ENOTFOUND.
func (db *DB) RemoveMember(ctx context.Context, workspaceID, userID string, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(workspaceID) || !storable(userID) {
		return keyward.Errorf(keyward.ENOTFOUND, "member not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := lockMembers(ctx, tx, workspaceID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM members WHERE workspace_id = $1 AND user_id = $2`, workspaceID, userID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "member not found")
		}
		return db.settleMember(ctx, tx, workspaceID, userID, events)
	})
	return wrap("remove member", err)
}

const sessionColumns = `id, digest, user_id, workspace_id, verified, reauth_at, created_at, last_seen_at, ip, user_agent, epoch`

func scanSession(row pgx.Row) (*keyward.Session, error) {
	var s keyward.Session
	var reauth *time.Time
	if err := row.Scan(&s.ID, &s.Digest, &s.UserID, &s.WorkspaceID, &s.Verified, &reauth, &s.CreatedAt, &s.LastSeenAt, &s.IP, &s.UserAgent, &s.Epoch); err != nil {
		return nil, err
	}
	if reauth != nil {
		s.ReauthAt = *reauth
	}
	return &s, nil
}

// CreateSession inserts s and the events. It returns ECONFLICT when
// s.Epoch is not the user's credential epoch (the user's sessions were
// ended since the sign-in read it). The user's row is share-locked, so
// that DeleteSessions's bump waits for the new session and then deletes
// it, or the session waits for the bump and sees it: under read committed
// a plain read could see the old epoch and insert after the deletion.
func (db *DB) CreateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(s.UserID) {
		return keyward.Errorf(keyward.ENOTFOUND, "user not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var epoch int64
		err := tx.QueryRow(ctx, `SELECT credential_epoch FROM users WHERE id = $1 FOR SHARE`, s.UserID).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			return keyward.Errorf(keyward.ENOTFOUND, "user not found")
		}
		if err != nil {
			return err
		}
		if epoch != s.Epoch {
			return keyward.Errorf(keyward.ECONFLICT, "the user's sessions were ended during the sign-in")
		}
		_, err = tx.Exec(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			safeText(s.ID), s.Digest, s.UserID, safeText(s.WorkspaceID), s.Verified, nullTime(s.ReauthAt), s.CreatedAt, s.LastSeenAt,
			safeText(s.IP), safeText(s.UserAgent), s.Epoch)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "session exists")
		}
		if err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("create session", err)
}

// FindSession returns the session with the digest, or ENOTFOUND.
func (db *DB) FindSession(ctx context.Context, digest []byte) (*keyward.Session, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	s, err := scanSession(db.rerun.QueryRow(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE digest = $1`, digest))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "session not found")
	}
	return s, wrap("find session", err)
}

// FindSessions returns the user's sessions, newest first.
func (db *DB) FindSessions(ctx context.Context, userID string) ([]*keyward.Session, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) {
		return nil, nil
	}
	rows, err := db.rerun.Query(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, wrap("find sessions", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keyward.Session, error) { return scanSession(r) })
	return out, wrap("find sessions", err)
}

// UpdateSession writes the session's changeable fields, or returns
// ENOTFOUND.
func (db *DB) UpdateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(s.ID) {
		return keyward.Errorf(keyward.ENOTFOUND, "session not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE sessions SET digest = $1, workspace_id = $2, verified = $3, reauth_at = $4, last_seen_at = $5
			WHERE id = $6`, s.Digest, safeText(s.WorkspaceID), s.Verified, nullTime(s.ReauthAt), s.LastSeenAt, s.ID)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "session digest exists")
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "session not found")
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("update session", err)
}

// TouchSession moves the session's last use forward to at.
func (db *DB) TouchSession(ctx context.Context, id string, digest []byte, at time.Time) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(id) {
		return nil
	}
	// Run again when its connection broke: a second run finds
	// last_seen_at = at, and changes nothing.
	_, err := db.rerun.Exec(ctx, `UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND digest = $3 AND last_seen_at < $1`, at, id, digest)
	return wrap("touch session", err)
}

// DeleteSessions deletes one session of the user, or all but one; then
// it also bumps the user's credential epoch (locking the user's row first,
// as the other account writes do), so that no sign-in under way makes a
// session after, and moves the one kept to the new epoch.
func (db *DB) DeleteSessions(ctx context.Context, userID, id, exceptID string, events ...*keyward.AuditEvent) (int, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) || !storable(id) || !storable(exceptID) {
		return 0, nil
	}
	var n int64
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var q string
		var arg string
		if id != "" {
			q, arg = `DELETE FROM sessions WHERE user_id = $1 AND id = $2`, id
		} else {
			var epoch int64
			err := tx.QueryRow(ctx, `UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = $1 RETURNING credential_epoch`, userID).Scan(&epoch)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if _, err := tx.Exec(ctx, `UPDATE sessions SET epoch = $1 WHERE user_id = $2 AND id = $3`, epoch, userID, exceptID); err != nil {
				return err
			}
			q, arg = `DELETE FROM sessions WHERE user_id = $1 AND id <> $2`, exceptID
		}
		tag, err := tx.Exec(ctx, q, userID, arg)
		if err != nil {
			return err
		}
		if n = tag.RowsAffected(); n == 0 {
			return nil
		}
		return db.accountEvents(ctx, tx, events)
	})
	return int(n), wrap("delete sessions", err)
}

// FindWorkspaceSettings returns the settings, the zero ones when none
// were saved, or ENOTFOUND for an unknown workspace.
func (db *DB) FindWorkspaceSettings(ctx context.Context, workspaceID string) (*keyward.WorkspaceSettings, error) {
	if _, err := db.FindWorkspace(ctx, workspaceID); err != nil {
		return nil, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	s := &keyward.WorkspaceSettings{WorkspaceID: workspaceID}
	var maxLife int64
	var scopes []byte
	err := db.rerun.QueryRow(ctx, `SELECT mfa_required, max_token_lifetime, expiry_required, scopes::text, updated_at
		FROM workspace_settings WHERE workspace_id = $1`, workspaceID).Scan(&s.MFARequired, &maxLife, &s.ExpiryRequired, &scopes, &s.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return nil, wrap("find workspace settings", err)
	}
	s.MaxTokenLifetime = time.Duration(maxLife)
	if err := json.Unmarshal(scopes, &s.Scopes); err != nil {
		return nil, wrap("find workspace settings", err)
	}
	return s, nil
}

// PutWorkspaceSettings writes the settings and the events.
func (db *DB) PutWorkspaceSettings(ctx context.Context, s *keyward.WorkspaceSettings, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	scopes, err := json.Marshal(s.Scopes)
	if err != nil {
		return err
	}
	if s.Scopes == nil {
		scopes = []byte("[]")
	}
	if !storable(s.WorkspaceID) {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace not found")
	}
	err = db.writeTx(ctx, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, s.WorkspaceID).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", s.WorkspaceID)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO workspace_settings (workspace_id, mfa_required, max_token_lifetime, expiry_required, scopes, updated_at)
			VALUES ($1, $2, $3, $4, $5::jsonb, $6) ON CONFLICT (workspace_id) DO UPDATE SET mfa_required = excluded.mfa_required,
			max_token_lifetime = excluded.max_token_lifetime, expiry_required = excluded.expiry_required,
			scopes = excluded.scopes, updated_at = excluded.updated_at`,
			s.WorkspaceID, s.MFARequired, int64(s.MaxTokenLifetime), s.ExpiryRequired, safeText(string(scopes)), s.UpdatedAt); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("put workspace settings", err)
}

// AppendAudit records events on their own.
func (db *DB) AppendAudit(ctx context.Context, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	return wrap("append audit", db.writeTx(ctx, func(tx pgx.Tx) error {
		return db.accountEvents(ctx, tx, events)
	}))
}
