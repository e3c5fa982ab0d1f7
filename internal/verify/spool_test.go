//go:build unix

package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/verify"
)

// downStore is a store whose usage writes fail while down is set.
type downStore struct {
	keyward.Store
	down atomic.Bool
}

func (d *downStore) FlushUsage(ctx context.Context, id keyward.FlushID, batch []keyward.UsageFlush) error {
	if d.down.Load() {
		return keyward.Errorf(keyward.EUNAVAILABLE, "the token store is unavailable")
	}
	return d.Store.FlushUsage(ctx, id, batch)
}

// TestSpool: usage that the store could not take when a node stopped is
// in the spool, and the next start writes it back: a restart while the
// store is unreachable loses at most the last flush interval, as PRODUCT
// §4 bounds a crash.
func TestSpool(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{
		Quota:     &keyward.Quota{Limit: 1000, Period: keyward.PeriodNone},
		RateLimit: &keyward.RateLimit{Limit: 1000, Window: keyward.Duration(time.Hour)},
	})
	e.close()
	db, err := sqlite.Open(context.Background(), e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dir := filepath.Join(t.TempDir(), "spool")
	start := func(st keyward.Store, store string) *verify.Engine {
		t.Helper()
		eng := verify.New(verify.Config{Store: st, Keys: e.keys, Now: e.clock.Now, FlushInterval: time.Hour, SpoolDir: dir, SpoolStore: store})
		if err := eng.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return eng
	}
	ds := &downStore{Store: db}
	eng := start(ds, "s1")
	use := func(eng *verify.Engine, n int) {
		t.Helper()
		for range n {
			expect(t, eng.Verify(context.Background(), verify.Request{Token: text}), keyward.Valid)
		}
	}
	use(eng, 5)
	ds.down.Store(true)
	if err := eng.Flush(context.Background()); err == nil {
		t.Fatal("a flush to a store that is down succeeded")
	}
	use(eng, 7)
	// The node stops while the store is still down: Close says nothing
	// is lost, and the spool holds all 12 uses, merged into one entry.
	if err := eng.Close(context.Background()); err != nil {
		t.Fatalf("Close with the usage spooled: %v", err)
	}
	spools, _ := filepath.Glob(filepath.Join(dir, "usage-*.spool"))
	if len(spools) != 1 {
		t.Fatalf("spool files %v, want one", spools)
	}
	if fi, err := os.Stat(spools[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("spool file mode: %v %v", fi.Mode(), err)
	}
	if used, _ := db.QuotaUsed(context.Background(), tok.ID, "total"); used != 0 {
		t.Fatalf("the store counts %d before the restart", used)
	}

	// A node of another store leaves the spool alone, and its own spool
	// (the store still down) goes to a file of its own.
	other := start(ds, "s2")
	use(other, 1)
	if err := other.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if used, _ := db.QuotaUsed(context.Background(), tok.ID, "total"); used != 0 {
		t.Fatalf("another store's node wrote the spool back: %d", used)
	}
	if spools, _ = filepath.Glob(filepath.Join(dir, "usage-*.spool")); len(spools) != 2 {
		t.Fatalf("spool files %v, want two: one per engine", spools)
	}
	// A start while the store still cannot take it fails, saying why, and
	// keeps the spool.
	early := verify.New(verify.Config{Store: ds, Keys: e.keys, Now: e.clock.Now, FlushInterval: time.Hour, SpoolDir: dir, SpoolStore: "s1"})
	err = early.Start(context.Background())
	if keyward.ErrorCode(err) != keyward.EUNAVAILABLE || !strings.Contains(keyward.ErrorMessage(err), "cannot be written back yet (the token store is unavailable)") {
		t.Fatalf("a start with the store down: %v", err)
	}
	if spools, _ = filepath.Glob(filepath.Join(dir, "usage-*.spool")); len(spools) != 2 {
		t.Fatalf("spool files %v after a failed start, want both kept", spools)
	}
	ds.down.Store(false)

	// The next start on the store writes it back and removes it.
	eng = start(db, "s1")
	if used, _ := db.QuotaUsed(context.Background(), tok.ID, "total"); used != 12 {
		t.Fatalf("the store counts %d after the restart, want 12", used)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "usage-*")); len(left) != 2 {
		t.Errorf("in the spool directory: %v, want only the other store's spool and lock", left)
	}
	r := eng.Verify(context.Background(), verify.Request{Token: text})
	if r.Quota.Remaining != 1000-13 || r.Rate.Remaining != 1000-13 {
		t.Errorf("after the restart: quota %+v rate %+v, want %d remaining of each", r.Quota, r.Rate, 1000-13)
	}
	eng.Close(context.Background())
}

