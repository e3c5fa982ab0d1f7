package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

// rootTokenKey is the meta key set once a root token was issued; its value
// is the id of the newest root token.
const rootTokenKey = "root_token"

// querier is what reads need: the pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// CreateToken inserts t, its secret sec and ev in one transaction. An event
// with an empty WorkspaceID is stored as one of t's workspace, and a secret
// with an empty TokenID or CreatedAt as t's; a nil ev records no event (for
// callers outside the API, such as tests). It returns ENOTFOUND when t's
// workspace does not exist and ECONFLICT when t's id or sec's digest exists.
func (db *DB) CreateToken(ctx context.Context, t *keyward.Token, sec *keyward.Secret, ev *keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := createToken(ctx, tx, t, sec); err != nil {
			return err
		}
		return db.logTokenWrite(ctx, tx, t.ID, t.CreatedAt, ev, t.WorkspaceID)
	})
	return wrap("create token", err)
}

// CreateRootToken is like CreateToken and also records that a root token
// was issued. It returns ECONFLICT when one was issued before, unless again
// is true. Of concurrent calls with again false, exactly one succeeds: the
// first to insert the meta row holds it until it commits, and the others
// then find it there.
func (db *DB) CreateRootToken(ctx context.Context, t *keyward.Token, sec *keyward.Secret, ev *keyward.AuditEvent, again bool) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		q := `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`
		if again {
			q = `INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value`
		}
		tag, err := tx.Exec(ctx, q, rootTokenKey, safeText(t.ID))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ECONFLICT, "a root token was already issued")
		}
		if err := createToken(ctx, tx, t, sec); err != nil {
			return err
		}
		return db.logTokenWrite(ctx, tx, t.ID, t.CreatedAt, ev, t.WorkspaceID)
	})
	return wrap("create root token", err)
}

// createToken inserts t and its secret. The caller then logs the write.
func createToken(ctx context.Context, tx pgx.Tx, t *keyward.Token, sec *keyward.Secret) error {
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
	return insertSecret(ctx, tx, t.ID, &s)
}

// logTokenWrite takes lockLogs and appends ev (stored in workspaceID when
// its WorkspaceID is empty) and a change of the token at the given time.
// It is the last step of every token write.
func (db *DB) logTokenWrite(ctx context.Context, tx pgx.Tx, tokenID string, at time.Time, ev *keyward.AuditEvent, workspaceID string) error {
	if err := lockLogs(ctx, tx); err != nil {
		return err
	}
	if err := db.insertEvent(ctx, tx, ev, workspaceID); err != nil {
		return err
	}
	return insertChange(ctx, tx, tokenID, at)
}

// tokenCols lists the columns of tokens in the order tokenRow reads them
// and tokenValues writes them (after id and workspace_id). name_folded is
// derived from name: written with it, ignored on reading.
var tokenCols = []string{
	"id", "workspace_id",
	"name", "name_folded", "hint", "scopes", "expires_at", "allowed_cidrs", "rate_limit", "quota",
	"subject", "metadata",
	"revoked", "revoked_at", "revoke_reason",
	"suspended", "suspended_at", "suspend_reason",
	"created_by", "created_at", "updated_at", "rotated_at",
	"last_used_at", "last_used_ip",
}

var (
	tokenColumns = strings.Join(tokenCols, ", ")
	// tokenSet assigns every column but id and workspace_id from $1, $2, ...
	tokenSet = func() string {
		var b strings.Builder
		for i, c := range tokenCols[2:] {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s = $%d", c, i+1)
		}
		return b.String()
	}()
	// tokenPlaceholders is $1, $2, ... for every column.
	tokenPlaceholders = func() string {
		p := make([]string, len(tokenCols))
		for i := range p {
			p[i] = fmt.Sprintf("$%d", i+1)
		}
		return strings.Join(p, ", ")
	}()
)

// qualified returns cols as a column list qualified with table alias a.
func qualified(a string, cols []string) string {
	return a + "." + strings.Join(cols, ", "+a+".")
}

