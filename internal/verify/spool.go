package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward"
)

// A spool keeps, in a file of Config.SpoolDir, the usage that a flush
// could not write to the store (quota use, last use, rate windows), so
// that a node stopped or killed while the store is unreachable does not
// forget it: each failed flush rewrites the node's spool file with all
// that is pending, a flush that succeeds removes it, and Start writes
// back every spool left by a process that is no longer running (its lock
// is free), its own node's or another's on the same store. A crash
// between a flush that succeeded and the removal writes that flush's
// quota use twice, which only denies early.
//
// Each process has its own pair of files, named by its process id: the
// spool (usage-PID.spool) and a lock file (usage-PID.lock) that the
// process holds, with flock, from its first spool on. A spool records
// which store it belongs to (Config.SpoolStore); another store's is left
// alone.
type spool struct {
	dir, store string
	log        *slog.Logger

	mu   sync.Mutex
	lock *os.File // held from the first write on
	has  bool     // a spool file of this process exists
}

// spoolFile is the content of a spool file.
type spoolFile struct {
	Version int                  `json:"version"`
	Store   string               `json:"store"`
	Written time.Time            `json:"written"`
	Usage   []keyward.UsageFlush `json:"usage"`
}

const spoolVersion = 1

func (s *spool) paths(pid int) (spoolPath, lockPath string) {
	base := filepath.Join(s.dir, "usage-"+strconv.Itoa(pid))
	return base + ".spool", base + ".lock"
}

// write replaces this process's spool with batch.
func (s *spool) write(batch []keyward.UsageFlush) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	spoolPath, lockPath := s.paths(os.Getpid())
	if s.lock == nil {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		if err := lockFile(f); err != nil {
			f.Close()
			return err
		}
		s.lock = f
	}
	raw, err := json.Marshal(spoolFile{Version: spoolVersion, Store: s.store, Written: time.Now().UTC(), Usage: batch})
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
	syncDir(s.dir)
	return nil
}

// clear removes this process's spool, once what it held is in the store.
func (s *spool) clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.has {
		return nil
	}
	spoolPath, _ := s.paths(os.Getpid())
	if err := os.Remove(spoolPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.has = false
	syncDir(s.dir)
	return nil
}

// close lets go of the lock, leaving a spool in place for the next start.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// replay writes back, with flush, every spool of s.dir left by a process
// that no longer runs and that belongs to s.store, and removes it. A
// spool that cannot be read is renamed aside (.bad) and reported, so that
// it neither blocks every start nor is lost.
func (s *spool) replay(ctx context.Context, flush func(context.Context, []keyward.UsageFlush) error) error {
	locks, err := filepath.Glob(filepath.Join(s.dir, "usage-*.lock"))
	if err != nil || len(locks) == 0 {
		return err
	}
	for _, lockPath := range locks {
		pid, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(lockPath), "usage-"), ".lock"))
		if err != nil {
			continue
		}
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0o600)
		if err != nil {
			continue
		}
		if lockFile(f) != nil {
			f.Close() // its process runs: its spool is its own
			continue
		}
		done, err := s.replayOne(ctx, pid, flush)
		if done {
			os.Remove(lockPath)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	syncDir(s.dir)
	return nil
}

// replayOne writes back the spool of process pid, whose lock the caller
// holds. done reports that nothing of it is left to write back (its lock
// file may go).
func (s *spool) replayOne(ctx context.Context, pid int, flush func(context.Context, []keyward.UsageFlush) error) (done bool, err error) {
	spoolPath, _ := s.paths(pid)
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
		os.Rename(spoolPath, bad)
		s.log.Error("a usage spool could not be read; it is kept aside, its usage not written", "file", bad, "err", err)
		return true, nil
	}
	if sf.Store != s.store {
		return false, nil // another store's; left for a node of it
	}
	if err := flush(ctx, sf.Usage); err != nil {
		return false, fmt.Errorf("write back the usage spool %s: %w", spoolPath, err)
	}
	s.log.Info("usage kept while the store was unreachable written back", "file", spoolPath, "entries", len(sf.Usage), "spooled_at", sf.Written)
	if err := os.Remove(spoolPath); err != nil {
		return false, err
	}
	return true, nil
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