// TestSpoolOfRunningProcess: a spool whose process still holds its lock is
// that process's own, and is not written back by another.
func TestSpoolOfRunningProcess(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, _ := e.create(&keyward.Token{Quota: &keyward.Quota{Limit: 1000, Period: keyward.PeriodNone}})
	dir := t.TempDir()
	// A spool of "process 1", whose lock is held (here, by this process
	// through another open file).
	body := `{"version":1,"store":"s1","usage":[{"token_id":"` + tok.ID + `","period":"total","quota_delta":4}]}`
	if err := os.WriteFile(filepath.Join(dir, "usage-1.spool"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "usage-1.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	start := func() {
		t.Helper()
		eng := verify.New(verify.Config{Store: e.store, Keys: e.keys, Now: e.clock.Now, SpoolDir: dir, SpoolStore: "s1"})
		if err := eng.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		eng.Close(context.Background())
	}
	start()
	if used, _ := e.store.QuotaUsed(context.Background(), tok.ID, "total"); used != 0 {
		t.Fatalf("a running process's spool was written back: %d", used)
	}
	lock.Close() // the process ends
	start()
	if used, _ := e.store.QuotaUsed(context.Background(), tok.ID, "total"); used != 4 {
		t.Fatalf("after its process ended: %d written back, want 4", used)
	}
	if _, err := os.Stat(filepath.Join(dir, "usage-1.spool")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the spool written back is still there: %v", err)
	}
}

// TestSpoolReadByEarlierRelease: a spool this release writes is one that
// the earlier release (a rollback) writes back, rather than putting it
// aside unread: version 1, with all that is pending, merged, in "usage",
// as that release reads it. The batches and their ids ride along for
// this release.
func TestSpoolReadByEarlierRelease(t *testing.T) {
	e := newEnv(t, verify.Config{})
	tok, text := e.create(&keyward.Token{
		Quota:     &keyward.Quota{Limit: 1000, Period: keyward.PeriodNone},
		RateLimit: &keyward.RateLimit{Limit: 1000, Window: keyward.Duration(time.Hour)},
	})
	dir := t.TempDir()
	ds := &downStore{Store: e.store}
	eng := verify.New(verify.Config{Store: ds, Keys: e.keys, Now: e.clock.Now, FlushInterval: time.Hour, SpoolDir: dir, SpoolStore: "s1"})
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	use := func(n int) {
		t.Helper()
		for range n {
			expect(t, eng.Verify(context.Background(), verify.Request{Token: text}), keyward.Valid)
		}
	}
	use(5)
	ds.down.Store(true)
	if err := eng.Flush(context.Background()); err == nil {
		t.Fatal("a flush to a store that is down succeeded")
	}
	use(7) // in the next batch: the spool holds two
	if err := eng.Close(context.Background()); err != nil {
		t.Fatalf("Close with the usage spooled: %v", err)
	}
	spools, _ := filepath.Glob(filepath.Join(dir, "usage-*.spool"))
	if len(spools) != 1 {
		t.Fatalf("spool files %v, want one", spools)
	}
	raw, err := os.ReadFile(spools[0])
	if err != nil {
		t.Fatal(err)
	}
	// The earlier release's reading: a version other than 1 is put
	// aside unread; the entries of "usage" are written back.
	var old struct {
		Version int    `json:"version"`
		Store   string `json:"store"`
		Usage   []struct {
			TokenID    string          `json:"token_id"`
			Period     string          `json:"period"`
			QuotaDelta int64           `json:"quota_delta"`
			Rate       json.RawMessage `json:"rate"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(raw, &old); err != nil {
		t.Fatal(err)
	}
	if old.Version != 1 || old.Store != "s1" {
		t.Fatalf("spool version %d, store %q; the earlier release reads version 1 of store s1 only", old.Version, old.Store)
	}
	if len(old.Usage) != 1 || old.Usage[0].TokenID != tok.ID || old.Usage[0].Period != "total" || old.Usage[0].QuotaDelta != 12 || len(old.Usage[0].Rate) == 0 {
		t.Errorf("usage as the earlier release reads it = %+v, want one entry of %s: 12 of total, with its rate window", old.Usage, tok.ID)
	}

	// This release writes the batches back with their ids: once, also
	// when the spool is written back again, as after a crash before its
	// removal.
	for i := range 2 {
		if i > 0 {
			if err := os.WriteFile(spools[0], raw, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(strings.TrimSuffix(spools[0], ".spool")+".lock", nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		eng = verify.New(verify.Config{Store: e.store, Keys: e.keys, Now: e.clock.Now, FlushInterval: time.Hour, SpoolDir: dir, SpoolStore: "s1"})
		if err := eng.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := eng.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if used, _ := e.store.QuotaUsed(context.Background(), tok.ID, "total"); used != 12 {
			t.Fatalf("the store counts %d after the spool was written back (%d), want 12", used, i+1)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "usage-*")); len(left) != 0 {
			t.Errorf("in the spool directory: %v, want nothing", left)
		}
	}
}