// tokenValues returns the columns of t after id and workspace_id, in the
// order of tokenCols.
func tokenValues(t *keyward.Token) ([]any, error) {
	var rateLimit, quota []byte
	var err error
	if t.RateLimit != nil {
		if rateLimit, err = json.Marshal(t.RateLimit); err != nil {
			return nil, err
		}
	}
	if t.Quota != nil {
		if quota, err = json.Marshal(t.Quota); err != nil {
			return nil, err
		}
	}
	name := safeText(t.Name)
	return []any{
		name, strings.ToLower(name), safeText(t.Hint), textArray(t.Scopes), t.ExpiresAt, textArray(t.AllowedCIDRs),
		jsonb(rateLimit), jsonb(quota),
		safeText(t.Subject), jsonText(t.Metadata),
		t.Revoked, t.RevokedAt, safeText(t.RevokeReason),
		t.Suspended, t.SuspendedAt, safeText(t.SuspendReason),
		safeText(t.CreatedBy), t.CreatedAt, t.UpdatedAt, t.RotatedAt,
		t.LastUsedAt, safeText(t.LastUsedIP),
	}, nil
}

// textArray returns s for a NOT NULL text[] column: never nil, each
// element storable.
func textArray(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = safeText(v)
	}
	return out
}

// jsonb returns marshalled JSON for a jsonb column, nil (SQL NULL) for nil.
func jsonb(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

func insertToken(ctx context.Context, tx pgx.Tx, t *keyward.Token) error {
	vals, err := tokenValues(t)
	if err != nil {
		return err
	}
	args := append([]any{safeText(t.ID), safeText(t.WorkspaceID)}, vals...)
	_, err = tx.Exec(ctx, `INSERT INTO tokens (`+tokenColumns+`) VALUES (`+tokenPlaceholders+`)`, args...)
	if _, ok := uniqueViolation(err); ok {
		return keyward.Errorf(keyward.ECONFLICT, "token %s exists", t.ID)
	}
	return err
}

// tokenRow receives the columns of tokenCols.
type tokenRow struct {
	t                          keyward.Token
	folded                     string
	rateLimit, quota, metadata []byte
	scopes, cidrs              []string
}

func (r *tokenRow) dest() []any {
	t := &r.t
	return []any{&t.ID, &t.WorkspaceID,
		&t.Name, &r.folded, &t.Hint, &r.scopes, &t.ExpiresAt, &r.cidrs, &r.rateLimit, &r.quota,
		&t.Subject, &r.metadata,
		&t.Revoked, &t.RevokedAt, &t.RevokeReason,
		&t.Suspended, &t.SuspendedAt, &t.SuspendReason,
		&t.CreatedBy, &t.CreatedAt, &t.UpdatedAt, &t.RotatedAt,
		&t.LastUsedAt, &t.LastUsedIP}
}

func (r *tokenRow) token() (*keyward.Token, error) {
	t := r.t
	// An empty list reads as nil, as Token.Clone makes it.
	if len(r.scopes) > 0 {
		t.Scopes = r.scopes
	}
	if len(r.cidrs) > 0 {
		t.AllowedCIDRs = r.cidrs
	}
	if r.rateLimit != nil {
		t.RateLimit = new(keyward.RateLimit)
		if err := json.Unmarshal(r.rateLimit, t.RateLimit); err != nil {
			return nil, fmt.Errorf("token %s: rate_limit: %w", t.ID, err)
		}
	}
	if r.quota != nil {
		t.Quota = new(keyward.Quota)
		if err := json.Unmarshal(r.quota, t.Quota); err != nil {
			return nil, fmt.Errorf("token %s: quota: %w", t.ID, err)
		}
	}
	if r.metadata != nil {
		t.Metadata = json.RawMessage(r.metadata)
	}
	return &t, nil
}

func scanToken(row pgx.Row) (*keyward.Token, error) {
	var r tokenRow
	if err := row.Scan(r.dest()...); err != nil {
		return nil, err
	}
	return r.token()
}

// findToken returns the token with the given id in the given workspace, or
// ENOTFOUND, also when the id is one of another workspace's tokens. With
// lock, it locks the token's row until the transaction ends.
func findToken(ctx context.Context, q querier, workspaceID, id string, lock bool) (*keyward.Token, error) {
	notFound := keyward.Errorf(keyward.ENOTFOUND, "token %s not found", id)
	if !storable(id) || !storable(workspaceID) {
		return nil, notFound
	}
	sql := `SELECT ` + tokenColumns + ` FROM tokens WHERE id = $1 AND workspace_id = $2`
	if lock {
		// NO KEY UPDATE is the lock an UPDATE of non-key columns takes: it
		// serialises writers of the token but lets inserts that merely
		// reference it (quota usage) proceed.
		sql += ` FOR NO KEY UPDATE`
	}
	t, err := scanToken(q.QueryRow(ctx, sql, id, workspaceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	return t, err
}

// FindToken returns the token with the given id in the given workspace. It
// returns ENOTFOUND when there is none, also when the id is one of another
// workspace's tokens.
func (db *DB) FindToken(ctx context.Context, workspaceID, id string) (*keyward.Token, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	t, err := findToken(ctx, db.rerun, workspaceID, id, false)
	return t, wrap("find token", err)
}

// TokenByID returns the token with the given id in whichever workspace
// holds it, or ENOTFOUND. It is for the verification engine, which knows
// ids only from the store; API paths use FindToken.
func (db *DB) TokenByID(ctx context.Context, id string) (*keyward.Token, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "token %s not found", id)
	if !storable(id) {
		return nil, notFound
	}
	t, err := scanToken(db.rerun.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	return t, wrap("token by id", err)
}

// FindTokens returns up to f.Limit (all when f.Limit is zero) of the tokens
// of f.WorkspaceID that match every filter set in f, ordered by id
// (descending with f.Newest). The state is computed at f.Now as Token.State
// does: revoked wins over suspended, which wins over expired. A token never
// used matches f.UnusedSince. The name filter is a substring match after
// lower-casing both sides with strings.ToLower. It returns EINVALID for an unknown state.
func (db *DB) FindTokens(ctx context.Context, f keyward.TokenFilter) ([]*keyward.Token, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	args := []any{f.WorkspaceID}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	where := []string{"workspace_id = $1"}
	switch f.State {
	case "":
	case keyward.StateRevoked:
		where = append(where, "revoked")
	case keyward.StateSuspended:
		where = append(where, "NOT revoked AND suspended")
	case keyward.StateExpired:
		where = append(where, "NOT revoked AND NOT suspended AND expires_at IS NOT NULL AND expires_at <= "+arg(f.Now))
	case keyward.StateActive:
		where = append(where, "NOT revoked AND NOT suspended AND (expires_at IS NULL OR expires_at > "+arg(f.Now)+")")
	case keyward.StatePendingApproval:
		// No token is stored pending approval until approval workflows exist.
		return nil, nil
	default:
		return nil, keyward.Errorf(keyward.EINVALID, "unknown token state %q", f.State)
	}
	name := strings.ToLower(f.Name)
	if !storable(f.WorkspaceID) || !storable(f.Subject) || !storable(f.Scope) || !storable(name) || !storable(f.CreatedBy) {
		return nil, nil // no stored value equals or contains it
	}
	if f.Subject != "" {
		where = append(where, "subject = "+arg(f.Subject))
	}
	if f.Scope != "" {
		where = append(where, arg(f.Scope)+" = ANY (scopes)")
	}
	if name != "" {
		// strpos, unlike LIKE, has no wildcards to escape.
		where = append(where, "strpos(name_folded, "+arg(name)+") > 0")
	}
	if f.CreatedBy != "" {
		where = append(where, "created_by = "+arg(f.CreatedBy))
	}
	if !f.UnusedSince.IsZero() {
		where = append(where, "(last_used_at IS NULL OR last_used_at < "+arg(f.UnusedSince)+")")
	}
	if f.After != "" {
		where = append(where, cursor("id", ">", f.After, &args))
	}
	if f.Before != "" {
		where = append(where, cursor("id", "<", f.Before, &args))
	}
	order := " ORDER BY id"
	if f.Newest {
		order += " DESC"
	}
	limit := arg(sqlLimit(f.Limit))
	rows, err := db.rerun.Query(ctx, `SELECT `+tokenColumns+` FROM tokens
		WHERE `+strings.Join(where, " AND ")+order+` LIMIT `+limit, args...)
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

// UpdateToken reads and locks the token with the given id in the given
// workspace and calls fn with a copy of it; concurrent updates of one token
// thus run one after the other, each seeing the last one's result. When fn
// returns an error, UpdateToken returns that error; when fn returns a nil
// write, it returns the token unchanged; in both cases it writes nothing.
// Otherwise it writes every field of the copy but ID and WorkspaceID, the
// write's event (stored in the token's workspace when its WorkspaceID is
// empty), a change, and the rotation the write asks for, all in one
// transaction, and returns the token as stored. The event is required. A
// rotation needs w.Now; a zero w.GraceUntil ends the replaced secret's
// grace at w.Now. UpdateToken returns ENOTFOUND, without calling fn, when
// the workspace has no token with that id.
func (db *DB) UpdateToken(ctx context.Context, workspaceID, id string, fn func(t *keyward.Token) (*keyward.TokenWrite, error)) (*keyward.Token, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var out *keyward.Token
	var fnErr error
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		t, err := findToken(ctx, tx, workspaceID, id, true)
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
		vals, err := tokenValues(c)
		if err != nil {
			return err
		}
		n := len(vals)
		out, err = scanToken(tx.QueryRow(ctx, `UPDATE tokens SET `+tokenSet+fmt.Sprintf(` WHERE id = $%d RETURNING `, n+1)+tokenColumns,
			append(vals, t.ID)...))
		if err != nil {
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
		return db.logTokenWrite(ctx, tx, t.ID, at, w.Event, t.WorkspaceID)
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
func rotate(ctx context.Context, tx pgx.Tx, tokenID string, w *keyward.TokenWrite) error {
	if w.Now.IsZero() {
		return errors.New("a rotation needs Now")
	}
	grace := w.GraceUntil
	if grace.IsZero() {
		grace = w.Now
	}
	if _, err := tx.Exec(ctx, `UPDATE token_secrets SET expires_at = $1
		WHERE token_id = $2 AND expires_at IS NOT NULL AND expires_at > $1`, w.Now, tokenID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE token_secrets SET expires_at = $1
		WHERE token_id = $2 AND expires_at IS NULL`, grace, tokenID); err != nil {
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
func insertSecret(ctx context.Context, tx pgx.Tx, tokenID string, s *keyward.Secret) error {
	if s.TokenID != "" && s.TokenID != tokenID {
		return fmt.Errorf("secret of token %s given for token %s", s.TokenID, tokenID)
	}
	if len(s.Digest) == 0 {
		return errors.New("a secret needs a digest")
	}
	_, err := tx.Exec(ctx, `INSERT INTO token_secrets (digest, key_id, token_id, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, s.Digest, safeText(s.KeyID), safeText(tokenID), s.CreatedAt, s.ExpiresAt)
	if _, ok := uniqueViolation(err); ok {
		// Never name the digest: errors may be logged.
		return keyward.Errorf(keyward.ECONFLICT, "the secret of token %s exists", tokenID)
	}
	return err
}

const secretColumns = `s.digest, s.key_id, s.token_id, s.created_at, s.expires_at`

func secretDest(s *keyward.Secret) []any {
	return []any{&s.Digest, &s.KeyID, &s.TokenID, &s.CreatedAt, &s.ExpiresAt}
}

// LookupSecret returns the secret with the given digest and its token, or
// ENOTFOUND. It does not check whether either is still valid.
func (db *DB) LookupSecret(ctx context.Context, digest []byte) (*keyward.Secret, *keyward.Token, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var (
		s  keyward.Secret
		tr tokenRow
	)
	// One query, so that the secret and the token are of one snapshot.
	err := db.rerun.QueryRow(ctx, `SELECT `+secretColumns+`, `+qualified("t", tokenCols)+`
		FROM token_secrets s JOIN tokens t ON t.id = s.token_id WHERE s.digest = $1`, digest).
		Scan(append(secretDest(&s), tr.dest()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil, keyward.Errorf(keyward.ENOTFOUND, "secret not found")
	}
	if err != nil {
		return nil, nil, wrap("lookup secret", err)
	}
	t, err := tr.token()
	if err != nil {
		return nil, nil, wrap("lookup secret", err)
	}
	return &s, t, nil
}

// TokenSecrets returns every stored secret of the token with the given id,
// oldest first, or ENOTFOUND when there is no such token.
func (db *DB) TokenSecrets(ctx context.Context, tokenID string) ([]*keyward.Secret, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "token %s not found", tokenID)
	if !storable(tokenID) {
		return nil, notFound
	}
	// One query, so that the token's existence and its secrets are of one
	// snapshot: a token without secrets yields one row of NULLs.
	rows, err := db.rerun.Query(ctx, `SELECT s.digest, s.key_id, s.token_id, s.created_at, s.expires_at
		FROM tokens t LEFT JOIN token_secrets s ON s.token_id = t.id WHERE t.id = $1
		ORDER BY s.created_at, s.expires_at IS NULL, s.expires_at, s.digest`, tokenID)
	if err != nil {
		return nil, wrap("token secrets", err)
	}
	defer rows.Close()
	var out []*keyward.Secret
	found := false
	for rows.Next() {
		found = true
		var (
			s               keyward.Secret
			keyID, secTokID *string
			createdAt       *time.Time
		)
		if err := rows.Scan(&s.Digest, &keyID, &secTokID, &createdAt, &s.ExpiresAt); err != nil {
			return nil, wrap("token secrets", err)
		}
		if s.Digest == nil {
			continue // the token has no secret
		}
		s.KeyID, s.TokenID, s.CreatedAt = *keyID, *secTokID, *createdAt
		out = append(out, &s)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("token secrets", err)
	}
	if !found {
		return nil, notFound
	}
	return out, nil
}

// Redigest replaces the stored digest oldDigest by sec.Digest and its key
// id by sec.KeyID, keeping the secret's token, creation and expiry. It
// returns ENOTFOUND when no secret has oldDigest (for example because
// another node re-digested it first), or when sec.TokenID is set and is not
// the secret's token, and ECONFLICT when sec.Digest is stored already.
func (db *DB) Redigest(ctx context.Context, oldDigest []byte, sec *keyward.Secret) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	if len(sec.Digest) == 0 {
		return wrap("redigest", errors.New("a secret needs a digest"))
	}
	if !storable(sec.TokenID) {
		return keyward.Errorf(keyward.ENOTFOUND, "secret not found")
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE token_secrets SET digest = $1, key_id = $2
			WHERE digest = $3 AND ($4 = '' OR token_id = $4)`, sec.Digest, safeText(sec.KeyID), oldDigest, sec.TokenID)
		if _, ok := uniqueViolation(err); ok {
			return keyward.Errorf(keyward.ECONFLICT, "the new secret exists")
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return keyward.Errorf(keyward.ENOTFOUND, "secret not found")
		}
		return nil
	})
	return wrap("redigest", err)
}

// SecretDigests returns up to limit stored digests greater than after, in
// byte order.
func (db *DB) SecretDigests(ctx context.Context, after []byte, limit int) ([][]byte, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if after == nil {
		after = []byte{} // the least bytea; nil would be NULL and match nothing
	}
	rows, err := db.rerun.Query(ctx, `SELECT digest FROM token_secrets
		WHERE digest > $1 ORDER BY digest LIMIT $2`, after, limit)
	if err != nil {
		return nil, wrap("secret digests", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, wrap("secret digests", err)
	}
	return out, nil
}

// SecretKeys counts the stored secrets by the server key that made them.
func (db *DB) SecretKeys(ctx context.Context) (map[string]int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	out, err := secretKeys(ctx, db.rerun)
	return out, wrap("secret keys", err)
}

// secretKeys counts the stored token secrets by key id, through q (the
// pool or a transaction).
func secretKeys(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) (map[string]int64, error) {
	rows, err := q.Query(ctx, `SELECT key_id, COUNT(*) FROM token_secrets GROUP BY key_id`)
	if err != nil {
		return nil, err
	}
	type count struct {
		id string
		n  int64
	}
	counts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (c count, err error) {
		err = r.Scan(&c.id, &c.n)
		return c, err
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(counts))
	for _, c := range counts {
		out[c.id] = c.n
	}
	return out, nil
}
