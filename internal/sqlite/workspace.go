package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/keyward/keyward"
)

// CreateWorkspace inserts ws and, when admin is not nil, its first
// management token with its secret sec, and the events, all or nothing. An
// admin token or event with an empty WorkspaceID is stored as one of ws. It
// returns ECONFLICT when the name or id is taken, or when the admin token's
// id or digest exists.
func (db *DB) CreateWorkspace(ctx context.Context, ws *keyward.Workspace, admin *keyward.Token, sec *keyward.Secret, events ...*keyward.AuditEvent) error {
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if err := insertWorkspace(ctx, tx, ws); err != nil {
			return err
		}
		if admin != nil {
			t := *admin
			if t.WorkspaceID == "" {
				t.WorkspaceID = ws.ID
			}
			if err := createToken(ctx, tx, &t, sec); err != nil {
				return err
			}
		}
		for _, ev := range events {
			if err := db.insertEvent(ctx, tx, ev, ws.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("create workspace", err)
}

func insertWorkspace(ctx context.Context, tx *sql.Tx, ws *keyward.Workspace) error {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE name = ?`, ws.Name).Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return keyward.Errorf(keyward.ECONFLICT, "a workspace named %q exists", ws.Name)
	}
	key := keyward.NameKey(ws.Name)
	err = tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE name_key = ?`, key).Scan(&n)
	if err != nil {
		return err
	}
	if n > 0 {
		return keyward.Errorf(keyward.ECONFLICT, "a workspace whose name differs from %q only in case exists", ws.Name)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO workspaces (id, name, name_key, token_prefix, created_at) VALUES (?, ?, ?, ?, ?)`,
		ws.ID, ws.Name, key, ws.TokenPrefix, encodeTime(ws.CreatedAt))
	if isUnique(err) {
		return keyward.Errorf(keyward.ECONFLICT, "workspace %s exists", ws.ID)
	}
	return err
}

const workspaceColumns = `id, name, token_prefix, created_at`

func scanWorkspace(row interface{ Scan(...any) error }) (*keyward.Workspace, error) {
	var ws keyward.Workspace
	var created int64
	if err := row.Scan(&ws.ID, &ws.Name, &ws.TokenPrefix, &created); err != nil {
		return nil, err
	}
	ws.CreatedAt = decodeTime(created)
	return &ws, nil
}

// FindWorkspace returns the workspace with the given id, or ENOTFOUND.
func (db *DB) FindWorkspace(ctx context.Context, id string) (*keyward.Workspace, error) {
	ws, err := scanWorkspace(db.read.QueryRowContext(ctx,
		`SELECT `+workspaceColumns+` FROM workspaces WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", id)
	}
	return ws, wrap("find workspace", err)
}

// FindWorkspaceByName returns the workspace with the given name (compared
// exactly), or ENOTFOUND.
func (db *DB) FindWorkspaceByName(ctx context.Context, name string) (*keyward.Workspace, error) {
	ws, err := scanWorkspace(db.read.QueryRowContext(ctx,
		`SELECT `+workspaceColumns+` FROM workspaces WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, keyward.Errorf(keyward.ENOTFOUND, "workspace %q not found", name)
	}
	return ws, wrap("find workspace", err)
}

// HasWorkspace reports whether the database file at p holds a workspace
// named name, as FindWorkspaceByName finds it, reading only: unlike Open,
// it creates, migrates and writes nothing, so that a check (keyward
// gateway check) leaves the store as it was. A file that is not there, or
// holds no keyward store, is an error.
func HasWorkspace(ctx context.Context, p, name string) (bool, error) {
	if _, err := os.Stat(p); err != nil {
		return false, fmt.Errorf("sqlite: %w", err)
	}
	// Without a write-ahead log beside it, no process has the store
	// open: read it as unchanging, so that SQLite makes no -wal and -shm
	// files there (owned by whoever runs the check, they could keep serve
	// from opening the store). With one, read it as any reader does.
	mode := "ro"
	if _, err := os.Lstat(p + "-wal"); errors.Is(err, fs.ErrNotExist) {
		mode = "immutable"
	}
	db, err := openFile(p, mode)
	if err != nil {
		return false, err
	}
	defer db.Close()
	var one int
	err = db.QueryRowContext(ctx, `SELECT 1 FROM workspaces WHERE name = ?`, name).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrap("find workspace", err)
}

// FindWorkspaces returns up to f.Limit workspaces (all when f.Limit is zero)
// with an id greater than f.After, ordered by id.
func (db *DB) FindWorkspaces(ctx context.Context, f keyward.WorkspaceFilter) ([]*keyward.Workspace, error) {
	rows, err := db.read.QueryContext(ctx,
		`SELECT `+workspaceColumns+` FROM workspaces WHERE id > ? ORDER BY id LIMIT ?`, f.After, sqlLimit(f.Limit))
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
func workspaceExists(ctx context.Context, tx *sql.Tx, id string) error {
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspaces WHERE id = ?`, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return keyward.Errorf(keyward.ENOTFOUND, "workspace %s not found", id)
	}
	return nil
}

// nameKeys is migration 0007's step: it fills name_key for the workspaces
// there are (keyward.NameKeys: those whose names already differ only in
// case are all kept), then makes it unique.
func nameKeys(ctx context.Context, tx *sql.Tx) error {
	if err := fillNameKeys(ctx, tx); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `CREATE UNIQUE INDEX workspaces_name_fold ON workspaces (name_key)`)
	return err
}

// fillNameKeys gives the workspaces without a name key theirs
// (keyward.NameKeys), around the keys already given: all of them when
// migration 0007 adds the key, and at each start those that a node of an
// earlier release made since, which knows nothing of the key (a
// rollback), so that names stay unique regardless of case.
func fillNameKeys(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, name, name_key FROM workspaces ORDER BY created_at, id`)
	if err != nil {
		return err
	}
	var missing []keyward.Workspace
	taken := map[string]bool{}
	for rows.Next() {
		var w keyward.Workspace
		var key sql.NullString
		if err := rows.Scan(&w.ID, &w.Name, &key); err != nil {
			rows.Close()
			return err
		}
		if key.Valid {
			taken[key.String] = true
		} else {
			missing = append(missing, w)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for id, key := range keyward.NameKeys(missing, taken) {
		if _, err := tx.ExecContext(ctx, `UPDATE workspaces SET name_key = ? WHERE id = ?`, key, id); err != nil {
			return err
		}
	}
	return nil
}
