package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keyward/keyward"
)

const passkeyColumns = `id, user_id, credential_id, credential, name, created_at, last_used_at`

func scanPasskey(row interface{ Scan(...any) error }) (*keyward.Passkey, error) {
	var pk keyward.Passkey
	var cred string
	var created int64
	var used sql.NullInt64
	if err := row.Scan(&pk.ID, &pk.UserID, &pk.CredentialID, &cred, &pk.Name, &created, &used); err != nil {
		return nil, err
	}
	pk.Credential, pk.CreatedAt, pk.LastUsedAt = []byte(cred), decodeTime(created), decodeTimePtr(used)
	return &pk, nil
}

// AddPasskey inserts pk and the events.
func (db *DB) AddPasskey(ctx context.Context, pk *keyward.Passkey, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := findUser(ctx, tx, `id = ?`, pk.UserID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO passkeys (`+passkeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			pk.ID, pk.UserID, pk.CredentialID, string(pk.Credential), pk.Name, encodeTime(pk.CreatedAt), encodeTimePtr(pk.LastUsedAt))
		if isUnique(err) {
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
	rows, err := db.read.QueryContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = ? ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, wrap("find passkeys", err)
	}
	defer rows.Close()
	var out []*keyward.Passkey
	for rows.Next() {
		pk, err := scanPasskey(rows)
		if err != nil {
			return nil, wrap("find passkeys", err)
		}
		out = append(out, pk)
	}
	return out, wrap("find passkeys", rows.Err())
}

// FindPasskeyByCredential returns the passkey with the credential id, or
// ENOTFOUND.
func (db *DB) FindPasskeyByCredential(ctx context.Context, credentialID []byte) (*keyward.Passkey, error) {
	pk, err := scanPasskey(db.read.QueryRowContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE credential_id = ?`, credentialID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
	}
	return pk, wrap("find passkey", err)
}

// UsePasskey records a use of the passkey, or returns ENOTFOUND.
func (db *DB) UsePasskey(ctx context.Context, id string, credential []byte, at time.Time, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE passkeys SET credential = ?, last_used_at = ? WHERE id = ?`, string(credential), encodeTime(at), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
			}
			return err
		}
		return db.accountEvents(ctx, tx, events)
	})
	return wrap("use passkey", err)
}

// DeletePasskey deletes the user's passkey, or returns ENOTFOUND. With
// keepFactor, it returns ECONFLICT, the deletion rolled back, when the
// user would be left without a second factor. The writer connection runs
// one transaction at a time, so nothing changes the user's factors
// between the deletion and the check.
func (db *DB) DeletePasskey(ctx context.Context, userID, id string, keepFactor bool, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM passkeys WHERE user_id = ? AND id = ?`, userID, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			if err == nil {
				err = keyward.Errorf(keyward.ENOTFOUND, "passkey not found")
			}
			return err
		}
		if keepFactor {
			var left bool
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE id = ? AND totp_secret IS NOT NULL)
				OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = ?)`, userID, userID).Scan(&left); err != nil {
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
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webauthn_challenges WHERE expires_at <= ?`, encodeTime(now)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO webauthn_challenges (digest, expires_at) VALUES (?, ?)`, digest, encodeTime(expiresAt))
		if isUnique(err) {
			return keyward.Errorf(keyward.ECONFLICT, "challenge exists")
		}
		return err
	})
	return wrap("create challenge", err)
}

// UseChallenge deletes the challenge, or returns ENOTFOUND when there is
// none unexpired at now.
func (db *DB) UseChallenge(ctx context.Context, digest []byte, now time.Time) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var expires int64
		err := tx.QueryRowContext(ctx, `DELETE FROM webauthn_challenges WHERE digest = ? RETURNING expires_at`, digest).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !now.Before(decodeTime(expires)) {
			return keyward.Errorf(keyward.ENOTFOUND, "no such challenge")
		}
		return err
	})
	return wrap("use challenge", err)
}
