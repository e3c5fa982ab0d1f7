package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/fsutil"
)

// A spool keeps, in a file of Config.SpoolDir, the usage that a flush
// could not write to the store (quota use, last use, rate windows), so
// that a node stopped or killed while the store is unreachable does not
// forget it: each failed flush rewrites the node's spool file with all
// that is pending, a flush that succeeds removes it, and Start writes
// back every spool left by a process that is no longer running (its lock
// is free), its own node's or another's on the same store. The spool
// keeps the batches as the engine formed them, with their ids
// (keyward.FlushID), so that a batch the store applied although its
// flush failed, or a spool written back whose removal a crash prevented,
// is not counted twice: the store applies each id once (within
// keyward.FlushIDRetention). It also keeps them merged, as the earlier
// release's spool did, for that release to write back after a rollback.
//
// Each engine has its own pair of files, named by a random id made when
// it first spools (process ids repeat, as PID 1 in every container does):
// the spool (usage-ID.spool) and a lock file (usage-ID.lock) that it
// holds, with flock, from then on. A spool records which store it belongs
// to (Config.SpoolStore); another store's is left alone, and said so.
type spool struct {
	dir, store string
	log        *slog.Logger

	mu   sync.Mutex
	id   string   // "" until the first write
	lock *os.File // held from the first write on
	has  bool     // this engine's spool file exists
}

// spoolFile is the content of a spool file. Its entries are spoolEntry,
// not keyward.UsageFlush, so that the file's format is its own.
//
// Batches, in the order they are to be written, each with its id, are
// what this release writes back. Usage is all of them merged, without an
// id: what the earlier release, which knows no Batches, writes back (a
// rollback), rather than putting aside as unreadable a spool of a version
// it does not know; a spool that release wrote has Usage alone, written
// back as one batch with the zero id.
type spoolFile struct {
	Version int          `json:"version"`
	Store   string       `json:"store"`
	Written time.Time    `json:"written"`
	Usage   []spoolEntry `json:"usage"`
	Batches []spoolBatch `json:"batches,omitempty"`
}

// spoolBatch is a batch of usage with its keyward.FlushID.
type spoolBatch struct {
	Writer string       `json:"writer"`
	Seq    int64        `json:"seq"`
	At     time.Time    `json:"at"`
	Usage  []spoolEntry `json:"usage"`
}

type spoolEntry struct {
	TokenID    string     `json:"token_id"`
	LastUsedAt time.Time  `json:"last_used_at,omitzero"`
	LastUsedIP string     `json:"last_used_ip,omitempty"`
	Period     string     `json:"period,omitempty"`
	QuotaDelta int64      `json:"quota_delta,omitempty"`
	Rate       *spoolRate `json:"rate,omitempty"`
}

type spoolRate struct {
	Window time.Duration `json:"window_ns"`
	Width  int64         `json:"width_ns"`
	Head   int64         `json:"head"`
	Counts []int64       `json:"counts"`
	Until  time.Time     `json:"until"`
	// Last is the time of the latest admission counted, unix ns; absent
	// (0) in a spool of an earlier version, or when not known.
	Last int64 `json:"last_ns,omitempty"`
}

func toSpool(batch []keyward.UsageFlush) []spoolEntry {
	out := make([]spoolEntry, len(batch))
	for i, f := range batch {
		out[i] = spoolEntry{TokenID: f.TokenID, LastUsedAt: f.LastUsedAt, LastUsedIP: f.LastUsedIP, Period: f.Period, QuotaDelta: f.QuotaDelta}
		if r := f.Rate; r != nil {
			out[i].Rate = &spoolRate{Window: r.Window, Width: r.Width, Head: r.Head, Counts: r.Counts, Until: r.Until}
			if !r.Last.IsZero() {
				out[i].Rate.Last = r.Last.UnixNano()
			}
		}
	}
	return out
}

