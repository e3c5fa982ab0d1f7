package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/keyward/keyward"
)

// insertEvent appends ev to the audit log; an ev with an empty WorkspaceID
// is stored as one of workspaceID, and one with an empty ID gets a new id.
// A nil ev adds nothing.
func insertEvent(ctx context.Context, tx *sql.Tx, ev *keyward.AuditEvent, workspaceID string) error {
	if ev == nil {
		return nil
	}
	e := *ev
	if e.WorkspaceID == "" {
		e.WorkspaceID = workspaceID
	}
	if e.ID == "" {
		e.ID = keyward.NewID(keyward.PrefixEvent, e.Time)
	}
	if e.Action == "" || e.Actor.Type == "" {
		return errors.New("an audit event needs an action and an actor")
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_events
		(id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.WorkspaceID, encodeTime(e.Time), e.Action, e.Actor.Type, e.Actor.ID, e.Target,
		e.IP, e.UserAgent, e.RequestID, encodeJSON(e.Changes))
	if isUnique(err) {
		return keyward.Errorf(keyward.ECONFLICT, "audit event %s exists", e.ID)
	}
	return err
}

// FindAuditEvents returns up to f.Limit (all when f.Limit is zero) of the
// audit events of f.WorkspaceID, newest (greatest id) first, starting after
// the cursor f.Before when it is set.
func (db *DB) FindAuditEvents(ctx context.Context, f keyward.AuditFilter) ([]*keyward.AuditEvent, error) {
	q := `SELECT id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes
		FROM audit_events WHERE workspace_id = ?`
	args := []any{f.WorkspaceID}
	if f.Before != "" {
		q += ` AND id < ?`
		args = append(args, f.Before)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, sqlLimit(f.Limit))
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrap("find audit events", err)
	}
	defer rows.Close()
	var out []*keyward.AuditEvent
	for rows.Next() {
		var (
			e       keyward.AuditEvent
			at      int64
			changes sql.NullString
		)
		if err := rows.Scan(&e.ID, &e.WorkspaceID, &at, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Target,
			&e.IP, &e.UserAgent, &e.RequestID, &changes); err != nil {
			return nil, wrap("find audit events", err)
		}
		e.Time = decodeTime(at)
		if changes.Valid {
			e.Changes = []byte(changes.String)
		}
		out = append(out, &e)
	}
	return out, wrap("find audit events", rows.Err())
}
