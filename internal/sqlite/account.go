package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/keyward/keyward"
)

var _ keyward.AccountStore = (*DB)(nil)

// accountEvents appends events; one without a workspace is appended to
// each workspace its actor is a member of, as the transaction sees them
// (see keyward.AccountStore).
func (db *DB) accountEvents(ctx context.Context, tx *sql.Tx, events []*keyward.AuditEvent) error {
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
		ids, err := memberWorkspaces(ctx, tx, ev.Actor.ID)
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

// memberWorkspaces returns the ids of the workspaces the user is a member
// of, in order.
func memberWorkspaces(ctx context.Context, tx *sql.Tx, userID string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT workspace_id FROM members WHERE user_id = ? ORDER BY workspace_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// HasOwner reports whether any workspace has an owner.
func (db *DB) HasOwner(ctx context.Context) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM members WHERE role = 'owner' LIMIT 1)`).Scan(&n)
	return n > 0, wrap("has owner", err)
}

// CreateUser inserts u, its memberships and the events, all or nothing. It
// returns ECONFLICT when the email or id is taken and ENOTFOUND when a
// membership's workspace does not exist.
func (db *DB) CreateUser(ctx context.Context, u *keyward.User, members []*keyward.Member, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE email = ? OR id = ?`, u.Email, u.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email, password_hash, totp_secret, totp_last_step, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, u.ID, u.Email, u.PasswordHash, nullBytes(u.TOTPSecret), u.TOTPLastStep,
			encodeTime(u.CreatedAt), encodeTime(u.UpdatedAt)); err != nil {
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

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

const userColumns = `id, email, password_hash, totp_secret, totp_last_step, credential_epoch, created_at, updated_at`

func scanUser(row interface{ Scan(...any) error }) (*keyward.User, error) {
	var u keyward.User
	var created, updated int64
	if err := row.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.TOTPSecret, &u.TOTPLastStep, &u.CredentialEpoch, &created, &updated); err != nil {
		return nil, err
	}
	if len(u.TOTPSecret) == 0 {
		u.TOTPSecret = nil
	}
	u.CreatedAt, u.UpdatedAt = decodeTime(created), decodeTime(updated)
	return &u, nil
}

func findUser(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, where string, arg any) (*keyward.User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "user not found")
	}
	return u, err
}

// FindUser returns the user with the given id, or ENOTFOUND.
func (db *DB) FindUser(ctx context.Context, id string) (*keyward.User, error) {
	u, err := findUser(ctx, db.read, `id = ?`, id)
	return u, wrap("find user", err)
}

// FindUserByEmail returns the user with the given email, or ENOTFOUND.
func (db *DB) FindUserByEmail(ctx context.Context, email string) (*keyward.User, error) {
	u, err := findUser(ctx, db.read, `email = ?`, email)
	return u, wrap("find user", err)
}

