package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

// chainPage is how many events AuditChain and chainExisting read at a time.
const chainPage = 500

// insertEvent appends ev to the audit log and to its workspace's chain,
// and moves the workspace's head to it; an ev with an empty WorkspaceID is
// stored as one of workspaceID, and one with an empty ID gets a new id. A
// nil ev adds nothing. The caller holds lockLogs, under which the head is
// read and moved, so that links follow the commit order.
func (db *DB) insertEvent(ctx context.Context, tx pgx.Tx, ev *keyward.AuditEvent, workspaceID string) error {
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
	// The link covers the event as it will be read back: text made
	// storable, the time to the microsecond (timestamptz's precision).
	for _, s := range []*string{&e.ID, &e.WorkspaceID, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Target, &e.IP, &e.UserAgent, &e.RequestID} {
		*s = safeText(*s)
	}
	e.Time = time.UnixMicro(e.Time.UnixMicro()).UTC()
	if len(e.Changes) == 0 {
		e.Changes = nil
	} else {
		e.Changes = []byte(safeText(string(e.Changes)))
	}
	// The head is checked before it is chained to: one changed without the
	// key (the newest events removed, its mac pointed at the new last one)
	// must not be made whole by this write (keyward.AuditPrev).
	head := &keyward.AuditHead{WorkspaceID: e.WorkspaceID}
	err := tx.QueryRow(ctx, `SELECT event_id, mac, head_mac FROM audit_heads WHERE workspace_id = $1`, e.WorkspaceID).
		Scan(&head.EventID, &head.MAC, &head.HeadMAC)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		head = nil
	case err != nil:
		return err
	}
	prev := keyward.AuditPrev(db.auditKey, head)
	mac := keyward.AuditMAC(db.auditKey, prev, &e)
	var seq int64
	err = tx.QueryRow(ctx, `INSERT INTO audit_events
		(id, workspace_id, time, action, actor_type, actor_id, target, ip, user_agent, request_id, changes, mac, prev_mac)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING seq`,
		e.ID, e.WorkspaceID, e.Time, e.Action, e.Actor.Type, e.Actor.ID, e.Target,
		e.IP, e.UserAgent, e.RequestID, jsonText(e.Changes), mac, prev).Scan(&seq)
	if _, ok := uniqueViolation(err); ok {
		return keyward.Errorf(keyward.ECONFLICT, "audit event %s exists", e.ID)
	}
	if err != nil {
		return err
	}
	return putHead(ctx, tx, db.auditKey, e.WorkspaceID, seq, e.ID, mac)
}

// putHead makes the event with the given sequence number, id and link the
// head of its workspace's chain.
func putHead(ctx context.Context, tx pgx.Tx, key []byte, workspaceID string, seq int64, eventID string, mac []byte) error {
	_, err := tx.Exec(ctx, `INSERT INTO audit_heads (workspace_id, seq, event_id, mac, head_mac)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (workspace_id) DO UPDATE SET
			seq = excluded.seq, event_id = excluded.event_id, mac = excluded.mac, head_mac = excluded.head_mac`,
		workspaceID, seq, eventID, mac, keyward.AuditHeadMAC(key, workspaceID, eventID, mac))
	return err
}

