package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/keyward/keyward"
)

// CreateWorkspace inserts ws and, when admin is not nil, its first
// management token with its secret sec, and the events, all or nothing. An
// admin token or event with an empty WorkspaceID is stored as one of ws. It
// returns ECONFLICT when the name or id is taken, or when the admin token's
// id or digest exists.
func (db *DB) CreateWorkspace(ctx context.Context, ws *keyward.Workspace, admin *keyward.Token, sec *keyward.Secret, events ...*keyward.AuditEvent) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := insertWorkspace(ctx, tx, ws); err != nil {
			return err
		}
		var t keyward.Token
		if admin != nil {
			t = *admin
			if t.WorkspaceID == "" {
				t.WorkspaceID = ws.ID
			}
			if err := createToken(ctx, tx, &t, sec); err != nil {
				return err
			}
		}
		if err := lockLogs(ctx, tx); err != nil {
			return err
		}
		for _, ev := range events {
			if err := db.insertEvent(ctx, tx, ev, ws.ID); err != nil {
				return err
			}
		}
		if admin != nil {
			return insertChange(ctx, tx, t.ID, t.CreatedAt)
		}
		return nil
	})
	return wrap("create workspace", err)
}

func insertWorkspace(ctx context.Context, tx pgx.Tx, ws *keyward.Workspace) error {
	_, err := tx.Exec(ctx, `INSERT INTO workspaces (id, name, name_key, token_prefix, created_at) VALUES ($1, $2, $3, $4, $5)`,
		safeText(ws.ID), safeText(ws.Name), safeText(keyward.NameKey(ws.Name)), safeText(ws.TokenPrefix), ws.CreatedAt)
	if c, ok := uniqueViolation(err); ok {
		switch c {
		case "workspaces_name_key":
			return keyward.Errorf(keyward.ECONFLICT, "a workspace named %q exists", ws.Name)
		case "workspaces_name_fold_key":
			return keyward.Errorf(keyward.ECONFLICT, "a workspace whose name differs from %q only in case exists", ws.Name)
		}
		return keyward.Errorf(keyward.ECONFLICT, "workspace %s exists", ws.ID)
	}
	return err
}

const workspaceColumns = `id, name, token_prefix, created_at`

func scanWorkspace(row pgx.Row) (*keyward.Workspace, error) {
	var ws keyward.Workspace
	if err := row.Scan(&ws.ID, &ws.Name, &ws.TokenPrefix, &ws.CreatedAt); err != nil {
		return nil, err
	}
	return &ws, nil
}

// FindWorkspace returns the workspace with the given id, or ENOTFOUND.
func (db *DB) FindWorkspace(ctx context.Context, id string) (*keyward.Workspace, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", id)
	if !storable(id) {
		return nil, notFound
	}
	ws, err := scanWorkspace(db.rerun.QueryRow(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	return ws, wrap("find workspace", err)
}

// FindWorkspaceByName returns the workspace with the given name (compared
// exactly), or ENOTFOUND.
func (db *DB) FindWorkspaceByName(ctx context.Context, name string) (*keyward.Workspace, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	notFound := keyward.Errorf(keyward.ENOTFOUND, "workspace %q not found", name)
	if !storable(name) {
		return nil, notFound
	}
	ws, err := scanWorkspace(db.rerun.QueryRow(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound
	}
	return ws, wrap("find workspace", err)
}

// HasWorkspace reports whether the database at url holds a workspace
// named name, as FindWorkspaceByName finds it, reading only: unlike Open,
// it neither migrates nor writes, so that a check (keyward gateway check)
// leaves the store as it was. It uses one connection, closed on return.
// A database (or search_path schema) that holds no keyward store, since
// keyward never set it up, is ErrNoStore.
func HasWorkspace(ctx context.Context, url, name string) (bool, error) {
	cfg, err := poolConfig(url)
	if err != nil {
		return false, err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return false, refusedParam(url, fmt.Errorf("postgres: %w", err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if !storable(name) {
		return false, nil
	}
	var one int
	err = conn.QueryRow(ctx, `SELECT 1 FROM workspaces WHERE name = $1`, name).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if pe := (*pgconn.PgError)(nil); errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return false, ErrNoStore
	}
	return err == nil, wrap("find workspace", err)
}

// ErrNoStore is the error of HasWorkspace for a database without keyward's
// tables.
var ErrNoStore = errors.New("no keyward store in this database")

// FindWorkspaces returns up to f.Limit workspaces (all when f.Limit is zero)
// with an id greater than f.After, ordered by id.
func (db *DB) FindWorkspaces(ctx context.Context, f keyward.WorkspaceFilter) ([]*keyward.Workspace, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var args []any
	after := cursor("id", ">", f.After, &args)
	args = append(args, sqlLimit(f.Limit))
	rows, err := db.rerun.Query(ctx, `SELECT `+workspaceColumns+` FROM workspaces WHERE `+after+` ORDER BY id LIMIT $2`, args...)
	if err != nil {
		return nil, wrap("find workspaces", err)
	}
	defer rows.Close()
	var out []*keyward.Workspace
	for rows.Next() {
		ws, err := scanWorkspace(rows)
		if err != nil {
			return nil, wrap("find workspaces", err)
		}
		out = append(out, ws)
	}
	return out, wrap("find workspaces", rows.Err())
}

// workspaceExists returns ENOTFOUND when no workspace has the given id.
func workspaceExists(ctx context.Context, tx pgx.Tx, id string) error {
	var ok bool
	if storable(id) {
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1)`, id).Scan(&ok); err != nil {
			return err
		}
	}
	if !ok {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", id)
	}
	return nil
}

// nameKeys is migration 0007's step: it fills name_key for the workspaces
// there are (keyward.NameKeys: those whose names already differ only in
// case, made before the key existed by nodes racing, are all kept), then
// makes it unique.
func nameKeys(ctx context.Context, tx pgx.Tx) error {
	if err := fillNameKeys(ctx, tx); err != nil {
		return err
	}
	// name_key stays nullable: a node of the previous version, still
	// running while the others are upgraded, inserts workspaces without
	// it (and without this check) rather than fail.
	_, err := tx.Exec(ctx, `ALTER TABLE workspaces ADD CONSTRAINT workspaces_name_fold_key UNIQUE (name_key)`)
	return err
}

// fillNameKeys gives the workspaces without a name key theirs
// (keyward.NameKeys), around the keys already given: all of them when
// migration 0007 adds the key, and at each start those that a node of the
// previous release made since (during a rolling upgrade, or after a
// rollback), so that names stay unique regardless of case once the
// rollout is done.
func fillNameKeys(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, name, name_key FROM workspaces ORDER BY created_at, id`)
	if err != nil {
		return err
	}
	var missing []keyward.Workspace
	taken := map[string]bool{}
	for rows.Next() {
		var w keyward.Workspace
		var key *string
		if err := rows.Scan(&w.ID, &w.Name, &key); err != nil {
			rows.Close()
			return err
		}
		if key != nil {
			taken[*key] = true
		} else {
			missing = append(missing, w)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for id, key := range keyward.NameKeys(missing, taken) {
		if _, err := tx.Exec(ctx, `UPDATE workspaces SET name_key = $1 WHERE id = $2`, key, id); err != nil {
			return err
		}
	}
	return nil
}
