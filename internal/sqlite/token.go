package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/keyward/keyward"
)

// rootTokenKey is the meta key set once a root token was issued; its value
// is the id of the newest root token.
const rootTokenKey = "root_token"

// querier is what reads need: the read pool or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// CreateToken inserts t, its secret sec and ev in one transaction. An event
// with an empty WorkspaceID is stored as one of t's workspace, and a secret
// with an empty TokenID or CreatedAt as t's; a nil ev records no event (for
// callers outside the API, such as tests). It returns ENOTFOUND when t's
// workspace does not exist and ECONFLICT when t's id or sec's digest exists.
func (db *DB) CreateToken(ctx context.Context, t *keyward.Token, sec *keyward.Secret, ev *keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := createToken(ctx, tx, t, sec); err != nil {
			return err
		}
		return db.insertEvent(ctx, tx, ev, t.WorkspaceID)
	})
	return wrap("create token", err)
}

// CreateRootToken is like CreateToken and also records that a root token
// was issued. It returns ECONFLICT when one was issued before, unless again
// is true.
func (db *DB) CreateRootToken(ctx context.Context, t *keyward.Token, sec *keyward.Secret, ev *keyward.AuditEvent, again bool) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM meta WHERE key = ?`, rootTokenKey).Scan(&n); err != nil {
			return err
		}
		if n > 0 && !again {
			return keyward.Errorf(keyward.ECONFLICT, "a root token was already issued")
		}
		if err := createToken(ctx, tx, t, sec); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, rootTokenKey, t.ID); err != nil {
			return err
		}
		return db.insertEvent(ctx, tx, ev, t.WorkspaceID)
	})
	return wrap("create root token", err)
}

// createToken inserts t, its secret and a change.
func createToken(ctx context.Context, tx *sql.Tx, t *keyward.Token, sec *keyward.Secret) error {
	if sec == nil {
		return errors.New("a token needs a secret")
	}
	if err := workspaceExists(ctx, tx, t.WorkspaceID); err != nil {
		return err
	}
	if err := insertToken(ctx, tx, t); err != nil {
		return err
	}
	s := *sec
	if s.CreatedAt.IsZero() {
		s.CreatedAt = t.CreatedAt
	}
	if err := insertSecret(ctx, tx, t.ID, &s); err != nil {
		return err
	}
	return insertChange(ctx, tx, t.ID, t.CreatedAt)
}

// tokenValues returns the columns of t after id and workspace_id, in the
// order of tokenCols.
func tokenValues(t *keyward.Token) ([]any, error) {
	scopes, err := json.Marshal(nonNil(t.Scopes))
	if err != nil {
		return nil, err
	}
	cidrs, err := json.Marshal(nonNil(t.AllowedCIDRs))
	if err != nil {
		return nil, err
	}
	var rateLimit, quota any
	if t.RateLimit != nil {
		b, err := json.Marshal(t.RateLimit)
		if err != nil {
			return nil, err
		}
		rateLimit = string(b)
	}
	if t.Quota != nil {
		b, err := json.Marshal(t.Quota)
		if err != nil {
			return nil, err
		}
		quota = string(b)
	}
	return []any{
		t.Name, t.Hint, string(scopes), encodeTimePtr(t.ExpiresAt), string(cidrs), rateLimit, quota,
		t.Subject, encodeJSON(t.Metadata),
		t.Revoked, encodeTimePtr(t.RevokedAt), t.RevokeReason,
		t.Suspended, encodeTimePtr(t.SuspendedAt), t.SuspendReason,
		t.CreatedBy, encodeTime(t.CreatedAt), encodeTime(t.UpdatedAt), encodeTimePtr(t.RotatedAt),
		encodeTimePtr(t.LastUsedAt), t.LastUsedIP,
	}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tokenCols lists the columns of tokens in the order tokenRow reads them
// and tokenValues writes them (after id and workspace_id).
var tokenCols = []string{
	"id", "workspace_id",
	"name", "hint", "scopes", "expires_at", "allowed_cidrs", "rate_limit", "quota",
	"subject", "metadata",
	"revoked", "revoked_at", "revoke_reason",
	"suspended", "suspended_at", "suspend_reason",
	"created_by", "created_at", "updated_at", "rotated_at",
	"last_used_at", "last_used_ip",
}

var (
	tokenColumns = strings.Join(tokenCols, ", ")
	// tokenSet assigns every column but id and workspace_id.
	tokenSet = strings.Join(tokenCols[2:], " = ?, ") + " = ?"
)

// qualified returns cols as a column list qualified with table alias a.
func qualified(a string, cols []string) string {
	return a + "." + strings.Join(cols, ", "+a+".")
}

func insertToken(ctx context.Context, tx *sql.Tx, t *keyward.Token) error {
	vals, err := tokenValues(t)
	if err != nil {
		return err
	}
	args := append([]any{t.ID, t.WorkspaceID}, vals...)
	_, err = tx.ExecContext(ctx, `INSERT INTO tokens (`+tokenColumns+`)
		VALUES (`+strings.Repeat("?, ", len(args)-1)+`?)`, args...)
	if isUnique(err) {
		return keyward.Errorf(keyward.ECONFLICT, "token %s exists", t.ID)
	}
	return err
}

// updateToken writes every field of t but its id and workspace to the
// token with the given id.
func updateToken(ctx context.Context, tx *sql.Tx, id string, t *keyward.Token) error {
	vals, err := tokenValues(t)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE tokens SET `+tokenSet+` WHERE id = ?`, append(vals, id)...)
	return err
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// tokenRow receives the columns of tokenCols.
type tokenRow struct {
	t                                 keyward.Token
	scopes, cidrs                     string
	rateLimit, quota, metadata        sql.NullString
	expiresAt, revokedAt, suspendedAt sql.NullInt64
	rotatedAt, lastUsedAt             sql.NullInt64
	createdAt, updatedAt              int64
}

