package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

const passkeyColumns = `id, user_id, credential_id, credential, name, created_at, last_used_at`

func scanPasskey(row pgx.Row) (*keyward.Passkey, error) {
	var pk keyward.Passkey
	var cred string
	if err := row.Scan(&pk.ID, &pk.UserID, &pk.CredentialID, &cred, &pk.Name, &pk.CreatedAt, &pk.LastUsedAt); err != nil {
		return nil, err
	}
	pk.Credential = []byte(cred)
	return &pk, nil
}

// AddPasskey inserts pk and the events.
func (db *DB) AddPasskey(ctx context.Context, pk *keyward.Passkey, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := findUser(ctx, tx, "id", pk.UserID, false); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO passkeys (`+passkeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			safeText(pk.ID), pk.UserID, pk.CredentialID, safeText(string(pk.Credential)), safeText(pk.Name), pk.CreatedAt, pk.LastUsedAt)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "this passkey is registered already")
		}
		if err != nil {
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("add passkey", err)
}

// FindPasskeys returns the user's passkeys, oldest first.
func (db *DB) FindPasskeys(ctx context.Context, userID string) ([]*keyward.Passkey, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(userID) {
		return nil, nil
	}
	rows, err := db.rerun.Query(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = $1 ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, wrap("find passkeys", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*keyward.Passkey, error) { return scanPasskey(r) })
	return out, wrap("find passkeys", err)
}

// FindPasskeyByCredential returns the passkey with the credential id, or
// ENOTFOUND.
func (db *DB) FindPasskeyByCredential(ctx context.Context, credentialID []byte) (*keyward.Passkey, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	pk, err := scanPasskey(db.rerun.QueryRow(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE credential_id = $1`, credentialID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
	}
	return pk, wrap("find passkey", err)
}

// UsePasskey records a use of the passkey, or returns ENOTFOUND.
func (db *DB) UsePasskey(ctx context.Context, id string, credential []byte, at time.Time, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(id) {
		return keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE passkeys SET credential = $1, last_used_at = $2 WHERE id = $3`, safeText(string(credential)), at, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("use passkey", err)
}

// DeletePasskey deletes the user's passkey, or returns ENOTFOUND. With
// keepFactor, it returns ECONFLICT, the deletion rolled back, when the
// user would be left without a second factor. It locks the user's row
// first, as DisableTOTP and UpdateUser do, so that two removals of
// factors at once take turns and the second sees what the first left.
func (db *DB) DeletePasskey(ctx context.Context, userID, id string, keepFactor bool, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
	if !storable(userID) || !storable(id) {
		return notFound
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := findUser(ctx, tx, "id", userID, true); err != nil {
			if keyward.ErrorCode(err) == keyward.ENOTFOUND {
				return notFound
			}
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM passkeys WHERE user_id = $1 AND id = $2`, userID, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return notFound
		}
		if keepFactor {
			var left bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND totp_secret IS NOT NULL)
				OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1)`, userID).Scan(&left); err != nil {
				return err
			}
			if !left {
				return keyward.Errorf(keyward.ECONFLICT, "the last second factor cannot be removed")
			}
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("delete passkey", err)
}

// CreateChallenge records a ceremony's challenge until expiresAt and
// deletes the ones expired at now.
func (db *DB) CreateChallenge(ctx context.Context, digest []byte, now, expiresAt time.Time) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM webauthn_challenges WHERE expires_at <= $1`, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO webauthn_challenges (digest, expires_at) VALUES ($1, $2)`, digest, expiresAt)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "challenge exists")
		}
		return err
	})
	return wrap("create challenge", err)
}

// UseChallenge deletes the challenge, or returns ENOTFOUND when there is
// none unexpired at now.
func (db *DB) UseChallenge(ctx context.Context, digest []byte, now time.Time) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		var expires time.Time
		err := tx.QueryRow(ctx, `DELETE FROM webauthn_challenges WHERE digest = $1 RETURNING expires_at`, digest).Scan(&expires)
		if errors.Is(err, pgx.ErrNoRows) || err == nil && !now.Before(expires) {
			return keyward.Errorf(keyward.ENOTFOUND, "no such challenge")
		}
		return err
	})
	return wrap("use challenge", err)
}