func fromSpool(entries []spoolEntry) []keyward.UsageFlush {
	out := make([]keyward.UsageFlush, len(entries))
	for i, e := range entries {
		out[i] = keyward.UsageFlush{TokenID: e.TokenID, LastUsedAt: e.LastUsedAt, LastUsedIP: e.LastUsedIP, Period: e.Period, QuotaDelta: e.QuotaDelta}
		if r := e.Rate; r != nil {
			out[i].Rate = &keyward.RateWindow{TokenID: e.TokenID, Window: r.Window, Width: r.Width, Head: r.Head, Counts: r.Counts, Until: r.Until}
			if r.Last != 0 {
				out[i].Rate.Last = time.Unix(0, r.Last).UTC()
			}
		}
	}
	return out
}

// spoolVersion stays 1: Batches is an addition that the earlier
// release, which reads version 1 only, passes over (see spoolFile).
const spoolVersion = 1

// batches returns the batches of sf, in the order they are to be
// written: the usage of a spool of the earlier release (no Batches) as
// one batch with the zero id.
func (sf *spoolFile) batches() []flushBatch {
	if len(sf.Batches) == 0 {
		return []flushBatch{{usage: fromSpool(sf.Usage)}}
	}
	out := make([]flushBatch, len(sf.Batches))
	for i, b := range sf.Batches {
		out[i] = flushBatch{id: keyward.FlushID{Writer: b.Writer, Seq: b.Seq, At: b.At}, usage: fromSpool(b.Usage)}
	}
	return out
}

func (s *spool) paths(id string) (spoolPath, lockPath string) {
	base := filepath.Join(s.dir, "usage-"+id)
	return base + ".spool", base + ".lock"
}

// write replaces this engine's spool with batches.
func (s *spool) write(batches []flushBatch, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return err
		}
		var b [12]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		_, lockPath := s.paths(id)
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if err := fsutil.TryLock(f); err != nil {
			f.Close()
			os.Remove(lockPath)
			return err
		}
		s.id, s.lock = id, f
	}
	spoolPath, _ := s.paths(s.id)
	sf := spoolFile{Version: spoolVersion, Store: s.store, Written: now.UTC(), Batches: make([]spoolBatch, len(batches))}
	var all []keyward.UsageFlush
	for i, b := range batches {
		sf.Batches[i] = spoolBatch{Writer: b.id.Writer, Seq: b.id.Seq, At: b.id.At.UTC(), Usage: toSpool(b.usage)}
		all = append(all, b.usage...)
	}
	sf.Usage = toSpool(coalesce(all))
	raw, err := json.Marshal(sf)
	if err != nil {
		return err
	}
	tmp := spoolPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, spoolPath)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	s.has = true
	fsutil.SyncDir(s.dir)
	return nil
}

// clear removes this engine's spool, once what it held is in the store.
func (s *spool) clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return nil
	}
	spoolPath, _ := s.paths(s.id)
	if err := os.Remove(spoolPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.has = false
	fsutil.SyncDir(s.dir)
	return nil
}

// close lets go of the lock, leaving the spool, if any, for the next
// start; without one, the lock file goes too.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock == nil {
		return
	}
	if !s.has {
		_, lockPath := s.paths(s.id)
		os.Remove(lockPath)
	}
	s.lock.Close()
	s.lock = nil
}

// replay writes back, with flush, every spool of s.dir left by an engine
// that no longer runs and that belongs to s.store, and removes it. A
// spool that cannot be read is renamed aside (.bad) and reported, so that
// it neither blocks every start nor is lost.
func (s *spool) replay(ctx context.Context, flush func(context.Context, keyward.FlushID, []keyward.UsageFlush) error) error {
	locks, err := filepath.Glob(filepath.Join(s.dir, "usage-*.lock"))
	if err != nil {
		return err
	}
	for _, lockPath := range locks {
		id := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(lockPath), "usage-"), ".lock")
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if fsutil.TryLock(f) != nil {
			f.Close() // its engine runs: its spool is its own
			continue
		}
		spoolPath, _ := s.paths(id)
		os.Remove(spoolPath + ".tmp") // a write its engine did not finish
		done, err := s.replayOne(ctx, spoolPath, flush)
		if done {
			os.Remove(lockPath)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	fsutil.SyncDir(s.dir)
	return nil
}

