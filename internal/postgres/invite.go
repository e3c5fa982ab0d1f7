package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

const inviteColumns = `id, digest, workspace_id, email, role, created_by, created_at, expires_at, used_at`

func scanInvite(row pgx.Row) (*keyward.Invite, error) {
	var inv keyward.Invite
	if err := row.Scan(&inv.ID, &inv.Digest, &inv.WorkspaceID, &inv.Email, &inv.Role, &inv.CreatedBy, &inv.CreatedAt, &inv.ExpiresAt, &inv.UsedAt); err != nil {
		return nil, err
	}
	return &inv, nil
}

// CreateInvite inserts inv and the events; ENOTFOUND for an unknown
// workspace, ECONFLICT for a taken id or digest.
func (db *DB) CreateInvite(ctx context.Context, inv *keyward.Invite, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !keyward.ValidRole(inv.Role) {
		return keyward.Errorf(keyward.EINVALID, "unknown role %q", inv.Role)
	}
	if !storable(inv.WorkspaceID) {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, inv.WorkspaceID).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", inv.WorkspaceID)
		}
		_, err := tx.Exec(ctx, `INSERT INTO invites (`+inviteColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			safeText(inv.ID), inv.Digest, inv.WorkspaceID, safeText(inv.Email), inv.Role, safeText(inv.CreatedBy),
			inv.CreatedAt, inv.ExpiresAt, inv.UsedAt)
		if _, ok := uniqueViolation(err); ok {
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
	ctx, cancel := bound(ctx)
	defer cancel()
	inv, err := scanInvite(db.rerun.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE digest = $1`, digest))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "invitation not found")
	}
	return inv, wrap("find invite", err)
}

// FindInvites returns the workspace's unused invitations, newest first.
func (db *DB) FindInvites(ctx context.Context, workspaceID string) ([]*keyward.Invite, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(workspaceID) {
		return nil, nil
	}
	rows, err := db.rerun.Query(ctx, `SELECT `+inviteColumns+` FROM invites WHERE workspace_id = $1 AND used_at IS NULL
		ORDER BY created_at DESC, id DESC`, workspaceID)
	if err != nil {
		return nil, wrap("find invites", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keyward.Invite, error) { return scanInvite(r) })
	return out, wrap("find invites", err)
}

// AcceptInvite uses the invitation; see keyward.AccountStore. The
// invitation's row is locked, so that two acceptances cannot both use it.
func (db *DB) AcceptInvite(ctx context.Context, digest []byte, now time.Time, newUser *keyward.User, userID string, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) {
		return keyward.Errorf(keyward.ENOTFOUND, "user not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		inv, err := scanInvite(tx.QueryRow(ctx, `SELECT `+inviteColumns+` FROM invites WHERE digest = $1 FOR UPDATE`, digest))
		if errors.Is(err, pgx.ErrNoRows) || err == nil && (inv.UsedAt != nil || !now.Before(inv.ExpiresAt)) {
			return keyward.Errorf(keyward.ENOTFOUND, "the invitation is invalid, used or expired")
		}
		if err != nil {
			return err
		}
		if newUser != nil {
			_, err := tx.Exec(ctx, `INSERT INTO users (id, email, password_hash, totp_secret, totp_last_step, created_at, updated_at)
				VALUES ($1, $2, $3, NULL, 0, $4, $5)`, safeText(newUser.ID), safeText(newUser.Email), newUser.PasswordHash, newUser.CreatedAt, newUser.UpdatedAt)
			if _, ok := uniqueViolation(err); ok {
				return keyward.Errorf(keyward.ECONFLICT, "a user with this email exists")
			}
			if err != nil {
				return err
			}
			userID = newUser.ID
		}
		var member bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM members WHERE workspace_id = $1 AND user_id = $2)`, inv.WorkspaceID, userID).Scan(&member); err != nil {
			return err
		}
		if member {
			return keyward.Errorf(keyward.ECONFLICT, "already a member of the workspace")
		}
		if err := putMember(ctx, tx, &keyward.Member{WorkspaceID: inv.WorkspaceID, UserID: userID, Role: inv.Role, CreatedAt: now}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE invites SET used_at = $1 WHERE id = $2`, now, inv.ID); err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("accept invite", err)
}

// DeleteInvite deletes an unused invitation, or returns ENOTFOUND.
func (db *DB) DeleteInvite(ctx context.Context, workspaceID, id string, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(workspaceID) || !storable(id) {
		return keyward.Errorf(keyward.ENOTFOUND, "invitation not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM invites WHERE workspace_id = $1 AND id = $2 AND used_at IS NULL`, workspaceID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "invitation not found")
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("delete invite", err)
}
