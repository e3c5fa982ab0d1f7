package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/keyward/keyward"
)

// insertChange records that the token with the given id changed at t. The
// caller holds lockLogs; the trigger changes_notify announces the change
// on NotifyChannel at commit.
func insertChange(ctx context.Context, tx pgx.Tx, tokenID string, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO changes (token_id, at) VALUES ($1, $2)`, safeText(tokenID), at)
	return err
}

// Changes returns up to limit (all when limit is zero) token changes with a
// sequence number greater than after, oldest first. Since changes are
// appended under a lock held until commit, sequence numbers become visible
// in order: a reader never sees a change before one with a smaller number.
func (db *DB) Changes(ctx context.Context, after int64, limit int) ([]keyward.Change, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	rows, err := db.rerun.Query(ctx, `SELECT seq, token_id, at FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2`,
		after, sqlLimit(limit))
	if err != nil {
		return nil, wrap("changes", err)
	}
	defer rows.Close()
	var out []keyward.Change
	for rows.Next() {
		var c keyward.Change
		if err := rows.Scan(&c.Seq, &c.TokenID, &c.At); err != nil {
			return nil, wrap("changes", err)
		}
		c.At = c.At.UTC()
		out = append(out, c)
	}
	return out, wrap("changes", rows.Err())
}

// LastChange returns the sequence number of the newest change, or 0 when
// there is none.
func (db *DB) LastChange(ctx context.Context) (int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	var seq int64
	err := db.rerun.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) FROM changes`).Scan(&seq)
	return seq, wrap("last change", err)
}

// PruneChanges deletes the changes recorded before the given time. A change
// is recorded at the time of the write it records: the token's CreatedAt for
// a new token, TokenWrite.Now (or its event's Time when Now is zero) for an
// update. Sequence numbers are never reused after a prune.
//
// It deletes in batches, each its own transaction, so that a long history
// (the first prune of an old store) holds no lock for long, and what one
// call leaves when its context ends, the next takes on. Nodes pruning at
// once skip the rows another is deleting.
func (db *DB) PruneChanges(ctx context.Context, before time.Time) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	for {
		var n int64
		err := db.writeTx(ctx, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `DELETE FROM changes WHERE seq IN (
				SELECT seq FROM changes WHERE at < $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)`, before, pruneBatch)
			n = tag.RowsAffected()
			return err
		})
		if err != nil || n < pruneBatch {
			return wrap("prune changes", err)
		}
	}
}

// pruneBatch is how many changes one transaction of PruneChanges deletes.
const pruneBatch = 5000

// FlushUsage records the batch in one transaction and one round trip. For
// each entry it sets the token's last use when entry.LastUsedAt is later
// than the stored one, and adds entry.QuotaDelta to the token's quota
// period entry.Period when that is not empty. It neither adds a change nor
// touches UpdatedAt. Entries of tokens that do not exist are skipped, so
// that one stale entry cannot lose the batch. A batch that id says was
// applied is not applied again (claimSQL, queued first in the same round trip).
func (db *DB) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	// Rows are locked in token id order, the same in every flush, so that
	// two nodes flushing the same tokens wait for each other rather than
	// deadlock. The result does not depend on the order: the latest last
	// use wins and quota deltas add up.
	entries := slices.Clone(batch)
	slices.SortStableFunc(entries, func(a, b keyward.UsageFlush) int {
		if c := strings.Compare(a.TokenID, b.TokenID); c != 0 {
			return c
		}
		return strings.Compare(a.Period, b.Period)
	})
	var b pgx.Batch
	// The claim goes first, in the same round trip; when it says the
	// batch was applied before, what follows it is rolled back.
	claimed := id.Writer != ""
	if claimed {
		b.Queue(claimSQL, safeText(id.Writer), id.Seq, id.At)
		b.Queue(pruneWritersSQL, id.At.Add(-keyward.FlushIDRetention))
	}
	head := b.Len()
	for _, u := range entries {
		if !storable(u.TokenID) {
			continue // no such token
		}
		if !u.LastUsedAt.IsZero() {
			b.Queue(`UPDATE tokens SET last_used_at = $1,
				last_used_ip = CASE WHEN $2 = '' THEN last_used_ip ELSE $2 END
				WHERE id = $3 AND (last_used_at IS NULL OR last_used_at < $1)`,
				u.LastUsedAt, safeText(u.LastUsedIP), u.TokenID)
		}
		if u.Period != "" && u.QuotaDelta != 0 {
			b.Queue(`INSERT INTO quota_usage (token_id, period, used)
				SELECT id, $2, $3 FROM tokens WHERE id = $1
				ON CONFLICT (token_id, period) DO UPDATE SET used = quota_usage.used + excluded.used`,
				u.TokenID, safeText(u.Period), u.QuotaDelta)
		}
		if r := u.Rate; r != nil {
			counts, err := json.Marshal(r.Counts)
			if err != nil {
				return wrap("flush usage", err)
			}
			b.Queue(`INSERT INTO rate_windows (token_id, window_ns, width, head, counts, until, last_ns)
				SELECT id, $2, $3, $4, $5, $6, $7 FROM tokens WHERE id = $1
				ON CONFLICT (token_id) DO UPDATE SET window_ns = excluded.window_ns, width = excluded.width,
					head = excluded.head, counts = excluded.counts, until = excluded.until, last_ns = excluded.last_ns
				WHERE excluded.head * excluded.width >= rate_windows.head * rate_windows.width`,
				u.TokenID, int64(r.Window), r.Width, r.Head, string(counts), r.Until, unixNano(r.Last))
		}
	}
	if b.Len() == head {
		return nil
	}
	err := db.writeTx(ctx, func(tx pgx.Tx) error {
		br := tx.SendBatch(ctx, &b)
		if claimed {
			tag, err := br.Exec()
			if err == nil && tag.RowsAffected() == 0 {
				err = errApplied
			}
			if err != nil {
				br.Close()
				return err
			}
		}
		return br.Close()
	})
	if errors.Is(err, errApplied) {
		return nil
	}
	return wrap("flush usage", err)
}