func (r *tokenRow) dest() []any {
	t := &r.t
	return []any{&t.ID, &t.WorkspaceID,
		&t.Name, &t.Hint, &r.scopes, &r.expiresAt, &r.cidrs, &r.rateLimit, &r.quota,
		&t.Subject, &r.metadata,
		&t.Revoked, &r.revokedAt, &t.RevokeReason,
		&t.Suspended, &r.suspendedAt, &t.SuspendReason,
		&t.CreatedBy, &r.createdAt, &r.updatedAt, &r.rotatedAt,
		&r.lastUsedAt, &t.LastUsedIP}
}

func (r *tokenRow) token() (*keyward.Token, error) {
	t := r.t
	if err := json.Unmarshal([]byte(r.scopes), &t.Scopes); err != nil {
		return nil, fmt.Errorf("token %s: scopes: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(r.cidrs), &t.AllowedCIDRs); err != nil {
		return nil, fmt.Errorf("token %s: allowed_cidrs: %w", t.ID, err)
	}
	// An empty list reads as nil, as Token.Clone makes it.
	if len(t.Scopes) == 0 {
		t.Scopes = nil
	}
	if len(t.AllowedCIDRs) == 0 {
		t.AllowedCIDRs = nil
	}
	if r.rateLimit.Valid {
		t.RateLimit = new(keyward.RateLimit)
		if err := json.Unmarshal([]byte(r.rateLimit.String), t.RateLimit); err != nil {
			return nil, fmt.Errorf("token %s: rate_limit: %w", t.ID, err)
		}
	}
	if r.quota.Valid {
		t.Quota = new(keyward.Quota)
		if err := json.Unmarshal([]byte(r.quota.String), t.Quota); err != nil {
			return nil, fmt.Errorf("token %s: quota: %w", t.ID, err)
		}
	}
	if r.metadata.Valid {
		t.Metadata = json.RawMessage(r.metadata.String)
	}
	t.ExpiresAt = decodeTimePtr(r.expiresAt)
	t.RevokedAt = decodeTimePtr(r.revokedAt)
	t.SuspendedAt = decodeTimePtr(r.suspendedAt)
	t.CreatedAt = decodeTime(r.createdAt)
	t.UpdatedAt = decodeTime(r.updatedAt)
	t.RotatedAt = decodeTimePtr(r.rotatedAt)
	t.LastUsedAt = decodeTimePtr(r.lastUsedAt)
	return &t, nil
}

func scanToken(row scanner) (*keyward.Token, error) {
	var r tokenRow
	if err := row.Scan(r.dest()...); err != nil {
		return nil, err
	}
	return r.token()
}

// findToken returns the token with the given id in the given workspace, or
// ENOTFOUND, also when the id is one of another workspace's tokens.
func findToken(ctx context.Context, q querier, workspaceID, id string) (*keyward.Token, error) {
	t, err := scanToken(q.QueryRowContext(ctx,
		`SELECT `+tokenColumns+` FROM tokens WHERE id = ? AND workspace_id = ?`, id, workspaceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "token %s not found", id)
	}
	return t, err
}

// FindToken returns the token with the given id in the given workspace. It
// returns ENOTFOUND when there is none, also when the id is one of another
// workspace's tokens.
func (db *DB) FindToken(ctx context.Context, workspaceID, id string) (*keyward.Token, error) {
	t, err := findToken(ctx, db.read, workspaceID, id)
	return t, wrap("find token", err)
}

// TokenByID returns the token with the given id in whichever workspace
// holds it, or ENOTFOUND. It is for the verification engine, which knows
// ids only from the store; API paths use FindToken.
func (db *DB) TokenByID(ctx context.Context, id string) (*keyward.Token, error) {
	t, err := scanToken(db.read.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "token %s not found", id)
	}
	return t, wrap("token by id", err)
}

