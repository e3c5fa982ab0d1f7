package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keyward/keyward"
)

// WriteUsage adds the counts to the minute and hour rollups and inserts the
// events, in one transaction. Each rollup table takes one statement over
// arrays, summed by key first (several minutes fall in one hour, and one
// statement may not update a row twice) and inserted in key order, so that
// nodes adding to the same buckets wait for each other rather than
// deadlock. A batch that id says was applied is not applied again (see
// claimBatch).
func (db *DB) WriteUsage(ctx context.Context, id keyward.FlushID, counts []keyward.UsageCount, events []*keyward.UsageEvent) error {
	if len(counts) == 0 && len(events) == 0 {
		return nil
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	n := len(counts)
	ws, tok, route, outcome := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	bucket, status, count := make([]time.Time, n), make([]int32, n), make([]int64, n)
	for i, c := range counts {
		ws[i], tok[i], route[i] = safeText(c.WorkspaceID), safeText(c.TokenID), safeText(c.Route)
		outcome[i], bucket[i], status[i], count[i] = c.Outcome.String(), c.Bucket, int32(c.Status), c.Count
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		if apply, err := claimBatch(ctx, tx, id); err != nil || !apply {
			return err
		}
		if n > 0 {
			for _, t := range []struct{ table, unit string }{{"usage_minute", "minute"}, {"usage_hour", "hour"}} {
				_, err := tx.Exec(ctx, `INSERT INTO `+t.table+` (workspace_id, token_id, bucket, route, outcome, status, count)
					SELECT w, k, date_trunc('`+t.unit+`', b, 'UTC'), r, o, s, SUM(c)
					FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::int[], $7::bigint[]) AS u(w, k, b, r, o, s, c)
					GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
					ON CONFLICT (workspace_id, token_id, bucket, route, outcome, status)
					DO UPDATE SET count = `+t.table+`.count + excluded.count`,
					ws, tok, bucket, route, outcome, status, count)
				if err != nil {
					return err
				}
			}
		}
		if len(events) == 0 {
			return nil
		}
		rows := make([][]any, len(events))
		for i, e := range events {
			rows[i] = []any{e.ID, safeText(e.WorkspaceID), safeText(e.TokenID), e.Time, safeText(e.IP), safeText(e.Method),
				safeText(e.Route), safeText(e.Path), e.Outcome.String(), int32(e.Status), int64(e.Latency)}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"usage_events"},
			[]string{"id", "workspace_id", "token_id", "time", "ip", "method", "route", "path", "outcome", "status", "latency_ns"},
			pgx.CopyFromRows(rows))
		return err
	})
	return wrap("write usage", err)
}

// UsageSeries returns the workspace's usage summed by bucket, route,
// outcome and status.
func (db *DB) UsageSeries(ctx context.Context, f keyward.UsageFilter) ([]keyward.UsageCount, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(f.WorkspaceID) || !storable(f.TokenID) {
		return nil, nil
	}
	table, bucket := "usage_hour", "bucket"
	switch f.Granularity {
	case keyward.Minute:
		table = "usage_minute"
	case keyward.Day:
		bucket = "date_trunc('day', bucket, 'UTC')"
	}
	where, args := usageWhere(f)
	rows, err := db.rerun.Query(ctx, `SELECT `+bucket+` AS b, route, outcome, status, SUM(count)::bigint
		FROM `+table+` `+where+` GROUP BY 1, 2, 3, 4 ORDER BY 1, route COLLATE "C", outcome COLLATE "C", 4`, args...)
	if err != nil {
		return nil, wrap("usage series", err)
	}
	defer rows.Close()
	var out []keyward.UsageCount
	for rows.Next() {
		c := keyward.UsageCount{WorkspaceID: f.WorkspaceID, TokenID: f.TokenID}
		var outcome string
		var status int32
		if err := rows.Scan(&c.Bucket, &c.Route, &outcome, &status, &c.Count); err != nil {
			return nil, wrap("usage series", err)
		}
		c.Bucket, c.Status = c.Bucket.UTC(), int(status)
		c.Outcome, _ = keyward.ParseOutcome(outcome)
		out = append(out, c)
	}
	return out, wrap("usage series", rows.Err())
}