// errApplied rolls back a usage write whose batch was applied before.
var errApplied = errors.New("usage batch applied before")

// claimSQL records that a writer's batch is applied, unless its recorded
// batch is that one or a later one (the batch committed before and is
// written again because its answer was lost): it then changes no row.
// pruneWritersSQL deletes the writers not heard of for
// keyward.FlushIDRetention.
const (
	claimSQL = `INSERT INTO usage_writers (writer, seq, written_at) VALUES ($1, $2, $3)
		ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, written_at = excluded.written_at
		WHERE excluded.seq > usage_writers.seq`
	pruneWritersSQL = `DELETE FROM usage_writers WHERE written_at < $1`
)

// claimBatch records, in a usage write's transaction, that the batch id
// names is applied, and reports whether it is to be applied (see
// claimSQL). A zero id is applied, and recorded nowhere.
func claimBatch(ctx context.Context, tx pgx.Tx, id keyward.FlushID) (bool, error) {
	if id.Writer == "" {
		return true, nil
	}
	tag, err := tx.Exec(ctx, claimSQL, safeText(id.Writer), id.Seq, id.At)
	if err != nil || tag.RowsAffected() == 0 {
		return false, err
	}
	_, err = tx.Exec(ctx, pruneWritersSQL, id.At.Add(-keyward.FlushIDRetention))
	return true, err
}

// QuotaUsed returns the consumption recorded for the token's quota period,
// or 0 when none was recorded.
func (db *DB) QuotaUsed(ctx context.Context, tokenID, period string) (int64, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	if !storable(tokenID) || !storable(period) {
		return 0, nil
	}
	var used int64
	err := db.rerun.QueryRow(ctx, `SELECT COALESCE((SELECT used FROM quota_usage WHERE token_id = $1 AND period = $2), 0)`,
		tokenID, period).Scan(&used)
	return used, wrap("quota used", err)
}

// RateWindows returns the stored rate-limit windows that count admissions
// after now.
func (db *DB) RateWindows(ctx context.Context, now time.Time) ([]keyward.RateWindow, error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	rows, err := db.rerun.Query(ctx, `SELECT token_id, window_ns, width, head, counts, until, last_ns
		FROM rate_windows WHERE until > $1`, now)
	if err != nil {
		return nil, wrap("rate windows", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (w keyward.RateWindow, err error) {
		var window, last int64
		var counts string
		if err = r.Scan(&w.TokenID, &window, &w.Width, &w.Head, &counts, &w.Until, &last); err != nil {
			return w, err
		}
		w.Window, w.Until = time.Duration(window), w.Until.UTC()
		if last != 0 {
			w.Last = time.Unix(0, last).UTC()
		}
		return w, json.Unmarshal([]byte(counts), &w.Counts)
	})
	return out, wrap("rate windows", err)
}

// unixNano returns t in unix ns, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