// FindTokens returns up to f.Limit (all when f.Limit is zero) of the tokens
// of f.WorkspaceID that match every filter set in f, ordered by id
// (descending with f.Newest). The state is computed at f.Now as Token.State
// does: revoked wins over suspended, which wins over expired. A token never
// used matches f.UnusedSince. It returns EINVALID for an unknown state.
func (db *DB) FindTokens(ctx context.Context, f keyward.TokenFilter) ([]*keyward.Token, error) {
	where := []string{"workspace_id = ?"}
	args := []any{f.WorkspaceID}
	now := encodeTime(f.Now)
	switch f.State {
	case "":
	case keyward.StateRevoked:
		where = append(where, "revoked = 1")
	case keyward.StateSuspended:
		where = append(where, "revoked = 0 AND suspended = 1")
	case keyward.StateExpired:
		where = append(where, "revoked = 0 AND suspended = 0 AND expires_at IS NOT NULL AND expires_at <= ?")
		args = append(args, now)
	case keyward.StateActive:
		where = append(where, "revoked = 0 AND suspended = 0 AND (expires_at IS NULL OR expires_at > ?)")
		args = append(args, now)
	case keyward.StatePendingApproval:
		// No token is stored pending approval until approval workflows exist.
		where = append(where, "0")
	default:
		return nil, keyward.Errorf(keyward.EINVALID, "unknown token state %q", f.State)
	}
	if f.Subject != "" {
		where = append(where, "subject = ?")
		args = append(args, f.Subject)
	}
	if f.Scope != "" {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(tokens.scopes) WHERE json_each.value = ?)")
		args = append(args, f.Scope)
	}
	if f.Name != "" {
		// instr, unlike LIKE, has no wildcards to escape.
		where = append(where, "instr("+foldFunc+"(name), ?) > 0")
		args = append(args, strings.ToLower(f.Name))
	}
	if f.CreatedBy != "" {
		where = append(where, "created_by = ?")
		args = append(args, f.CreatedBy)
	}
	if !f.UnusedSince.IsZero() {
		where = append(where, "(last_used_at IS NULL OR last_used_at < ?)")
		args = append(args, encodeTime(f.UnusedSince))
	}
	if f.After != "" {
		where = append(where, "id > ?")
		args = append(args, f.After)
	}
	if f.Before != "" {
		where = append(where, "id < ?")
		args = append(args, f.Before)
	}
	order := " ORDER BY id"
	if f.Newest {
		order += " DESC"
	}
	args = append(args, sqlLimit(f.Limit))
	rows, err := db.read.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens
		WHERE `+strings.Join(where, " AND ")+order+` LIMIT ?`, args...)
	if err != nil {
		return nil, wrap("find tokens", err)
	}
	defer rows.Close()
	var out []*keyward.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, wrap("find tokens", err)
		}
		out = append(out, t)
	}
	return out, wrap("find tokens", rows.Err())
}

// UpdateToken reads the token with the given id in the given workspace and
// calls fn with a copy of it. When fn returns an error, UpdateToken returns
// that error; when fn returns a nil write, it returns the token unchanged;
// in both cases it writes nothing. Otherwise it writes every field of the
// copy but ID and WorkspaceID, the write's event (stored in the token's
// workspace when its WorkspaceID is empty), a change, and the rotation the
// write asks for, all in one transaction, and returns the token as stored.
// The event is required. A rotation needs w.Now; a zero w.GraceUntil ends
// the replaced secret's grace at w.Now. UpdateToken returns ENOTFOUND,
// without calling fn, when the workspace has no token with that id.
func (db *DB) UpdateToken(ctx context.Context, workspaceID, id string, fn func(t *keyward.Token) (*keyward.TokenWrite, error)) (*keyward.Token, error) {
	var out *keyward.Token
	var fnErr error
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		t, err := findToken(ctx, tx, workspaceID, id)
		if err != nil {
			return err
		}
		c := t.Clone()
		w, err := fn(c)
		if err != nil {
			fnErr = err
			return err
		}
		if w == nil {
			out = t
			return nil
		}
		if w.Event == nil {
			return errors.New("the write has no event")
		}
		if err := updateToken(ctx, tx, t.ID, c); err != nil {
			return err
		}
		if w.Rotate != nil {
			if err := rotate(ctx, tx, t.ID, w); err != nil {
				return err
			}
		}
		at := w.Now
		if at.IsZero() {
			at = w.Event.Time
		}
		if err := insertChange(ctx, tx, t.ID, at); err != nil {
			return err
		}
		if err := db.insertEvent(ctx, tx, w.Event, t.WorkspaceID); err != nil {
			return err
		}
		out, err = findToken(ctx, tx, workspaceID, id)
		return err
	})
	switch {
	case fnErr != nil:
		return nil, fnErr // unchanged, so that callers can match it
	case err != nil:
		return nil, wrap("update token", err)
	}
	return out, nil
}

// rotate makes w.Rotate the current secret of the token. Every grace still
// running ends at w.Now, so that at most two secrets are valid at a time,
// then the current secret is given a grace until w.GraceUntil.
func rotate(ctx context.Context, tx *sql.Tx, tokenID string, w *keyward.TokenWrite) error {
	if w.Now.IsZero() {
		return errors.New("a rotation needs Now")
	}
	now := encodeTime(w.Now)
	grace := w.GraceUntil
	if grace.IsZero() {
		grace = w.Now
	}
	if _, err := tx.ExecContext(ctx, `UPDATE token_secrets SET expires_at = ?
		WHERE token_id = ? AND expires_at IS NOT NULL AND expires_at > ?`, now, tokenID, now); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE token_secrets SET expires_at = ?
		WHERE token_id = ? AND expires_at IS NULL`, encodeTime(grace), tokenID); err != nil {
		return err
	}
	s := *w.Rotate
	s.ExpiresAt = nil
	if s.CreatedAt.IsZero() {
		s.CreatedAt = w.Now
	}
	return insertSecret(ctx, tx, tokenID, &s)
}

