package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/keyward/keyward"
)

// chainPage is how many events AuditChain and chainExisting read at a time.
const chainPage = 500

// insertEvent appends ev to the audit log and to its workspace's chain,
// and moves the workspace's head to it; an ev with an empty WorkspaceID is
// stored as one of workspaceID, and one with an empty ID gets a new id. A
// nil ev adds nothing. The time is stored to the microsecond, the
// precision that the link covers.
func (db *DB) insertEvent(ctx context.Context, tx *sql.Tx, ev *keyward.AuditEvent, workspaceID string) error {
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
	// The link covers the event as it will be read back.
	e.Time = storedTime(e.Time)
	if len(e.Changes) == 0 {
		e.Changes = nil
	}
	// The head is checked before it is chained to: one changed without the
	// key (the newest events removed, its mac pointed at the new last one)
	// must not be made whole by this write (keyward.AuditPrev).
	head := &keyward.AuditHead{WorkspaceID: e.WorkspaceID}
	err := tx.QueryRowContext(ctx, `SELECT event_id, mac, head_mac FROM audit_heads WHERE workspace_id = ?`, e.WorkspaceID).
		Scan(&head.EventID, &head.MAC, &head.HeadMAC)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		head = nil
	case err != nil:
		return err
	}
	prev := keyward.AuditPrev(db.auditKey, head)
	mac := keyward.AuditMAC(db.auditKey, prev, &e)
	res, err := tx.ExecContext(ctx, `INSERT INTO audit_events
		(id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes, mac, prev_mac)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.WorkspaceID, encodeTime(e.Time), e.Action, e.Actor.Type, e.Actor.ID, e.Target,
		e.IP, e.UserAgent, e.RequestID, encodeJSON(e.Changes), mac, prev)
	if isUnique(err) {
		return keyward.Errorf(keyward.ECONFLICT, "audit event %s exists", e.ID)
	}
	if err != nil {
		return err
	}
	seq, err := res.LastInsertId()
	if err != nil {
		return err
	}
	return db.putHead(ctx, tx, e.WorkspaceID, seq, e.ID, mac)
}

// putHead makes the event with the given sequence number, id and link the
// head of its workspace's chain.
func (db *DB) putHead(ctx context.Context, tx *sql.Tx, workspaceID string, seq int64, eventID string, mac []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_heads (workspace_id, seq, event_id, mac, head_mac)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (workspace_id) DO UPDATE SET
			seq = excluded.seq, event_id = excluded.event_id, mac = excluded.mac, head_mac = excluded.head_mac`,
		workspaceID, seq, eventID, mac, keyward.AuditHeadMAC(db.auditKey, workspaceID, eventID, mac))
	return err
}

// storedTime returns t as the store reads it back: to the microsecond,
// and clamped as encodeTime clamps.
func storedTime(t time.Time) time.Time {
	return decodeTime(encodeTime(t.Truncate(time.Microsecond)))
}

