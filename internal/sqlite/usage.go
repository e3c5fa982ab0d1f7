package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keyward/keyward"
)

// WriteUsage adds the counts to the minute and hour rollups and inserts the
// events, in one transaction. A batch that id says was applied is not
// applied again (see claimBatch).
func (db *DB) WriteUsage(ctx context.Context, id keyward.FlushID, counts []keyward.UsageCount, events []*keyward.UsageEvent) error {
	if len(counts) == 0 && len(events) == 0 {
		return nil
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if apply, err := claimBatch(ctx, tx, id); err != nil || !apply {
			return err
		}
		for _, table := range []struct {
			name string
			g    keyward.Granularity
		}{{"usage_minute", keyward.Minute}, {"usage_hour", keyward.Hour}} {
			if len(counts) == 0 {
				break
			}
			st, err := tx.PrepareContext(ctx, `INSERT INTO `+table.name+` (workspace_id, token_id, bucket, route, outcome, status, count)
				VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (workspace_id, token_id, bucket, route, outcome, status) DO UPDATE SET count = count + excluded.count`)
			if err != nil {
				return err
			}
			for _, c := range counts {
				if _, err := st.ExecContext(ctx, c.WorkspaceID, c.TokenID, encodeTime(table.g.Truncate(c.Bucket)),
					c.Route, c.Outcome.String(), c.Status, c.Count); err != nil {
					st.Close()
					return err
				}
			}
			st.Close()
		}
		if len(events) == 0 {
			return nil
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO usage_events
			(id, workspace_id, token_id, time, ip, method, route, path, outcome, status, latency_ns)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, e := range events {
			if _, err := st.ExecContext(ctx, e.ID, e.WorkspaceID, e.TokenID, encodeTime(e.Time), e.IP, e.Method,
				e.Route, e.Path, e.Outcome.String(), e.Status, int64(e.Latency)); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("write usage", err)
}

// UsageSeries returns the workspace's usage summed by bucket, route,
// outcome and status.
func (db *DB) UsageSeries(ctx context.Context, f keyward.UsageFilter) ([]keyward.UsageCount, error) {
	table, bucket := "usage_hour", "bucket"
	switch f.Granularity {
	case keyward.Minute:
		table = "usage_minute"
	case keyward.Day:
		bucket = "bucket - bucket % 86400000000000"
	}
	where, args := usageWhere(f)
	rows, err := db.read.QueryContext(ctx, `SELECT `+bucket+` AS b, route, outcome, status, SUM(count)
		FROM `+table+` `+where+` GROUP BY b, route, outcome, status ORDER BY b, route, outcome, status`, args...)
	if err != nil {
		return nil, wrap("usage series", err)
	}
	defer rows.Close()
	var out []keyward.UsageCount
	for rows.Next() {
		c := keyward.UsageCount{WorkspaceID: f.WorkspaceID, TokenID: f.TokenID}
		var b int64
		var outcome string
		if err := rows.Scan(&b, &c.Route, &outcome, &c.Status, &c.Count); err != nil {
			return nil, wrap("usage series", err)
		}
		c.Bucket = decodeTime(b)
		c.Outcome, _ = keyward.ParseOutcome(outcome)
		out = append(out, c)
	}
	return out, wrap("usage series", rows.Err())
}

// UsageTopTokens returns the tokens with the most verifications.
func (db *DB) UsageTopTokens(ctx context.Context, f keyward.UsageFilter, limit int) ([]keyward.UsageTokenTotal, error) {
	table := "usage_hour"
	if f.Granularity == keyward.Minute {
		table = "usage_minute"
	}
	f.TokenID = ""
	where, args := usageWhere(f)
	rows, err := db.read.QueryContext(ctx, `SELECT token_id, SUM(count) AS total,
			SUM(CASE WHEN outcome = 'VALID' THEN count ELSE 0 END)
		FROM `+table+` `+where+` AND token_id <> ''
		GROUP BY token_id ORDER BY total DESC, token_id LIMIT ?`, append(args, sqlLimit(limit))...)
	if err != nil {
		return nil, wrap("usage top tokens", err)
	}
	defer rows.Close()
	var out []keyward.UsageTokenTotal
	for rows.Next() {
		var t keyward.UsageTokenTotal
		if err := rows.Scan(&t.TokenID, &t.Total, &t.Valid); err != nil {
			return nil, wrap("usage top tokens", err)
		}
		out = append(out, t)
	}
	return out, wrap("usage top tokens", rows.Err())
}

// usageWhere selects the filter's workspace, token and time range.
func usageWhere(f keyward.UsageFilter) (string, []any) {
	where := `WHERE workspace_id = ?`
	args := []any{f.WorkspaceID}
	if f.TokenID != "" {
		where += ` AND token_id = ?`
		args = append(args, f.TokenID)
	}
	if !f.From.IsZero() {
		where += ` AND bucket >= ?`
		args = append(args, encodeTime(f.From))
	}
	if !f.To.IsZero() {
		where += ` AND bucket < ?`
		args = append(args, encodeTime(f.To))
	}
	return where, args
}

// FindUsageEvents returns a page of raw usage events, newest first.
func (db *DB) FindUsageEvents(ctx context.Context, f keyward.UsageEventFilter) ([]*keyward.UsageEvent, error) {
	where := `WHERE workspace_id = ?`
	args := []any{f.WorkspaceID}
	if f.TokenID != "" {
		where += ` AND token_id = ?`
		args = append(args, f.TokenID)
	}
	if f.Outcome != nil {
		where += ` AND outcome = ?`
		args = append(args, f.Outcome.String())
	}
	if f.Before != "" {
		where += ` AND id < ?`
		args = append(args, f.Before)
	}
	if !f.From.IsZero() {
		where += ` AND time >= ?`
		args = append(args, encodeTime(f.From))
	}
	if !f.To.IsZero() {
		where += ` AND time < ?`
		args = append(args, encodeTime(f.To))
	}
	rows, err := db.read.QueryContext(ctx, `SELECT id, workspace_id, token_id, time, ip, method, route, path, outcome, status, latency_ns
		FROM usage_events `+where+` ORDER BY id DESC LIMIT ?`, append(args, sqlLimit(f.Limit))...)
	if err != nil {
		return nil, wrap("find usage events", err)
	}
	defer rows.Close()
	var out []*keyward.UsageEvent
	for rows.Next() {
		var e keyward.UsageEvent
		var at, latency int64
		var outcome string
		if err := rows.Scan(&e.ID, &e.WorkspaceID, &e.TokenID, &at, &e.IP, &e.Method, &e.Route, &e.Path,
			&outcome, &e.Status, &latency); err != nil {
			return nil, wrap("find usage events", err)
		}
		e.Time, e.Latency = decodeTime(at), time.Duration(latency)
		e.Outcome, _ = keyward.ParseOutcome(outcome)
		out = append(out, &e)
	}
	return out, wrap("find usage events", rows.Err())
}

// PruneUsage deletes the rollups and events p says, each kind only when
// its time is set, at most p.Limit of each when it is set.
func (db *DB) PruneUsage(ctx context.Context, p keyward.UsagePrune) (keyward.UsagePruned, error) {
	var n keyward.UsagePruned
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		// With a limit, the rows to delete are chosen by key, the oldest
		// first, through the time index (SQLite's DELETE has no LIMIT
		// unless built with it).
		const rollup = `DELETE FROM %[1]s WHERE (workspace_id, token_id, bucket, route, outcome, status) IN (
			SELECT workspace_id, token_id, bucket, route, outcome, status FROM %[1]s WHERE bucket < ? ORDER BY bucket LIMIT ?)`
		for _, d := range []struct {
			query, limited string
			before         time.Time
			n              *int64
		}{
			{`DELETE FROM usage_minute WHERE bucket < ?`, fmt.Sprintf(rollup, "usage_minute"), p.MinutesBefore, &n.Minutes},
			{`DELETE FROM usage_hour WHERE bucket < ?`, fmt.Sprintf(rollup, "usage_hour"), p.HoursBefore, &n.Hours},
			{`DELETE FROM usage_events WHERE time < ?`,
				`DELETE FROM usage_events WHERE id IN (SELECT id FROM usage_events WHERE time < ? ORDER BY time LIMIT ?)`, p.EventsBefore, &n.Events},
		} {
			if d.before.IsZero() {
				continue
			}
			query, args := d.query, []any{encodeTime(d.before)}
			if p.Limit > 0 {
				query, args = d.limited, append(args, p.Limit)
			}
			res, err := tx.ExecContext(ctx, query, args...)
			if err != nil {
				return err
			}
			if *d.n, err = res.RowsAffected(); err != nil {
				return err
			}
		}
		return nil
	})
	return n, wrap("prune usage", err)
}