// UpdateUser reads the user, lets fn change a copy and writes it with the
// events fn returns. The id and created time cannot change.
func (db *DB) UpdateUser(ctx context.Context, id string, fn func(u *keyward.User) ([]*keyward.AuditEvent, error)) (*keyward.User, error) {
	var out *keyward.User
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		u, err := findUser(ctx, tx, `id = ?`, id)
		if err != nil {
			return err
		}
		events, err := fn(u)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET email = ?, password_hash = ?, totp_secret = ?, totp_last_step = ?, updated_at = ?
			WHERE id = ?`, u.Email, u.PasswordHash, nullBytes(u.TOTPSecret), u.TOTPLastStep, encodeTime(u.UpdatedAt), id); err != nil {
			if isUnique(err) {
				return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
			}
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, `id = ?`, id)
		return err
	})
	return out, wrap("update user", err)
}

// DisableTOTP clears the user's TOTP secret and recovery codes, unless
// the app is off already, or keepFactor holds and the user has no
// passkey (ECONFLICT).
func (db *DB) DisableTOTP(ctx context.Context, userID string, keepFactor bool, at time.Time, events ...*keyward.AuditEvent) (*keyward.User, bool, error) {
	var out *keyward.User
	var changed bool
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		u, err := findUser(ctx, tx, `id = ?`, userID)
		if err != nil || !u.HasMFA() {
			out = u
			return err
		}
		if keepFactor {
			var keys bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM passkeys WHERE user_id = ?)`, userID).Scan(&keys); err != nil {
				return err
			}
			if !keys {
				return keyward.Errorf(keyward.ECONFLICT, "the last second factor cannot be removed")
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET totp_secret = NULL, updated_at = ? WHERE id = ?`, encodeTime(at), userID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, userID); err != nil {
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, `id = ?`, userID)
		changed = err == nil
		return err
	})
	if err != nil {
		return nil, false, wrap("disable totp", err)
	}
	return out, changed, nil
}

// EnableTOTP writes the TOTP secret and the recovery codes at once, or
// returns ECONFLICT when the app is on already.
func (db *DB) EnableTOTP(ctx context.Context, userID string, secret []byte, step int64, digests [][]byte, at time.Time, events ...*keyward.AuditEvent) (*keyward.User, error) {
	if len(secret) == 0 {
		return nil, errors.New("sqlite: enable totp: no secret")
	}
	var out *keyward.User
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		u, err := findUser(ctx, tx, `id = ?`, userID)
		if err != nil {
			return err
		}
		if u.HasMFA() {
			return keyward.Errorf(keyward.ECONFLICT, "an authenticator app is already set up")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET totp_secret = ?, totp_last_step = ?, updated_at = ? WHERE id = ?`,
			secret, step, encodeTime(at), userID); err != nil {
			return err
		}
		if err := putRecoveryCodes(ctx, tx, userID, digests); err != nil {
			return err
		}
		if err := db.accountEvents(ctx, tx, events); err != nil {
			return err
		}
		out, err = findUser(ctx, tx, `id = ?`, userID)
		return err
	})
	return out, wrap("enable totp", err)
}

// putRecoveryCodes replaces the user's recovery codes.
func putRecoveryCodes(ctx context.Context, tx *sql.Tx, userID string, digests [][]byte) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, userID); err != nil {
		return err
	}
	for _, d := range digests {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO recovery_codes (user_id, digest) VALUES (?, ?)`, userID, d); err != nil {
			return err
		}
	}
	return nil
}

// SetRecoveryCodes replaces the user's recovery codes, or returns
// ECONFLICT when the app is off.
func (db *DB) SetRecoveryCodes(ctx context.Context, userID string, digests [][]byte, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		u, err := findUser(ctx, tx, `id = ?`, userID)
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
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ? AND digest = ?`, userID, digest)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "no such recovery code")
			}
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("use recovery code", err)
}

// RecoveryCodesLeft returns how many recovery codes the user has.
func (db *DB) RecoveryCodesLeft(ctx context.Context, userID string) (int, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?`, userID).Scan(&n)
	return n, wrap("recovery codes left", err)
}

const memberQuery = `SELECT m.workspace_id, m.user_id, u.email, m.role, m.created_at FROM members m JOIN users u ON u.id = m.user_id`

func scanMember(row interface{ Scan(...any) error }) (*keyward.Member, error) {
	var m keyward.Member
	var created int64
	if err := row.Scan(&m.WorkspaceID, &m.UserID, &m.Email, &m.Role, &created); err != nil {
		return nil, err
	}
	m.CreatedAt = decodeTime(created)
	return &m, nil
}

// FindMember returns a membership, or ENOTFOUND.
func (db *DB) FindMember(ctx context.Context, workspaceID, userID string) (*keyward.Member, error) {
	m, err := scanMember(db.read.QueryRowContext(ctx, memberQuery+` WHERE m.workspace_id = ? AND m.user_id = ?`, workspaceID, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "member not found")
	}
	return m, wrap("find member", err)
}

// FindMembers returns a workspace's members or a user's memberships.
func (db *DB) FindMembers(ctx context.Context, workspaceID, userID string) ([]*keyward.Member, error) {
	rows, err := db.read.QueryContext(ctx, memberQuery+` WHERE (? = '' OR m.workspace_id = ?) AND (? = '' OR m.user_id = ?)
		ORDER BY u.email, m.workspace_id`, workspaceID, workspaceID, userID, userID)
	if err != nil {
		return nil, wrap("find members", err)
	}
	defer rows.Close()
	var out []*keyward.Member
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			return nil, wrap("find members", err)
		}
		out = append(out, m)
	}
	return out, wrap("find members", rows.Err())
}

func putMember(ctx context.Context, tx *sql.Tx, m *keyward.Member) error {
	if !keyward.ValidRole(m.Role) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", m.Role)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE id = ?`, m.WorkspaceID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", m.WorkspaceID)
	}
	if _, err := findUser(ctx, tx, `id = ?`, m.UserID); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO members (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role`,
		m.WorkspaceID, m.UserID, m.Role, encodeTime(m.CreatedAt))
	return err
}

// PutMember inserts the membership or changes its role.
func (db *DB) PutMember(ctx context.Context, m *keyward.Member, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
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

// settleMember ends a membership change, in tx: it refuses one that left
// the workspace without an owner, ends the member's sessions in the
// workspace, and records the events.
func (db *DB) settleMember(ctx context.Context, tx *sql.Tx, workspaceID, userID string, events []*keyward.AuditEvent) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM members WHERE workspace_id = ? AND role = 'owner'`, workspaceID).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return errLastOwner
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE workspace_id = ? AND user_id = ?`, workspaceID, userID); err != nil {
		return err
	}
	return db.accountEvents(ctx, tx, events)
}

// ChangeRole changes an existing member's role and ends its sessions in
// the workspace. The single writer serializes it with other changes.
func (db *DB) ChangeRole(ctx context.Context, workspaceID, userID, from, to string, events ...*keyward.AuditEvent) error {
	if !keyward.ValidRole(to) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", to)
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var role string
		err := tx.QueryRowContext(ctx, `SELECT role FROM members WHERE workspace_id = ? AND user_id = ?`, workspaceID, userID).Scan(&role)
		if errors.Is(err, sql.ErrNoRows) {
			return keyward.Errorf(keyward.ENOTFOUND, "member not found")
		}
		if err != nil {
			return err
		}
		if role != from {
			return keyward.Errorf(keyward.ECONFLICT, "the member's role changed meanwhile; reload and try again")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE members SET role = ? WHERE workspace_id = ? AND user_id = ?`, to, workspaceID, userID); err != nil {
			return err
		}
		return db.settleMember(ctx, tx, workspaceID, userID, events)
	})
	return wrap("change role", err)
}