// chainExisting links, in sequence order and under the store's chain key,
// the events that were written before the audit chain existed, and sets
// each workspace's head. Migration 0002 runs it in the transaction that
// adds the chain's columns, so that it runs once: once the migration is
// recorded, a store never links an event it did not just write. Events
// found are linked only WithLinkUnchainedAudit (keyward.UnchainedAuditError).
func (db *DB) chainExisting(ctx context.Context, tx *sql.Tx) error {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
		return err
	}
	if n > 0 && !db.linkUnchained {
		return &keyward.UnchainedAuditError{Events: n}
	}
	if n > 0 && db.openElsewhere {
		// A store from before the chain open elsewhere is most likely
		// served by that earlier release, which would go on writing
		// events without a link once this links the log: audit verify
		// would report each as changed, for good.
		return errors.New("another process has the store open, such as a keyward serve of the earlier release: stop it, then link the audit log; that release would go on writing audit events without a link, which audit verify would report as changed")
	}
	if n > 0 && db.linkKeys != nil {
		stored, err := secretKeys(ctx, tx)
		if err != nil {
			return err
		}
		if err := keyward.CheckLinkKeys(stored, db.linkKeys); err != nil {
			return err
		}
	}
	type head struct {
		seq int64
		id  string
		mac []byte
	}
	heads := map[string]*head{}
	var order []string
	after := int64(math.MinInt64)
	for {
		page, err := queryEvents(ctx, tx, `WHERE seq > ? ORDER BY seq LIMIT ?`, after, chainPage)
		if err != nil {
			return err
		}
		for _, c := range page {
			e := c.e
			h := heads[e.WorkspaceID]
			if h == nil {
				h = &head{}
				heads[e.WorkspaceID] = h
				order = append(order, e.WorkspaceID)
			}
			e.Time = storedTime(e.Time)
			mac := keyward.AuditMAC(db.auditKey, h.mac, e)
			if _, err := tx.ExecContext(ctx, `UPDATE audit_events SET time = ?, mac = ?, prev_mac = ? WHERE seq = ?`,
				encodeTime(e.Time), mac, h.mac, c.l.Seq); err != nil {
				return err
			}
			h.seq, h.id, h.mac = c.l.Seq, e.ID, mac
			after = c.l.Seq
		}
		if len(page) < chainPage {
			break
		}
	}
	for _, ws := range order {
		h := heads[ws]
		if err := db.putHead(ctx, tx, ws, h.seq, h.id, h.mac); err != nil {
			return err
		}
	}
	return nil
}

// eventColumns lists the columns that queryEvents reads.
const eventColumns = `seq, id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes, mac, prev_mac`

// chained is an event and its link.
type chained struct {
	e *keyward.AuditEvent
	l keyward.AuditLink
}

// queryEvents returns the events that the SQL after "FROM audit_events"
// selects, with their links.
func queryEvents(ctx context.Context, q querier, where string, args ...any) ([]chained, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+eventColumns+` FROM audit_events `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []chained
	for rows.Next() {
		var (
			e       keyward.AuditEvent
			l       keyward.AuditLink
			at      int64
			changes sql.NullString
		)
		if err := rows.Scan(&l.Seq, &e.ID, &e.WorkspaceID, &at, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Target,
			&e.IP, &e.UserAgent, &e.RequestID, &changes, &l.MAC, &l.Prev); err != nil {
			// seq and id come first: they are read before a column that
			// fails (a value keyward never writes), and name the row.
			return nil, fmt.Errorf("audit event %s (seq %d) cannot be read: %w", e.ID, l.Seq, err)
		}
		e.Time = decodeTime(at)
		if changes.Valid {
			e.Changes = []byte(changes.String)
		}
		out = append(out, chained{&e, l})
	}
	return out, rows.Err()
}

// FindAuditEvents returns up to f.Limit (all when f.Limit is zero) of the
// audit events of f.WorkspaceID that match f's conditions, newest first in
// the order they were written (seq), starting after the cursor f.Before
// when it is set. Ids are ordered only to the millisecond, the rest of
// them random, so the order is the sequence's, and a cursor, an event id,
// stands for its event's place in it. A cursor that names no event of the
// workspace selects none: one a retention cut removed had every event
// written before it removed too (the events left whose ids sort before it
// were written after it, and listed before it), and another workspace's,
// or none, has no place in this one's order.
func (db *DB) FindAuditEvents(ctx context.Context, f keyward.AuditFilter) ([]*keyward.AuditEvent, error) {
	where, args := auditQuery(f)
	page, err := queryEvents(ctx, db.read, where, args...)
	if err != nil {
		return nil, wrap("find audit events", err)
	}
	evs := make([]*keyward.AuditEvent, len(page))
	for i, c := range page {
		evs[i] = c.e
	}
	return evs, nil
}

