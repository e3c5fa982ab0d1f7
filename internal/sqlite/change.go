package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"

	"github.com/keyward/keyward"
)

// insertChange records that the token with the given id changed at t.
func insertChange(ctx context.Context, tx *sql.Tx, tokenID string, at time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO changes (token_id, at) VALUES (?, ?)`, tokenID, encodeTime(at))
	return err
}

// Changes returns up to limit (all when limit is zero) token changes with a
// sequence number greater than after, oldest first. Since one connection
// writes at a time, sequence numbers become visible in order: a reader
// never sees a change before one with a smaller number.
func (db *DB) Changes(ctx context.Context, after int64, limit int) ([]keyward.Change, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT seq, token_id, at FROM changes WHERE seq > ? ORDER BY seq LIMIT ?`,
		after, sqlLimit(limit))
	if err != nil {
		return nil, wrap("changes", err)
	}
	defer rows.Close()
	var out []keyward.Change
	for rows.Next() {
		var c keyward.Change
		var at int64
		if err := rows.Scan(&c.Seq, &c.TokenID, &at); err != nil {
			return nil, wrap("changes", err)
		}
		c.At = decodeTime(at)
		out = append(out, c)
	}
	return out, wrap("changes", rows.Err())
}

// LastChange returns the sequence number of the newest change, or 0 when
// there is none.
func (db *DB) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM changes`).Scan(&seq)
	return seq, wrap("last change", err)
}

// PruneChanges deletes the changes recorded before the given time. A change
// is recorded at the time of the write it records: the token's CreatedAt for
// a new token, TokenWrite.Now (or its event's Time when Now is zero) for an
// update. Sequence numbers are never reused after a prune.
//
// It deletes in batches, each its own transaction, so that a long history
// (the first prune of an old store) never holds the writer for long, and
// what one call leaves when its context ends, the next takes on.
func (db *DB) PruneChanges(ctx context.Context, before time.Time) error {
	for {
		var n int64
		err := db.writeTx(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM changes WHERE seq IN (
				SELECT seq FROM changes WHERE at < ? ORDER BY seq LIMIT ?)`, encodeTime(before), pruneBatch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil || n < pruneBatch {
			return wrap("prune changes", err)
		}
	}
}

// pruneBatch is how many changes one transaction of PruneChanges deletes.
const pruneBatch = 5000

// FlushUsage records the batch in one transaction. For each entry it sets
// the token's last use when entry.LastUsedAt is later than the stored one,
// and adds entry.QuotaDelta to the token's quota period entry.Period when
// that is not empty. It neither adds a change nor touches UpdatedAt.
// Entries of tokens that do not exist are skipped, so that one stale entry
// cannot lose the batch. A batch that id says was applied is not applied
// again (see claimBatch).
func (db *DB) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	if len(batch) == 0 {
		return nil
	}
	err := db.writeTx(ctx, func(tx *sql.Tx) error {
		if apply, err := claimBatch(ctx, tx, id); err != nil || !apply {
			return err
		}
		for _, u := range batch {
			if !u.LastUsedAt.IsZero() {
				at := encodeTime(u.LastUsedAt)
				if _, err := tx.ExecContext(ctx, `UPDATE tokens SET last_used_at = ?,
					last_used_ip = CASE WHEN ? = '' THEN last_used_ip ELSE ? END
					WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`,
					at, u.LastUsedIP, u.LastUsedIP, u.TokenID, at); err != nil {
					return err
				}
			}
			if u.Period != "" && u.QuotaDelta != 0 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO quota_usage (token_id, period, used)
					SELECT id, ?, ? FROM tokens WHERE id = ?
					ON CONFLICT (token_id, period) DO UPDATE SET used = used + excluded.used`,
					u.Period, u.QuotaDelta, u.TokenID); err != nil {
					return err
				}
			}
			if r := u.Rate; r != nil {
				counts, err := json.Marshal(r.Counts)
				if err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO rate_windows (token_id, window_ns, width, head, counts, until, last_ns)
					SELECT id, ?, ?, ?, ?, ?, ? FROM tokens WHERE id = ?
					ON CONFLICT (token_id) DO UPDATE SET window_ns = excluded.window_ns, width = excluded.width,
						head = excluded.head, counts = excluded.counts, until = excluded.until, last_ns = excluded.last_ns
					WHERE excluded.head * excluded.width >= rate_windows.head * rate_windows.width`,
					int64(r.Window), r.Width, r.Head, string(counts), encodeTime(r.Until), encodeTime(r.Last), u.TokenID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return wrap("flush usage", err)
}

// claimBatch records, in a usage write's transaction, that the batch id
// names is applied, and reports whether it is to be applied: false when
// its writer's recorded batch is already this one or a later one (the
// batch committed before and is written again because its answer was
// lost). It deletes the writers not heard of for keyward.FlushIDRetention
// before id.At. A zero id is applied, and recorded nowhere.
func claimBatch(ctx context.Context, tx *sql.Tx, id keyward.FlushID) (bool, error) {
	if id.Writer == "" {
		return true, nil
	}
	at := encodeTime(id.At)
	res, err := tx.ExecContext(ctx, `INSERT INTO usage_writers (writer, seq, written_at) VALUES (?, ?, ?)
		ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, written_at = excluded.written_at
		WHERE excluded.seq > usage_writers.seq`, id.Writer, id.Seq, at)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return false, err
	}
	_, err = tx.ExecContext(ctx, `DELETE FROM usage_writers WHERE written_at < ?`, encodeTime(id.At.Add(-keyward.FlushIDRetention)))
	return true, err
}

// RateWindows returns the stored rate-limit windows that count admissions
// after now.
func (db *DB) RateWindows(ctx context.Context, now time.Time) ([]keyward.RateWindow, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT token_id, window_ns, width, head, counts, until, last_ns
		FROM rate_windows WHERE until > ?`, encodeTime(now))
	if err != nil {
		return nil, wrap("rate windows", err)
	}
	defer rows.Close()
	var out []keyward.RateWindow
	for rows.Next() {
		var w keyward.RateWindow
		var window, until, last int64
		var counts string
		if err := rows.Scan(&w.TokenID, &window, &w.Width, &w.Head, &counts, &until, &last); err != nil {
			return nil, wrap("rate windows", err)
		}
		if err := json.Unmarshal([]byte(counts), &w.Counts); err != nil {
			return nil, wrap("rate windows", err)
		}
		w.Window, w.Until, w.Last = time.Duration(window), decodeTime(until), decodeTime(last)
		out = append(out, w)
	}
	return out, wrap("rate windows", rows.Err())
}

// QuotaUsed returns the consumption recorded for the token's quota period,
// or 0 when none was recorded.
func (db *DB) QuotaUsed(ctx context.Context, tokenID, period string) (int64, error) {
	var used int64
	err := db.read.QueryRowContext(ctx, `SELECT COALESCE(SUM(used), 0) FROM quota_usage WHERE token_id = ? AND period = ?`,
		tokenID, period).Scan(&used)
	return used, wrap("quota used", err)
}