// insertSecret inserts s as a secret of the token with the given id.
func insertSecret(ctx context.Context, tx *sql.Tx, tokenID string, s *keyward.Secret) error {
	if s.TokenID != "" && s.TokenID != tokenID {
		return fmt.Errorf("secret of token %s given for token %s", s.TokenID, tokenID)
	}
	if len(s.Digest) == 0 {
		return errors.New("a secret needs a digest")
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO token_secrets (digest, key_id, token_id, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?)`, s.Digest, s.KeyID, tokenID, encodeTime(s.CreatedAt), encodeTimePtr(s.ExpiresAt))
	if isUnique(err) {
		// Never name the digest: errors may be logged.
		return keyward.Errorf(keyward.ECONFLICT, "the secret of token %s exists", tokenID)
	}
	return err
}

const secretColumns = `s.digest, s.key_id, s.token_id, s.created_at, s.expires_at`

// secretRow receives the columns of secretColumns.
type secretRow struct {
	s         keyward.Secret
	createdAt int64
	expiresAt sql.NullInt64
}

func (r *secretRow) dest() []any {
	return []any{&r.s.Digest, &r.s.KeyID, &r.s.TokenID, &r.createdAt, &r.expiresAt}
}

func (r *secretRow) secret() *keyward.Secret {
	s := r.s
	s.CreatedAt = decodeTime(r.createdAt)
	s.ExpiresAt = decodeTimePtr(r.expiresAt)
	return &s
}

// LookupSecret returns the secret with the given digest and its token, or
// ENOTFOUND. It does not check whether either is still valid.
func (db *DB) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	var (
		sr secretRow
		tr tokenRow
	)
	// One query, so that the secret and the token are of one snapshot.
	err := db.read.QueryRowContext(ctx, `SELECT `+secretColumns+`, `+qualified("t", tokenCols)+`
		FROM token_secrets s JOIN tokens t ON t.id = s.token_id WHERE s.digest = ?`, digest).
		Scan(append(sr.dest(), tr.dest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, keyward.Errorf(keyward.ENOTFOUND, "secret not found")
	}
	if err != nil {
		return nil, nil, wrap("lookup secret", err)
	}
	t, err := tr.token()
	if err != nil {
		return nil, nil, wrap("lookup secret", err)
	}
	return sr.secret(), t, nil
}

// TokenSecrets returns every stored secret of the token with the given id,
// oldest first, or ENOTFOUND when there is no such token.
func (db *DB) TokenSecrets(ctx context.Context, tokenID string) ([]*keyward.Secret, error) {
	var out []*keyward.Secret
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens WHERE id = ?`, tokenID).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "token %s not found", tokenID)
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+secretColumns+` FROM token_secrets s
			WHERE s.token_id = ? ORDER BY s.created_at, s.expires_at IS NULL, s.expires_at, s.digest`, tokenID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r secretRow
			if err := rows.Scan(r.dest()...); err != nil {
				return err
			}
			out = append(out, r.secret())
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap("token secrets", err)
	}
	return out, nil
}

