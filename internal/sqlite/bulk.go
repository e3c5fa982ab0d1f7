package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/keyward/keyward"
)

var _ keyward.BulkLoader = (*DB)(nil)

// InsertTokens inserts tokens and their secrets (secrets[i] is the secret
// of tokens[i]) in one transaction, through two prepared statements reused
// for every row. It adds no change and no audit event: it is for seeding
// tests and benchmarks, not for production writes. A secret with an empty
// TokenID or a zero CreatedAt is stored as its token's. On error nothing is
// inserted; it returns ENOTFOUND when a token's workspace does not exist
// and ECONFLICT when a token id or digest exists, also twice in the call.
// The call holds the writer for its whole run, so callers insert in batches
// of some thousands.
func (db *DB) InsertTokens(ctx context.Context, tokens []*keyward.Token, secrets []*keyward.Secret) error {
	if len(tokens) != len(secrets) {
		return fmt.Errorf("sqlite: insert tokens: %d tokens but %d secrets", len(tokens), len(secrets))
	}
	if len(tokens) == 0 {
		return nil
	}
	secs := make([]keyward.Secret, len(secrets))
	for i, s := range secrets {
		t := tokens[i]
		switch {
		case s == nil:
			return fmt.Errorf("sqlite: insert tokens: token %s has no secret", t.ID)
		case s.TokenID != "" && s.TokenID != t.ID:
			return fmt.Errorf("sqlite: insert tokens: secret of token %s given for token %s", s.TokenID, t.ID)
		case len(s.Digest) == 0:
			return fmt.Errorf("sqlite: insert tokens: the secret of token %s has no digest", t.ID)
		}
		secs[i] = *s
		secs[i].TokenID = t.ID
		if secs[i].CreatedAt.IsZero() {
			secs[i].CreatedAt = t.CreatedAt
		}
	}
	// Secrets in digest order touch each page of the digest index once per
	// call rather than at random, which keeps large loads fast.
	slices.SortFunc(secs, func(a, b keyward.Secret) int { return bytes.Compare(a.Digest, b.Digest) })

	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		seen := make(map[string]bool)
		for _, t := range tokens {
			if !seen[t.WorkspaceID] {
				if err := workspaceExists(ctx, tx, t.WorkspaceID); err != nil {
					return err
				}
				seen[t.WorkspaceID] = true
			}
		}
		insTok, err := tx.PrepareContext(ctx, `INSERT INTO tokens (`+tokenColumns+`)
			VALUES (`+strings.Repeat("?, ", len(tokenCols)-1)+`?)`)
		if err != nil {
			return err
		}
		defer insTok.Close()
		args := make([]any, 0, len(tokenCols))
		for _, t := range tokens {
			vals, err := tokenValues(t)
			if err != nil {
				return err
			}
			args = append(append(args[:0], t.ID, t.WorkspaceID), vals...)
			if _, err := insTok.ExecContext(ctx, args...); err != nil {
				if isUnique(err) {
					return keyward.Errorf(keyward.ECONFLICT, "token %s exists", t.ID)
				}
				return err
			}
		}
		insSec, err := tx.PrepareContext(ctx, `INSERT INTO token_secrets (digest, key_id, token_id, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer insSec.Close()
		for i := range secs {
			s := &secs[i]
			_, err := insSec.ExecContext(ctx, s.Digest, s.KeyID, s.TokenID, encodeTime(s.CreatedAt), encodeTimePtr(s.ExpiresAt))
			if isUnique(err) {
				// Never name the digest: errors may be logged.
				return keyward.Errorf(keyward.ECONFLICT, "the secret of token %s exists", s.TokenID)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("insert tokens", err)
}

// CountTokens returns the number of tokens stored, in every workspace.
func (db *DB) CountTokens(ctx context.Context) (int64, error) {
	var n int64
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens`).Scan(&n)
	return n, wrap("count tokens", err)
}