// chainExisting links, in sequence order and under key, the events that
// were written before the audit chain existed, and sets each workspace's
// head. Migration 0002 runs it in the transaction that adds the chain's
// columns, so that it runs once: once the migration is recorded, a store
// never links an event it did not just write. It takes lockLogs, so that
// nodes still running an earlier version wait to append. Events found are
// linked only when allowed (keyward.UnchainedAuditError).
func chainExisting(ctx context.Context, tx pgx.Tx, o options) error {
	key := o.auditKey
	if err := lockLogs(ctx, tx); err != nil {
		return err
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM audit_events`).Scan(&n); err != nil {
		return err
	}
	if n > 0 && !o.linkUnchained {
		return &keyward.UnchainedAuditError{Events: n}
	}
	if n > 0 && o.linkKeys != nil {
		stored, err := secretKeys(ctx, tx)
		if err != nil {
			return err
		}
		if err := keyward.CheckLinkKeys(stored, o.linkKeys); err != nil {
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
		page, err := queryEvents(ctx, tx, `WHERE seq > $1 ORDER BY seq LIMIT $2`, after, chainPage)
		if err != nil {
			return err
		}
		var b pgx.Batch
		for _, c := range page {
			e := c.e
			h := heads[e.WorkspaceID]
			if h == nil {
				h = &head{}
				heads[e.WorkspaceID] = h
				order = append(order, e.WorkspaceID)
			}
			mac := keyward.AuditMAC(key, h.mac, e)
			b.Queue(`UPDATE audit_events SET mac = $1, prev_mac = $2 WHERE seq = $3`, mac, h.mac, c.l.Seq)
			h.seq, h.id, h.mac = c.l.Seq, e.ID, mac
			after = c.l.Seq
		}
		if b.Len() > 0 {
			if err := tx.SendBatch(ctx, &b).Close(); err != nil {
				return err
			}
		}
		if len(page) < chainPage {
			break
		}
	}
	for _, ws := range order {
		h := heads[ws]
		if err := putHead(ctx, tx, key, ws, h.seq, h.id, h.mac); err != nil {
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
	rows, err := q.Query(ctx, `SELECT `+eventColumns+` FROM audit_events `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []chained
	for rows.Next() {
		var (
			e keyward.AuditEvent
			l keyward.AuditLink
		)
		if err := rows.Scan(&l.Seq, &e.ID, &e.WorkspaceID, &e.Time, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Target,
			&e.IP, &e.UserAgent, &e.RequestID, (*[]byte)(&e.Changes), &l.MAC, &l.Prev); err != nil {
			// seq and id come first: they are read before a column that
			// fails (a value keyward never writes), and name the row.
			return nil, fmt.Errorf("audit event %s (seq %d) cannot be read: %w", e.ID, l.Seq, err)
		}
		out = append(out, chained{&e, l})
	}
	return out, rows.Err()
}

// FindAuditEvents returns up to f.Limit (all when f.Limit is zero) of the
// audit events of f.WorkspaceID that match f's conditions, newest first in
// the order they were written (seq: the commit order, on every node),
// starting after the cursor f.Before when it is set. Ids are ordered only
// to the millisecond of the clock of the node that made them, the rest of
// them random, so the order is the sequence's, and a cursor, an event id,
// stands for its event's place in it. A cursor that names no event of the
// workspace selects none: one a retention cut removed had every event
// written before it removed too (the events left whose ids sort before it
// were written after it, and listed before it), and another workspace's,
// or none, has no place in this one's order.
func (db *DB) FindAuditEvents(ctx context.Context, f keyward.AuditFilter) ([]*keyward.AuditEvent, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(f.WorkspaceID) {
		return nil, nil
	}
	where, args, ok := auditQuery(f)
	if !ok {
		return nil, nil // nothing stored holds a value it must equal
	}
	page, err := queryEvents(ctx, db.rerun, where, args...)
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
// page of events f asks for, newest first, and its arguments, or false
// when a value that a column must equal is not storable, so that nothing
// matches. The cursor's place is its event's seq, looked up within the
// workspace in the same statement (none: NULL, which no seq is less than).
// With the indexes on (workspace_id, seq), (workspace_id, actor_id, seq)
// and (workspace_id, target, seq), the page is read backwards in order,
// with no sort, from where the cursor stands.
func auditQuery(f keyward.AuditFilter) (string, []any, bool) {
	where := `WHERE workspace_id = $1`
	args := []any{f.WorkspaceID}
	if f.Before != "" {
		if !storable(f.Before) {
			return "", nil, false
		}
		args = append(args, f.Before)
		where += fmt.Sprintf(` AND seq < (SELECT c.seq FROM audit_events c WHERE c.id = $%d AND c.workspace_id = $1)`, len(args))
	}
	action := f.Action
	if lo, hi, ok := f.ActionFamily(); ok && storable(lo) {
		args = append(args, lo, hi)
		// Compared as bytes: a database's own collation (en_US and the
		// like) may skip punctuation and put "token.create" past "token/".
		where += fmt.Sprintf(` AND action COLLATE "C" >= $%d AND action COLLATE "C" < $%d`, len(args)-1, len(args))
		action = ""
	}
	for _, c := range []struct{ col, v string }{{"actor_id", f.Actor}, {"action", action}, {"target", f.Target}} {
		if c.v == "" {
			continue
		}
		if !storable(c.v) {
			return "", nil, false
		}
		args = append(args, c.v)
		where += fmt.Sprintf(` AND %s = $%d`, c.col, len(args))
	}
	if !f.From.IsZero() {
		args = append(args, f.From)
		where += fmt.Sprintf(` AND time >= $%d`, len(args))
	}
	if !f.To.IsZero() {
		args = append(args, f.To)
		where += fmt.Sprintf(` AND time < $%d`, len(args))
	}
	args = append(args, sqlLimit(f.Limit))
	where += fmt.Sprintf(` ORDER BY seq DESC LIMIT $%d`, len(args))
	return where, args, true
}

// AuditChain calls fn with each audit event of the workspace and its link,
// in sequence order, and returns the workspace's head, or nil when it has
// none. It reads from one snapshot (a repeatable
// read transaction) a page at a time, each page bounded by opTimeout; it
// returns an error of fn unchanged. fn must not block for longer than the
// server's idle_in_transaction_session_timeout.
func (db *DB) AuditChain(ctx context.Context, workspaceID string, fn func(e *keyward.AuditEvent, l keyward.AuditLink) error) (*keyward.AuditHead, error) {
	if !storable(workspaceID) {
		return nil, nil
	}
	var head *keyward.AuditHead
	var fnErr error
	err := func() error {
		bctx, cancel := bound(ctx)
		tx, err := db.begin(bctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		cancel()
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		bctx, cancel = bound(ctx)
		h := keyward.AuditHead{WorkspaceID: workspaceID}
		err = tx.QueryRow(bctx, `SELECT seq, event_id, mac, head_mac FROM audit_heads WHERE workspace_id = $1`, workspaceID).
			Scan(&h.Seq, &h.EventID, &h.MAC, &h.HeadMAC)
		cancel()
		switch {
		case err == nil:
			head = &h
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		after := int64(math.MinInt64)
		for {
			bctx, cancel := bound(ctx)
			page, err := queryEvents(bctx, tx, `WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, workspaceID, after, chainPage)
			cancel()
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
				break
			}
		}
		bctx, cancel = bound(ctx)
		defer cancel()
		return tx.Commit(bctx)
	}()
	switch {
	case fnErr != nil:
		return nil, fnErr
	case err != nil:
		return nil, wrap("audit chain", err)
	}
	return head, nil
}