// RemoveMember deletes the membership and the user's sessions in the
// workspace, or returns ENOTFOUND.
func (db *DB) RemoveMember(ctx context.Context, workspaceID, userID string, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM members WHERE workspace_id = ? AND user_id = ?`, workspaceID, userID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "member not found")
			}
			return err
		}
		return db.settleMember(ctx, tx, workspaceID, userID, events)
	})
	return wrap("remove member", err)
}

const sessionColumns = `id, digest, user_id, workspace_id, verified, reauth_at, created_at, last_seen_at, ip, user_agent, epoch`

func scanSession(row interface{ Scan(...any) error }) (*keyward.Session, error) {
	var s keyward.Session
	var reauth, created, seen int64
	if err := row.Scan(&s.ID, &s.Digest, &s.UserID, &s.WorkspaceID, &s.Verified, &reauth, &created, &seen, &s.IP, &s.UserAgent, &s.Epoch); err != nil {
		return nil, err
	}
	s.ReauthAt, s.CreatedAt, s.LastSeenAt = decodeTime(reauth), decodeTime(created), decodeTime(seen)
	return &s, nil
}

// CreateSession inserts s and the events. It returns ENOTFOUND for an
// unknown user, and ECONFLICT for a taken id or digest or when s.Epoch
// is not the user's credential epoch (the user's sessions were ended
// since the sign-in read it).
func (db *DB) CreateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		u, err := findUser(ctx, tx, `id = ?`, s.UserID)
		if err != nil {
			return err
		}
		if u.CredentialEpoch != s.Epoch {
			return errStaleEpoch
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.Digest, s.UserID, s.WorkspaceID, s.Verified, encodeTime(s.ReauthAt), encodeTime(s.CreatedAt),
			encodeTime(s.LastSeenAt), s.IP, s.UserAgent, s.Epoch)
		if isUnique(err) {
			return keyward.Errorf(keyward.ECONFLICT, "session exists")
		}
		if err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("create session", err)
}

// errStaleEpoch refuses a session whose sign-in read credentials that
// changed since.
var errStaleEpoch = keyward.Errorf(keyward.ECONFLICT, "the user's sessions were ended during the sign-in")

// FindSession returns the session with the digest, or ENOTFOUND.
func (db *DB) FindSession(ctx context.Context, digest []byte) (*keyward.Session, error) {
	s, err := scanSession(db.read.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE digest = ?`, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "session not found")
	}
	return s, wrap("find session", err)
}

