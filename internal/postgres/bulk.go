package postgres

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

var _ keyward.BulkLoader = (*DB)(nil)

// secretCols lists the columns of token_secrets in the order InsertTokens
// copies them.
var secretCols = []string{"digest", "key_id", "token_id", "created_at", "expires_at"}

// InsertTokens inserts tokens and their secrets (secrets[i] is the secret
// of tokens[i]) in one transaction, with one COPY into tokens and one into
// token_secrets. It adds no change and no audit event, and takes no lock
// but the rows': it is for seeding tests and benchmarks, not for production
// writes. A secret with an empty TokenID or a zero CreatedAt is stored as
// its token's. On error nothing is inserted; it returns ENOTFOUND when a
// token's workspace does not exist and ECONFLICT when a token id or digest
// exists, also twice in the call. Like every method it is bounded by
// opTimeout and each COPY by statement_timeout, so callers insert in
// batches of some thousands.
func (db *DB) InsertTokens(ctx context.Context, tokens []*keyward.Token, secrets []*keyward.Secret) error {
	if len(tokens) != len(secrets) {
		return fmt.Errorf("postgres: insert tokens: %d tokens but %d secrets", len(tokens), len(secrets))
	}
	if len(tokens) == 0 {
		return nil
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	secs := make([]keyward.Secret, len(secrets))
	for i, s := range secrets {
		t := tokens[i]
		switch {
		case s == nil:
			return fmt.Errorf("postgres: insert tokens: token %s has no secret", t.ID)
		case s.TokenID != "" && s.TokenID != t.ID:
			return fmt.Errorf("postgres: insert tokens: secret of token %s given for token %s", s.TokenID, t.ID)
		case len(s.Digest) == 0:
			return fmt.Errorf("postgres: insert tokens: the secret of token %s has no digest", t.ID)
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

	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		seen := make(map[string]bool)
		for _, t := range tokens {
			if !seen[t.WorkspaceID] {
				if err := workspaceExists(ctx, tx, t.WorkspaceID); err != nil {
					return err
				}
				seen[t.WorkspaceID] = true
			}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"tokens"}, tokenCols, pgx.CopyFromSlice(len(tokens), func(i int) ([]any, error) {
			t := tokens[i]
			vals, err := tokenValues(t)
			if err != nil {
				return nil, err
			}
			return append([]any{safeText(t.ID), safeText(t.WorkspaceID)}, vals...), nil
		}))
		if name, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "a token of the batch exists (%s)", name)
		}
		if err != nil {
			return err
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{"token_secrets"}, secretCols, pgx.CopyFromSlice(len(secs), func(i int) ([]any, error) {
			s := &secs[i]
			return []any{s.Digest, safeText(s.KeyID), safeText(s.TokenID), s.CreatedAt, s.ExpiresAt}, nil
		}))
		if name, ok := uniqueViolation(err); ok {
			// Never name the digest: errors may be logged.
			return keyward.Errorf(keyward.ECONFLICT, "a secret of the batch exists (%s)", name)
		}
		return err
	})
	return wrap("insert tokens", err)
}

// CountTokens returns the number of tokens stored, in every workspace.
func (db *DB) CountTokens(ctx context.Context) (int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var n int64
	err := db.rerun.QueryRow(ctx, `SELECT count(*) FROM tokens`).Scan(&n)
	return n, wrap("count tokens", err)
}
