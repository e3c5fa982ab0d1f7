//go:build unix

package verify_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/manage"
	"github.com/keyward/keyward/internal/secret"
	"github.com/keyward/keyward/internal/storetest/stores"
	"github.com/keyward/keyward/internal/verify"
)

// lostAnswer is a store whose next lose usage writes commit and then
// fail, as when the connection is cut after COMMIT: the caller cannot
// tell them from writes that did not commit.
type lostAnswer struct {
	keyward.Store
	lose atomic.Int32
}

var errLostAnswer = errors.New("connection reset after COMMIT")

func (l *lostAnswer) FlushUsage(ctx context.Context, id keyward.FlushID, b []keyward.UsageFlush) error {
	err := l.Store.FlushUsage(ctx, id, b)
	if err == nil && l.lose.Add(-1) >= 0 {
		return errLostAnswer
	}
	return err
}

// TestFlushAnswerLost: a usage flush that the store applied but whose
// answer was lost is not applied again when the engine writes it again,
// at its next flush or from the spool after a restart: ten uses of a
// quota count ten, not twenty.
func TestFlushAnswerLost(t *testing.T) {
	for name, open := range stores.Openers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			keys, err := secret.NewKeyring(secretA)
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
			svc := &manage.Service{Store: st, Keys: keys, Now: clk.Now}
			ws, err := svc.EnsureDefaultWorkspace(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tok, text, err := svc.CreateToken(ctx, manage.SystemCaller(ws.ID), &keyward.Token{Name: "t",
				Quota: &keyward.Quota{Limit: 1000, Period: keyward.PeriodNone}})
			if err != nil {
				t.Fatal(err)
			}
			lost := &lostAnswer{Store: st}
			dir := t.TempDir()
			start := func() *verify.Engine {
				t.Helper()
				eng := verify.New(verify.Config{Store: lost, Keys: keys, Now: clk.Now, FlushInterval: time.Hour, SpoolDir: dir, SpoolStore: "s1"})
				if err := eng.Start(ctx); err != nil {
					t.Fatal(err)
				}
				return eng
			}
			use := func(eng *verify.Engine, n int) {
				t.Helper()
				for range n {
					expect(t, eng.Verify(ctx, verify.Request{Token: text}), keyward.Valid)
				}
			}
			wantUsed := func(want int64) {
				t.Helper()
				if used, err := st.QuotaUsed(ctx, tok.ID, "total"); err != nil || used != want {
					t.Fatalf("QuotaUsed = %d, %v; want %d", used, err, want)
				}
			}

			eng := start()
			use(eng, 10)
			lost.lose.Store(1)
			if err := eng.Flush(ctx); !errors.Is(err, errLostAnswer) {
				t.Fatalf("Flush = %v, want the lost answer", err)
			}
			use(eng, 3) // gathered while the batch is written again
			if err := eng.Flush(ctx); err != nil {
				t.Fatalf("Flush again: %v", err)
			}
			wantUsed(13)
			if n := eng.Stats().UsagePending; n != 0 {
				t.Errorf("UsagePending = %d after the flush, want 0", n)
			}

			// The node stops as its last flush's answer is lost: the spool
			// keeps the batch with its id, and the next start writes it
			// back as nothing.
			use(eng, 5)
			lost.lose.Store(1)
			if err := eng.Close(ctx); err != nil {
				t.Fatalf("Close with the usage spooled: %v", err)
			}
			wantUsed(18)
			if spools, _ := filepath.Glob(filepath.Join(dir, "usage-*.spool")); len(spools) != 1 {
				t.Fatalf("spool files %v, want one", spools)
			}
			eng = start()
			wantUsed(18)
			if left, _ := filepath.Glob(filepath.Join(dir, "usage-*")); len(left) != 0 {
				t.Errorf("in the spool directory: %v, want nothing", left)
			}
			use(eng, 1)
			if err := eng.Close(ctx); err != nil {
				t.Fatal(err)
			}
			wantUsed(19)
		})
	}
}
