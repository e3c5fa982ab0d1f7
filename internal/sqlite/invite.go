package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keyward/keyward"
)

const inviteColumns = `id, digest, workspace_id, email, role, created_by, created_at, expires_at, used_at`

func scanInvite(row interface{ Scan(...any) error }) (*keyward.Invite, error) {
	var inv keyward.Invite
	var created, expires int64
	var used sql.NullInt64
	if err := row.Scan(&inv.ID, &inv.Digest, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.CreatedBy, &created, &expires, &used); err != nil {
		return nil, err
	}
	inv.CreatedAt, inv.ExpiresAt, inv.UsedAt = decodeTime(created), decodeTime(expires), decodeTimePtr(used)
	return &inv, nil
}

// CreateInvite inserts inv and the events; ENOTFOUND for an unknown
// workspace, ECONFLICT for a taken id or digest.
func (db *DB) CreateInvite(ctx context.Context, inv *keyward.Invite, events ...*keyward.AuditEvent) error {
	if !keyward.ValidRole(inv.Role) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", inv.Role)
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE id = ?`, inv.WorkspaceID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", inv.WorkspaceID)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO invites (`+inviteColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			inv.ID, inv.Digest, inv.WorkspaceID, inv.Email, inv.Role, inv.CreatedBy, encodeTime(inv.CreatedAt),
			encodeTime(inv.ExpiresAt), encodeTimePtr(inv.UsedAt))
		if isUnique(err) {
			return keyward.Errorf(keyward.ECONFLICT, "invite exists")
		}
		if err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("create invite", err)
}

// FindInvite returns the invitation with the digest, or ENOTFOUND.
func (db *DB) FindInvite(ctx context.Context, digest []byte) (*keyward.Invite, error) {
	inv, err := scanInvite(db.read.QueryRowContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE digest = ?`, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "invitation not found")
	}
	return inv, wrap("find invite", err)
}

// FindInvites returns the workspace's unused invitations, newest first.
func (db *DB) FindInvites(ctx context.Context, workspaceID string) ([]*keyward.Invite, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE workspace_id = ? AND used_at IS NULL
		ORDER BY created_at DESC, id DESC`, workspaceID)
	if err != nil {
		return nil, wrap("find invites", err)
	}
	defer rows.Close()
	var out []*keyward.Invite
	for rows.Next() {
		inv, err := scanInvite(rows)
		if err != nil {
			return nil, wrap("find invites", err)
		}
		out = append(out, inv)
	}
	return out, wrap("find invites", rows.Err())
}

// AcceptInvite uses the invitation; see keyward.AccountStore.
func (db *DB) AcceptInvite(ctx context.Context, digest []byte, now time.Time, newUser *keyward.User, userID string, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		inv, err := scanInvite(tx.QueryRowContext(ctx, `SELECT `+inviteColumns+` FROM invites WHERE digest = ?`, digest))
		if errors.Is(err, sql.ErrNoRows) || err == nil && (inv.UsedAt != nil || !now.Before(inv.ExpiresAt)) {
			return keyward.Errorf(keyward.ENOTFOUND, "the invitation is invalid, used or expired")
		}
		if err != nil {
			return err
		}
		if newUser != nil {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE email = ? OR id = ?`, newUser.Email, newUser.ID).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email, password_hash, totp_secret, totp_last_step, created_at, updated_at)
				VALUES (?, ?, ?, NULL, 0, ?, ?)`, newUser.ID, newUser.Email, newUser.PasswordHash,
				encodeTime(newUser.CreatedAt), encodeTime(newUser.UpdatedAt)); err != nil {
				return err
			}
			userID = newUser.ID
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM members WHERE workspace_id = ? AND user_id = ?`, inv.WorkspaceID, userID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return keyward.Errorf(keyward.ECONFLICT, "already a member of the workspace")
		}
		if err := putMember(ctx, tx, &keyward.Member{WorkspaceID: inv.WorkspaceID, UserID: userID, Role: inv.Role, CreatedAt: now}); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE invites SET used_at = ? WHERE id = ?`, encodeTime(now), inv.ID); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("accept invite", err)
}

// DeleteInvite deletes an unused invitation, or returns ENOTFOUND.
func (db *DB) DeleteInvite(ctx context.Context, workspaceID, id string, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM invites WHERE workspace_id = ? AND id = ? AND used_at IS NULL`, workspaceID, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "invitation not found")
			}
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("delete invite", err)
}