// replayOne writes back the spool at spoolPath, whose lock the caller
// holds. done reports that nothing of it is left to write back (its lock
// file may go).
func (s *spool) replayOne(ctx context.Context, spoolPath string, flush func(context.Context, keyward.FlushID, []keyward.UsageFlush) error) (done bool, err error) {
	raw, err := os.ReadFile(spoolPath)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil // nothing was pending when it stopped
	}
	if err != nil {
		return false, fmt.Errorf("usage spool %s: %w", spoolPath, err)
	}
	var sf spoolFile
	if err := json.Unmarshal(raw, &sf); err != nil || sf.Version != spoolVersion {
		bad := spoolPath + ".bad"
		if rerr := os.Rename(spoolPath, bad); rerr != nil {
			return false, fmt.Errorf("usage spool %s cannot be read (%v) nor put aside: %w", spoolPath, err, rerr)
		}
		s.log.Error("a usage spool could not be read; it is kept aside, its usage not written", "file", bad, "version", sf.Version, "err", err)
		return true, nil
	}
	if sf.Store != s.store {
		s.log.Warn("a usage spool of another store is left alone", "file", spoolPath, "store", sf.Store, "spooled_at", sf.Written)
		return false, nil
	}
	// In order, each with its id: those written back before (a start
	// that failed part way, a crash before the removal) are applied as
	// nothing.
	batches := sf.batches()
	entries := 0
	for _, b := range batches {
		entries += len(b.usage)
		if err := flush(ctx, b.id, b.usage); err != nil {
			return false, s.replayError(spoolPath, err)
		}
	}
	s.log.Info("usage kept while the store was unreachable written back", "file", spoolPath, "entries", entries, "spooled_at", sf.Written)
	if err := os.Remove(spoolPath); err != nil {
		return false, err
	}
	return true, nil
}

// replayError says why the spool at spoolPath could not be written back.
func (s *spool) replayError(spoolPath string, err error) error {
	if keyward.ErrorCode(err) == keyward.EUNAVAILABLE {
		// Said whole, with the store's cause: the error's message is
		// what serve prints.
		why := err.Error()
		if ke, ok := err.(*keyward.Error); ok {
			why = ke.Message // no cause beyond it
		}
		return keyward.Errorf(keyward.EUNAVAILABLE, "the usage spool %s, kept while the store could not take it, cannot be written back yet (%s); start the node again once the store takes writes: without that usage, limits could admit too much", spoolPath, why)
	}
	return fmt.Errorf("write back the usage spool %s: %w", spoolPath, err)
}

// coalesce merges the entries of batch that share a token and a quota
// period, in order: quota use adds up, the latest last use and rate
// window win. Failed flushes pile up while the store is unreachable;
// merged, what is held (and spooled) grows with the tokens used, not
// with the time the outage lasts.
func coalesce(batch []keyward.UsageFlush) []keyward.UsageFlush {
	type key struct{ token, period string }
	at := make(map[key]int, len(batch))
	lastRate := map[string]int{} // token -> index in out of its newest rate
	out := batch[:0:0]
	for _, f := range batch {
		k := key{f.TokenID, f.Period}
		i, ok := at[k]
		if !ok {
			i = len(out)
			at[k] = i
			out = append(out, keyward.UsageFlush{TokenID: f.TokenID, Period: f.Period})
		}
		o := &out[i]
		o.QuotaDelta += f.QuotaDelta
		if f.LastUsedAt.After(o.LastUsedAt) {
			o.LastUsedAt, o.LastUsedIP = f.LastUsedAt, f.LastUsedIP
		}
		if f.Rate != nil {
			// One window per token, the newest, on its newest entry.
			if j, ok := lastRate[f.TokenID]; ok && j != i {
				out[j].Rate = nil
			}
			o.Rate, lastRate[f.TokenID] = f.Rate, i
		}
	}
	return out
}