// AuditWorkspaces returns the ids of the workspaces that have audit events
// or a chain head, in byte order.
func (db *DB) AuditWorkspaces(ctx context.Context) ([]string, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	rows, err := db.rerun.Query(ctx, `SELECT workspace_id FROM audit_events
		UNION SELECT workspace_id FROM audit_heads ORDER BY 1`)
	if err != nil {
		return nil, wrap("audit workspaces", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return ids, wrap("audit workspaces", err)
}

// CutAudit removes the workspace's events up to the newest one written
// before before, and appends ev recording the cut. It takes the lock that
// orders appends first, so that no event is appended meanwhile.
func (db *DB) CutAudit(ctx context.Context, workspaceID string, before time.Time, ev *keyward.AuditEvent) (keyward.AuditCut, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	cut := keyward.AuditCut{Before: time.UnixMicro(before.UnixMicro()).UTC()}
	if !storable(workspaceID) {
		return cut, nil
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if err := lockLogs(ctx, tx); err != nil {
			return err
		}
		var seq int64
		var mac []byte
		err := tx.QueryRow(ctx, `SELECT seq, mac FROM audit_events WHERE workspace_id = $1 AND time < $2 ORDER BY seq DESC LIMIT 1`,
			workspaceID, before).Scan(&seq, &mac)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM audit_events WHERE workspace_id = $1 AND seq <= $2`, workspaceID, seq)
		if err != nil {
			return err
		}
		cut.Removed, cut.StartPrev = tag.RowsAffected(), mac
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