// Redigest replaces the stored digest oldDigest by sec.Digest and its key
// id by sec.KeyID, keeping the secret's token, creation and expiry. It
// returns ENOTFOUND when no secret has oldDigest (for example because
// another node re-digested it first), or when sec.TokenID is set and is not
// the secret's token, and ECONFLICT when sec.Digest is stored already.
func (db *DB) Redigest(ctx context.Context, oldDigest []byte, sec *keyward.Secret) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if len(sec.Digest) == 0 {
			return errors.New("a secret needs a digest")
		}
		res, err := tx.ExecContext(ctx, `UPDATE token_secrets SET digest = ?, key_id = ?
			WHERE digest = ? AND (? = '' OR token_id = ?)`, sec.Digest, sec.KeyID, oldDigest, sec.TokenID, sec.TokenID)
		if isUnique(err) {
			return keyward.Errorf(keyward.ECONFLICT, "the new secret exists")
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "secret not found")
		}
		return nil
	})
	return wrap("redigest", err)
}

// SecretDigests returns up to limit stored digests greater than after, in
// byte order.
func (db *DB) SecretDigests(ctx context.Context, after []byte, limit int) ([][]byte, error) {
	// X'' is the least blob: a nil after would bind NULL and match nothing.
	rows, err := db.read.QueryContext(ctx, `SELECT digest FROM token_secrets
		WHERE digest > coalesce(?, X'') ORDER BY digest LIMIT ?`, after, limit)
	if err != nil {
		return nil, wrap("secret digests", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var d []byte
		if err := rows.Scan(&d); err != nil {
			return nil, wrap("secret digests", err)
		}
		out = append(out, d)
	}
	return out, wrap("secret digests", rows.Err())
}

// SecretKeys counts the stored secrets by the server key that made them.
func (db *DB) SecretKeys(ctx context.Context) (map[string]int64, error) {
	out, err := secretKeys(ctx, db.read)
	return out, wrap("secret keys", err)
}

// secretKeys counts the stored token secrets by key id, through q (a pool
// or a transaction).
func secretKeys(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) (map[string]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT key_id, COUNT(*) FROM token_secrets GROUP BY key_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}