// auditQuery returns the SQL after "FROM audit_events" that selects the
// page of events f asks for, newest first, and its arguments. The
// cursor's place is its event's seq, looked up within the workspace in the
// same statement (none: NULL, which no seq is less than). With the indexes
// on (workspace_id, seq), (workspace_id, actor_id, seq) and (workspace_id,
// target, seq), the page is read in order, with no sort, from where the
// cursor stands.
func auditQuery(f keyward.AuditFilter) (string, []any) {
	where := `WHERE workspace_id = ?`
	args := []any{f.WorkspaceID}
	if f.Before != "" {
		where += ` AND seq < (SELECT c.seq FROM audit_events c WHERE c.id = ? AND c.workspace_id = ?)`
		args = append(args, f.Before, f.WorkspaceID)
	}
	action := f.Action
	if lo, hi, ok := f.ActionFamily(); ok {
		where += ` AND action >= ? AND action < ?`
		args = append(args, lo, hi)
		action = ""
	}
	for _, c := range []struct{ col, v string }{{"actor_id", f.Actor}, {"action", action}, {"target", f.Target}} {
		if c.v != "" {
			where += ` AND ` + c.col + ` = ?`
			args = append(args, c.v)
		}
	}
	if !f.From.IsZero() {
		where += ` AND time >= ?`
		args = append(args, encodeTime(f.From))
	}
	if !f.To.IsZero() {
		where += ` AND time < ?`
		args = append(args, encodeTime(f.To))
	}
	where += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, sqlLimit(f.Limit))
	return where, args
}

// AuditChain calls fn with each audit event of the workspace and its link,
// in sequence order, and returns the workspace's head, or nil when it has
// none. It reads from one snapshot; it returns an error of fn unchanged.
func (db *DB) AuditChain(ctx context.Context, workspaceID string, fn func(e *keyward.AuditEvent, l keyward.AuditLink) error) (*keyward.AuditHead, error) {
	var head *keyward.AuditHead
	var fnErr error
	err := db.readTx(ctx, func(tx *sql.Tx) error {
		h := keyward.AuditHead{WorkspaceID: workspaceID}
		err := tx.QueryRowContext(ctx, `SELECT seq, event_id, mac, head_mac FROM audit_heads WHERE workspace_id = ?`, workspaceID).
			Scan(&h.Seq, &h.EventID, &h.MAC, &h.HeadMAC)
		switch {
		case err == nil:
			head = &h
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		after := int64(math.MinInt64)
		for {
			page, err := queryEvents(ctx, tx, `WHERE workspace_id = ? AND seq > ? ORDER BY seq LIMIT ?`, workspaceID, after, chainPage)
			if err != nil {
				return err
			}
			for _, c := range page {
				if err := fn(c.e, c.l); err != nil {
					fnErr = err
					return err
				}
				after = c.l.Seq
			}
			if len(page) < chainPage {
				return nil
			}
		}
	})
	switch {
	case fnErr != nil:
		return nil, fnErr
	case err != nil:
		return nil, wrap("audit chain", err)
	}
	return head, nil
}

// AuditWorkspaces returns the ids of the workspaces that have audit events
// or a chain head, in order.
func (db *DB) AuditWorkspaces(ctx context.Context) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT workspace_id FROM audit_events
		UNION SELECT workspace_id FROM audit_heads ORDER BY 1`)
	if err != nil {
		return nil, wrap("audit workspaces", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("audit workspaces", err)
		}
		out = append(out, id)
	}
	return out, wrap("audit workspaces", rows.Err())
}

// CutAudit removes the workspace's events up to the newest one written
// before before, and appends ev recording the cut.
func (db *DB) CutAudit(ctx context.Context, workspaceID string, before time.Time, ev *keyward.AuditEvent) (keyward.AuditCut, error) {
	cut := keyward.AuditCut{Before: storedTime(before)}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		var seq int64
		var mac []byte
		err := tx.QueryRowContext(ctx, `SELECT seq, mac FROM audit_events WHERE workspace_id = ? AND time < ? ORDER BY seq DESC LIMIT 1`,
			workspaceID, encodeTime(before)).Scan(&seq, &mac)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM audit_events WHERE workspace_id = ? AND seq <= ?`, workspaceID, seq)
		if err != nil {
			return err
		}
		if cut.Removed, err = res.RowsAffected(); err != nil {
			return err
		}
		cut.StartPrev = mac
		e := *ev
		if e.Changes, err = json.Marshal(cut); err != nil {
			return err
		}
		return db.insertEvent(ctx, tx, &e, workspaceID)
	})
	if err != nil {
		return keyward.AuditCut{}, wrap("cut audit", err)
	}
	return cut, nil
}