// FindSessions returns the user's sessions, newest first.
func (db *DB) FindSessions(ctx context.Context, userID string) ([]*keyward.Session, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE user_id = ? ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, wrap("find sessions", err)
	}
	defer rows.Close()
	var out []*keyward.Session
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, wrap("find sessions", err)
		}
		out = append(out, s)
	}
	return out, wrap("find sessions", rows.Err())
}

// UpdateSession writes the session's changeable fields, or returns
// ENOTFOUND.
func (db *DB) UpdateSession(ctx context.Context, s *keyward.Session, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET digest = ?, workspace_id = ?, verified = ?, reauth_at = ?, last_seen_at = ?
			WHERE id = ?`, s.Digest, s.WorkspaceID, s.Verified, encodeTime(s.ReauthAt), encodeTime(s.LastSeenAt), s.ID)
		if isUnique(err) {
			return keyward.Errorf(keyward.ECONFLICT, "session digest exists")
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "session not found")
			}
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("update session", err)
}

// TouchSession moves the session's last use forward to at.
func (db *DB) TouchSession(ctx context.Context, id string, digest []byte, at time.Time) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE sessions SET last_seen_at = ? WHERE id = ? AND digest = ? AND last_seen_at < ?`,
			encodeTime(at), id, digest, encodeTime(at))
		return err
	})
	return wrap("touch session", err)
}

// DeleteSessions deletes one session of the user, or all but one; then
// it also bumps the user's credential epoch, so that no sign-in under way
// makes a session after, and moves the one kept to the new epoch.
func (db *DB) DeleteSessions(ctx context.Context, userID, id, exceptID string, events ...*keyward.AuditEvent) (int, error) {
	var n int64
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		if id != "" {
			res, err = tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND id = ?`, userID, id)
		} else {
			if _, err := tx.ExecContext(ctx, `UPDATE users SET credential_epoch = credential_epoch + 1 WHERE id = ?`, userID); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE sessions SET epoch = (SELECT credential_epoch FROM users WHERE id = ?)
				WHERE user_id = ? AND id = ?`, userID, userID, exceptID); err != nil {
				return err
			}
			res, err = tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND id <> ?`, userID, exceptID)
		}
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if n == 0 {
			return nil // nothing happened: nothing to audit
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
	s := &keyward.WorkspaceSettings{WorkspaceID: workspaceID}
	var maxLife, updated int64
	var scopes string
	err := db.read.QueryRowContext(ctx, `SELECT mfa_required, max_token_lifetime, expiry_required, scopes, updated_at
		FROM workspace_settings WHERE workspace_id = ?`, workspaceID).Scan(&s.MFARequired, &maxLife, &s.ExpiryRequired, &scopes, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return nil, wrap("find workspace settings", err)
	}
	s.MaxTokenLifetime = time.Duration(maxLife)
	s.UpdatedAt = decodeTime(updated)
	if err := json.Unmarshal([]byte(scopes), &s.Scopes); err != nil {
		return nil, wrap("find workspace settings", err)
	}
	return s, nil
}

// PutWorkspaceSettings writes the settings and the events.
func (db *DB) PutWorkspaceSettings(ctx context.Context, s *keyward.WorkspaceSettings, events ...*keyward.AuditEvent) error {
	scopes, err := json.Marshal(s.Scopes)
	if err != nil {
		return err
	}
	if s.Scopes == nil {
		scopes = []byte("[]")
	}
	err = db.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE id = ?`, s.WorkspaceID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", s.WorkspaceID)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO workspace_settings (workspace_id, mfa_required, max_token_lifetime, expiry_required, scopes, updated_at)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace_id) DO UPDATE SET mfa_required = excluded.mfa_required,
			max_token_lifetime = excluded.max_token_lifetime, expiry_required = excluded.expiry_required,
			scopes = excluded.scopes, updated_at = excluded.updated_at`,
			s.WorkspaceID, s.MFARequired, int64(s.MaxTokenLifetime), s.ExpiryRequired, string(scopes), encodeTime(s.UpdatedAt)); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("put workspace settings", err)
}

// AppendAudit records events on their own.
func (db *DB) AppendAudit(ctx context.Context, events ...*keyward.AuditEvent) error {
	return wrap("append audit", db.writeTx(ctx, func(tx *sql.Tx) error {
		return db.accountEvents(ctx, tx, events)
	}))
}