// UsageTopTokens returns the tokens with the most verifications.
func (db *DB) UsageTopTokens(ctx context.Context, f keyward.UsageFilter, limit int) ([]keyward.UsageTokenTotal, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(f.WorkspaceID) {
		return nil, nil
	}
	table := "usage_hour"
	if f.Granularity == keyward.Minute {
		table = "usage_minute"
	}
	f.TokenID = ""
	where, args := usageWhere(f)
	args = append(args, sqlLimit(limit))
	rows, err := db.rerun.Query(ctx, fmt.Sprintf(`SELECT token_id, SUM(count)::bigint AS total,
			SUM(CASE WHEN outcome = 'VALID' THEN count ELSE 0 END)::bigint
		FROM %s %s AND token_id <> ''
		GROUP BY token_id ORDER BY total DESC, token_id LIMIT $%d`, table, where, len(args)), args...)
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

// usageWhere selects the filter's workspace, token and time range; the
// caller has checked that the ids are storable.
func usageWhere(f keyward.UsageFilter) (string, []any) {
	where := `WHERE workspace_id = $1`
	args := []any{f.WorkspaceID}
	if f.TokenID != "" {
		args = append(args, f.TokenID)
		where += fmt.Sprintf(` AND token_id = $%d`, len(args))
	}
	if !f.From.IsZero() {
		args = append(args, f.From)
		where += fmt.Sprintf(` AND bucket >= $%d`, len(args))
	}
	if !f.To.IsZero() {
		args = append(args, f.To)
		where += fmt.Sprintf(` AND bucket < $%d`, len(args))
	}
	return where, args
}

// FindUsageEvents returns a page of raw usage events, newest first.
func (db *DB) FindUsageEvents(ctx context.Context, f keyward.UsageEventFilter) ([]*keyward.UsageEvent, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(f.WorkspaceID) || !storable(f.TokenID) {
		return nil, nil
	}
	where := `WHERE workspace_id = $1`
	args := []any{f.WorkspaceID}
	if f.TokenID != "" {
		args = append(args, f.TokenID)
		where += fmt.Sprintf(` AND token_id = $%d`, len(args))
	}
	if f.Outcome != nil {
		args = append(args, f.Outcome.String())
		where += fmt.Sprintf(` AND outcome = $%d`, len(args))
	}
	if f.Before != "" {
		where += ` AND ` + cursor("id", "<", f.Before, &args)
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
	rows, err := db.rerun.Query(ctx, fmt.Sprintf(`SELECT id, workspace_id, token_id, time, ip, method, route, path, outcome, status, latency_ns
		FROM usage_events %s ORDER BY id DESC LIMIT $%d`, where, len(args)), args...)
	if err != nil {
		return nil, wrap("find usage events", err)
	}
	defer rows.Close()
	var out []*keyward.UsageEvent
	for rows.Next() {
		var e keyward.UsageEvent
		var outcome string
		var status int32
		var latency int64
		if err := rows.Scan(&e.ID, &e.WorkspaceID, &e.TokenID, &e.Time, &e.IP, &e.Method, &e.Route, &e.Path,
			&outcome, &status, &latency); err != nil {
			return nil, wrap("find usage events", err)
		}
		e.Time, e.Status, e.Latency = e.Time.UTC(), int(status), time.Duration(latency)
		e.Outcome, _ = keyward.ParseOutcome(outcome)
		out = append(out, &e)
	}
	return out, wrap("find usage events", rows.Err())
}

// PruneUsage deletes the rollups and events p says, each kind only when
// its time is set, at most p.Limit of each when it is set.
func (db *DB) PruneUsage(ctx context.Context, p keyward.UsagePrune) (keyward.UsagePruned, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var n keyward.UsagePruned
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		// With a limit, the rows to delete are chosen by their physical
		// address, the oldest first, through the time index.
		const limited = `DELETE FROM %[1]s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %[1]s WHERE %[2]s < $1 ORDER BY %[2]s LIMIT $2))`
		for _, d := range []struct {
			table, column string
			before        time.Time
			n             *int64
		}{
			{"usage_minute", "bucket", p.MinutesBefore, &n.Minutes},
			{"usage_hour", "bucket", p.HoursBefore, &n.Hours},
			{"usage_events", "time", p.EventsBefore, &n.Events},
		} {
			if d.before.IsZero() {
				continue
			}
			query, args := `DELETE FROM `+d.table+` WHERE `+d.column+` < $1`, []any{d.before}
			if p.Limit > 0 {
				query, args = fmt.Sprintf(limited, d.table, d.column), append(args, p.Limit)
			}
			tag, err := tx.Exec(ctx, query, args...)
			if err != nil {
				return err
			}
			*d.n = tag.RowsAffected()
		}
		return nil
	})
	return n, wrap("prune usage", err)
}
