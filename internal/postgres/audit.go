package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

// insertEvent appends ev to the audit log; an ev with an empty WorkspaceID
// is stored as one of workspaceID, and one with an empty ID gets a new id.
// A nil ev adds nothing. The caller holds lockLogs.
func insertEvent(ctx context.Context, tx pgx.Tx, ev *keyward.AuditEvent, workspaceID string) error {
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
	_, err := tx.Exec(ctx, `INSERT INTO audit_events
		(id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		safeText(e.ID), safeText(e.WorkspaceID), e.Time, safeText(e.Action), safeText(e.Actor.Type), safeText(e.Actor.ID), safeText(e.Target),
		safeText(e.IP), safeText(e.UserAgent), safeText(e.RequestID), jsonText(e.Changes))
	if _, ok := uniqueViolation(err); ok {
		return keyward.Errorf(keyward.ECONFLICT, "audit event %s exists", e.ID)
	}
	return err
}

// FindAuditEvents returns up to f.Limit (all when f.Limit is zero) of the
// audit events of f.WorkspaceID, newest (greatest id) first, starting after
// the cursor f.Before when it is set.
func (db *DB) FindAuditEvents(ctx context.Context, f keyward.AuditFilter) ([]*keyward.AuditEvent, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(f.WorkspaceID) {
		return nil, nil
	}
	q := `SELECT id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes
		FROM audit_events WHERE workspace_id = $1`
	args := []any{f.WorkspaceID}
	if f.Before != "" {
		q += ` AND ` + cursor("id", "<", f.Before, &args)
	}
	args = append(args, sqlLimit(f.Limit))
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT $%d`, len(args))
	rows, err := db.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, wrap("find audit events", err)
	}
	defer rows.Close()
	var out []*keyward.AuditEvent
	for rows.Next() {
		var e keyward.AuditEvent
		if err := rows.Scan(&e.ID, &e.WorkspaceID, &e.Time, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Target,
			&e.IP, &e.UserAgent, &e.RequestID, (*[]byte)(&e.Changes)); err != nil {
			return nil, wrap("find audit events", err)
		}
		out = append(out, &e)
	}
	return out, wrap("find audit events", rows.Err())
}
